//! Where everything goes on the disk: a 1 MiB head (protective MBR with
//! the BIOS boot code, primary GPT), the boot partition (FAT: boot loader,
//! kernel, initrd), the root partition (ext4), and a 1 MiB tail ending
//! with the backup GPT. Partitions start on MiB boundaries.

use crate::guid::Guid;

/// Bytes per sector: the image is written for 512-byte logical sectors.
pub const SECTOR: u64 = 512;
/// The alignment of partitions, and the size of the head and the tail.
pub const MIB: u64 = 1 << 20;
/// Entries in each partition table (the minimum UEFI allows, 32 sectors).
pub const ENTRIES: u64 = 128;
/// Bytes per partition table entry.
pub const ENTRY_SIZE: u64 = 128;
/// Sectors the partition entries take.
pub const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// GPT attribute bit 2: the partition holds a legacy BIOS boot loader
/// (what syslinux's gptmbr.bin looks for).
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its name in the partition table (ASCII, at most 36 characters).
    pub name: &'static str,
    /// Its type.
    pub kind: Guid,
    /// Its own GUID (the kernel's `root=PARTUUID=`).
    pub guid: Guid,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
}

impl Partition {
    /// First sector.
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }

    /// Last sector (inclusive, as GPT stores it).
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// The disk's GUID.
    pub guid: Guid,
    /// Bytes.
    pub size: u64,
    /// The boot partition, then the root partition.
    pub boot: Partition,
    /// The root partition.
    pub root: Partition,
}

/// Sizes the layout cannot hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A size is not a whole number of MiB.
    #[error("the {what} ({size} bytes) is not a whole number of MiB")]
    Unaligned {
        /// Which size.
        what: &'static str,
        /// The size given.
        size: u64,
    },
    /// The disk is too small for the head, the boot partition and a root.
    #[error("a disk of {disk} MiB leaves no room for a root partition after the {boot} MiB boot partition and 2 MiB of partition tables")]
    TooSmall {
        /// The disk's MiB.
        disk: u64,
        /// The boot partition's MiB.
        boot: u64,
    },
}

impl DiskLayout {
    /// Lays out a disk of `disk_size` bytes with a boot partition of
    /// `boot_size` bytes; the root partition takes the rest. GUIDs are
    /// derived from `seed`.
    pub fn plan(disk_size: u64, boot_size: u64, seed: &str) -> Result<Self, LayoutError> {
        for (what, size) in [("disk size", disk_size), ("boot partition", boot_size)] {
            if size % MIB != 0 || size == 0 {
                return Err(LayoutError::Unaligned { what, size });
            }
        }
        let root_size = disk_size
            .checked_sub(2 * MIB + boot_size)
            .filter(|s| *s > 0)
            .ok_or(LayoutError::TooSmall {
                disk: disk_size / MIB,
                boot: boot_size / MIB,
            })?;
        Ok(DiskLayout {
            guid: Guid::derived(seed, "disk"),
            size: disk_size,
            boot: Partition {
                name: "boot",
                kind: Guid::EFI_SYSTEM,
                guid: Guid::derived(seed, "boot"),
                offset: MIB,
                size: boot_size,
                attributes: LEGACY_BIOS_BOOTABLE,
            },
            root: Partition {
                name: "root",
                kind: Guid::LINUX_ROOT_X86_64,
                guid: Guid::derived(seed, "root"),
                offset: MIB + boot_size,
                size: root_size,
                attributes: 0,
            },
        })
    }

    /// Sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }

    /// The partitions, in table order.
    pub fn partitions(&self) -> [&Partition; 2] {
        [&self.boot, &self.root]
    }
}

/// The disk size for a root filesystem that must hold `root_bytes` (the
/// blocks the root's files take) and a boot partition of `boot_size`:
/// a quarter more than the files plus 512 MiB for what the node writes
/// before it grows its root (logs, container images pulled later), at
/// least 1 GiB of root, rounded up to a MiB.
pub fn auto_disk_size(root_bytes: u64, boot_size: u64) -> u64 {
    let root = (root_bytes + root_bytes / 4 + 512 * MIB).max(1024 * MIB);
    round_up_mib(root) + boot_size + 2 * MIB
}

/// A disk size as a user writes it: a whole number of MiB or GiB (`4096M`,
/// `4G`, `4GiB`), or of bytes when that is a whole number of MiB.
pub fn parse_disk_size(text: &str) -> Result<u64, String> {
    let expected = || {
        format!("disk size {text:?}: expected a whole number of MiB or GiB (4096M, 4G) or bytes that make whole MiB")
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| expected())?;
    let scale = match unit {
        "" => 1,
        "M" | "MiB" => MIB,
        "G" | "GiB" => 1024 * MIB,
        _ => return Err(expected()),
    };
    let bytes = number.checked_mul(scale).ok_or_else(expected)?;
    if bytes == 0 || bytes % MIB != 0 {
        return Err(expected());
    }
    Ok(bytes)
}

/// `bytes` rounded up to a whole MiB.
pub fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_mib_aligned_and_the_root_ends_before_the_tail() {
        let layout = DiskLayout::plan(4096 * MIB, 256 * MIB, "s").unwrap();
        assert_eq!(layout.boot.first_lba(), 2048);
        assert_eq!(layout.boot.last_lba(), 2048 + 256 * 2048 - 1);
        assert_eq!(layout.root.first_lba(), layout.boot.last_lba() + 1);
        assert_eq!(layout.root.offset % MIB, 0);
        // The backup table takes the last 33 sectors; the tail is a MiB.
        assert_eq!(layout.root.last_lba(), layout.sectors() - 2048 - 1);
        assert_eq!(layout.boot.attributes, LEGACY_BIOS_BOOTABLE);
    }

    #[test]
    fn sizes_that_are_not_whole_mib_or_leave_no_root_are_refused() {
        assert_eq!(
            DiskLayout::plan(4096 * MIB + 1, 256 * MIB, "s"),
            Err(LayoutError::Unaligned {
                what: "disk size",
                size: 4096 * MIB + 1
            })
        );
        assert_eq!(
            DiskLayout::plan(258 * MIB, 256 * MIB, "s"),
            Err(LayoutError::TooSmall {
                disk: 258,
                boot: 256
            })
        );
    }

    #[test]
    fn disk_sizes_are_whole_mib_or_gib() {
        assert_eq!(parse_disk_size("4G"), Ok(4096 * MIB));
        assert_eq!(parse_disk_size("4GiB"), Ok(4096 * MIB));
        assert_eq!(parse_disk_size("300M"), Ok(300 * MIB));
        assert_eq!(parse_disk_size("1048576"), Ok(MIB));
        for bad in ["", "4T", "1.5G", "-1G", "0M", "1000", "G"] {
            let error = parse_disk_size(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn the_automatic_size_leaves_room_over_the_root_and_at_least_a_gib() {
        assert_eq!(auto_disk_size(0, 256 * MIB), (1024 + 256 + 2) * MIB);
        let four_gib = 4096 * MIB;
        assert_eq!(
            auto_disk_size(four_gib, 256 * MIB),
            (4096 + 1024 + 512 + 256 + 2) * MIB
        );
        assert_eq!(auto_disk_size(1, 0) % MIB, 0);
    }
}
