//! `kprov pod-network sync`: the node side of the `bridge` pod network,
//! run by kprov-pod-network.timer; the work is in kprov-workflow.

use std::process::ExitCode;

use kprov_host::Root;
use kprov_workflow::pod_network::Synced;

use crate::cli::{OutputArg, PodNetworkSyncArgs};
use crate::output::Printer;

/// Runs one sync; what it did goes to stderr (the journal).
pub fn sync(args: PodNetworkSyncArgs) -> anyhow::Result<ExitCode> {
    let session = super::Session::new(Root::live())?;
    let mut printer = Printer::new("pod-network sync", OutputArg::Text, args.dry_run);
    let mut target = session.target(args.dry_run, &mut printer);
    let synced = kprov_workflow::pod_network::sync(&mut target, &args.kubeconfig)?;
    let message = match synced {
        Synced::NotJoined => format!(
            "this node has not joined a cluster ({} does not exist); nothing to do",
            args.kubeconfig.display()
        ),
        Synced::NotYet(why) => format!("{why}; trying again on the next run"),
        Synced::NoNetwork => {
            "the cluster runs no pod network that kprov manages; nothing to do".into()
        }
        Synced::NoRange(me) => {
            format!("waiting for the controller manager to give node {me} a pod range")
        }
        Synced::Applied(report) if report.changed_anything() => report.summary_line(),
        Synced::Applied(_) => return Ok(ExitCode::SUCCESS),
    };
    eprintln!("pod-network: {message}");
    Ok(ExitCode::SUCCESS)
}
