//! containerd's config.toml, from a typed model (config version 2).

use std::collections::BTreeMap;

use serde::Serialize;

/// containerd configuration, version 2, with the fields kprov sets.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerdConfig {
    /// Config schema version (2).
    pub version: u32,
    /// Plugins containerd must not load; empty so that CRI is on (some
    /// packages ship `disabled_plugins = ["cri"]`).
    pub disabled_plugins: Vec<String>,
    /// Plugin settings.
    pub plugins: Plugins,
}

/// The `[plugins]` table.
#[derive(Debug, Clone, Serialize)]
pub struct Plugins {
    /// The CRI plugin kubelet talks to.
    #[serde(rename = "io.containerd.grpc.v1.cri")]
    pub cri: CriPlugin,
}

/// `[plugins."io.containerd.grpc.v1.cri"]`.
#[derive(Debug, Clone, Serialize)]
pub struct CriPlugin {
    /// Keep containers' OOM score adjustments at or above containerd's own
    /// (a node in a container may not lower them: runc fails to start a
    /// pod sandbox that asks for -998). Left out when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restrict_oom_score_adj: bool,
    /// The pause image pods are started with.
    pub sandbox_image: String,
    /// Runtime settings.
    pub containerd: CriContainerd,
    /// Where CNI plugins and configs are.
    pub cni: CriCni,
}

/// `[plugins."io.containerd.grpc.v1.cri".containerd]`.
#[derive(Debug, Clone, Serialize)]
pub struct CriContainerd {
    /// The runtime used when a pod names none.
    pub default_runtime_name: String,
    /// Runtimes by name.
    pub runtimes: BTreeMap<String, Runtime>,
}

/// A runtime entry.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    /// The shim, e.g. `io.containerd.runc.v2`.
    pub runtime_type: String,
    /// runc options.
    pub options: RuncOptions,
}

/// runc options.
#[derive(Debug, Clone, Serialize)]
pub struct RuncOptions {
    /// Must match kubelet's `cgroupDriver: systemd`.
    #[serde(rename = "SystemdCgroup")]
    pub systemd_cgroup: bool,
    /// Path of runc, when it is not on containerd's PATH.
    #[serde(rename = "BinaryName", skip_serializing_if = "Option::is_none")]
    pub binary_name: Option<String>,
}

/// `[plugins."io.containerd.grpc.v1.cri".cni]`.
#[derive(Debug, Clone, Serialize)]
pub struct CriCni {
    /// CNI plugin binaries.
    pub bin_dir: String,
    /// CNI network configs.
    pub conf_dir: String,
}

impl ContainerdConfig {
    /// The configuration kprov installs; `in_container` for a node that
    /// is a container on a shared kernel (`--node-in-container`).
    pub fn for_node(
        sandbox_image: &str,
        cni_bin_dir: &str,
        cni_conf_dir: &str,
        runc: Option<&str>,
        in_container: bool,
    ) -> Self {
        let runc_runtime = Runtime {
            runtime_type: "io.containerd.runc.v2".into(),
            options: RuncOptions {
                systemd_cgroup: true,
                binary_name: runc.map(str::to_string),
            },
        };
        Self {
            version: 2,
            disabled_plugins: Vec::new(),
            plugins: Plugins {
                cri: CriPlugin {
                    restrict_oom_score_adj: in_container,
                    sandbox_image: sandbox_image.into(),
                    containerd: CriContainerd {
                        default_runtime_name: "runc".into(),
                        runtimes: BTreeMap::from([("runc".to_string(), runc_runtime)]),
                    },
                    cni: CriCni {
                        bin_dir: cni_bin_dir.into(),
                        conf_dir: cni_conf_dir.into(),
                    },
                },
            },
        }
    }

    /// The TOML text.
    pub fn render(&self) -> Result<String, toml::ser::Error> {
        Ok(format!(
            "# Written by kprov: containerd for a Kubernetes node (CRI on, systemd cgroups).\n{}",
            toml::to_string(self)?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_enables_cri_with_systemd_cgroups() {
        let text = ContainerdConfig::for_node(
            "k8s.gcr.io/pause:3.2",
            "/opt/cni/bin",
            "/etc/cni/net.d",
            None,
            false,
        )
        .render()
        .unwrap();
        let parsed: toml::Value = text.parse().unwrap();
        let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["sandbox_image"].as_str(), Some("k8s.gcr.io/pause:3.2"));
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/opt/cni/bin"));
        assert_eq!(parsed["disabled_plugins"].as_array().map(Vec::len), Some(0));
        assert!(cri.get("restrict_oom_score_adj").is_none(), "{text}");
    }

    #[test]
    fn a_node_in_a_container_keeps_oom_scores_at_or_above_containerds_own() {
        let text = ContainerdConfig::for_node(
            "k8s.gcr.io/pause:3.2",
            "/opt/cni/bin",
            "/etc/cni/net.d",
            None,
            true,
        )
        .render()
        .unwrap();
        let parsed: toml::Value = text.parse().unwrap();
        let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["restrict_oom_score_adj"].as_bool(),
            Some(true),
            "{text}"
        );
        assert_eq!(cri["sandbox_image"].as_str(), Some("k8s.gcr.io/pause:3.2"));
    }
}
