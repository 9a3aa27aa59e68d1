//! Routes of one protocol number and network links, through `ip`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kprov_host::{Command, HostError, Runner};

use super::{ApplyContext, Status};

/// The routes of `protocol` now: destination -> gateway.
pub fn current_routes(
    runner: &dyn Runner,
    protocol: u8,
) -> Result<BTreeMap<String, IpAddr>, HostError> {
    let proto = protocol.to_string();
    let cmd = Command::new("ip", ["-j", "route", "show", "proto", proto.as_str()]);
    let shown = runner.run_checked(&cmd)?;
    parse_ip_routes(&shown.stdout).map_err(|reason| HostError::CommandFailed {
        command: cmd.to_string(),
        status: "unreadable output".into(),
        stderr_tail: reason,
    })
}

/// Parses `ip -j route show ...` output into destination -> gateway
/// (routes without a gateway are left out).
pub fn parse_ip_routes(json: &str) -> Result<BTreeMap<String, IpAddr>, String> {
    #[derive(serde::Deserialize)]
    struct Route {
        dst: String,
        gateway: Option<IpAddr>,
    }
    let routes: Vec<Route> = if json.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(json).map_err(|e| format!("unexpected `ip -j route` output: {e}"))?
    };
    Ok(routes
        .into_iter()
        .filter_map(|r| Some((r.dst, r.gateway?)))
        .collect())
}

/// A change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add or correct the route to `destination` via `gateway`.
    Replace {
        /// A prefix.
        destination: String,
        /// Where it goes.
        gateway: IpAddr,
    },
    /// Remove a route no longer wanted.
    Delete {
        /// A prefix.
        destination: String,
    },
}

/// The changes that turn `current` into `desired`.
pub fn route_changes(
    current: &BTreeMap<String, IpAddr>,
    desired: &BTreeMap<String, IpAddr>,
) -> Vec<RouteChange> {
    let mut changes: Vec<RouteChange> = desired
        .iter()
        .filter(|(dst, via)| current.get(*dst) != Some(via))
        .map(|(dst, via)| RouteChange::Replace {
            destination: dst.clone(),
            gateway: *via,
        })
        .collect();
    changes.extend(
        current
            .keys()
            .filter(|dst| !desired.contains_key(*dst))
            .map(|dst| RouteChange::Delete {
                destination: dst.clone(),
            }),
    );
    changes
}

fn describe(changes: &[RouteChange]) -> String {
    changes
        .iter()
        .map(|c| match c {
            RouteChange::Replace {
                destination,
                gateway,
            } => format!("{destination} via {gateway}"),
            RouteChange::Delete { destination } => format!("{destination} to delete"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn check_routes(
    protocol: u8,
    desired: &BTreeMap<String, IpAddr>,
    ctx: &ApplyContext<'_>,
) -> Result<Status, HostError> {
    let current = current_routes(ctx.runner, protocol)?;
    let changes = route_changes(&current, desired);
    Ok(if changes.is_empty() {
        Status::Ok
    } else if desired.is_empty() {
        Status::Present(current.keys().cloned().collect::<Vec<_>>().join(" "))
    } else if current.is_empty() {
        Status::Missing(describe(&changes))
    } else {
        Status::Differs(describe(&changes))
    })
}

pub(super) fn converge_routes(
    protocol: u8,
    desired: &BTreeMap<String, IpAddr>,
    ctx: &ApplyContext<'_>,
) -> Result<(), HostError> {
    let proto = protocol.to_string();
    for change in route_changes(&current_routes(ctx.runner, protocol)?, desired) {
        let args: Vec<String> = match change {
            RouteChange::Replace {
                destination,
                gateway,
            } => vec![
                "route".into(),
                "replace".into(),
                destination,
                "via".into(),
                gateway.to_string(),
                "proto".into(),
                proto.clone(),
            ],
            RouteChange::Delete { destination } => vec![
                "route".into(),
                "del".into(),
                destination,
                "proto".into(),
                proto.clone(),
            ],
        };
        ctx.runner.run_checked(&Command::new("ip", args))?;
    }
    Ok(())
}

pub(super) fn check_link_absent(name: &str, ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    let exists = ctx
        .runner
        .run(&Command::new("ip", ["link", "show", name]))
        .is_ok_and(|o| o.success);
    Ok(if exists {
        Status::Present(format!("link {name} exists"))
    } else {
        Status::Ok
    })
}

pub(super) fn delete_link(name: &str, ctx: &ApplyContext<'_>) -> Result<(), HostError> {
    ctx.runner
        .run_checked(&Command::new("ip", ["link", "delete", name]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(pairs: &[(&str, &str)]) -> BTreeMap<String, IpAddr> {
        pairs
            .iter()
            .map(|(d, v)| (d.to_string(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn only_the_differences_become_changes() {
        let current = routes(&[("10.244.1.0/24", "10.0.0.2"), ("10.244.9.0/24", "10.0.0.9")]);
        let desired = routes(&[("10.244.1.0/24", "10.0.0.2"), ("10.244.2.0/24", "10.0.0.3")]);
        assert_eq!(
            route_changes(&current, &desired),
            vec![
                RouteChange::Replace {
                    destination: "10.244.2.0/24".into(),
                    gateway: "10.0.0.3".parse().unwrap()
                },
                RouteChange::Delete {
                    destination: "10.244.9.0/24".into()
                },
            ]
        );
        assert!(route_changes(&desired, &desired).is_empty());
    }

    #[test]
    fn ip_json_routes_are_read_and_gatewayless_ones_skipped() {
        let json = r#"[{"dst":"10.244.1.0/24","gateway":"10.0.0.2","dev":"eth0","protocol":"77"},
                       {"dst":"10.244.5.0/24","dev":"kprov0","protocol":"77"}]"#;
        assert_eq!(
            parse_ip_routes(json).unwrap(),
            routes(&[("10.244.1.0/24", "10.0.0.2")])
        );
        assert!(parse_ip_routes("").unwrap().is_empty());
        assert!(parse_ip_routes("{").is_err());
    }
}
