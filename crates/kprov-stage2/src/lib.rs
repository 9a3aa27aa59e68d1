//! Stage2's disk writer: what a machine booted into the stage2 initrd does
//! to install itself. A zstd-compressed disk image is streamed over HTTP
//! onto the disk, decompressed and checked (sha256 of the compressed and
//! of the raw image, against the image's manifest) as it streams, and
//! resumed with an HTTP Range request after a dropped connection.
//!
//! The disk is never left bootable but wrong: its first MiB (partition
//! table and boot code) is zeroed before anything else is written, held
//! back while the rest streams, and written last, once every sum matches;
//! on any failure it is zeroed again.
//!
//! - [`manifest`]: the image's manifest (sizes and sums), pure, shared
//!   with `kprov image build` (kprov-image), which writes it;
//! - [`disk`]: the writer that holds back the first MiB, pure over any
//!   `Write + Seek`;
//! - [`frame`]: whether the image's zstd frame carries a checksum (then
//!   the raw bytes need no sha256 of their own);
//! - [`pipeline`]: that writer and the raw sha256 on threads of their
//!   own, so that decompressing, hashing and writing overlap;
//! - [`install`]: the thin side: HTTP, the disk device, fsync.

pub mod cmdline;
pub mod dhcp;
pub mod disk;
pub mod frame;
pub mod init;
pub mod install;
pub mod net;
pub mod netlink;
pub mod pipeline;
pub use kprov_image::manifest;
