//! Container images: pulled from an OCI registry (Docker Registry HTTP API
//! v2 / OCI distribution, through `oci-client`) into OCI image archives that
//! `ctr -n k8s.io images import` accepts.
//!
//! An archive is a tar of an OCI image layout:
//!
//! ```text
//! oci-layout
//! index.json          one manifest, annotated with the image's canonical name
//! blobs/sha256/<hex>  the manifest, its config and its layers
//! ```
//!
//! Every blob is checked against its digest (oci-client checks while
//! streaming; we hash the written file again), the manifest against the
//! digest the registry announced, and an index's platform manifest against
//! the index entry. A registry mirror (`--registry-mirror`) changes where an
//! image is pulled from, never the name it is imported under.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kprov_core::Arch;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{self as media, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use kprov_artifacts::catalog::ImageRef;

/// containerd's annotation for the full image name; `ctr images import`
/// names the image after it.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for the reference (the tag) within a layout.
pub const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Where and how to pull images.
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// Pull every image from this registry host (`HOST[:PORT]`) instead of
    /// its own, under the same repository path and tag.
    pub mirror: Option<String>,
    /// Speak plain HTTP to the registry pulled from (a loopback or
    /// otherwise trusted registry without TLS).
    pub insecure: bool,
    /// HTTP basic credentials; anonymous when `None`.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for RegistryOptions {
    // Keeps the password out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("mirror", &self.mirror)
            .field("insecure", &self.insecure)
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Why an image could not be pulled.
#[derive(Debug, thiserror::Error)]
#[error("image {image} (pulled from {pulled_from}): {reason}")]
pub struct ImageError {
    /// The image's canonical reference.
    pub image: String,
    /// The reference actually pulled (a mirror's, if any).
    pub pulled_from: String,
    /// What went wrong.
    pub reason: String,
}

/// An image written as an OCI archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The canonical reference it is imported under.
    pub image: ImageRef,
    /// The digest of its (platform) manifest, `sha256:<hex>`.
    pub manifest_digest: String,
    /// The archive.
    pub archive: PathBuf,
    /// SHA-256 of the archive.
    pub sha256: [u8; 32],
    /// Size of the archive in bytes.
    pub size: u64,
}

/// The minimal view of a manifest or index kprov needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestView {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: Option<String>,
    digest: String,
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

/// The index.json of an archive holding one image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<LayoutEntry>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutEntry {
    media_type: String,
    digest: String,
    size: u64,
    annotations: BTreeMap<&'static str, String>,
}

