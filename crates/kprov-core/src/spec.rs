//! The node spec: everything `kprov provision` needs to know about the node
//! it prepares, already validated.

use std::fmt;
use std::path::PathBuf;

use crate::{
    Arch, BootstrapToken, CaCertificate, ContainerRuntime, KubernetesVersion, ProxyMode,
    RuntimeSource,
};

/// Which part of provisioning to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    #[error("invalid --cloud-config {value:?}: expected an absolute path on the node, e.g. /etc/kubernetes/cloud-config")]
    CloudConfig {
        /// The value given.
        value: String,
    },
    /// A cloud config without a cloud provider to read it.
    #[error("--cloud-config needs --cloud-provider")]
    CloudConfigWithoutProvider,
    /// A sandbox image reference that cannot be a container image.
    #[error("invalid --sandbox-image {value:?}: expected an image reference such as registry.k8s.io/pause:3.9")]
    SandboxImage {
        /// The value given.
        value: String,
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
            if !c.is_absolute() {
                return Err(SpecError::CloudConfig {
                    value: c.display().to_string(),
                });
            }
            if self.cloud_provider.is_none() {
                return Err(SpecError::CloudConfigWithoutProvider);
            }
        }
        if let Some(image) = &self.sandbox_image {
            let ok = !image.is_empty()
                && image.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'/' | b':' | b'-' | b'_' | b'@')
                });
            if !ok {
                return Err(SpecError::SandboxImage {
                    value: image.clone(),
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
            if self.ca_cert.is_none() {
                return Err(SpecError::MissingForJoin {
                    phase,
                    flag: "--ca-cert",
                });
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
            "--phase all needs --ca-cert"
        );
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
