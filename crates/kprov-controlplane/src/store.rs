//! Writes the static pod manifests under a root: the thin layer over the
//! pure [`crate::manifests`].

use std::path::PathBuf;

use kprov_host::fs::{self, FileAttrs};
use kprov_host::{HostError, Root};

use crate::manifests::StaticPod;
use crate::spec::ClusterSpec;

/// What writing one manifest did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// The file on the node.
    pub path: PathBuf,
    /// wrote, unchanged, or (dry run) would write.
    pub outcome: &'static str,
}

/// The manifests directory on the node.
pub fn manifests_dir(spec: &ClusterSpec) -> PathBuf {
    spec.kubernetes_dir.join("manifests")
}

/// Writes `pods` into the manifests directory (0600, as kubeadm does);
/// a file that already holds the same bytes is left alone, so the kubelet
/// does not restart a running pod.
pub fn write_static_pods(
    root: &Root,
    spec: &ClusterSpec,
    pods: &[StaticPod],
    dry_run: bool,
) -> Result<Vec<Written>, HostError> {
    let dir = manifests_dir(spec);
    let mut report = Vec::new();
    for pod in pods {
        let path = dir.join(&pod.file_name);
        let yaml = pod.to_yaml();
        let same = fs::read(root, &path)?.is_some_and(|old| old == yaml.as_bytes());
        let outcome = if same {
            "unchanged"
        } else if dry_run {
            "would write"
        } else {
            if pod.component() == "etcd" {
                fs::create_dir_all(root, &spec.etcd_data_dir)?;
                fs::set_attrs(root, &spec.etcd_data_dir, FileAttrs::root(0o700))?;
            }
            fs::write_atomic(root, &path, yaml.as_bytes(), FileAttrs::root(0o600))?;
            "wrote"
        };
        report.push(Written { path, outcome });
    }
    Ok(report)
}
