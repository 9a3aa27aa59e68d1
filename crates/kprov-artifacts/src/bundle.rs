//! Offline bundles: every artifact a node needs, with a manifest of their
//! sums, as a directory or a single `.tar.zst` file.
//!
//! ```text
//! manifest.json            written last: a bundle without it is incomplete
//! bin/kubelet ...          binaries
//! archives/cni-plugins-linux-amd64-v1.1.1.tgz ...
//! images/k8s.gcr.io_pause_3.2.tar ...   OCI image archives (kind "image")
//! ```
//!
//! A bundle source opens no network connection: it only reads the bundle.
//! Making one (downloads, registry pulls) is kprov-fetch's `bundle`.

use std::path::{Component, Path, PathBuf};

use kprov_core::Arch;
use serde::{Deserialize, Serialize};

use crate::{ArtifactError, ArtifactId, ArtifactName, ArtifactSource, FetchedArtifact};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub format: u32,
    /// The Kubernetes release the bundle is for.
    pub kubernetes_version: String,
    /// The node architecture.
    pub arch: Arch,
    /// True when it holds what a control-plane node needs.
    pub control_plane: bool,
    /// The files.
    pub artifacts: Vec<Entry>,
}

/// How an entry is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A single executable.
    Binary,
    /// A release tarball.
    Archive,
    /// An OCI image archive.
    Image,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Artifact name (`kubelet`, `cni-plugins`, or an image reference).
    pub name: String,
    /// How it is used.
    pub kind: EntryKind,
    /// Its version.
    pub version: String,
    /// Its architecture.
    pub arch: Arch,
    /// Path inside the bundle.
    pub path: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Images only: the full reference the image is imported under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Images only: the digest of the image's manifest (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// Why a bundle is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// manifest.json is missing or does not parse.
    #[error("bundle {bundle}: {MANIFEST} {reason}")]
    Manifest {
        /// The bundle.
        bundle: String,
        /// What is wrong.
        reason: String,
    },
    /// A file listed in the manifest is missing.
    #[error("bundle {bundle}: artifact {artifact}: {path} is missing")]
    Missing {
        /// The bundle.
        bundle: String,
        /// The artifact.
        artifact: String,
        /// Its path in the bundle.
        path: String,
    },
    /// A file whose size or sum is not the manifest's.
    #[error("bundle {bundle}: artifact {artifact}: {path} was altered: {mismatch}")]
    Altered {
        /// The bundle.
        bundle: String,
        /// The artifact.
        artifact: String,
        /// Its path in the bundle.
        path: String,
        /// Expected and actual sums and sizes.
        mismatch: String,
    },
    /// The bundle has no such artifact.
    #[error("bundle {bundle} has no artifact {artifact} (it holds: {holds})")]
    NoSuchArtifact {
        /// The bundle.
        bundle: String,
        /// The artifact asked for.
        artifact: String,
        /// What it holds.
        holds: String,
    },
    /// Any file trouble.
    #[error("bundle {bundle}: {action} {path}: {source}")]
    Io {
        /// The bundle.
        bundle: String,
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A download for the bundle failed.
    #[error("{0}")]
    Fetch(String),
}

