//! Counters of the servers, and gauges of the machines' phases, rendered
//! in the Prometheus text format at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::Phase;

/// The counters (relaxed atomics: they are statistics).
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests by outcome.
    pub http_ok: AtomicU64,
    /// HTTP 4xx/5xx.
    pub http_errors: AtomicU64,
    /// Bytes of HTTP bodies sent.
    pub http_bytes: AtomicU64,
    /// DHCPOFFERs sent.
    pub dhcp_offers: AtomicU64,
    /// DHCPACKs sent.
    pub dhcp_acks: AtomicU64,
    /// DHCPNAKs sent.
    pub dhcp_naks: AtomicU64,
    /// Requests left unanswered (unknown MACs, malformed packets, ...).
    pub dhcp_ignored: AtomicU64,
    /// TFTP transfers completed.
    pub tftp_transfers: AtomicU64,
    /// TFTP requests refused or transfers failed.
    pub tftp_errors: AtomicU64,
    /// TFTP payload bytes sent.
    pub tftp_bytes: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One machine as the phase metrics see it.
#[derive(Debug, Clone)]
pub struct MachinePhase {
    /// Its name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// When that phase began (seconds since the epoch), when known.
    pub since: Option<u64>,
}

/// Every phase, in order.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::PxeBooting,
    Phase::Installing,
    Phase::Installed,
    Phase::Joining,
    Phase::Ready,
    Phase::Failed,
];

/// A phase's name in metric labels (as in Machine status).
fn phase_label(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The gauges of the machines' phases: how many are in each, and how
/// long each machine has been in its phase at `now`.
pub fn render_phases(machines: &[MachinePhase], now: u64) -> String {
    let mut s = String::from(
        "# HELP kprov_netboot_machines_by_phase Machines by phase, as netboot sees them.\n\
         # TYPE kprov_netboot_machines_by_phase gauge\n",
    );
    for phase in PHASES {
        let n = machines.iter().filter(|m| m.phase == phase).count();
        s.push_str(&format!(
            "kprov_netboot_machines_by_phase{{phase=\"{}\"}} {n}\n",
            phase_label(phase)
        ));
    }
    s.push_str(
        "# HELP kprov_netboot_machine_phase_seconds Seconds each machine has been in its phase.\n\
         # TYPE kprov_netboot_machine_phase_seconds gauge\n",
    );
    for m in machines {
        if let Some(since) = m.since {
            // Names are DNS labels: nothing to escape.
            s.push_str(&format!(
                "kprov_netboot_machine_phase_seconds{{machine=\"{}\",phase=\"{}\"}} {}\n",
                m.name,
                phase_label(m.phase),
                now.saturating_sub(since)
            ));
        }
    }
    s
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self, machines: usize) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (labels, v) in rows {
                s.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        counter(
            "kprov_netboot_http_requests_total",
            "HTTP requests served.",
            &[
                ("{result=\"ok\"}", g(&self.http_ok)),
                ("{result=\"error\"}", g(&self.http_errors)),
            ],
        );
        counter(
            "kprov_netboot_dhcp_replies_total",
            "DHCP replies sent, by type.",
            &[
                ("{type=\"offer\"}", g(&self.dhcp_offers)),
                ("{type=\"ack\"}", g(&self.dhcp_acks)),
                ("{type=\"nak\"}", g(&self.dhcp_naks)),
            ],
        );
        counter(
            "kprov_netboot_dhcp_ignored_total",
            "DHCP requests left unanswered.",
            &[("", g(&self.dhcp_ignored))],
        );
        counter(
            "kprov_netboot_tftp_transfers_total",
            "TFTP transfers, by result.",
            &[
                ("{result=\"ok\"}", g(&self.tftp_transfers)),
                ("{result=\"error\"}", g(&self.tftp_errors)),
            ],
        );
        counter(
            "kprov_netboot_bytes_served_total",
            "Payload bytes sent, by protocol.",
            &[
                ("{proto=\"http\"}", g(&self.http_bytes)),
                ("{proto=\"tftp\"}", g(&self.tftp_bytes)),
            ],
        );
        s.push_str(&format!("# HELP kprov_netboot_machines Machines loaded.\n# TYPE kprov_netboot_machines gauge\nkprov_netboot_machines {machines}\n"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_counted_and_each_machine_says_how_long_it_has_been_in_its_own() {
        let machines = [
            MachinePhase {
                name: "node1".into(),
                phase: Phase::PxeBooting,
                since: Some(100),
            },
            MachinePhase {
                name: "node2".into(),
                phase: Phase::Pending,
                since: None,
            },
            MachinePhase {
                name: "node3".into(),
                phase: Phase::PxeBooting,
                since: Some(130),
            },
        ];
        let text = render_phases(&machines, 160);
        assert!(
            text.contains("kprov_netboot_machines_by_phase{phase=\"PXEBooting\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kprov_netboot_machines_by_phase{phase=\"Pending\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kprov_netboot_machines_by_phase{phase=\"Ready\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "kprov_netboot_machine_phase_seconds{machine=\"node1\",phase=\"PXEBooting\"} 60\n"
            ),
            "{text}"
        );
        assert!(!text.contains("machine=\"node2\""), "{text}");
    }
}
