//! Backends and their health: the state machine of one backend and the
//! pool that picks one for a new connection. No I/O: the async layer
//! reports check results and connections, and acts on the transitions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

/// Parses a backend address `IP:PORT` (`[IPv6]:PORT` for IPv6). Host
/// names are refused: the balancer must not depend on a resolver that may
/// itself need the API.
pub fn parse_backend(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an IP:PORT address (for example 10.0.0.10:6443)"))
}

/// How many checks in a row change a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed checks in a row that take an up (or unknown) backend down.
    pub fall: u32,
    /// Good checks in a row that bring a down backend up. An unknown
    /// backend (never checked) is up after its first good check.
    pub rise: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { fall: 2, rise: 2 }
    }
}

/// A backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet (just started or just discovered): used only when
    /// no backend is up.
    Unknown,
    /// Passing its checks: gets new connections.
    Up,
    /// Failing: no new connections, and its open ones were closed.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// What a check result did to a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// It is up now.
    WentUp,
    /// It is down now: close its connections.
    WentDown,
}

/// One backend's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    /// Its health.
    pub health: Health,
    successes: u32,
    failures: u32,
    /// Connections open to it now.
    pub active: u64,
    /// Connections made to it since start.
    pub total: u64,
    /// Failed checks (active, and failed connects of clients) since start.
    pub check_failures: u64,
    /// Connections closed because it went down.
    pub closed_on_down: u64,
    /// The last failure's reason, if the last check failed.
    pub last_error: Option<String>,
}

impl Default for BackendState {
    fn default() -> Self {
        Self {
            health: Health::Unknown,
            successes: 0,
            failures: 0,
            active: 0,
            total: 0,
            check_failures: 0,
            closed_on_down: 0,
            last_error: None,
        }
    }
}

impl BackendState {
    /// Records a check's result.
    pub fn record(&mut self, result: Result<(), String>, t: Thresholds) -> Transition {
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                self.last_error = None;
                let rise = match self.health {
                    Health::Up => return Transition::None,
                    Health::Unknown => 1,
                    Health::Down => t.rise.max(1),
                };
                if self.successes >= rise {
                    self.health = Health::Up;
                    return Transition::WentUp;
                }
                Transition::None
            }
            Err(reason) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.check_failures += 1;
                self.last_error = Some(reason);
                if self.health != Health::Down && self.failures >= t.fall.max(1) {
                    self.health = Health::Down;
                    return Transition::WentDown;
                }
                Transition::None
            }
        }
    }
}

/// Every backend's state, and the choice of a backend for a new
/// connection.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    backends: BTreeMap<SocketAddr, BackendState>,
    thresholds: Thresholds,
    cursor: usize,
    /// Client connections closed at once because no backend was usable.
    pub refused: u64,
}

impl Pool {
    /// A pool of `addresses`, all unknown.
    pub fn new(addresses: &BTreeSet<SocketAddr>, thresholds: Thresholds) -> Self {
        let mut pool = Self {
            thresholds,
            ..Self::default()
        };
        pool.set_backends(addresses);
        pool
    }

    /// The backends' addresses.
    pub fn addresses(&self) -> BTreeSet<SocketAddr> {
        self.backends.keys().copied().collect()
    }

    /// A backend's state.
    pub fn get(&self, addr: &SocketAddr) -> Option<&BackendState> {
        self.backends.get(addr)
    }

