//! Counters of the servers, rendered in the Prometheus text format at
//! `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

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
