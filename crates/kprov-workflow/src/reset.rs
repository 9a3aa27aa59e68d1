//! `kprov reset`: undo the join phase and keep the base phase. The plan
//! is kprov-provision's [`plan_reset`]; it is applied under the node lock,
//! so that a health-check round cannot start the kubelet again halfway.
//!
//! On a master, its etcd member leaves first (through its own member or
//! any other), unless that would break quorum: then reset refuses, naming
//! the members, unless forced.

use std::path::Path;

use kprov_controlplane::etcd::{self as membership};
use kprov_controlplane::kubeadm_config;
use kprov_plan::{Outcome, Report, ResourceReport};
use kprov_provision::reset::plan_reset;

use crate::{Context, Error, Target};

/// etcd's static pod on a master.
const ETCD_MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";
/// Where a master keeps its certificates.
const CERT_DIR: &str = "/etc/kubernetes/pki";
/// A master's admin kubeconfig.
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// Resets the node; `force` resets a master even when its etcd member
/// cannot leave (etcd unreachable, or quorum would break).
pub fn run(target: &mut Target<'_>, force: bool) -> Result<Report, Error> {
    let root = target.root.clone();
    let os = kprov_provision::facts::detect_os(&root).context(|| format!("reading {root}"))?;
    leave_etcd(target, force)?;
    let plan = plan_reset(&os, root.is_live());
    // Applied under the node lock: no health-check round runs during the
    // reset (it could start the kubelet again); the next one sees the join
    // undone.
    let report = target.apply_files(&plan, "resetting")?;
    if !report.changed_anything() {
        target.note(format!("nothing to reset on {root}; nothing changed"));
    } else if !target.dry_run {
        target.note(format!(
            "reset {root}: the join phase is undone, the base phase is kept"
        ));
    }
    Ok(report)
}

/// Drops this master from kubeadm-config's ClusterStatus through its own
/// API server, before its etcd member goes (and takes that API server
/// with it). A failure is a note: kubeadm's reset only warns too.
fn leave_cluster_status(target: &mut Target<'_>, name: &str) {
    let Ok(admin) = target.root.resolve(Path::new(ADMIN_CONF)) else {
        return;
    };
    if !admin.exists() {
        return;
    }
    let dry_run = target.dry_run;
    let rt = target.rt.clone();
    let result = rt.block_on(async {
        let client = kprov_kube::client(&admin).await?;
        let map =
            kprov_kube::get_config_map(&client, "kube-system", kubeadm_config::KUBEADM_CONFIG)
                .await?;
        let mut data = map.and_then(|m| m.data).unwrap_or_default();
        let Some(status) = data
            .remove("ClusterStatus")
            .and_then(|s| kubeadm_config::cluster_status_without(&s, name))
        else {
            return Ok(None);
        };
        let plan = kubeadm_config::with_cluster_status(data, status);
        kprov_kube::apply::apply_plan(&client, &plan, "the local API server", dry_run)
            .await
            .map(Some)
    });
    match result {
        Ok(Some(report)) => target.observer.report(&report),
        Ok(None) => {}
        Err(e) => target.note(format!(
            "kubeadm-config's ClusterStatus still lists {name}: {e}"
        )),
    }
}

/// Removes this master's etcd member, when it is one of several.
fn leave_etcd(target: &mut Target<'_>, force: bool) -> Result<(), Error> {
    if !target.live() {
        return Ok(());
    }
    let manifest = kprov_host::fs::read(&target.root, Path::new(ETCD_MANIFEST))
        .context(|| format!("reading {ETCD_MANIFEST}"))?;
    let Some((name, urls)) = manifest
        .as_deref()
        .and_then(|m| membership::manifest_member(&String::from_utf8_lossy(m)))
    else {
        return Ok(());
    };
    let mut endpoints = vec![format!("https://127.0.0.1:{}", membership::CLIENT_PORT)];
    endpoints.extend(urls);
    let refuse = |target: &mut Target<'_>, why: String| {
        if force {
            target.note(format!(
                "--force: resetting anyway; {why}; remove the member from another master (etcdctl member remove)"
            ));
            Ok(())
        } else {
            Err(Error::failed(format!(
                "{why}; this master's etcd member {name} stays until it can leave: bring etcd back, or pass --force"
            )))
        }
    };
    let etcd = match crate::etcd::client(&target.root, Path::new(CERT_DIR), endpoints) {
        Ok(c) => c,
        Err(e) => return refuse(target, format!("no etcd client: {e}")),
    };
    let rt = target.rt.clone();
    let members = match rt.block_on(etcd.members()) {
        Ok(m) => m,
        Err(e) => return refuse(target, e.to_string()),
    };
    let Some(me) = membership::member_named(&members, &name).cloned() else {
        target.note(format!("etcd has no member {name}; none to remove"));
        return Ok(());
    };
    if members.len() == 1 {
        target.note(format!(
            "{name} is etcd's only member: the cluster's data goes with this reset"
        ));
        return Ok(());
    }
    let healthy = crate::etcd::healthy(&rt, &etcd, &members);
    if let Err(e) = membership::check_removal(&members, &me, &healthy) {
        refuse(target, e.to_string())?;
        return Ok(());
    }
    leave_cluster_status(target, &name);
    let mut report = Report::new("etcd's members", etcd.endpoints().join(","), target.dry_run);
    report.push(ResourceReport {
        id: format!("etcd member {}", me.describe()),
        description: "this master's etcd member".into(),
        outcome: Outcome::Removed,
        detail: None,
    });
    if !target.dry_run {
        // Not through this master's own member: it stops as it applies
        // its removal, before it answers.
        let others = membership::removal_endpoints(&members, &me, &healthy);
        let through = if others.is_empty() {
            etcd
        } else {
            etcd.with_endpoints(others)
        };
        rt.block_on(through.remove(me.id))
            .map_err(|e| Error::failed(e.to_string()))?;
    }
    target.observer.report(&report);
    Ok(())
}
