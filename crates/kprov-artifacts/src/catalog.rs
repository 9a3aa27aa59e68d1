//! The catalog: which artifacts a Kubernetes release needs, at which
//! versions, and where upstream publishes them (with their checksums).
//!
//! URLs follow the upstream layouts: the Kubernetes release tree
//! (`<base>/release/<version>/bin/linux/<arch>/<name>` with `.sha256`
//! files) and the GitHub release layouts of the CNI plugins, cri-tools,
//! containerd and runc. A mirror keeps the same paths under its own base
//! URL, so `--mirror URL` works with a plain copy of upstream.

use std::fmt;

use kprov_core::{Arch, KubernetesVersion};

use crate::ArtifactName;

/// The Kubernetes release site.
pub const KUBERNETES_BASE: &str = "https://dl.k8s.io";
/// GitHub, for the release downloads of the other projects.
pub const GITHUB_BASE: &str = "https://github.com";

/// Versions of the companions of one Kubernetes minor release, as kubeadm
/// pins them (etcd, CoreDNS, pause) or as released alongside (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Companions {
    /// Kubernetes minor, e.g. 20.
    pub minor: u32,
    /// etcd image tag.
    pub etcd: &'static str,
    /// CoreDNS image tag.
    pub coredns: &'static str,
    /// pause image tag.
    pub pause: &'static str,
    /// CNI plugins release.
    pub cni_plugins: &'static str,
    /// cri-tools (crictl) release.
    pub crictl: &'static str,
    /// containerd static release (without `v`).
    pub containerd: &'static str,
    /// runc release.
    pub runc: &'static str,
}

/// One row per supported minor release.
pub const COMPANIONS: &[Companions] = &[
    Companions {
        minor: 20,
        etcd: "3.4.13-0",
        coredns: "1.7.0",
        pause: "3.2",
        cni_plugins: "v0.8.7",
        containerd: "1.4.13",
        runc: "v1.0.3",
        crictl: "v1.20.0",
    },
    Companions {
        minor: 21,
        etcd: "3.4.13-0",
        coredns: "v1.8.0",
        pause: "3.4.1",
        cni_plugins: "v0.9.1",
        containerd: "1.5.18",
        runc: "v1.1.4",
        crictl: "v1.21.0",
    },
    Companions {
        minor: 22,
        etcd: "3.5.0-0",
        coredns: "v1.8.4",
        pause: "3.5",
        cni_plugins: "v0.9.1",
        containerd: "1.5.18",
        runc: "v1.1.4",
        crictl: "v1.22.0",
    },
    Companions {
        minor: 23,
        etcd: "3.5.1-0",
        coredns: "v1.8.6",
        pause: "3.6",
        cni_plugins: "v1.1.1",
        containerd: "1.6.20",
        runc: "v1.1.7",
        crictl: "v1.23.0",
    },
    Companions {
        minor: 24,
        etcd: "3.5.3-0",
        coredns: "v1.8.6",
        pause: "3.7",
        cni_plugins: "v1.1.1",
        containerd: "1.6.20",
        runc: "v1.1.7",
        crictl: "v1.24.2",
    },
    Companions {
        minor: 25,
        etcd: "3.5.4-0",
        coredns: "v1.9.3",
        pause: "3.8",
        cni_plugins: "v1.1.1",
        containerd: "1.6.20",
        runc: "v1.1.7",
        crictl: "v1.25.0",
    },
    Companions {
        minor: 26,
        etcd: "3.5.6-0",
        coredns: "v1.9.3",
        pause: "3.9",
        cni_plugins: "v1.2.0",
        containerd: "1.7.11",
        runc: "v1.1.12",
        crictl: "v1.26.1",
    },
    Companions {
        minor: 27,
        etcd: "3.5.7-0",
        coredns: "v1.10.1",
        pause: "3.9",
        cni_plugins: "v1.3.0",
        containerd: "1.7.11",
        runc: "v1.1.12",
        crictl: "v1.27.1",
    },
    Companions {
        minor: 28,
        etcd: "3.5.9-0",
        coredns: "v1.10.1",
        pause: "3.9",
        cni_plugins: "v1.3.0",
        containerd: "1.7.11",
        runc: "v1.1.12",
        crictl: "v1.28.0",
    },
    Companions {
        minor: 29,
        etcd: "3.5.10-0",
        coredns: "v1.11.1",
        pause: "3.9",
        cni_plugins: "v1.4.0",
        containerd: "1.7.13",
        runc: "v1.1.12",
        crictl: "v1.29.0",
    },
    Companions {
        minor: 30,
        etcd: "3.5.12-0",
        coredns: "v1.11.1",
        pause: "3.9",
        cni_plugins: "v1.4.1",
        containerd: "1.7.16",
        runc: "v1.1.13",
        crictl: "v1.30.0",
    },
    Companions {
        minor: 31,
        etcd: "3.5.15-0",
        coredns: "v1.11.3",
        pause: "3.10",
        cni_plugins: "v1.5.1",
        containerd: "1.7.22",
        runc: "v1.1.14",
        crictl: "v1.31.1",
    },
    Companions {
        minor: 32,
        etcd: "3.5.16-0",
        coredns: "v1.11.3",
        pause: "3.10",
        cni_plugins: "v1.6.2",
        containerd: "2.0.4",
        runc: "v1.2.5",
        crictl: "v1.32.0",
    },
    Companions {
        minor: 33,
        etcd: "3.5.21-0",
        coredns: "v1.12.0",
        pause: "3.10",
        cni_plugins: "v1.7.1",
        containerd: "2.1.1",
        runc: "v1.3.0",
        crictl: "v1.33.0",
    },
    Companions {
        minor: 34,
        etcd: "3.6.4-0",
        coredns: "v1.12.1",
        pause: "3.10.1",
        cni_plugins: "v1.7.1",
        containerd: "2.1.4",
        runc: "v1.3.0",
        crictl: "v1.34.0",
    },
    Companions {
        minor: 35,
        etcd: "3.6.5-0",
        coredns: "v1.12.1",
        pause: "3.10.1",
        cni_plugins: "v1.8.0",
        containerd: "2.1.4",
        runc: "v1.3.1",
        crictl: "v1.35.0",
    },
    Companions {
        minor: 36,
        etcd: "3.6.5-0",
        coredns: "v1.13.1",
        pause: "3.10.1",
        cni_plugins: "v1.8.0",
        containerd: "2.2.0",
        runc: "v1.3.3",
        crictl: "v1.36.0",
    },
    Companions {
        minor: 37,
        etcd: "3.6.6-0",
        coredns: "v1.13.1",
        pause: "3.10.1",
        cni_plugins: "v1.9.0",
        containerd: "2.2.0",
        runc: "v1.3.3",
        crictl: "v1.37.0",
    },
];

