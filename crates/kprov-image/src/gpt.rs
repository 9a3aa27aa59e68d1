//! The partition tables of a [`DiskLayout`], as bytes: the head (the
//! protective MBR carrying the BIOS boot code, the primary GPT header and
//! its entries) and the tail (the backup entries and header, ending the
//! disk). UEFI 2.x, chapter 5.

use crate::layout::{DiskLayout, ENTRIES, ENTRY_SECTORS, ENTRY_SIZE, SECTOR};

/// Bytes of boot code in the MBR before the disk signature.
pub const BOOT_CODE: usize = 440;

/// The first 34 sectors: protective MBR (with `boot_code`, for BIOS
/// machines), primary header, entries.
pub fn head(layout: &DiskLayout, boot_code: &[u8; BOOT_CODE]) -> Vec<u8> {
    let mut out = vec![0u8; ((2 + ENTRY_SECTORS) * SECTOR) as usize];
    out[..BOOT_CODE].copy_from_slice(boot_code);
    // One partition of type 0xEE covering the disk (or 2 TiB of it).
    let entry = &mut out[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    entry[4] = 0xEE;
    entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    let covered = u32::try_from(layout.sectors() - 1).unwrap_or(u32::MAX);
    entry[12..16].copy_from_slice(&covered.to_le_bytes());
    out[510] = 0x55;
    out[511] = 0xAA;
    let entries = entries(layout);
    let header = header(layout, &entries, 1, layout.sectors() - 1, 2);
    out[SECTOR as usize..2 * SECTOR as usize].copy_from_slice(&header);
    out[2 * SECTOR as usize..].copy_from_slice(&entries);
    out
}

/// The last 33 sectors: backup entries, then the backup header.
pub fn tail(layout: &DiskLayout) -> Vec<u8> {
    let entries = entries(layout);
    let last = layout.sectors() - 1;
    let header = header(layout, &entries, last, 1, last - ENTRY_SECTORS);
    let mut out = entries;
    out.extend_from_slice(&header);
    out
}

fn entries(layout: &DiskLayout) -> Vec<u8> {
    let mut out = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (slot, partition) in out
        .chunks_exact_mut(ENTRY_SIZE as usize)
        .zip(layout.partitions())
    {
        slot[0..16].copy_from_slice(&partition.kind.to_gpt_bytes());
        slot[16..32].copy_from_slice(&partition.guid.to_gpt_bytes());
        slot[32..40].copy_from_slice(&partition.first_lba().to_le_bytes());
        slot[40..48].copy_from_slice(&partition.last_lba().to_le_bytes());
        slot[48..56].copy_from_slice(&partition.attributes.to_le_bytes());
        for (i, unit) in partition.name.encode_utf16().take(36).enumerate() {
            slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    out
}

/// One header sector; `entries_lba` is where its copy of the entries is.
fn header(layout: &DiskLayout, entries: &[u8], own: u64, other: u64, entries_lba: u64) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&own.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    let first_usable = 2 + ENTRY_SECTORS;
    let last_usable = layout.sectors() - 2 - ENTRY_SECTORS;
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&layout.guid.to_gpt_bytes());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MIB;

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn both_headers_check_out_and_point_at_each_other() {
        let layout = DiskLayout::plan(64 * MIB, 16 * MIB, "s").unwrap();
        let head = head(&layout, &[0xAB; BOOT_CODE]);
        let tail = tail(&layout);
        assert_eq!(head.len(), 34 * 512);
        assert_eq!(tail.len(), 33 * 512);
        assert_eq!(&head[..BOOT_CODE], &[0xAB; BOOT_CODE][..]);
        assert_eq!(&head[510..512], &[0x55, 0xAA]);
        assert_eq!(head[446 + 4], 0xEE);
        let primary = &head[512..1024];
        let backup = &tail[32 * 512..];
        let last = layout.sectors() - 1;
        for (header, own, other, entries_lba, entries) in [
            (primary, 1, last, 2, &head[1024..]),
            (backup, last, 1, last - 32, &tail[..32 * 512]),
        ] {
            assert_eq!(&header[..8], b"EFI PART");
            let mut zeroed = header[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(
                crc32fast::hash(&zeroed).to_le_bytes(),
                header[16..20],
                "header CRC"
            );
            assert_eq!(
                crc32fast::hash(entries).to_le_bytes(),
                header[88..92],
                "entries CRC"
            );
            assert_eq!(u64_at(header, 24), own);
            assert_eq!(u64_at(header, 32), other);
            assert_eq!(u64_at(header, 72), entries_lba);
        }
        // The root entry: its range and its name in UTF-16.
        let root = &head[1024 + 128..1024 + 256];
        assert_eq!(u64_at(root, 32), layout.root.first_lba());
        assert_eq!(u64_at(root, 40), layout.root.last_lba());
        assert_eq!(&root[56..64], &[b'r', 0, b'o', 0, b'o', 0, b't', 0]);
        assert_eq!(u64_at(&head[1024..], 48), 4, "boot is legacy-BIOS bootable");
    }
}
