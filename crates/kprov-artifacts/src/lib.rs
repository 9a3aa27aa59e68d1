//! Where the binaries kprov installs come from.
//!
//! The plan names artifacts by [`ArtifactId`]; at apply time the engine asks
//! an [`ArtifactSource`] for each one and gets a local file with the sha256
//! it must have. Installing streams the file through a [`VerifyingReader`],
//! so a file whose sum does not match is never renamed into place.
//!
//! Sources today: [`LocalDirSource`] (a directory of files with a
//! `SHA256SUMS` list) and [`WithSelf`], which adds the running kprov binary
//! itself. Verified downloads, mirrors and bundles implement the same trait;
//! container images are pulled from registries into OCI archives
//! ([`image`]) that bundles carry.

pub mod bundle;
pub mod catalog;
mod local;
mod verify;

use std::fmt;
use std::path::PathBuf;

pub use local::{LocalDirSource, SUMS_FILE};
pub use verify::{sha256_of_file, VerifyingReader};

use kprov_core::Arch;

/// The artifacts a node can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactName {
    /// The kubelet binary.
    Kubelet,
    /// The kubectl binary.
    Kubectl,
    /// The kubeadm binary (optional extra).
    Kubeadm,
    /// The crictl release tarball (optional extra).
    Crictl,
    /// The CNI plugins release tarball (`./bridge`, `./host-local`, ...).
    CniPlugins,
    /// The containerd static release tarball (`bin/containerd`, ...).
    Containerd,
    /// The runc static binary.
    Runc,
    /// kprov itself, installed for the health checker.
    Kprov,
    /// A container image as an OCI archive; the [`ArtifactId`]'s version
    /// is the image's full reference (`k8s.gcr.io/pause:3.2`).
    Image,
}

impl ArtifactName {
    /// The short name used in plans, errors and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubelet => "kubelet",
            Self::Kubectl => "kubectl",
            Self::Kubeadm => "kubeadm",
            Self::Crictl => "crictl",
            Self::CniPlugins => "cni-plugins",
            Self::Containerd => "containerd",
            Self::Runc => "runc",
            Self::Kprov => "kprov",
            Self::Image => "image",
        }
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One artifact for one version and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactId {
    /// Which artifact.
    pub name: ArtifactName,
    /// Its release version (`v1.20.2`), or `None` for the source's default;
    /// for an [`ArtifactName::Image`], the image's full reference.
    pub version: Option<String>,
    /// The node architecture.
    pub arch: Arch,
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(v) = &self.version {
            write!(f, " {v}")?;
        }
        write!(f, " ({})", self.arch)
    }
}

/// A local file standing for an artifact, with the sha256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedArtifact {
    /// Path of the file on the machine kprov runs on.
    pub path: PathBuf,
    /// Its expected SHA-256.
    pub sha256: [u8; 32],
}

impl FetchedArtifact {
    /// Hashes the whole file and checks it against the expected sum.
    pub fn verify(&self, artifact: &ArtifactId) -> Result<(), ArtifactError> {
        let actual = verify::sha256_of_file(&self.path).map_err(|source| ArtifactError::Io {
            path: self.path.clone(),
            source,
        })?;
        if actual != self.sha256 {
            return Err(ArtifactError::ChecksumMismatch {
                artifact: artifact.to_string(),
                location: self.path.display().to_string(),
                expected: hex::encode(self.sha256),
                actual: hex::encode(actual),
            });
        }
        Ok(())
    }