/// Why the catalog cannot serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A Kubernetes release outside the known range.
    #[error("Kubernetes version {version} is not in kprov's catalog: known releases are v1.{first}.x to v1.{last}.x")]
    UnknownVersion {
        /// The version asked for.
        version: String,
        /// The first known minor.
        first: u32,
        /// The last known minor.
        last: u32,
    },
    /// An artifact the catalog does not download (kprov itself; images are
    /// pulled from registries, see [`crate::image`]).
    #[error("artifact {name} is not downloadable from upstream")]
    NotDownloadable {
        /// The artifact.
        name: ArtifactName,
    },
}

/// The companions of `version`'s minor release.
pub fn companions(version: &KubernetesVersion) -> Result<&'static Companions, CatalogError> {
    COMPANIONS
        .iter()
        .find(|c| version.major() == 1 && c.minor == version.minor())
        .ok_or_else(|| CatalogError::UnknownVersion {
            version: version.to_string(),
            first: COMPANIONS[0].minor,
            last: COMPANIONS[COMPANIONS.len() - 1].minor,
        })
}

/// How a checksum file lists its sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumFormat {
    /// The first word of the file is the hex sum (`.sha256` files, with or
    /// without a file name after it).
    FirstWord,
    /// A `sha256sum` listing; the sum is on the line naming this file.
    Listing {
        /// The file name to look for.
        file: String,
    },
}

/// Where to download one artifact and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The artifact.
    pub name: ArtifactName,
    /// Its version.
    pub version: String,
    /// The node architecture.
    pub arch: Arch,
    /// The artifact's URL.
    pub url: String,
    /// The URL of its checksum file.
    pub checksum_url: String,
    /// How to read that file.
    pub checksum_format: ChecksumFormat,
    /// The file name to give it (in caches and bundles).
    pub file_name: String,
}

