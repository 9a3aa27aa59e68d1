//! Making offline bundles: every artifact a node needs downloaded (through
//! the cache) and every image pulled, then written with a manifest of
//! their sums (kprov-artifacts' [`Manifest`]), as a directory or a single
//! `.tar.zst` file. Reading bundles is kprov-artifacts' `BundleSource`.

use std::path::Path;

use kprov_artifacts::bundle::{host, io, BundleError, Entry, EntryKind, Manifest, MANIFEST};
use kprov_artifacts::catalog::{self, archive_file_name, Bases, ImageRef};
use kprov_artifacts::ArtifactName;
use kprov_core::{Arch, KubernetesVersion};

use crate::download::Downloader;
use crate::image::{ImagePuller, PulledImage, RegistryOptions};

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
