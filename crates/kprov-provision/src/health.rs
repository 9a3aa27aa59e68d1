//! The node health check run by `kprov-healthcheck.timer`.
//!
//! Each run probes the container runtime's socket and, once the node has
//! joined (kubelet has a config), kubelet's `/healthz`. A probe failure is
//! counted in /var/lib/kprov/health/<unit>.failures; after
//! [`FAILURE_THRESHOLD`] consecutive failures the unit is restarted and the
//! reason logged. The decision is pure ([`decide`]); probing and restarting
//! are the thin layer around it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use kprov_core::ContainerRuntime;
use kprov_host::fs::{self, FileAttrs};
use kprov_host::{Command, HostError, Root, Runner};

use kprov_plan::STATE_DIR;

/// Consecutive failures before a restart.
pub const FAILURE_THRESHOLD: u32 = 3;

/// kubelet's health endpoint (its `healthzPort` default).
pub const KUBELET_HEALTHZ: &str = "127.0.0.1:10248";

/// What to do after a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Healthy, or not yet failing long enough.
    Wait,
    /// Restart the unit, for this reason.
    Restart(String),
}

/// Given the failures counted so far and this probe's result, the new count
/// and the action.
pub fn decide(previous_failures: u32, probe: &Result<(), String>, threshold: u32) -> (u32, Action) {
    match probe {
        Ok(()) => (0, Action::Wait),
        Err(reason) => {
            let failures = previous_failures + 1;
            if failures >= threshold {
                (
                    0,
                    Action::Restart(format!("{reason} ({failures} consecutive failed checks)")),
                )
            } else {
                (failures, Action::Wait)
            }
        }
    }
}

/// One probe's result for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The unit probed.
    pub unit: String,
    /// The probe result.
    pub probe: Result<(), String>,
    /// Failures counted now.
    pub failures: u32,
    /// Set when the unit was restarted, with the reason.
    pub restarted: Option<String>,
}

fn probe_socket(path: &Path) -> Result<(), String> {
    UnixStream::connect(path)
        .map(|_| ())
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))
}

fn probe_healthz(addr: &str) -> Result<(), String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("GET http://{addr}/healthz: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    stream
        .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET http://{addr}/healthz: {e}"))?;
    let mut response = String::new();
    stream
        .take(4096)
        .read_to_string(&mut response)
        .map_err(|e| format!("GET http://{addr}/healthz: {e}"))?;
    let status_ok = response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    if status_ok && body == "ok" {
        Ok(())
    } else {
        let status = response.lines().next().unwrap_or("no response");
        Err(format!(
            "GET http://{addr}/healthz answered {status:?} {body:?}"
        ))
    }
}

/// Where the failed checks of `unit` are counted.
pub fn counter_path(unit: &str) -> String {
    format!("{STATE_DIR}/health/{unit}.failures")
}

fn handle(
    unit: &str,
    probe: Result<(), String>,
    root: &Root,
    runner: &dyn Runner,
) -> Result<CheckResult, HostError> {
    let path = counter_path(unit);
    let previous = fs::read(root, Path::new(&path))?
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
        .unwrap_or(0);
    let (failures, action) = decide(previous, &probe, FAILURE_THRESHOLD);
    if failures != previous {
        fs::write_atomic(
            root,
            Path::new(&path),
            format!("{failures}\n").as_bytes(),
            FileAttrs::root(0o644),
        )?;
    }
    let restarted = match action {
        Action::Wait => None,
        Action::Restart(reason) => {
            tracing::warn!(unit, %reason, "restarting unhealthy unit");
            runner.run_checked(&Command::new("systemctl", ["restart", unit]))?;
            Some(reason)
        }
    };
    Ok(CheckResult {
        unit: unit.to_string(),
        probe,
        failures,
        restarted,
    })
}

/// Runs one round of checks on a live node.
pub fn run_once(
    root: &Root,
    runner: &dyn Runner,
    runtime: ContainerRuntime,
) -> Result<Vec<CheckResult>, HostError> {
    // A round that saw the kubelet's config before a reset removed it
    // must not start the kubelet the reset just stopped: wait for the
    // node lock, as long as it takes.
    let _lock = kprov_host::NodeLock::acquire(root, std::time::Duration::MAX, &mut |_| {})?;
    let mut results = Vec::new();
    let socket = root.resolve_following(runtime.socket())?;
    results.push(handle(runtime.unit(), probe_socket(&socket), root, runner)?);
    // Before join kubelet has no config and is not meant to run.
    if fs::read(root, Path::new("/var/lib/kubelet/config.yaml"))?.is_some() {
        results.push(handle(
            "kubelet.service",
            probe_healthz(KUBELET_HEALTHZ),
            root,
            runner,
        )?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_only_after_consecutive_failures() {
        let fail = Err("socket gone".to_string());
        assert_eq!(decide(0, &fail, 3), (1, Action::Wait));
        assert_eq!(decide(1, &fail, 3), (2, Action::Wait));
        assert_eq!(
            decide(2, &fail, 3),
            (
                0,
                Action::Restart("socket gone (3 consecutive failed checks)".into())
            )
        );
        assert_eq!(decide(2, &Ok(()), 3), (0, Action::Wait));
    }

    #[test]
    fn a_closed_port_and_a_missing_socket_are_failures() {
        assert!(probe_healthz("127.0.0.1:1")
            .unwrap_err()
            .starts_with("GET http://127.0.0.1:1/healthz: "));
        assert!(probe_socket(Path::new("/nonexistent.sock"))
            .unwrap_err()
            .starts_with("cannot connect to /nonexistent.sock"));
    }
}