/// Base URLs to download from: upstream, or a mirror with upstream's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bases {
    /// Where `/release/...` lives.
    pub kubernetes: String,
    /// Where `/<org>/<project>/releases/download/...` lives.
    pub github: String,
}

impl Bases {
    /// The upstream sites.
    pub fn upstream() -> Self {
        Self {
            kubernetes: KUBERNETES_BASE.into(),
            github: GITHUB_BASE.into(),
        }
    }

    /// One mirror for everything, with upstream's paths under it.
    pub fn mirror(url: &str) -> Self {
        let base = url.trim_end_matches('/').to_string();
        Self {
            kubernetes: base.clone(),
            github: base,
        }
    }
}

/// The download of `name` for a node of `version` and `arch`.
pub fn download(
    name: ArtifactName,
    version: &KubernetesVersion,
    arch: Arch,
    bases: &Bases,
) -> Result<Download, CatalogError> {
    let c = companions(version)?;
    let (k, gh) = (&bases.kubernetes, &bases.github);
    let a = arch.as_str();
    // A release file with its checksum file next to it.
    let with_sum = |version: String, dir: String, file: String, sum_suffix: &str| {
        let url = format!("{dir}/{file}");
        Download {
            name,
            version,
            arch,
            checksum_url: format!("{url}{sum_suffix}"),
            url,
            checksum_format: ChecksumFormat::FirstWord,
            file_name: file,
        }
    };
    Ok(match name {
        ArtifactName::Kubelet | ArtifactName::Kubectl | ArtifactName::Kubeadm => with_sum(
            version.to_string(),
            format!("{k}/release/{version}/bin/linux/{a}"),
            name.as_str().to_string(),
            ".sha256",
        ),
        ArtifactName::CniPlugins => {
            let v = c.cni_plugins;
            with_sum(
                v.into(),
                format!("{gh}/containernetworking/plugins/releases/download/{v}"),
                format!("cni-plugins-linux-{a}-{v}.tgz"),
                ".sha256",
            )
        }
        ArtifactName::Crictl => {
            let v = c.crictl;
            with_sum(
                v.into(),
                format!("{gh}/kubernetes-sigs/cri-tools/releases/download/{v}"),
                format!("crictl-{v}-linux-{a}.tar.gz"),
                ".sha256",
            )
        }
        ArtifactName::Containerd => {
            let v = c.containerd;
            with_sum(
                format!("v{v}"),
                format!("{gh}/containerd/containerd/releases/download/v{v}"),
                format!("containerd-{v}-linux-{a}.tar.gz"),
                ".sha256sum",
            )
        }
        ArtifactName::Runc => {
            let v = c.runc;
            let file = format!("runc.{a}");
            let dir = format!("{gh}/opencontainers/runc/releases/download/{v}");
            Download {
                name,
                version: v.into(),
                arch,
                url: format!("{dir}/{file}"),
                checksum_url: format!("{dir}/runc.sha256sum"),
                checksum_format: ChecksumFormat::Listing { file: file.clone() },
                file_name: file,
            }
        }
        ArtifactName::Kprov | ArtifactName::Image => {
            return Err(CatalogError::NotDownloadable { name })
        }
    })
}

/// Reads the sum for `format` out of a checksum file's text.
pub fn parse_checksum(text: &str, format: &ChecksumFormat) -> Option<[u8; 32]> {
    let word = match format {
        ChecksumFormat::FirstWord => text.split_whitespace().next()?,
        ChecksumFormat::Listing { file } => text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            let sum = words.next()?;
            let name = words.next()?.trim_start_matches('*');
            (name == file).then_some(sum)
        })?,
    };
    let mut sum = [0u8; 32];
    hex::decode_to_slice(word, &mut sum).ok()?;
    Some(sum)
}

/// A container image a node needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (and port), e.g. `registry.k8s.io`.
    pub registry: String,
    /// Repository path, e.g. `kube-apiserver` or `coredns/coredns`.
    pub repository: String,
    /// Tag.
    pub tag: String,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// kubeadm's default registry for `version`: registry.k8s.io replaced
