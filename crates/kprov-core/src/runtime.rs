//! Container runtimes and kube-proxy modes a node can be provisioned for.

use std::fmt;

use crate::KubernetesVersion;

/// The container runtime the kubelet talks to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRuntime {
    /// containerd with its CRI plugin (the default).
    Containerd,
    /// Docker Engine through the kubelet's built-in dockershim (< v1.24).
    Docker,
}

/// The runtime cannot serve the requested Kubernetes version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--container-runtime docker needs a kubelet older than v1.24 (dockershim was removed in v1.24), but --kubelet-version is {version}; use containerd")]
pub struct RuntimeVersionError {
    /// The kubelet version that was asked for.
    pub version: KubernetesVersion,
}

impl ContainerRuntime {
    /// Checks that the kubelet of `version` can use this runtime.
    pub fn check_supports(self, version: &KubernetesVersion) -> Result<(), RuntimeVersionError> {
        match self {
            Self::Docker if version.at_least(1, 24) => Err(RuntimeVersionError {
                version: version.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The systemd unit of the runtime.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Containerd => "containerd.service",
            Self::Docker => "docker.service",
        }
    }

    /// The runtime's API socket, as seen on the node.
    pub fn socket(self) -> &'static str {
        match self {
            Self::Containerd => "/run/containerd/containerd.sock",
            Self::Docker => "/var/run/docker.sock",
        }
    }
}

impl fmt::Display for ContainerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containerd => "containerd",
            Self::Docker => "docker",
        })
    }
}

/// Where the container runtime comes from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSource {
    /// The distribution's package (apt/yum/dnf families).
    #[default]
    Distro,
    /// The upstream static releases of containerd and runc (always on
    /// Flatcar, which has no package manager).
    Upstream,
}

/// How kube-proxy programs service routing; ipvs needs extra kernel modules.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// iptables rules (the default).
    #[default]
    Iptables,
    /// IPVS virtual servers.
    Ipvs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_is_refused_from_v1_24() {
        let v = |s: &str| s.parse::<KubernetesVersion>().unwrap();
        assert!(ContainerRuntime::Docker
            .check_supports(&v("v1.23.17"))
            .is_ok());
        let err = ContainerRuntime::Docker
            .check_supports(&v("v1.24.0"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--container-runtime docker needs a kubelet older than v1.24 (dockershim was removed in v1.24), but --kubelet-version is v1.24.0; use containerd"
        );
        assert!(ContainerRuntime::Containerd
            .check_supports(&v("v1.37.0"))
            .is_ok());
    }
}