    /// Every backend with its state, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &BackendState)> {
        self.backends.iter()
    }

    /// Replaces the set of backends: new ones start unknown, kept ones keep
    /// their state. Returns the removed ones (their connections are to be
    /// closed).
    pub fn set_backends(&mut self, addresses: &BTreeSet<SocketAddr>) -> Vec<SocketAddr> {
        let removed: Vec<SocketAddr> = self
            .backends
            .keys()
            .filter(|a| !addresses.contains(a))
            .copied()
            .collect();
        for addr in &removed {
            self.backends.remove(addr);
        }
        for addr in addresses {
            self.backends.entry(*addr).or_default();
        }
        removed
    }

    /// Records a check result (or a client's failed connect) for `addr`.
    pub fn record(&mut self, addr: &SocketAddr, result: Result<(), String>) -> Transition {
        let t = self.thresholds;
        match self.backends.get_mut(addr) {
            Some(state) => state.record(result, t),
            None => Transition::None,
        }
    }

    /// Whether `addr` may get new connections: up, or unknown while no
    /// backend is up.
    pub fn usable(&self, addr: &SocketAddr) -> bool {
        match self.backends.get(addr).map(|s| s.health) {
            Some(Health::Up) => true,
            Some(Health::Unknown) => !self.backends.values().any(|s| s.health == Health::Up),
            _ => false,
        }
    }

    /// Picks the backend for a new connection, skipping `tried`: among the
    /// up backends (else the unknown ones) the one with the fewest open
    /// connections, taking turns among equals. None: no backend is usable
    /// (the caller counts a refusal with [`Pool::refuse`]).
    pub fn pick(&mut self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let candidates = |health: Health| -> Vec<(SocketAddr, u64)> {
            self.backends
                .iter()
                .filter(|(a, s)| s.health == health && !tried.contains(a))
                .map(|(a, s)| (*a, s.active))
                .collect()
        };
        let mut pool = candidates(Health::Up);
        if pool.is_empty() && !self.backends.values().any(|s| s.health == Health::Up) {
            pool = candidates(Health::Unknown);
        }
        let least = pool.iter().map(|(_, active)| *active).min()?;
        let fewest: Vec<SocketAddr> = pool
            .iter()
            .filter(|(_, active)| *active == least)
            .map(|(a, _)| *a)
            .collect();
        let chosen = fewest[self.cursor % fewest.len()];
        self.cursor = self.cursor.wrapping_add(1);
        Some(chosen)
    }

    /// Counts a client connection closed for lack of a backend.
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    /// Counts a connection opened to `addr`.
    pub fn opened(&mut self, addr: &SocketAddr) {
        if let Some(s) = self.backends.get_mut(addr) {
            s.active += 1;
            s.total += 1;
        }
    }

    /// Counts a connection to `addr` closed (`on_down`: by the balancer,
    /// because the backend went down or was removed).
    pub fn closed(&mut self, addr: &SocketAddr, on_down: bool) {
        if let Some(s) = self.backends.get_mut(addr) {
            s.active = s.active.saturating_sub(1);
            if on_down {
                s.closed_on_down += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pool(addrs: &[&str]) -> Pool {
        Pool::new(
            &addrs.iter().map(|a| addr(a)).collect(),
            Thresholds { fall: 2, rise: 2 },
        )
    }

    #[test]
    fn backend_addresses_must_be_ip_and_port() {
        for good in ["10.0.0.1:6443", "[fd00::1]:6443", " 10.0.0.1:443 "] {
            assert!(parse_backend(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1",
            "master-1:6443",
            "10.0.0.1:99999",
            "",
            "https://10.0.0.1:6443",
        ] {
            let err = parse_backend(bad).unwrap_err();
            assert!(err.contains("is not an IP:PORT address"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_backend_is_up_after_one_good_check_and_down_after_fall_failures() {
        let t = Thresholds { fall: 2, rise: 3 };
        let mut s = BackendState::default();
        assert_eq!(s.record(Ok(()), t), Transition::WentUp);
        assert_eq!(s.record(Err("refused".into()), t), Transition::None);
        assert_eq!(s.health, Health::Up);
        assert_eq!(s.record(Err("refused".into()), t), Transition::WentDown);
        assert_eq!(s.record(Err("refused".into()), t), Transition::None);
        assert_eq!(s.check_failures, 3);
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        // Back up only after `rise` good checks in a row.
        assert_eq!(s.record(Ok(()), t), Transition::None);
        assert_eq!(s.record(Ok(()), t), Transition::None);
        assert_eq!(s.record(Err("503".into()), t), Transition::None);
        assert_eq!(s.record(Ok(()), t), Transition::None);
        assert_eq!(s.record(Ok(()), t), Transition::None);
        assert_eq!(s.record(Ok(()), t), Transition::WentUp);
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn a_failure_between_good_checks_does_not_take_a_backend_down() {
        let t = Thresholds::default();
        let mut s = BackendState::default();
        s.record(Ok(()), t);
        for _ in 0..5 {
            assert_eq!(s.record(Err("timeout".into()), t), Transition::None);
            assert_eq!(s.record(Ok(()), t), Transition::None);
        }
        assert_eq!(s.health, Health::Up);
    }

    #[test]
    fn pick_prefers_up_backends_with_the_fewest_connections() {
        let mut p = pool(&["10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443"]);
        for a in ["10.0.0.1:6443", "10.0.0.2:6443"] {
            p.record(&addr(a), Ok(()));
        }
        // .3 is unknown: not used while others are up.
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let a = p.pick(&[]).unwrap();
            p.opened(&a);
            seen.insert(a);
        }
        assert_eq!(seen, [addr("10.0.0.1:6443"), addr("10.0.0.2:6443")].into());
        assert_eq!(p.get(&addr("10.0.0.1:6443")).unwrap().active, 2);
        assert_eq!(p.get(&addr("10.0.0.2:6443")).unwrap().active, 2);
        p.closed(&addr("10.0.0.2:6443"), false);
        assert_eq!(p.pick(&[]), Some(addr("10.0.0.2:6443")));
        // A tried backend is skipped.
        assert_eq!(
            p.pick(&[addr("10.0.0.2:6443")]),
            Some(addr("10.0.0.1:6443"))
        );
        assert!(!p.usable(&addr("10.0.0.3:6443")));
    }

    #[test]
    fn unknown_backends_serve_only_while_none_is_up() {
        let mut p = pool(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        assert!(p.pick(&[]).is_some());
        assert!(p.usable(&addr("10.0.0.1:6443")));
        p.record(&addr("10.0.0.1:6443"), Err("refused".into()));
        p.record(&addr("10.0.0.1:6443"), Err("refused".into()));
        assert_eq!(p.pick(&[]), Some(addr("10.0.0.2:6443")));
        // Every backend tried or down: nothing.
        assert_eq!(p.pick(&[addr("10.0.0.2:6443")]), None);
        p.record(&addr("10.0.0.2:6443"), Err("refused".into()));
        p.record(&addr("10.0.0.2:6443"), Err("refused".into()));
        assert_eq!(p.pick(&[]), None);
        p.refuse();
        assert_eq!(p.refused, 1);
    }

    #[test]
    fn new_backend_sets_keep_the_state_of_kept_backends() {
        let mut p = pool(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        p.record(&addr("10.0.0.1:6443"), Ok(()));
        p.opened(&addr("10.0.0.1:6443"));
        let removed = p.set_backends(
            &[addr("10.0.0.1:6443"), addr("10.0.0.3:6443")]
                .into_iter()
                .collect(),
        );
        assert_eq!(removed, vec![addr("10.0.0.2:6443")]);
        let kept = p.get(&addr("10.0.0.1:6443")).unwrap();
        assert_eq!((kept.health, kept.active, kept.total), (Health::Up, 1, 1));
        assert_eq!(
            p.get(&addr("10.0.0.3:6443")).unwrap().health,
            Health::Unknown
        );
        assert_eq!(p.record(&addr("10.0.0.2:6443"), Ok(())), Transition::None);
    }
}