/// k8s.gcr.io as the default in v1.25.
pub fn default_registry(version: &KubernetesVersion) -> &'static str {
    if version.at_least(1, 25) {
        "registry.k8s.io"
    } else {
        "k8s.gcr.io"
    }
}

/// The pause (sandbox) image of `version`, from `registry` (or kubeadm's
/// default registry).
pub fn pause_image(
    version: &KubernetesVersion,
    registry: Option<&str>,
) -> Result<ImageRef, CatalogError> {
    let c = companions(version)?;
    Ok(ImageRef {
        registry: registry.unwrap_or(default_registry(version)).to_string(),
        repository: "pause".into(),
        tag: c.pause.into(),
    })
}

/// The images of a node: the pause image, and for a control-plane node the
/// control-plane components, etcd and CoreDNS.
pub fn images(
    version: &KubernetesVersion,
    control_plane: bool,
    registry: Option<&str>,
) -> Result<Vec<ImageRef>, CatalogError> {
    let c = companions(version)?;
    let registry = registry.unwrap_or(default_registry(version)).to_string();
    let image = |repository: &str, tag: &str| ImageRef {
        registry: registry.clone(),
        repository: repository.into(),
        tag: tag.into(),
    };
    let mut list = vec![image("pause", c.pause)];
    if control_plane {
        for component in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ] {
            list.push(image(component, &version.to_string()));
        }
        list.push(image("etcd", c.etcd));
        // CoreDNS moved to coredns/coredns with tags prefixed by v in v1.21.
        let coredns_repo = if c.coredns.starts_with('v') {
            "coredns/coredns"
        } else {
            "coredns"
        };
        list.push(image(coredns_repo, c.coredns));
    }
    Ok(list)
}

/// The file name an image's archive gets in a bundle or on a node:
/// `k8s.gcr.io/coredns/coredns:v1.8.0` -> `k8s.gcr.io_coredns_coredns_v1.8.0.tar`.
pub fn archive_file_name(image: &ImageRef) -> String {
    format!("{}_{}_{}.tar", image.registry, image.repository, image.tag).replace(['/', ':'], "_")
}

