//! `kprov pod-network sync`: the node side of the `bridge` pod network.
//! Reads the cluster with the kubelet's own credentials and applies the
//! plan `kprov_provision::render::cni` makes: the CNI config for this
//! node's pod range, and kprov's routes (protocol 77) to the other nodes.

use std::path::Path;

use kprov_plan::Report;
use kprov_provision::render::cni::{self, NodeRoute};

use crate::{Context, Error, Target};

/// What one sync found or did.
#[derive(Debug)]
pub enum Synced {
    /// The node has not joined a cluster.
    NotJoined,
    /// The API server is not answering, or does not let the node read the
    /// pod network yet (while `kprov init` runs): try again later.
    NotYet(String),
    /// The cluster runs no pod network kprov manages.
    NoNetwork,
    /// The controller manager has not given this node a pod range yet.
    NoRange(String),
    /// The plan was applied (or dry-run).
    Applied(Report),
}

/// One sync, with the kubelet's kubeconfig (a node path).
pub fn sync(target: &mut Target<'_>, kubeconfig: &Path) -> Result<Synced, Error> {
    let host_kubeconfig = target
        .root
        .resolve(kubeconfig)
        .context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    if !host_kubeconfig.exists() {
        return Ok(Synced::NotJoined);
    }
    let me = kprov_kube::kubelet_node_name(&host_kubeconfig)
        .context(|| "finding this node's name".into())?;
    let read = target.rt.block_on(async {
        let client = kprov_kube::client(&host_kubeconfig).await?;
        let network = kprov_kube::pod_network(&client).await?;
        let nodes = match network.as_deref() {
            Some("bridge") => kprov_kube::node_pod_ranges(&client).await?,
            _ => Vec::new(),
        };
        Ok::<_, kprov_kube::ApiError>((network, nodes))
    });
    let (network, nodes) = match read {
        Ok(read) => read,
        // While a control plane comes up (or is restarted) this runs every
        // 10 s; an API server not answering yet is not a failure.
        Err(e) if e.is_unavailable() => {
            return Ok(Synced::NotYet(format!(
                "the API server is not available yet ({e})"
            )))
        }
        // `kprov init` grants nodes this read in its addons phase; the
        // kubelet runs (and this timer with it) before that.
        Err(e) if e.is_refused() => {
            return Ok(Synced::NotYet(format!(
                "the API server does not let this node read its pod network yet ({e})"
            )))
        }
        Err(e) => return Err(e).context(|| "reading the pod network".into()),
    };
    match network.as_deref() {
        None => return Ok(Synced::NoNetwork),
        Some("bridge") => {}
        Some(other) => {
            return Err(Error::failed(format!(
                "ConfigMap kube-system/{} names pod network {other:?}; this kprov knows only \"bridge\"",
                kprov_controlplane::addons::POD_NETWORK_CONFIG_MAP
            )))
        }
    }
    let nodes: Vec<NodeRoute> = nodes
        .into_iter()
        .map(|(name, pod_cidr, ip)| NodeRoute {
            name,
            pod_cidr,
            internal_ip: ip.and_then(|i| i.parse().ok()),
        })
        .collect();
    let Some(pod_cidr) = nodes
        .iter()
        .find(|n| n.name == me)
        .and_then(|n| n.pod_cidr.clone())
    else {
        return Ok(Synced::NoRange(me));
    };
    let plan = cni::plan_pod_network(&pod_cidr, cni::desired_routes(&nodes, &me));
    // A reset must not run halfway through a sync, and a sync (every
    // 10 s) does not queue behind another kprov run: it skips this round.
    let _lock = match target.dry_run {
        true => None,
        false => match kprov_host::NodeLock::acquire(
            &target.root,
            std::time::Duration::ZERO,
            &mut |_| {},
        ) {
            Ok(lock) => Some(lock),
            Err(kprov_host::HostError::Locked { path, .. }) => {
                return Ok(Synced::NotYet(format!(
                    "another kprov run holds the node lock {}",
                    path.display()
                )))
            }
            Err(e) => return Err(e).context(|| "taking the node lock".into()),
        },
    };
    Ok(Synced::Applied(
        target.apply_files(&plan, "syncing the pod network")?,
    ))
}
