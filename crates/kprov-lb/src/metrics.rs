//! What the balancer reports: a [`Snapshot`] of the pool, rendered as
//! Prometheus text (`GET /metrics`), as JSON (`GET /status`, read by
//! `kprov lb status`) and as the status table.

use std::fmt::Write;

use crate::backend::{Health, Pool};

/// One backend as reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendReport {
    /// `IP:PORT`.
    pub address: String,
    /// Its health.
    pub health: Health,
    /// Connections open to it now.
    pub active_connections: u64,
    /// Connections made to it since start.
    pub total_connections: u64,
    /// Failed health checks (and failed client connects) since start.
    pub health_check_failures: u64,
    /// Connections the balancer closed because it went down.
    pub closed_on_down: u64,
    /// Why the last check failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
}

/// The pool at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Every backend, in address order.
    pub backends: Vec<BackendReport>,
    /// Client connections closed at once for lack of a usable backend.
    pub connections_refused: u64,
}

impl Snapshot {
    /// The pool's state.
    pub fn of(pool: &Pool) -> Self {
        Self {
            backends: pool
                .iter()
                .map(|(addr, s)| BackendReport {
                    address: addr.to_string(),
                    health: s.health,
                    active_connections: s.active,
                    total_connections: s.total,
                    health_check_failures: s.check_failures,
                    closed_on_down: s.closed_on_down,
                    last_error: s.last_error.clone(),
                })
                .collect(),
            connections_refused: pool.refused,
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        type Field = fn(&BackendReport) -> u64;
        let per_backend: [(&str, &str, &str, Field); 5] = [
            ("kprov_lb_backend_up", "gauge", "Whether the backend passes its health checks (1) or not (0: down or not checked yet).", |b| u64::from(b.health == Health::Up)),
            ("kprov_lb_backend_active_connections", "gauge", "Connections open to the backend.", |b| b.active_connections),
            ("kprov_lb_backend_connections_total", "counter", "Connections made to the backend.", |b| b.total_connections),
            ("kprov_lb_backend_health_check_failures_total", "counter", "Failed health checks and failed connects to the backend.", |b| b.health_check_failures),
            ("kprov_lb_backend_closed_on_down_total", "counter", "Connections closed because the backend went down.", |b| b.closed_on_down),
        ];
        for (name, kind, help, field) in per_backend {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for b in &self.backends {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", b.address, field(b));
            }
        }
        let _ = writeln!(
            out,
            "# HELP kprov_lb_connections_refused_total Client connections closed for lack of a usable backend.\n# TYPE kprov_lb_connections_refused_total counter\nkprov_lb_connections_refused_total {}",
            self.connections_refused
        );
        out
    }

    /// The table `kprov lb status` prints.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:<8} {:>6} {:>8} {:>14}  LAST ERROR\n",
            "BACKEND", "HEALTH", "ACTIVE", "TOTAL", "CHECK FAILURES"
        );
        for b in &self.backends {
            let _ = writeln!(
                out,
                "{:<24} {:<8} {:>6} {:>8} {:>14}  {}",
                b.address,
                b.health.to_string(),
                b.active_connections,
                b.total_connections,
                b.health_check_failures,
                b.last_error.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(out, "connections refused: {}", self.connections_refused);
        out
    }
}

/// The metrics listener's answer to one HTTP request (its head):
/// `GET /metrics` (Prometheus text), `GET /status` (the JSON snapshot),
/// else 404 or 405. The connection is closed after it.
pub fn http_response(request_head: &str, snapshot: &Snapshot) -> Vec<u8> {
    let mut words = request_head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", snapshot.prometheus()),
        ("GET", "/status") => (
            "200 OK",
            "application/json",
            serde_json::to_string(snapshot).unwrap_or_default() + "\n",
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /status\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body of an HTTP response read whole, if its status is 200.
pub fn response_body(response: &[u8]) -> Result<&[u8], String> {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP response")?;
    let head = String::from_utf8_lossy(&response[..at]);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    Ok(&response[at + 4..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::Thresholds;

    fn sample() -> Snapshot {
        let a = "10.0.0.1:6443".parse().unwrap();
        let b = "10.0.0.2:6443".parse().unwrap();
        let mut pool = Pool::new(
            &[a, b].into_iter().collect(),
            Thresholds { fall: 1, rise: 1 },
        );
        pool.record(&a, Ok(()));
        pool.opened(&a);
        pool.opened(&a);
        pool.closed(&a, false);
        pool.record(&b, Err("connection refused".into()));
        pool.refuse();
        Snapshot::of(&pool)
    }

    #[test]
    fn prometheus_text_has_every_backend_and_the_refusals() {
        let text = sample().prometheus();
        for line in [
            "# TYPE kprov_lb_backend_up gauge",
            "kprov_lb_backend_up{backend=\"10.0.0.1:6443\"} 1",
            "kprov_lb_backend_up{backend=\"10.0.0.2:6443\"} 0",
            "kprov_lb_backend_active_connections{backend=\"10.0.0.1:6443\"} 1",
            "kprov_lb_backend_connections_total{backend=\"10.0.0.1:6443\"} 2",
            "kprov_lb_backend_health_check_failures_total{backend=\"10.0.0.2:6443\"} 1",
            "kprov_lb_backend_closed_on_down_total{backend=\"10.0.0.2:6443\"} 0",
            "# TYPE kprov_lb_connections_refused_total counter",
            "kprov_lb_connections_refused_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_status_json_reads_back_and_the_table_shows_each_backend() {
        let snap = sample();
        let json = serde_json::to_string(&snap).unwrap();
        assert!(
            json.contains("\"health\":\"down\",\"activeConnections\":0"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);
        let table = snap.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[1].starts_with("10.0.0.1:6443            up"),
            "{table}"
        );
        assert!(lines[2].ends_with("connection refused"), "{table}");
        assert_eq!(lines[3], "connections refused: 1");
    }

    #[test]
    fn the_metrics_listener_answers_metrics_status_and_nothing_else() {
        let snap = sample();
        let ok = http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n", &snap);
        let body = response_body(&ok).unwrap();
        assert_eq!(body, snap.prometheus().as_bytes());
        let status = http_response("GET /status HTTP/1.0\r\n", &snap);
        let parsed: Snapshot = serde_json::from_slice(response_body(&status).unwrap()).unwrap();
        assert_eq!(parsed, snap);
        let missing = http_response("GET / HTTP/1.1\r\n", &snap);
        assert_eq!(
            response_body(&missing).unwrap_err(),
            "answered \"HTTP/1.1 404 Not Found\""
        );
        let post = http_response("POST /metrics HTTP/1.1\r\n", &snap);
        assert!(String::from_utf8_lossy(&post).starts_with("HTTP/1.1 405 "));
        assert_eq!(
            response_body(b"HTTP/1.1 200 OK\r\n").unwrap_err(),
            "no complete HTTP response"
        );
    }
}
