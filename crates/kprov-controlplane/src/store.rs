//! The static pod manifests as a host plan under a root: each manifest a
//! file (0600, as kubeadm writes them) and etcd's data directory (0700).
//! kprov-plan's engine applies it: a manifest that already holds the same
//! bytes is left alone, so the kubelet does not restart a running pod,
//! and a mode that drifted is corrected like contents.

use std::path::PathBuf;

use kprov_plan::{Contents, Plan, Resource};

use crate::manifests::StaticPod;
use crate::spec::ClusterSpec;

/// The manifests directory on the node.
pub fn manifests_dir(spec: &ClusterSpec) -> PathBuf {
    spec.kubernetes_dir.join("manifests")
}

/// The plan that writes `pods` (and etcd's data directory, when etcd is
/// among them) on a node; `live` says whether it is the running host.
pub fn plan_static_pods(spec: &ClusterSpec, pods: &[StaticPod], live: bool) -> Plan {
    let dir = manifests_dir(spec);
    let mut resources = Vec::new();
    for pod in pods {
        if pod.component() == "etcd" {
            resources.push(Resource::Directory {
                path: spec.etcd_data_dir.display().to_string(),
                mode: 0o700,
            });
        }
        resources.push(Resource::File {
            path: dir.join(&pod.file_name).display().to_string(),
            mode: 0o600,
            contents: Contents::Text(pod.to_yaml()),
        });
    }
    let names: Vec<&str> = pods.iter().map(StaticPod::component).collect();
    Plan::new(
        format!("static pods ({}) in {}", names.join(", "), dir.display()),
        live,
        resources,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_brings_its_private_data_dir_and_manifests_are_private() {
        let node = kprov_pki::ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.168.1.10".parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        let spec = ClusterSpec::new(kprov_pki::PkiSpec::new(node));
        let plan = plan_static_pods(&spec, &[crate::manifests::etcd(&spec)], true);
        assert_eq!(
            plan.resources[0],
            Resource::Directory {
                path: "/var/lib/etcd".into(),
                mode: 0o700
            }
        );
        match &plan.resources[1] {
            Resource::File { path, mode, .. } => {
                assert_eq!(path, "/etc/kubernetes/manifests/etcd.yaml");
                assert_eq!(*mode, 0o600);
            }
            other => panic!("{other:?}"),
        }
    }
}
