//! `kprov pod-network sync`: the node side of the `bridge` pod network.
//! Reads the cluster with the kubelet's own credentials and applies what
//! `kprov_provision::render::cni` decides: the CNI config for this node's
//! pod range, and kprov's routes (protocol 77) to the other nodes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kprov_controlplane::api;
use kprov_host::fs::{self, FileAttrs};
use kprov_host::{Root, Runner, SystemRunner};
use kprov_provision::pod_routes;
use kprov_provision::render::cni::{self, NodeRoute, RouteChange};

use crate::cli::PodNetworkSyncArgs;

/// Runs one sync; every change is logged on stderr (the journal).
pub fn sync(args: PodNetworkSyncArgs) -> anyhow::Result<ExitCode> {
    if !args.kubeconfig.exists() {
        eprintln!(
            "pod-network: this node has not joined a cluster ({} does not exist); nothing to do",
            args.kubeconfig.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let me = api::kubelet_node_name(&args.kubeconfig)?;
    let read = super::runtime()?.block_on(async {
        let client = api::client(&args.kubeconfig).await?;
        let network = api::pod_network(&client).await?;
        let nodes = match network.as_deref() {
            Some("bridge") => api::node_pod_ranges(&client).await?,
            _ => Vec::new(),
        };
        Ok::<_, api::ApiError>((network, nodes))
    });
    let (network, nodes) = match read {
        Ok(read) => read,
        // While a control plane comes up (or is restarted) this runs every
        // 10 s; an API server not answering yet is not a failure of the unit.
        Err(e) if e.is_unavailable() => {
            eprintln!("pod-network: the API server is not available yet ({e}); trying again on the next run");
            return Ok(ExitCode::SUCCESS);
        }
        // `kprov init` grants nodes this read in its addons phase; the
        // kubelet runs (and this timer with it) before that.
        Err(e) if e.is_refused() => {
            eprintln!("pod-network: the API server does not let this node read its pod network yet ({e}); trying again on the next run");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    match network.as_deref() {
        None => {
            eprintln!("pod-network: the cluster runs no pod network that kprov manages; nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        Some("bridge") => {}
        Some(other) => anyhow::bail!(
            "ConfigMap kube-system/{} names pod network {other:?}; this kprov knows only \"bridge\"",
            kprov_controlplane::addons::POD_NETWORK_CONFIG_MAP
        ),
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
        eprintln!("pod-network: waiting for the controller manager to give node {me} a pod range");
        return Ok(ExitCode::SUCCESS);
    };

    let root = Root::live();
    // A sync runs every 10 s: while another kprov run changes the node
    // (provision, reset), this round is skipped rather than queued.
    let _lock = if args.dry_run {
        None
    } else {
        match kprov_host::NodeLock::acquire(&root, std::time::Duration::ZERO, &mut |_| {}) {
            Ok(lock) => Some(lock),
            Err(kprov_host::HostError::Locked { path, .. }) => {
                eprintln!(
                    "pod-network: another kprov run holds the node lock {}; trying again on the next run",
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e.into()),
        }
    };
    write_conflist(&root, &pod_cidr, args.dry_run)?;
    let runner = SystemRunner::new(root);
    sync_routes(&runner, &cni::desired_routes(&nodes, &me), args.dry_run)?;
    Ok(ExitCode::SUCCESS)
}

fn write_conflist(root: &Root, pod_cidr: &str, dry_run: bool) -> anyhow::Result<()> {
    let path = Path::new(cni::BRIDGE_CONFLIST);
    let want = cni::bridge_conflist(pod_cidr);
    if fs::read(root, path)?.as_deref() == Some(want.as_bytes()) {
        return Ok(());
    }
    if !dry_run {
        fs::write_atomic(root, path, want.as_bytes(), FileAttrs::root(0o644))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "pod-network: {}wrote {} for pod range {pod_cidr}",
        if dry_run { "would have " } else { "" },
        path.display()
    );
    Ok(())
}

fn sync_routes(
    runner: &dyn Runner,
    desired: &std::collections::BTreeMap<String, std::net::IpAddr>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let current = pod_routes::current(runner)?;
    for change in cni::route_changes(&current, desired) {
        if !dry_run {
            pod_routes::apply(runner, &change)?;
        }
        let what = match &change {
            RouteChange::Replace {
                destination,
                gateway,
            } => format!("route to pod range {destination} via {gateway}"),
            RouteChange::Delete { destination } => {
                format!("removed the route to {destination} (no node has that range now)")
            }
        };
        eprintln!(
            "pod-network: {}{what}",
            if dry_run { "would set: " } else { "" }
        );
    }
    Ok(())
}