    /// Opens the file, hashes all of it through that one handle, checks
    /// the sum and returns the handle rewound to the start: what is read
    /// from it next is what was verified, whatever happens to the path in
    /// the meantime (a swap after verification installs nothing). For
    /// formats a reader may stop reading before their end (tar), where a
    /// [`VerifyingReader`] would miss trailing bytes.
    pub fn open_checked(&self, artifact: &ArtifactId) -> Result<std::fs::File, ArtifactError> {
        use std::io::{Seek, SeekFrom};
        let io = |source| ArtifactError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        std::io::copy(&mut file, &mut hasher).map_err(io)?;
        let actual: [u8; 32] = sha2::Digest::finalize(hasher).into();
        if actual != self.sha256 {
            return Err(ArtifactError::ChecksumMismatch {
                artifact: artifact.to_string(),
                location: self.path.display().to_string(),
                expected: hex::encode(self.sha256),
                actual: hex::encode(actual),
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        kprov_host::failpoint::hit("artifact.verified");
        Ok(file)
    }

    /// Opens the file for reading through a [`VerifyingReader`].
    pub fn open_verified(&self) -> Result<VerifyingReader<std::fs::File>, ArtifactError> {
        let file = std::fs::File::open(&self.path).map_err(|source| ArtifactError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(VerifyingReader::new(
            file,
            self.sha256,
            self.path.display().to_string(),
        ))
    }
}

/// Why an artifact could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The source has no such artifact.
    #[error("artifact {artifact}: not found in {source_name}: {reason}")]
    NotFound {
        /// The artifact asked for.
        artifact: String,
        /// The source that was asked.
        source_name: String,
        /// What is missing.
        reason: String,
    },
    /// The file's contents do not match their recorded sum.
    #[error(
        "artifact {artifact}: sha256 mismatch for {location}: expected {expected}, got {actual}"
    )]
    ChecksumMismatch {
        /// The artifact.
        artifact: String,
        /// The file or URL.
        location: String,
        /// The expected sum (hex).
        expected: String,
        /// The actual sum (hex).
        actual: String,
    },
    /// A download failed.
    #[error("artifact {artifact}: {source}")]
    Download {
        /// The artifact.
        artifact: String,
        /// What went wrong (kprov-fetch's download error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The catalog cannot place the artifact.
    #[error("artifact {artifact}: {source}")]
    Catalog {
        /// The artifact.
        artifact: String,
        /// What is wrong.
        source: catalog::CatalogError,
    },
    /// A bundle that is incomplete, altered or unreadable.
    #[error("{0}")]
    Bundle(#[from] bundle::BundleError),
    /// A sums list that does not parse.
    #[error("{path}: line {line}: expected \"<64 hex digits>  <file name>\"")]
    BadSums {
        /// The sums file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Something that can provide artifacts as local, checksummed files.
pub trait ArtifactSource {
    /// A description for messages, e.g. `artifact directory /srv/artifacts`.
    fn describe(&self) -> String;

    /// The SHA-256 `id` must have. Cheap: enough to tell whether an
    /// installed file is current without fetching the artifact.
    fn checksum(&self, id: &ArtifactId) -> Result<[u8; 32], ArtifactError> {
        Ok(self.fetch(id)?.sha256)
    }

    /// Makes the artifacts available locally, all at once where the source
    /// can work in parallel (downloads). The default does nothing.
    fn prefetch(&self, ids: &[ArtifactId]) -> Result<(), ArtifactError> {
        let _ = ids;
        Ok(())
    }

    /// Provides `id` as a local file with its expected sum.
    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError>;
}

/// A source with no artifacts, for plans that install none (the kubelet's
/// configuration): asking it for one is an error that says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArtifacts;

impl ArtifactSource for NoArtifacts {
    fn describe(&self) -> String {
        "no artifact source".into()
    }

    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
        Err(ArtifactError::NotFound {
            artifact: id.to_string(),
            source_name: self.describe(),
            reason: "this step installs no artifacts".into(),
        })
    }
}

macro_rules! forward_source {
    ($($ty:ty),*) => {$(
        impl<T: ArtifactSource + ?Sized> ArtifactSource for $ty {
            fn describe(&self) -> String {
                (**self).describe()
            }

            fn checksum(&self, id: &ArtifactId) -> Result<[u8; 32], ArtifactError> {
                (**self).checksum(id)
            }

            fn prefetch(&self, ids: &[ArtifactId]) -> Result<(), ArtifactError> {
                (**self).prefetch(ids)
            }

            fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
                (**self).fetch(id)
            }
        }
    )*};
}
forward_source!(Box<T>, &T);

/// Adds the running kprov executable (as [`ArtifactName::Kprov`]) to another
/// source.
pub struct WithSelf<S> {
    inner: S,
    current: std::sync::OnceLock<Result<FetchedArtifact, String>>,
}

impl<S: ArtifactSource> WithSelf<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            current: std::sync::OnceLock::new(),
        }
    }
}

impl<S: ArtifactSource> ArtifactSource for WithSelf<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn checksum(&self, id: &ArtifactId) -> Result<[u8; 32], ArtifactError> {
        if id.name != ArtifactName::Kprov {
            return self.inner.checksum(id);
        }
        Ok(self.fetch(id)?.sha256)
    }

    fn prefetch(&self, ids: &[ArtifactId]) -> Result<(), ArtifactError> {
        let others: Vec<ArtifactId> = ids
            .iter()
            .filter(|id| id.name != ArtifactName::Kprov)
            .cloned()
            .collect();
        self.inner.prefetch(&others)
    }

    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
        if id.name != ArtifactName::Kprov {
            return self.inner.fetch(id);
        }
        let result = self.current.get_or_init(|| {
            let path = std::env::current_exe().map_err(|e| e.to_string())?;
            let sha256 = verify::sha256_of_file(&path).map_err(|e| e.to_string())?;
            Ok(FetchedArtifact { path, sha256 })
        });
        result.clone().map_err(|reason| ArtifactError::NotFound {
            artifact: id.to_string(),
            source_name: "the running executable".into(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn kubelet() -> ArtifactId {
        ArtifactId {
            name: ArtifactName::Kubelet,
            version: Some("v1.20.2".into()),
            arch: Arch::Amd64,
        }
    }

    #[test]
    fn a_checked_handle_reads_what_was_verified_even_after_the_path_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet");
        std::fs::write(&path, b"good").unwrap();
        let fetched = FetchedArtifact {
            path: path.clone(),
            sha256: <sha2::Sha256 as sha2::Digest>::digest(b"good").into(),
        };
        let mut file = fetched.open_checked(&kubelet()).unwrap();
        // The path now names other bytes; the handle does not.
        std::fs::write(dir.path().join("other"), b"evil").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        let mut read = String::new();
        file.read_to_string(&mut read).unwrap();
        assert_eq!(read, "good");

        let err = fetched.open_checked(&kubelet()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "artifact kubelet v1.20.2 (amd64): sha256 mismatch for {}: expected ",
                path.display()
            )),
            "{err}"
        );
    }
}
