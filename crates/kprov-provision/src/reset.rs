//! `kprov reset`: undo the join phase (and on a master what `kprov init`
//! made: static pods, control-plane kubeconfigs, PKI, etcd's data) and
//! keep the base phase.
//!
//! [`plan_reset`] is a plan like any other (pure), applied by kprov-plan's
//! engine: a path already gone, a unit already stopped or no container
//! left is unchanged. On a running host the kubelet is stopped first, the
//! volumes it mounted under /var/lib/kubelet are unmounted (so removing
//! the tree cannot reach into them) and the pods' containers are removed
//! with ctr when it is installed (best effort).

use kprov_plan::{Plan, Resource};

use crate::os::OsFacts;
use crate::plan::CA_CERT_PATH;
use crate::render::{cni, kubelet};
use crate::tables;

/// The kubelet's state directory.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// What `kprov init` leaves on a master besides a node's files, at its
/// default places: static pods, the control plane's kubeconfigs, the
/// PKI and etcd's data. Emptied and removed after the kubelet (which runs
/// the static pods) is stopped and the containers are gone.
pub const CONTROL_PLANE_PATHS: &[&str] = &[
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/scheduler.conf",
    "/etc/kubernetes/pki",
    "/var/lib/etcd",
];
/// The node-local balancer's unit, the link that enables it, and its
/// endpoints file's directory (the join phase's, on a worker).
pub const LB_UNIT_PATH: &str = "/etc/systemd/system/kprov-lb.service";
/// See [`LB_UNIT_PATH`].
pub const LB_WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/kprov-lb.service";
/// See [`LB_UNIT_PATH`].
pub const LB_STATE_DIR: &str = "/var/lib/kprov/lb";
/// The static pods' directory.
pub const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
/// CNI plugins' state (IP allocations).
pub const CNI_STATE_DIR: &str = "/var/lib/cni";

/// The plan that undoes the join phase: on a running host the kubelet
/// stopped, the pods' containers removed and the kubelet's mounts gone
/// first; then the join phase's files and state removed, the CNI
/// configuration emptied, kprov's pod routes and bridge removed and
/// systemd reloaded. The base phase stays.
pub fn plan_reset(os: &OsFacts, live: bool) -> Plan {
    let layout = tables::layout(os.family);
    let mut r = Vec::new();
    if live {
        r.push(Resource::UnitStopped {
            unit: "kubelet.service".into(),
        });
        r.push(Resource::UnitStopped {
            unit: crate::plan::LB_UNIT.into(),
        });
        r.push(Resource::ContainersRemoved { ctr: "ctr".into() });
        r.push(Resource::Unmounted {
            dir: KUBELET_DIR.into(),
        });
    }
    r.push(Resource::DirEmpty {
        dir: MANIFESTS_DIR.into(),
    });
    for path in [
        kubelet::KUBECONFIG_PATH,
        kubelet::BOOTSTRAP_KUBECONFIG_PATH,
        kubelet::DROPIN_PATH,
        LB_UNIT_PATH,
        LB_WANTS_LINK,
        LB_STATE_DIR,
        CA_CERT_PATH,
        KUBELET_DIR,
        CNI_STATE_DIR,
    ]
    .into_iter()
    .chain(CONTROL_PLANE_PATHS.iter().copied())
    {
        r.push(Resource::Absent { path: path.into() });
    }
    // A count of the old kubelet's failed health checks must not count
    // against the next join's kubelet.
    r.push(Resource::Absent {
        path: crate::health::counter_path("kubelet.service"),
    });
    r.push(Resource::DirEmpty {
        dir: layout.cni_conf_dir.into(),
    });
    if live {
        r.push(Resource::Routes {
            protocol: cni::ROUTE_PROTOCOL,
            routes: Default::default(),
        });
        r.push(Resource::LinkAbsent {
            name: cni::BRIDGE_NAME.into(),
        });
        r.push(Resource::DaemonReloaded {
            units: vec!["kubelet.service".into(), crate::plan::LB_UNIT.into()],
        });
    }
    let headline = format!(
        "reset of the join phase on {} [{}], {}",
        os.pretty_name,
        os.family,
        if live { "live host" } else { "offline root" }
    );
    Plan::new(headline, live, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> OsFacts {
        crate::os::detect(
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn an_offline_reset_only_removes_files_and_keeps_the_base_phase() {
        let steps = plan_reset(&debian(), false).resources;
        assert!(steps
            .iter()
            .all(|s| matches!(s, Resource::Absent { .. } | Resource::DirEmpty { .. })));
        let removed: Vec<String> = steps.iter().map(ToString::to_string).collect();
        for want in [
            "/etc/kubernetes/kubelet.conf absent",
            "/etc/kubernetes/bootstrap-kubelet.conf absent",
            "/etc/systemd/system/kubelet.service.d/10-kprov.conf absent",
            "/etc/kubernetes/pki/ca.crt absent",
            "/var/lib/kubelet absent",
            "/var/lib/cni absent",
            "/etc/cni/net.d empty",
            "/etc/kubernetes/manifests empty",
            "/etc/kubernetes/admin.conf absent",
            "/etc/kubernetes/pki absent",
            "/var/lib/etcd absent",
            "/etc/systemd/system/kprov-lb.service absent",
            "/var/lib/kprov/lb absent",
        ] {
            assert!(removed.contains(&want.to_string()), "{removed:?}");
        }
        assert!(!removed.iter().any(|r| r.contains("kubelet.service absent")
            || r.contains("/usr/local/bin")
            || r.contains("containerd")));
    }

    #[test]
    fn a_live_reset_stops_the_kubelet_before_removing_its_files() {
        let steps = plan_reset(&debian(), true).resources;
        assert_eq!(
            steps[0],
            Resource::UnitStopped {
                unit: "kubelet.service".into()
            }
        );
        let unmount = steps
            .iter()
            .position(|s| matches!(s, Resource::Unmounted { .. }))
            .unwrap();
        let remove = steps
            .iter()
            .position(|s| {
                *s == Resource::Absent {
                    path: KUBELET_DIR.into(),
                }
            })
            .unwrap();
        assert!(unmount < remove);
        assert!(matches!(
            steps.last(),
            Some(Resource::DaemonReloaded { .. })
        ));
    }
}
