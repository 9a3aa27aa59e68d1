//! The node spec: everything `kprov provision` needs to know about the node
//! it prepares, already validated.

use std::fmt;
use std::path::PathBuf;

use crate::join::{ApiServerUrl, CaCertHash, NodeName, Taint};
use crate::{
    Arch, BootstrapToken, CaCertificate, ContainerRuntime, KubernetesVersion, ProxyMode,
    RuntimeSource,
};

/// Which part of provisioning to run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Packages, kernel settings, runtime, binaries, units, health checks.
    Base,
    /// Kubelet configuration and start (TLS bootstrap against a cluster).
    Join,
    /// Base, then join.
    All,
}

impl Phase {
    /// True when this phase includes the base phase.
    pub fn includes_base(self) -> bool {
        matches!(self, Self::Base | Self::All)
    }

    /// True when this phase includes the join phase.
    pub fn includes_join(self) -> bool {
        matches!(self, Self::Join | Self::All)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Base => "base",
            Self::Join => "join",
            Self::All => "all",
        })
    }
}

/// A validated description of the node to provision.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Release of the kubelet (and kubectl) to install.
    pub kubelet_version: KubernetesVersion,
    /// Runtime the kubelet talks to.
    pub container_runtime: ContainerRuntime,
    /// kube-proxy mode; ipvs adds kernel modules.
    pub proxy_mode: ProxyMode,
    /// Where the runtime comes from where there is a choice.
    pub runtime_source: RuntimeSource,
    /// Architecture of the node's binaries.
    pub arch: Arch,
    /// In-tree cloud provider name, if any (e.g. `openstack`).
    pub cloud_provider: Option<String>,
    /// Path on the node of the cloud provider's config file.
    pub cloud_config: Option<PathBuf>,
    /// Bootstrap token for the join phase.
    pub token: Option<BootstrapToken>,
    /// Cluster CA the node trusts, for the join phase.
    pub ca_cert: Option<CaCertificate>,
    /// Sandbox (pause) image override, e.g. an image imported offline.
    pub sandbox_image: Option<String>,
    /// Container images (full references) to import into containerd from
    /// the artifact source; a bundle's images.
    pub images: Vec<String>,
    /// The API server the node joins (`--api-server`).
    pub api_server: Option<ApiServerUrl>,
    /// CA public-key hashes, one of which the discovered CA must match.
    pub ca_cert_hashes: Vec<CaCertHash>,
    /// Trust whatever CA token discovery finds (no pin).
    pub unsafe_skip_ca_verification: bool,
    /// The node's name (the kubelet's `--hostname-override`).
    pub node_name: Option<NodeName>,
    /// The node's address (the kubelet's `--node-ip`).
    pub node_ip: Option<std::net::IpAddr>,
    /// Labels the node registers with.
    pub node_labels: Vec<(String, String)>,
    /// Taints the node registers with.
    pub register_with_taints: Vec<Taint>,
    /// The node is a container sharing its host's kernel, swap and disk
    /// (`--node-in-container`).
    pub in_container: bool,
}

/// A spec that is well formed field by field but inconsistent as a whole,
/// or incomplete for the phase asked for. Each names the flag to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The join phase needs a flag that was not given.
    #[error("--phase {phase} needs {flag}")]
    MissingForJoin {
        /// The phase asked for.
        phase: Phase,
        /// The missing flag.
        flag: &'static str,
    },
    /// A cloud provider name with characters that cannot be a provider.
    #[error("invalid --cloud-provider {value:?}: expected a provider name of [a-z0-9-] such as openstack, aws or external")]
    CloudProvider {
        /// The value given.
        value: String,
    },
    /// A cloud config path that is not absolute.
    #[error("invalid --cloud-config {value:?}: expected an absolute path on the node without spaces or control characters, e.g. /etc/kubernetes/cloud-config")]
    CloudConfig {
        /// The value given.
        value: String,
    },
    /// A cloud config without a cloud provider to read it.
    #[error("--cloud-config needs --cloud-provider")]
    CloudConfigWithoutProvider,
    /// A sandbox image reference that cannot be a container image.
    #[error("invalid --sandbox-image {value:?}: {reason}")]
    SandboxImage {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: crate::image::ImageRefError,
    },
    /// The join phase has no way to trust the API server.
    #[error("--phase {phase} needs a way to trust the API server: --discovery-token-ca-cert-hash sha256:... (the cluster CA's public-key hash, from `kprov pki ca-hash` or `kprov token create --print-join-command`), or --ca-cert FILE, or --discovery-token-unsafe-skip-ca-verification (trusts whatever CA answers)")]
    NoTrust {
        /// The phase asked for.
        phase: Phase,
    },
    /// The runtime cannot serve the kubelet version.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeVersionError),
}

