//! `kprov pod-network sync`: the node side of the `bridge` pod network,
//! run by kprov-pod-network.service with --follow; the work is in
//! kprov-workflow.

use std::process::ExitCode;
use std::time::Duration;

use kprov_host::Root;
use kprov_workflow::pod_network::Synced;

use crate::cli::{OutputArg, PodNetworkSyncArgs};
use crate::output::Printer;

/// How long --follow waits for a Node to change before it syncs anyway.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// How long --follow waits while there is nothing to watch yet.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Runs one sync, or (--follow) one after each change to the Nodes; what
/// it did goes to stderr (the journal).
pub fn sync(args: PodNetworkSyncArgs) -> anyhow::Result<ExitCode> {
    let session = super::Session::new(Root::live())?;
    let mut printer = Printer::new("pod-network sync", OutputArg::Text, args.dry_run);
    let mut target = session.target(args.dry_run, &mut printer);
    let mut last_message = String::new();
    loop {
        let (synced, version) =
            match kprov_workflow::pod_network::sync_watching(&mut target, &args.kubeconfig) {
                Ok(done) => done,
                Err(e) if !args.follow => return Err(e.into()),
                // A follower outlives what it cannot do yet (a kubelet
                // still without its client certificate, say).
                Err(e) => (Synced::NotYet(format!("{e:#}")), None),
            };
        let message = match synced {
            Synced::NotJoined => format!(
                "this node has not joined a cluster ({} does not exist); nothing to do",
                args.kubeconfig.display()
            ),
            Synced::NotYet(why) => format!("{why}; trying again"),
            Synced::NoNetwork => {
                "the cluster runs no pod network that kprov manages; nothing to do".into()
            }
            Synced::NoRange(me) => {
                format!("waiting for a master to give node {me} a pod range")
            }
            Synced::Applied(report) if report.changed_anything() => report.summary_line(),
            Synced::Applied(_) => String::new(),
        };
        // A follower says a state once, not on every round.
        if !message.is_empty() && message != last_message {
            eprintln!("pod-network: {message}");
        }
        last_message = message;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let kubeconfig = session.root.resolve(&args.kubeconfig)?;
        let changed = match &version {
            Some(version) => session.rt.block_on(async {
                let client = kprov_kube::client(&kubeconfig).await?;
                kprov_kube::pod_ranges::wait_node_change(&client, version, RESYNC_EVERY).await
            }),
            None => Ok(false),
        };
        match changed {
            Ok(true) => {}
            Ok(false) if version.is_some() => {}
            // Nothing to watch yet, or the watch failed: a short pause.
            _ => std::thread::sleep(RETRY_EVERY),
        }
    }
}