/// Parses `registry/repository:tag`: a reference in the distribution
/// grammar ([`kprov_core::ImageRef`]) that names its registry (a first
/// component with a dot or a colon, or `localhost`) and a tag, and no
/// digest.
pub fn parse_image_ref(text: &str) -> Option<ImageRef> {
    let parsed: kprov_core::ImageRef = text.parse().ok()?;
    if parsed.digest().is_some() {
        return None;
    }
    Some(ImageRef {
        registry: parsed.domain()?.into(),
        repository: parsed.path().into(),
        tag: parsed.tag()?.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubernetesVersion {
        s.parse().unwrap()
    }

    #[test]
    fn urls_follow_the_upstream_layouts() {
        let up = Bases::upstream();
        let d = download(ArtifactName::Kubelet, &v("v1.20.2"), Arch::Amd64, &up).unwrap();
        assert_eq!(
            d.url,
            "https://dl.k8s.io/release/v1.20.2/bin/linux/amd64/kubelet"
        );
        assert_eq!(
            d.checksum_url,
            "https://dl.k8s.io/release/v1.20.2/bin/linux/amd64/kubelet.sha256"
        );
        let d = download(ArtifactName::CniPlugins, &v("v1.24.3"), Arch::Arm64, &up).unwrap();
        assert_eq!(
            d.url,
            "https://github.com/containernetworking/plugins/releases/download/v1.1.1/cni-plugins-linux-arm64-v1.1.1.tgz"
        );
        let d = download(ArtifactName::Containerd, &v("v1.30.0"), Arch::Amd64, &up).unwrap();
        assert_eq!(d.url, "https://github.com/containerd/containerd/releases/download/v1.7.16/containerd-1.7.16-linux-amd64.tar.gz");
        assert_eq!(d.checksum_url, format!("{}.sha256sum", d.url));
        let d = download(ArtifactName::Runc, &v("v1.30.0"), Arch::Amd64, &up).unwrap();
        assert_eq!(
            d.checksum_url,
            "https://github.com/opencontainers/runc/releases/download/v1.1.13/runc.sha256sum"
        );
        let d = download(ArtifactName::Crictl, &v("v1.20.2"), Arch::Amd64, &up).unwrap();
        assert_eq!(d.url, "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.20.0/crictl-v1.20.0-linux-amd64.tar.gz");
    }

    #[test]
    fn a_mirror_keeps_the_upstream_paths() {
        let m = Bases::mirror("http://127.0.0.1:8080/mirror/");
        let d = download(ArtifactName::Kubectl, &v("v1.20.2"), Arch::Amd64, &m).unwrap();
        assert_eq!(
            d.url,
            "http://127.0.0.1:8080/mirror/release/v1.20.2/bin/linux/amd64/kubectl"
        );
        let d = download(ArtifactName::CniPlugins, &v("v1.20.2"), Arch::Amd64, &m).unwrap();
        assert_eq!(
            d.url,
            "http://127.0.0.1:8080/mirror/containernetworking/plugins/releases/download/v0.8.7/cni-plugins-linux-amd64-v0.8.7.tgz"
        );
    }

    #[test]
    fn unknown_versions_name_the_known_range() {
        let err = download(
            ArtifactName::Kubelet,
            &v("v1.99.0"),
            Arch::Amd64,
            &Bases::upstream(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "Kubernetes version v1.99.0 is not in kprov's catalog: known releases are v1.20.x to v1.37.x");
    }

    #[test]
    fn checksum_files_parse_in_both_formats() {
        let sum = "ab".repeat(32);
        assert_eq!(
            parse_checksum(&format!("{sum}\n"), &ChecksumFormat::FirstWord),
            Some([0xab; 32])
        );
        assert_eq!(
            parse_checksum(&format!("{sum}  cni.tgz\n"), &ChecksumFormat::FirstWord),
            Some([0xab; 32])
        );
        let listing = format!("{}  runc.arm64\n{sum}  runc.amd64\n", "cd".repeat(32));
        let f = ChecksumFormat::Listing {
            file: "runc.amd64".into(),
        };
        assert_eq!(parse_checksum(&listing, &f), Some([0xab; 32]));
        assert_eq!(
            parse_checksum("<html>404</html>", &ChecksumFormat::FirstWord),
            None
        );
    }

    #[test]
    fn images_follow_kubeadm_for_each_release() {
        let shown = |ver: &str, cp: bool| -> Vec<String> {
            images(&v(ver), cp, None)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(shown("v1.20.2", false), ["k8s.gcr.io/pause:3.2"]);
        assert_eq!(
            shown("v1.20.2", true),
            [
                "k8s.gcr.io/pause:3.2",
                "k8s.gcr.io/kube-apiserver:v1.20.2",
                "k8s.gcr.io/kube-controller-manager:v1.20.2",
                "k8s.gcr.io/kube-scheduler:v1.20.2",
                "k8s.gcr.io/kube-proxy:v1.20.2",
                "k8s.gcr.io/etcd:3.4.13-0",
                "k8s.gcr.io/coredns:1.7.0",
            ]
        );
        assert!(
            shown("v1.30.1", true).contains(&"registry.k8s.io/coredns/coredns:v1.11.1".to_string())
        );
        assert_eq!(
            pause_image(&v("v1.20.2"), Some("127.0.0.1:5000"))
                .unwrap()
                .to_string(),
            "127.0.0.1:5000/pause:3.2"
        );
    }

    #[test]
    fn image_references_parse_with_their_registry() {
        let r = parse_image_ref("k8s.gcr.io/pause:3.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("k8s.gcr.io", "pause", "3.2")
        );
        let r = parse_image_ref("127.0.0.1:5000/coredns/coredns:v1.8.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "coredns/coredns");
        for bad in [
            "pause:3.2",
            "k8s.gcr.io/pause",
            "k8s.gcr.io/pause:",
            "a b/c:d",
        ] {
            assert_eq!(parse_image_ref(bad), None, "{bad}");
        }
    }

    #[test]
    fn archive_names_are_flat_and_distinct() {
        let name = |s: &str| archive_file_name(&parse_image_ref(s).unwrap());
        assert_eq!(name("k8s.gcr.io/pause:3.2"), "k8s.gcr.io_pause_3.2.tar");
        assert_eq!(
            name("registry.k8s.io/coredns/coredns:v1.8.0"),
            "registry.k8s.io_coredns_coredns_v1.8.0.tar"
        );
    }
}
