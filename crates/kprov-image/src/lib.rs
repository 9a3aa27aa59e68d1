//! Bootable disk images for bare metal: what `kprov image build` makes
//! from a prebaked root, and what stage2 streams onto a disk.
//!
//! An image is a raw GPT disk: a FAT boot partition with SYSLINUX (BIOS
//! machines; its MBR code finds the partition marked legacy-BIOS-bootable),
//! the root's kernel and initrd, and an ext4 root partition found by its
//! GUID. It is built from plain files (`mkfs.vfat` and mtools, `mkfs.ext4
//! -d`), never a loop device or a mount, and travels zstd-compressed with a
//! manifest of sizes and sums.
//!
//! - [`guid`], [`layout`], [`gpt`], [`bootloader`], [`manifest`],
//!   [`nocloud`]: pure: where things go, the bytes of the partition tables
//!   and of the seed slot;
//! - [`build`]: the thin side: the programs that make the filesystems, and
//!   the stream through sha256 and zstd into the image.

pub mod bootloader;
pub mod build;
pub mod gpt;
pub mod guid;
pub mod initrd;
pub mod initrd_build;
pub mod layout;
pub mod manifest;
pub mod nocloud;