const ACCEPTED: &[&str] = &[
    media::OCI_IMAGE_MEDIA_TYPE,
    media::IMAGE_MANIFEST_MEDIA_TYPE,
    media::OCI_IMAGE_INDEX_MEDIA_TYPE,
    media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

fn is_index(view: &ManifestView, media_type: &str) -> bool {
    media_type == media::OCI_IMAGE_INDEX_MEDIA_TYPE
        || media_type == media::IMAGE_MANIFEST_LIST_MEDIA_TYPE
        || (view.config.is_none() && !view.manifests.is_empty())
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Pulls images into OCI archives.
pub struct ImagePuller {
    client: Client,
    options: RegistryOptions,
}

impl ImagePuller {
    /// A puller with `options`.
    pub fn new(options: RegistryOptions) -> Self {
        let protocol = match (&options.mirror, options.insecure) {
            (_, false) => ClientProtocol::Https,
            (Some(m), true) => ClientProtocol::HttpsExcept(vec![m.clone()]),
            (None, true) => ClientProtocol::Http,
        };
        // oci-client builds its own reqwest client: the workspace's
        // reqwest `hickory-dns` feature makes it resolve names in Rust
        // (/etc/hosts, then /etc/resolv.conf, which it requires), never
        // through glibc's NSS.
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            platform_resolver: None,
            ..Default::default()
        });
        Self { client, options }
    }

    /// The reference `image` is pulled from (the mirror's host, if any).
    pub fn pull_reference(&self, image: &ImageRef) -> ImageRef {
        ImageRef {
            registry: self
                .options
                .mirror
                .clone()
                .unwrap_or_else(|| image.registry.clone()),
            ..image.clone()
        }
    }

    fn auth(&self) -> RegistryAuth {
        match &self.options.basic_auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pulls `image` for `arch` and writes it as an OCI archive to
    /// `archive` (via a `.partial` file renamed into place). `work` is a
    /// scratch directory for the blobs.
    pub async fn pull(
        &self,
        image: &ImageRef,
        arch: Arch,
        work: &Path,
        archive: &Path,
    ) -> Result<PulledImage, ImageError> {
        let from = self.pull_reference(image);
        let fail = |reason: String| ImageError {
            image: image.to_string(),
            pulled_from: from.to_string(),
            reason,
        };
        let reference = Reference::with_tag(
            from.registry.clone(),
            from.repository.clone(),
            from.tag.clone(),
        );
        let auth = self.auth();
        self.client
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| fail(format!("authenticating: {e}")))?;

        let (mut bytes, announced) = self
            .client
            .pull_manifest_raw(&reference, &auth, ACCEPTED)
            .await
            .map_err(|e| fail(format!("fetching the manifest: {e}")))?;
        let mut digest = sha256_digest(&bytes);
        if announced != digest {
            return Err(fail(format!(
                "manifest digest mismatch: the registry announced {announced}, the manifest hashes to {digest}"
            )));
        }
        let mut view: ManifestView = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("the manifest does not parse: {e}")))?;
        let mut media_type = view.media_type.clone().unwrap_or_default();

        if is_index(&view, &media_type) {
            let entry = view
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch.as_str())
                })
                .ok_or_else(|| fail(format!("the image index has no linux/{arch} manifest")))?;
            let wanted = entry.digest.clone();
            let entry_type = entry.media_type.clone();
            let by_digest = reference.clone_with_digest(wanted.clone());
            let (platform_bytes, _) = self
                .client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                .await
                .map_err(|e| fail(format!("fetching the linux/{arch} manifest {wanted}: {e}")))?;
            let actual = sha256_digest(&platform_bytes);
            if actual != wanted {
                return Err(fail(format!(
                    "manifest digest mismatch: the index lists {wanted}, the manifest hashes to {actual}"
                )));
            }
            bytes = platform_bytes;
            digest = actual;
            view = serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("the linux/{arch} manifest does not parse: {e}")))?;
            media_type = view.media_type.clone().or(entry_type).unwrap_or_default();
        }
        if media_type.is_empty() {
            media_type = media::OCI_IMAGE_MEDIA_TYPE.into();
        }
        let config = view
            .config
            .clone()
            .ok_or_else(|| fail("the manifest has no config".into()))?;

        let layout = work.join("layout");
        let blobs = layout.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .map_err(|e| fail(format!("creating {}: {e}", blobs.display())))?;
        let blob_path = |digest: &str| -> Result<PathBuf, ImageError> {
            let hex = digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| fail(format!("unsupported digest {digest:?}")))?;
            Ok(blobs.join(hex))
        };
        std::fs::write(blob_path(&digest)?, &bytes)
            .map_err(|e| fail(format!("writing the manifest: {e}")))?;

        for d in std::iter::once(&config).chain(&view.layers) {
            let path = blob_path(&d.digest)?;
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| fail(format!("creating {}: {e}", path.display())))?;
            let descriptor = OciDescriptor {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
                size: d.size,
                ..Default::default()
            };
            let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
            self.client
                .pull_blob(&reference, &descriptor, &mut writer)
                .await
                .map_err(|e| fail(blob_error(&d.digest, &e)))?;
            tokio::io::AsyncWriteExt::flush(&mut writer)
                .await
                .map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
            // Checked again on disk: what is archived is what was verified.
            let (actual, size) =
                hash_file(&path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            if actual != d.digest || i64::try_from(size).ok() != Some(d.size) {
                return Err(fail(format!(
                    "blob digest mismatch: expected {} ({} bytes), got {actual} ({size} bytes)",
                    d.digest, d.size
                )));
            }
        }

        let index = LayoutIndex {
            schema_version: 2,
            media_type: media::OCI_IMAGE_INDEX_MEDIA_TYPE,
            manifests: vec![LayoutEntry {
                media_type,
                digest: digest.clone(),
                size: bytes.len() as u64,
                annotations: BTreeMap::from([
                    (CONTAINERD_NAME_ANNOTATION, image.to_string()),
                    (OCI_REF_NAME_ANNOTATION, image.tag.clone()),
                ]),
            }],
        };
        let index = serde_json::to_vec(&index).map_err(|e| fail(e.to_string()))?;
        std::fs::write(layout.join("index.json"), index)
            .and_then(|()| {
                std::fs::write(
                    layout.join("oci-layout"),
                    br#"{"imageLayoutVersion":"1.0.0"}"#,
                )
            })
            .map_err(|e| fail(format!("writing the layout: {e}")))?;
        write_tar(&layout, archive)
            .map_err(|e| fail(format!("writing {}: {e}", archive.display())))?;
        let _ = std::fs::remove_dir_all(&layout);
        let (sum, size) = kprov_artifacts::sha256_of_file(archive)
            .and_then(|sum| Ok((sum, std::fs::metadata(archive)?.len())))
            .map_err(|e| fail(format!("reading {}: {e}", archive.display())))?;
        Ok(PulledImage {
            image: image.clone(),
            manifest_digest: digest,
            archive: archive.to_path_buf(),
            sha256: sum,
            size,
        })
    }
}