/// An I/O error of `bundle`, at `path`.
pub fn io(
    bundle: &Path,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> BundleError {
    let bundle = bundle.display().to_string();
    let path = path.to_path_buf();
    move |source| BundleError::Io {
        bundle,
        action,
        path,
        source,
    }
}

/// A kprov-host error of `bundle`.
pub fn host(bundle: &Path) -> impl FnOnce(kprov_host::HostError) -> BundleError {
    let bundle = bundle.display().to_string();
    move |e| match e {
        kprov_host::HostError::Io {
            action,
            path,
            source,
        } => BundleError::Io {
            bundle,
            action,
            path,
            source,
        },
        other => BundleError::Io {
            bundle,
            action: "writing",
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// An opened bundle; a `.tar.zst` is unpacked into a private temporary
/// directory first.
pub struct BundleSource {
    dir: PathBuf,
    shown: String,
    manifest: Manifest,
    _unpacked: Option<tempfile::TempDir>,
}

fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl BundleSource {
    /// Opens a bundle directory or `.tar.zst` file and reads its manifest.
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        let shown = path.display().to_string();
        let (dir, unpacked) = if path.is_file() {
            let tmp = tempfile::Builder::new()
                .prefix("kprov-bundle-")
                .tempdir()
                .map_err(io(
                    path,
                    "creating a directory to unpack",
                    Path::new("/tmp"),
                ))?;
            let file = std::fs::File::open(path).map_err(io(path, "opening", path))?;
            let decoder = zstd::Decoder::new(file).map_err(io(path, "decompressing", path))?;
            tar::Archive::new(decoder)
                .unpack(tmp.path())
                .map_err(io(path, "unpacking", path))?;
            (tmp.path().to_path_buf(), Some(tmp))
        } else {
            (path.to_path_buf(), None)
        };
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read(&manifest_path).map_err(|e| BundleError::Manifest {
            bundle: shown.clone(),
            reason: format!("cannot be read: {e}"),
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| BundleError::Manifest {
                bundle: shown.clone(),
                reason: format!("does not parse: {e}"),
            })?;
        if let Some(bad) = manifest.artifacts.iter().find(|e| !safe_relative(&e.path)) {
            return Err(BundleError::Manifest {
                bundle: shown,
                reason: format!("lists a path outside the bundle: {:?}", bad.path),
            });
        }
        // Image references end up in unit files and containerd's store:
        // only valid references are accepted.
        for e in manifest
            .artifacts
            .iter()
            .filter(|e| e.kind == EntryKind::Image)
        {
            let reference = e.reference.as_deref().unwrap_or_default();
            if let Err(err) = reference.parse::<kprov_core::ImageRef>() {
                return Err(BundleError::Manifest {
                    bundle: shown,
                    reason: format!("lists an image reference {reference:?}: {err}"),
                });
            }
        }
        Ok(Self {
            dir,
            shown,
            manifest,
            _unpacked: unpacked,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The references of the images the bundle holds.
    pub fn images(&self) -> Vec<String> {
        self.manifest
            .artifacts
            .iter()
            .filter(|e| e.kind == EntryKind::Image)
            .filter_map(|e| e.reference.clone())
            .collect()
    }

    /// Re-checks every file's size and sha256.
    pub fn verify(&self) -> Result<(), BundleError> {
        for e in &self.manifest.artifacts {
            self.verify_entry(e)?;
        }
        Ok(())
    }

    fn verify_entry(&self, e: &Entry) -> Result<PathBuf, BundleError> {
        let path = self.dir.join(&e.path);
        let meta = std::fs::metadata(&path).map_err(|_| BundleError::Missing {
            bundle: self.shown.clone(),
            artifact: e.name.clone(),
            path: e.path.clone(),
        })?;
        let actual = crate::verify::sha256_of_file(&path).map_err(io(
            Path::new(&self.shown),
            "reading",
            &path,
        ))?;
        if hex::encode(actual) != e.sha256 || meta.len() != e.size {
            return Err(BundleError::Altered {
                bundle: self.shown.clone(),
                artifact: e.name.clone(),
                path: e.path.clone(),
                mismatch: format!(
                    "expected sha256 {} ({} bytes), got {} ({} bytes)",
                    e.sha256,
                    e.size,
                    hex::encode(actual),
                    meta.len()
                ),
            });
        }
        Ok(path)
    }

    fn entry(&self, id: &ArtifactId) -> Result<&Entry, BundleError> {
        self.manifest
            .artifacts
            .iter()
            .find(|e| {
                if id.name == ArtifactName::Image {
                    return e.kind == EntryKind::Image
                        && e.arch == id.arch
                        && e.reference.is_some()
                        && e.reference == id.version;
                }
                e.name == id.name.as_str()
                    && e.arch == id.arch
                    && id.version.as_ref().is_none_or(|v| *v == e.version)
            })
            .ok_or_else(|| BundleError::NoSuchArtifact {
                bundle: self.shown.clone(),
                artifact: id.to_string(),
                holds: self
                    .manifest
                    .artifacts
                    .iter()
                    .map(|e| format!("{} {}", e.name, e.version))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn parse_sum(e: &Entry, bundle: &str) -> Result<[u8; 32], BundleError> {
    let mut sum = [0u8; 32];
    hex::decode_to_slice(&e.sha256, &mut sum).map_err(|_| BundleError::Manifest {
        bundle: bundle.to_string(),
        reason: format!("has a malformed sha256 for {}: {:?}", e.name, e.sha256),
    })?;
    Ok(sum)
}

impl ArtifactSource for BundleSource {
    fn describe(&self) -> String {
        format!("bundle {}", self.shown)
    }

    fn checksum(&self, id: &ArtifactId) -> Result<[u8; 32], ArtifactError> {
        Ok(parse_sum(self.entry(id)?, &self.shown)?)
    }

    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
        let e = self.entry(id)?;
        let path = self.dir.join(&e.path);
        if !path.is_file() {
            return Err(BundleError::Missing {
                bundle: self.shown.clone(),
                artifact: e.name.clone(),
                path: e.path.clone(),
            }
            .into());
        }
        Ok(FetchedArtifact {
            path,
            sha256: parse_sum(e, &self.shown)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_the_bundle() {
        for (p, ok) in [
            ("bin/kubelet", true),
            ("../etc/passwd", false),
            ("/bin/kubelet", false),
            ("", false),
            ("bin/../x", false),
        ] {
            assert_eq!(safe_relative(p), ok, "{p}");
        }
    }
}
