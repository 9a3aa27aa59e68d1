//! The network side of kprov's artifacts, kept out of the crates that
//! plan and render (kprov-artifacts holds the catalog, the
//! `ArtifactSource` trait and the local sources; nothing there opens a
//! connection):
//!
//! - [`download`]: the `Downloader` (parallel, retried, resumed with Range,
//!   sha256-verified while streaming, cached by sha256) and
//!   `DownloadSource`, an `ArtifactSource` over upstream or a mirror;
//! - [`image`]: registry pulls into OCI image archives, every blob
//!   verified by digest;
//! - [`bundle`]: making an offline bundle from both.

pub mod bundle;
pub mod download;
pub mod image;
