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

use std::path::{Component, Path, PathBuf};

use kprov_core::{Arch, KubernetesVersion};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Bases, ImageRef};
use crate::download::Downloader;
use crate::image::{archive_file_name, ImagePuller, PulledImage, RegistryOptions};
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

/// What to put in a bundle.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The Kubernetes release.
    pub kubernetes_version: KubernetesVersion,
    /// The node architecture.
    pub arch: Arch,
    /// Add what a control-plane node needs.
    pub control_plane: bool,
    /// Add containerd and runc static releases (Flatcar, or
    /// `--runtime-source upstream`).
    pub upstream_runtime: bool,
    /// Optional extras: kubeadm, crictl.
    pub extras: Vec<ArtifactName>,
    /// Container images to pull (their canonical references).
    pub images: Vec<ImageRef>,
    /// Where and how to pull them.
    pub registry: RegistryOptions,
}

impl BundleSpec {
    /// The binaries and archives this bundle holds.
    pub fn names(&self) -> Vec<ArtifactName> {
        let mut names = vec![
            ArtifactName::Kubelet,
            ArtifactName::Kubectl,
            ArtifactName::CniPlugins,
        ];
        if self.upstream_runtime {
            names.extend([ArtifactName::Containerd, ArtifactName::Runc]);
        }
        for e in &self.extras {
            if !names.contains(e) {
                names.push(*e);
            }
        }
        names
    }
}

fn kind_of(name: ArtifactName) -> EntryKind {
    match name {
        ArtifactName::CniPlugins | ArtifactName::Containerd | ArtifactName::Crictl => {
            EntryKind::Archive
        }
        _ => EntryKind::Binary,
    }
}

