//! The thin layer under the `bridge` pod network's routes: reading kprov's
//! routes (protocol [`cni::ROUTE_PROTOCOL`]) from the kernel and applying
//! the changes `render::cni` decides. Used by `kprov pod-network sync` and
//! by `kprov reset`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kprov_host::{Command, HostError, Runner};

use crate::render::cni::{self, RouteChange};

/// kprov's pod routes now: destination → gateway.
pub fn current(runner: &dyn Runner) -> Result<BTreeMap<String, IpAddr>, HostError> {
    let proto = cni::ROUTE_PROTOCOL.to_string();
    let cmd = Command::new("ip", ["-j", "route", "show", "proto", proto.as_str()]);
    let shown = runner.run_checked(&cmd)?;
    cni::parse_ip_routes(&shown.stdout).map_err(|reason| HostError::CommandFailed {
        command: cmd.to_string(),
        status: "unreadable output".into(),
        stderr_tail: reason,
    })
}

/// Carries out one change.
pub fn apply(runner: &dyn Runner, change: &RouteChange) -> Result<(), HostError> {
    let proto = cni::ROUTE_PROTOCOL.to_string();
    let args: Vec<String> = match change {
        RouteChange::Replace {
            destination,
            gateway,
        } => vec![
            "route".into(),
            "replace".into(),
            destination.clone(),
            "via".into(),
            gateway.to_string(),
            "proto".into(),
            proto,
        ],
        RouteChange::Delete { destination } => vec![
            "route".into(),
            "del".into(),
            destination.clone(),
            "proto".into(),
            proto,
        ],
    };
    runner.run_checked(&Command::new("ip", args))?;
    Ok(())
}

/// Whether the pods' bridge exists.
pub fn bridge_exists(runner: &dyn Runner) -> bool {
    runner
        .run(&Command::new("ip", ["link", "show", cni::BRIDGE_NAME]))
        .is_ok_and(|o| o.success)
}

/// Removes every kprov pod route and the pods' bridge.
pub fn remove_all(runner: &dyn Runner) -> Result<(), HostError> {
    for destination in current(runner)?.into_keys() {
        apply(runner, &RouteChange::Delete { destination })?;
    }
    if bridge_exists(runner) {
        runner.run_checked(&Command::new("ip", ["link", "delete", cni::BRIDGE_NAME]))?;
    }
    Ok(())
}
