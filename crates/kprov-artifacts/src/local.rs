//! A local directory of artifacts with a `SHA256SUMS` list.
//!
//! Layout (flat, one version per directory):
//!
//! ```text
//! kubelet  kubectl  runc              binaries
//! cni-plugins.tgz                     the CNI plugins release tarball
//! containerd.tar.gz                   the containerd static release tarball
//! SHA256SUMS                          "<sha256>  <file>" per file, as sha256sum writes
//! ```
//!
//! Files not listed in `SHA256SUMS` are refused: nothing unverified runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{ArtifactError, ArtifactId, ArtifactName, ArtifactSource, FetchedArtifact};

/// The name of the sums list in an artifact directory.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Artifacts from a local directory.
#[derive(Debug, Clone)]
pub struct LocalDirSource {
    dir: PathBuf,
    sums: BTreeMap<String, [u8; 32]>,
}

impl LocalDirSource {
    /// Opens `dir` and reads its `SHA256SUMS`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ArtifactError> {
        let dir = dir.as_ref().to_path_buf();
        let sums_path = dir.join(SUMS_FILE);
        let text = std::fs::read_to_string(&sums_path).map_err(|source| ArtifactError::Io {
            path: sums_path.clone(),
            source,
        })?;
        let sums = parse_sums(&text).map_err(|line| ArtifactError::BadSums {
            path: sums_path,
            line,
        })?;
        Ok(Self { dir, sums })
    }

    /// The file name an artifact has in the directory.
    pub fn file_name(name: ArtifactName) -> &'static str {
        match name {
            ArtifactName::Kubelet => "kubelet",
            ArtifactName::Kubectl => "kubectl",
            ArtifactName::Kubeadm => "kubeadm",
            ArtifactName::Crictl => "crictl.tar.gz",
            ArtifactName::CniPlugins => "cni-plugins.tgz",
            ArtifactName::Containerd => "containerd.tar.gz",
            ArtifactName::Runc => "runc",
            ArtifactName::Kprov => "kprov",
            ArtifactName::Image => "image",
        }
    }
}

/// Parses `sha256sum` output; on error returns the 1-based bad line.
fn parse_sums(text: &str) -> Result<BTreeMap<String, [u8; 32]>, usize> {
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hex_sum, name) = line.split_once(char::is_whitespace).ok_or(i + 1)?;
        let name = name.trim_start().trim_start_matches('*');
        let mut sum = [0u8; 32];
        hex::decode_to_slice(hex_sum, &mut sum).map_err(|_| i + 1)?;
        if name.is_empty() || name.contains('/') {
            return Err(i + 1);
        }
        sums.insert(name.to_string(), sum);
    }
    Ok(sums)
}

impl ArtifactSource for LocalDirSource {
    fn describe(&self) -> String {
        format!("artifact directory {}", self.dir.display())
    }

    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
        let file = Self::file_name(id.name);
        let not_found = |reason: String| ArtifactError::NotFound {
            artifact: id.to_string(),
            source_name: self.describe(),
            reason,
        };
        let sha256 = *self
            .sums
            .get(file)
            .ok_or_else(|| not_found(format!("{file} is not listed in {SUMS_FILE}")))?;
        let path = self.dir.join(file);
        if !path.is_file() {
            return Err(not_found(format!("{} does not exist", path.display())));
        }
        Ok(FetchedArtifact { path, sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_core::Arch;

    fn kubelet() -> ArtifactId {
        ArtifactId {
            name: ArtifactName::Kubelet,
            version: Some("v1.20.2".into()),
            arch: Arch::Amd64,
        }
    }

    #[test]
    fn sums_lines_parse_as_sha256sum_writes_them() {
        let sums = parse_sums(&format!(
            "{}  kubelet\n{} *kubectl\n\n",
            "ab".repeat(32),
            "cd".repeat(32)
        ))
        .unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(sums["kubectl"], [0xcd; 32]);
        assert_eq!(parse_sums("xyz kubelet"), Err(1));
        assert_eq!(
            parse_sums(&format!("{}  ../kubelet", "ab".repeat(32))),
            Err(1)
        );
    }

    #[test]
    fn unlisted_and_missing_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SUMS_FILE),
            format!(
                "{}  kubectl\n{}  kubelet\n",
                "ab".repeat(32),
                "ab".repeat(32)
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("kubectl"), b"x").unwrap();
        let src = LocalDirSource::open(dir.path()).unwrap();
        let err = src.fetch(&kubelet()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "artifact kubelet v1.20.2 (amd64): not found in artifact directory {0}: {0}/kubelet does not exist",
                dir.path().display()
            )
        );
        let cni = ArtifactId {
            name: ArtifactName::CniPlugins,
            version: None,
            arch: Arch::Amd64,
        };
        assert!(src
            .fetch(&cni)
            .unwrap_err()
            .to_string()
            .ends_with("cni-plugins.tgz is not listed in SHA256SUMS"));
    }

    #[test]
    fn a_directory_without_sums_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalDirSource::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("reading {}/SHA256SUMS: ", dir.path().display())),
            "{err}"
        );
    }
}
