//! GUIDs as GPT stores them: the first three fields little-endian, the
//! last two as written.

use std::fmt;

use sha2::{Digest, Sha256};

/// A GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The EFI system partition's type.
    pub const EFI_SYSTEM: Guid = Guid::from_fields(
        0xC12A_7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );
    /// The x86-64 Linux root partition's type (the Discoverable
    /// Partitions Specification's).
    pub const LINUX_ROOT_X86_64: Guid = Guid::from_fields(
        0x4F68_BCE3,
        0xE8CD,
        0x4DB1,
        [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
    );

    /// A GUID from its textual fields, in the order they are written.
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let a = a.to_be_bytes();
        let b = b.to_be_bytes();
        let c = c.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A version-4-shaped GUID derived from `seed` and `label`: the same
    /// inputs give the same GUID, so an image built twice is the same.
    pub fn derived(seed: &str, label: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(seed.as_bytes())
            .chain_update([0])
            .chain_update(label.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0F) | 0x40;
        bytes[8] = (bytes[8] & 0x3F) | 0x80;
        Guid(bytes)
    }

    /// The 16 bytes as GPT stores them (mixed-endian).
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let g = self.0;
        [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{}-{}-{}-{}-{}",
            hex::encode(&g[0..4]),
            hex::encode(&g[4..6]),
            hex::encode(&g[6..8]),
            hex::encode(&g[8..10]),
            hex::encode(&g[10..16])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_efi_system_type_is_written_and_stored_as_the_uefi_specification_gives_it() {
        assert_eq!(
            Guid::EFI_SYSTEM.to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        // UEFI 2.x, 5.3.3: the first field is stored little-endian.
        assert_eq!(
            Guid::EFI_SYSTEM.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }

    #[test]
    fn derived_guids_are_stable_version_4_shaped_and_differ_by_label() {
        let a = Guid::derived("kprov-image", "root");
        assert_eq!(a, Guid::derived("kprov-image", "root"));
        assert_ne!(a, Guid::derived("kprov-image", "boot"));
        assert_ne!(a, Guid::derived("other", "root"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89ab".contains(&text[19..20]), "{text}");
    }
}