fn io(
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

fn host(bundle: &Path) -> impl FnOnce(kprov_host::HostError) -> BundleError {
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

/// Downloads (through the cache) everything `spec` asks for and writes the
/// bundle to `output`: a directory, or a single file when the name ends in
/// `.tar.zst`. The manifest is written last, so an interrupted create
/// leaves no bundle that looks complete.
pub async fn create(
    output: &Path,
    spec: &BundleSpec,
    bases: &Bases,
    downloader: &Downloader,
) -> Result<Manifest, BundleError> {
    let names = spec.names();
    let downloads: Vec<catalog::Download> = names
        .iter()
        .map(|n| catalog::download(*n, &spec.kubernetes_version, spec.arch, bases))
        .collect::<Result<_, _>>()
        .map_err(|e| BundleError::Fetch(e.to_string()))?;
    let fetched = downloader.fetch_all(&downloads).await;
    // Every download must have succeeded before images are pulled or
    // anything is written.
    let fetched: Vec<_> = downloads
        .iter()
        .zip(fetched)
        .map(|(d, r)| {
            r.map_err(|e| BundleError::Fetch(format!("artifact {} {}: {e}", d.name, d.version)))
        })
        .collect::<Result<_, _>>()?;

    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let pulls = tempfile::Builder::new()
        .prefix(".kprov-images-")
        .tempdir_in(parent)
        .map_err(io(
            output,
            "creating a directory for image pulls in",
            parent,
        ))?;
    let pulled = pull_images(&spec.images, spec.arch, &spec.registry, pulls.path()).await?;

    let single_file = output.to_string_lossy().ends_with(".tar.zst");
    let staging = if single_file {
        tempfile::Builder::new()
            .prefix(".kprov-bundle-")
            .tempdir_in(parent)
            .map_err(io(output, "creating staging directory in", parent))?
            .keep()
    } else {
        output.to_path_buf()
    };
    let mut artifacts = Vec::new();
    for (d, f) in downloads.iter().zip(fetched) {
        let kind = kind_of(d.name);
        let rel = format!(
            "{}/{}",
            if kind == EntryKind::Binary {
                "bin"
            } else {
                "archives"
            },
            d.file_name
        );
        let dest = staging.join(&rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io(output, "creating", dir))?;
        }
        let _ = std::fs::remove_file(&dest);
        if std::fs::hard_link(&f.path, &dest).is_err() {
            use std::os::unix::fs::PermissionsExt;
            let mut from = std::fs::File::open(&f.path).map_err(io(output, "reading", &f.path))?;
            let mode = from
                .metadata()
                .map_err(io(output, "reading", &f.path))?
                .permissions()
                .mode();
            let mut to = kprov_host::fs::AtomicFile::create(&dest).map_err(host(output))?;
            to.copy_from(&mut from).map_err(host(output))?;
            to.commit(mode & 0o7777).map_err(host(output))?;
        }
        let size = std::fs::metadata(&dest)
            .map_err(io(output, "reading", &dest))?
            .len();
        artifacts.push(Entry {
            name: d.name.to_string(),
            kind,
            version: d.version.clone(),
            arch: spec.arch,
            path: rel,
            sha256: hex::encode(f.sha256),
            size,
            reference: None,
            manifest_digest: None,
        });
    }
    for p in pulled {
        let rel = format!("images/{}", archive_file_name(&p.image));
        let dest = staging.join(&rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io(output, "creating", dir))?;
        }
        std::fs::rename(&p.archive, &dest).map_err(io(output, "moving into", &dest))?;
        artifacts.push(Entry {
            name: p.image.to_string(),
            kind: EntryKind::Image,
            version: p.image.tag.clone(),
            arch: spec.arch,
            path: rel,
            sha256: hex::encode(p.sha256),
            size: p.size,
            reference: Some(p.image.to_string()),
            manifest_digest: Some(p.manifest_digest),
        });
    }
    let manifest = Manifest {
        format: 1,
        kubernetes_version: spec.kubernetes_version.to_string(),
        arch: spec.arch,
        control_plane: spec.control_plane,
        artifacts,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest {
        bundle: output.display().to_string(),
        reason: e.to_string(),
    })?;
    let manifest_path = staging.join(MANIFEST);
    kprov_host::fs::write_file_atomic(&manifest_path, &text, 0o644).map_err(host(output))?;

    if single_file {
        let result = pack(&staging, output);
        let _ = std::fs::remove_dir_all(&staging);
        result?;
    }
    Ok(manifest)
}

/// Pulls `images` (two at a time) into archives under `work`; the first
/// failure is the error.
async fn pull_images(
    images: &[ImageRef],
    arch: Arch,
    registry: &RegistryOptions,
    work: &Path,
) -> Result<Vec<PulledImage>, BundleError> {
    use futures_util::StreamExt;
    let puller = ImagePuller::new(registry.clone());
    let puller = &puller;
    let results: Vec<_> = futures_util::stream::iter(images.iter().enumerate())
        .map(|(i, image)| async move {
            let scratch = work.join(format!("pull-{i}"));
            let archive = work.join(archive_file_name(image));
            let result = puller.pull(image, arch, &scratch, &archive).await;
            let _ = std::fs::remove_dir_all(&scratch);
            result
        })
        .buffered(2)
        .collect()
        .await;
    results
        .into_iter()
        .map(|r| r.map_err(|e| BundleError::Fetch(e.to_string())))
        .collect()
}

/// Packs a bundle directory into `output` (.tar.zst) with kprov-host's
/// atomic write.
fn pack(dir: &Path, output: &Path) -> Result<(), BundleError> {
    let mut file = kprov_host::fs::AtomicFile::create(output).map_err(host(output))?;
    let temp = file.temp_path().to_path_buf();
    let encoder = zstd::Encoder::new(&mut file, 3).map_err(io(output, "compressing", &temp))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(io(output, "archiving", dir))?;
    let encoder = builder.into_inner().map_err(io(output, "archiving", dir))?;
    encoder.finish().map_err(io(output, "compressing", &temp))?;
    file.commit(0o644).map_err(host(output))
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