/// Words a failed blob pull; a digest that does not verify says so plainly.
fn blob_error(digest: &str, e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::{DigestError, OciDistributionError};
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            format!("blob digest mismatch: expected {expected}, got {actual}; nothing was written")
        }
        other => format!("blob {digest}: {other}"),
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let sum = kprov_artifacts::sha256_of_file(path)?;
    Ok((
        format!("sha256:{}", hex::encode(sum)),
        std::fs::metadata(path)?.len(),
    ))
}

/// Tars `layout` (files at the archive's top level, root-owned, mtime 0)
/// into `archive` with kprov-host's atomic write.
fn write_tar(layout: &Path, archive: &Path) -> std::io::Result<()> {
    let mut file = kprov_host::fs::AtomicFile::create(archive).map_err(std::io::Error::other)?;
    {
        let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, &mut file));
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        for name in ["oci-layout", "index.json"] {
            builder.append_path_with_name(layout.join(name), name)?;
        }
        let blobs = layout.join("blobs").join("sha256");
        let mut names: Vec<_> = std::fs::read_dir(&blobs)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let mut from = std::fs::File::open(blobs.join(&name))?;
            builder.append_file(Path::new("blobs/sha256").join(&name), &mut from)?;
        }
        let writer = builder.into_inner()?;
        writer.into_inner().map_err(|e| e.into_error())?;
    }
    file.commit(0o644).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_artifacts::catalog::parse_image_ref;

    #[test]
    fn a_mirror_changes_the_host_only() {
        let puller = ImagePuller::new(RegistryOptions {
            mirror: Some("127.0.0.1:5000".into()),
            insecure: true,
            basic_auth: Some(("u".into(), "secret-password".into())),
        });
        let image = parse_image_ref("k8s.gcr.io/kube-proxy:v1.20.2").unwrap();
        assert_eq!(
            puller.pull_reference(&image).to_string(),
            "127.0.0.1:5000/kube-proxy:v1.20.2"
        );
        assert!(!format!("{:?}", puller.options).contains("secret-password"));
    }
}
