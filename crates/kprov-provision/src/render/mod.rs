//! Pure renderers: typed models in, file contents out.

pub mod cni;
pub mod containerd;
pub mod kubelet;
pub mod systemd;

use crate::tables::{Sysctl, SYSCTLS};

/// The sysctl drop-in.
pub fn sysctl_conf(sysctls: &[Sysctl]) -> String {
    let mut out = String::from("# Written by kprov: kernel parameters for a Kubernetes node.\n");
    for s in sysctls {
        out.push_str(&format!("# {}\n{} = {}\n", s.why, s.key, s.value));
    }
    out
}

/// The sysctl drop-in with kprov's standard parameters.
pub fn default_sysctl_conf() -> String {
    sysctl_conf(SYSCTLS)
}

/// The modules-load drop-in.
pub fn modules_conf(modules: &[&str]) -> String {
    let mut out = String::from("# Written by kprov: kernel modules for a Kubernetes node.\n");
    for m in modules {
        out.push_str(m);
        out.push('\n');
    }
    out
}

/// Docker's daemon.json: the systemd cgroup driver kubelet expects.
pub fn docker_daemon_json() -> String {
    let config = serde_json::json!({
        "exec-opts": ["native.cgroupdriver=systemd"],
        "log-driver": "json-file",
        "log-opts": { "max-size": "100m" },
        "storage-driver": "overlay2",
    });
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    text.push('\n');
    text
}
