//! `kprov pod-network sync`: the node side of the `bridge` pod network.
//! Reads the cluster with the kubelet's own credentials and applies the
//! plan `kprov_provision::render::cni` makes: the CNI config for this
//! node's pod range, and kprov's routes (protocol 77) to the other nodes.

use std::path::Path;

use kprov_controlplane::pod_ranges::{self, NodeRange};
use kprov_controlplane::spec::Cidr;
use kprov_kube::pod_ranges::{list_nodes, NodeInfo};
use kprov_plan::Report;
use kprov_provision::render::cni::{self, NodeRoute};

use crate::{facts, Context, Error, Target};

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
    /// No master has given this node a pod range yet.
    NoRange(String),
    /// The plan was applied (or dry-run).
    Applied(Report),
}

/// The controller manager's kubeconfig: on a master, kprov gives Nodes
/// their pod ranges with it, where that controller manager leads.
pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "/etc/kubernetes/controller-manager.conf";

/// One sync, with the kubelet's kubeconfig (a node path).
pub fn sync(target: &mut Target<'_>, kubeconfig: &Path) -> Result<Synced, Error> {
    sync_watching(target, kubeconfig).map(|(synced, _)| synced)
}

/// One sync, and the resource version of the Nodes it read (to wait for
/// their next change from), when it read them.
pub fn sync_watching(
    target: &mut Target<'_>,
    kubeconfig: &Path,
) -> Result<(Synced, Option<String>), Error> {
    let host_kubeconfig = target
        .root
        .resolve(kubeconfig)
        .context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    if !host_kubeconfig.exists() {
        return Ok((Synced::NotJoined, None));
    }
    let me = kprov_kube::kubelet_node_name(&host_kubeconfig)
        .context(|| "finding this node's name".into())?;
    let manager = target
        .root
        .resolve(CONTROLLER_MANAGER_KUBECONFIG)
        .context(|| CONTROLLER_MANAGER_KUBECONFIG.into())?;
    let host_name = match manager.exists() {
        true => Some(facts::hostname(&target.root).context(|| "reading the host name".into())?),
        false => None,
    };
    let dry_run = target.dry_run;
    let read = target.rt.block_on(async {
        let client = kprov_kube::client(&host_kubeconfig).await?;
        let Some((network, cluster)) = kprov_kube::pod_network(&client).await? else {
            return Ok((None, Vec::new(), String::new(), Vec::new()));
        };
        if network != "bridge" {
            return Ok((Some(network), Vec::new(), String::new(), Vec::new()));
        }
        let (mut nodes, version) = list_nodes(&client).await?;
        let mut given = Vec::new();
        if let (Some(host_name), Some(cluster)) = (&host_name, cluster) {
            given = give_ranges(&manager, host_name, &cluster, &nodes, dry_run).await?;
            for (name, range) in &given {
                if let Some(n) = nodes.iter_mut().find(|n| n.range.name == *name) {
                    n.range.pod_cidr = Some(range.clone());
                }
            }
        }
        Ok::<_, GiveError>((Some(network), nodes, version, given))
    });
    let (network, nodes, version, given) = match read {
        Ok(read) => read,
        Err(GiveError::Api(e)) => {
            return match e {
                // While a control plane comes up (or is restarted) the API
                // server may not answer yet; that is not a failure.
                e if e.is_unavailable() => Ok((
                    Synced::NotYet(format!("the API server is not available yet ({e})")),
                    None,
                )),
                // `kprov init` grants nodes this read in its addons phase;
                // the kubelet runs (and this sync with it) before that.
                e if e.is_refused() => Ok((
                    Synced::NotYet(format!(
                        "the API server does not let this node read its pod network yet ({e})"
                    )),
                    None,
                )),
                e => Err(e).context(|| "reading the pod network".into()),
            };
        }
        Err(GiveError::Full(e)) => return Err(Error::failed(format!("giving pod ranges: {e}"))),
        Err(GiveError::BadCluster(e)) => {
            return Err(Error::failed(format!(
                "ConfigMap kube-system/{}: podCIDR {e}",
                kprov_controlplane::addons::POD_NETWORK_CONFIG_MAP
            )))
        }
    };
    for (name, range) in &given {
        target.note(format!("gave Node {name} the pod range {range}"));
    }
    match network.as_deref() {
        None => return Ok((Synced::NoNetwork, None)),
        Some("bridge") => {}
        Some(other) => {
            return Err(Error::failed(format!(
                "ConfigMap kube-system/{} names pod network {other:?}; this kprov knows only \"bridge\"",
                kprov_controlplane::addons::POD_NETWORK_CONFIG_MAP
            )))
        }
    }
    // A master that could not give a range (its controller manager does
    // not lead, or holds no lease yet) looks again soon rather than wait
    // for a Node to change: the lease is not a Node.
    let master_waits = host_name.is_some() && nodes.iter().any(|n| n.range.pod_cidr.is_none());
    let version = Some(version).filter(|v| !v.is_empty() && !master_waits);
    let nodes: Vec<NodeRoute> = nodes
        .into_iter()
        .map(|n| NodeRoute {
            name: n.range.name,
            pod_cidr: n.range.pod_cidr,
            internal_ip: n.internal_ip.and_then(|i| i.parse().ok()),
        })
        .collect();
    let Some(pod_cidr) = nodes
        .iter()
        .find(|n| n.name == me)
        .and_then(|n| n.pod_cidr.clone())
    else {
        return Ok((Synced::NoRange(me), version));
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
                return Ok((
                    Synced::NotYet(format!(
                        "another kprov run holds the node lock {}",
                        path.display()
                    )),
                    None,
                ))
            }
            Err(e) => return Err(e).context(|| "taking the node lock".into()),
        },
    };
    Ok((
        Synced::Applied(target.apply_files(&plan, "syncing the pod network")?),
        version,
    ))
}

enum GiveError {
    Api(kprov_kube::ApiError),
    Full(kprov_controlplane::pod_ranges::AllocateError),
    BadCluster(String),
}

impl From<kprov_kube::ApiError> for GiveError {
    fn from(e: kprov_kube::ApiError) -> Self {
        GiveError::Api(e)
    }
}

/// On a master whose controller manager leads (one at a time, as the
/// controller manager's own range allocator would), gives every Node
/// without a pod range the next free one of `cluster`. The ranges given.
async fn give_ranges(
    manager: &Path,
    host_name: &str,
    cluster: &str,
    nodes: &[NodeInfo],
    dry_run: bool,
) -> Result<Vec<(String, String)>, GiveError> {
    if nodes.iter().all(|n| n.range.pod_cidr.is_some()) {
        return Ok(Vec::new());
    }
    let client = kprov_kube::client(manager).await?;
    let leader = kprov_kube::pod_ranges::controller_manager_leader(&client).await?;
    if leader.as_deref() != Some(host_name) {
        return Ok(Vec::new());
    }
    let cluster: Cidr = cluster.parse().map_err(GiveError::BadCluster)?;
    let ranges: Vec<NodeRange> = nodes.iter().map(|n| n.range.clone()).collect();
    let given = pod_ranges::allocate(&cluster, &ranges).map_err(GiveError::Full)?;
    if !dry_run {
        for (name, range) in &given {
            kprov_kube::pod_ranges::set_pod_range(&client, name, range).await?;
        }
    }
    Ok(given)
}