impl NodeSpec {
    /// A spec with kprov's defaults: containerd, iptables proxy mode, no
    /// cloud provider, no join inputs.
    pub fn new(kubelet_version: KubernetesVersion, arch: Arch) -> Self {
        Self {
            kubelet_version,
            container_runtime: ContainerRuntime::Containerd,
            proxy_mode: ProxyMode::Iptables,
            runtime_source: RuntimeSource::Distro,
            arch,
            cloud_provider: None,
            cloud_config: None,
            token: None,
            ca_cert: None,
            sandbox_image: None,
            images: Vec::new(),
            api_server: None,
            ca_cert_hashes: Vec::new(),
            unsafe_skip_ca_verification: false,
            node_name: None,
            node_ip: None,
            node_labels: Vec::new(),
            register_with_taints: Vec::new(),
            in_container: false,
        }
    }

    /// Checks the spec as a whole for `phase`.
    pub fn validate(&self, phase: Phase) -> Result<(), SpecError> {
        self.container_runtime
            .check_supports(&self.kubelet_version)?;
        if let Some(p) = &self.cloud_provider {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(SpecError::CloudProvider { value: p.clone() });
            }
        }
        if let Some(c) = &self.cloud_config {
            // It becomes a kubelet flag in a unit file's ExecStart line.
            let text = c.to_string_lossy();
            if !c.is_absolute() || text.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                return Err(SpecError::CloudConfig {
                    value: c.display().to_string(),
                });
            }
            if self.cloud_provider.is_none() {
                return Err(SpecError::CloudConfigWithoutProvider);
            }
        }
        if let Some(image) = &self.sandbox_image {
            if let Err(reason) = image.parse::<crate::ImageRef>() {
                return Err(SpecError::SandboxImage {
                    value: image.clone(),
                    reason,
                });
            }
        }
        if phase.includes_join() {
            if self.token.is_none() {
                return Err(SpecError::MissingForJoin {
                    phase,
                    flag: "--token",
                });
            }
            if self.api_server.is_none() {
                return Err(SpecError::MissingForJoin {
                    phase,
                    flag: "--api-server",
                });
            }
            if self.ca_cert.is_none()
                && self.ca_cert_hashes.is_empty()
                && !self.unsafe_skip_ca_verification
            {
                return Err(SpecError::NoTrust { phase });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec::new("v1.20.2".parse().unwrap(), Arch::Amd64)
    }

    #[test]
    fn base_phase_needs_no_join_inputs() {
        assert_eq!(spec().validate(Phase::Base), Ok(()));
    }

    #[test]
    fn join_phase_names_the_missing_flag() {
        assert_eq!(
            spec().validate(Phase::Join).unwrap_err().to_string(),
            "--phase join needs --token"
        );
        let mut s = spec();
        s.token = Some("abcdef.0123456789abcdef".parse().unwrap());
        assert_eq!(
            s.validate(Phase::All).unwrap_err().to_string(),
            "--phase all needs --api-server"
        );
        s.api_server = Some("https://10.0.0.1:6443".parse().unwrap());
        let err = s.validate(Phase::Join).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "--phase join needs a way to trust the API server: --discovery-token-ca-cert-hash"
            ) && err.contains("--ca-cert FILE")
                && err.contains("--discovery-token-unsafe-skip-ca-verification"),
            "{err}"
        );
        for trust in [
            |s: &mut NodeSpec| s.unsafe_skip_ca_verification = true,
            |s: &mut NodeSpec| {
                s.ca_cert_hashes = vec![format!("sha256:{}", "a".repeat(64)).parse().unwrap()]
            },
        ] {
            let mut s = s.clone();
            trust(&mut s);
            assert_eq!(s.validate(Phase::Join), Ok(()));
        }
    }

    #[test]
    fn cloud_inputs_are_checked() {
        let mut s = spec();
        s.cloud_provider = Some("Open Stack".into());
        assert!(s
            .validate(Phase::Base)
            .unwrap_err()
            .to_string()
            .starts_with("invalid --cloud-provider \"Open Stack\""));
        let mut s = spec();
        s.cloud_provider = Some("openstack".into());
        s.cloud_config = Some("cloud.conf".into());
        assert!(s
            .validate(Phase::Base)
            .unwrap_err()
            .to_string()
            .starts_with("invalid --cloud-config \"cloud.conf\""));
        for bad in [
            "/etc/kubernetes/cloud.conf\nExecStartPre=/bin/touch /pwned",
            "/etc/my cloud.conf",
            "/etc/cloud\tconf",
        ] {
            let mut s = spec();
            s.cloud_provider = Some("openstack".into());
            s.cloud_config = Some(bad.into());
            assert_eq!(
                s.validate(Phase::Base).unwrap_err().to_string(),
                format!("invalid --cloud-config {bad:?}: expected an absolute path on the node without spaces or control characters, e.g. /etc/kubernetes/cloud-config")
            );
        }
        let mut s = spec();
        s.cloud_config = Some("/etc/kubernetes/cloud-config".into());
        assert_eq!(
            s.validate(Phase::Base).unwrap_err(),
            SpecError::CloudConfigWithoutProvider
        );
    }

    #[test]
    fn docker_with_a_new_kubelet_is_refused() {
        let mut s = spec();
        s.container_runtime = ContainerRuntime::Docker;
        s.kubelet_version = "v1.25.0".parse().unwrap();
        assert!(matches!(
            s.validate(Phase::Base),
            Err(SpecError::Runtime(_))
        ));
    }
}
