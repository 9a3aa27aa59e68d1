//! Reading the facts a plan needs from a target root.

use std::path::Path;

use kprov_host::{fs, HostError, Root};

use crate::os::{self, OsError, OsFacts};

/// Why facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// Reading the root failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The OS is unknown or unsupported.
    #[error(transparent)]
    Os(#[from] OsError),
}

/// Detects the OS of the node at `root` from its os-release file
/// (`/etc/os-release`, falling back to `/usr/lib/os-release`).
pub fn detect_os(root: &Root) -> Result<OsFacts, FactsError> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(bytes) = fs::read(root, Path::new(path))? {
            let shown = root.base().join(path.trim_start_matches('/'));
            return Ok(os::detect(
                &String::from_utf8_lossy(&bytes),
                &shown.display().to_string(),
            )?);
        }
    }
    Err(OsError::NoOsRelease {
        root: root
            .base()
            .display()
            .to_string()
            .trim_end_matches('/')
            .to_string(),
    }
    .into())
}
