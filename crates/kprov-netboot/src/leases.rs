//! The lease table of the dynamic pool (full mode): which MAC holds which
//! pool address until when. Pure: time comes in as seconds since the Unix
//! epoch; the server saves it as JSON after each change so leases survive
//! a restart ([`LeaseTable::to_json`], [`LeaseTable::from_json`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::Pool;
use crate::machine::MacAddr;

/// One lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// Seconds since the epoch when it expires.
    pub expires: u64,
}

/// Leases by MAC (as text, so the JSON reads well).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseTable {
    leases: BTreeMap<String, Lease>,
    /// Who holds each address (derived from `leases`).
    #[serde(skip)]
    by_ip: BTreeMap<Ipv4Addr, String>,
    /// Where the search for a free address resumes, so that a busy pool
    /// is not scanned from its start for every client.
    #[serde(skip)]
    cursor: u32,
}

impl LeaseTable {
    /// Reads a saved table.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut t: Self = serde_json::from_str(text)?;
        t.by_ip = t.leases.iter().map(|(m, l)| (l.ip, m.clone())).collect();
        Ok(t)
    }

    /// The table as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The lease of `mac`, if it has one (expired or not).
    pub fn get(&self, mac: &MacAddr) -> Option<Lease> {
        self.leases.get(&mac.to_string()).copied()
    }

    /// The address `mac` should be offered: its current or last address if
    /// still free, else the lowest free pool address that is neither
    /// leased to another MAC (unexpired) nor in `reserved`. Nothing is
    /// recorded until [`LeaseTable::commit`].
    pub fn choose(
        &mut self,
        mac: &MacAddr,
        pool: &Pool,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let me = mac.to_string();
        let (first, last) = (u32::from(pool.start), u32::from(pool.end));
        let usable = |t: &Self, ip: Ipv4Addr| !reserved(ip) && t.is_free_for_text(&me, ip, now);
        if let Some(l) = self.leases.get(&me) {
            if (first..=last).contains(&u32::from(l.ip)) && usable(self, l.ip) {
                return Some(l.ip);
            }
        }
        let size = last - first + 1;
        let start = self.cursor.clamp(first, last);
        for i in 0..size {
            let ip = Ipv4Addr::from(first + (start - first + i) % size);
            if usable(self, ip) {
                self.cursor = u32::from(ip).saturating_add(1);
                return Some(ip);
            }
        }
        None
    }

    fn is_free_for_text(&self, mac: &str, ip: Ipv4Addr, now: u64) -> bool {
        match self.by_ip.get(&ip) {
            None => true,
            Some(holder) if holder == mac => true,
            Some(holder) => self
                .leases
                .get(holder)
                .is_none_or(|l| l.ip != ip || l.expires <= now),
        }
    }

    /// Whether `ip` may be confirmed for `mac` (not held by someone else).
    pub fn is_free_for(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        self.is_free_for_text(&mac.to_string(), ip, now)
    }

    /// Records a lease. Returns whether the table changed.
    pub fn commit(&mut self, mac: &MacAddr, ip: Ipv4Addr, expires: u64) -> bool {
        let new = Lease { ip, expires };
        let me = mac.to_string();
        let old = self.leases.insert(me.clone(), new);
        if let Some(old) = old {
            if old.ip != ip && self.by_ip.get(&old.ip) == Some(&me) {
                self.by_ip.remove(&old.ip);
            }
        }
        self.by_ip.insert(ip, me);
        old != Some(new)
    }

    /// Ends `mac`'s lease now (DHCPRELEASE/DECLINE). Returns whether the
    /// table changed.
    pub fn release(&mut self, mac: &MacAddr, now: u64) -> bool {
        match self.leases.get_mut(&mac.to_string()) {
            Some(l) if l.expires > now => {
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// How many leases are recorded.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool() -> Pool {
        Pool {
            start: Ipv4Addr::new(10, 0, 0, 10),
            end: Ipv4Addr::new(10, 0, 0, 12),
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn addresses_are_handed_out_once_kept_across_renewals_and_reused_after_expiry() {
        let mut t = LeaseTable::default();
        let none = |_| false;
        let reserved = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 10);
        let a = t.choose(&mac(1), &pool(), &reserved, 100).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 11));
        assert!(t.commit(&mac(1), a, 200));
        assert!(!t.commit(&mac(1), a, 200));
        assert_eq!(t.choose(&mac(1), &pool(), &reserved, 150), Some(a));
        assert_eq!(
            t.choose(&mac(2), &pool(), &reserved, 150),
            Some(Ipv4Addr::new(10, 0, 0, 12))
        );
        t.commit(&mac(2), Ipv4Addr::new(10, 0, 0, 12), 200);
        assert_eq!(t.choose(&mac(3), &pool(), &reserved, 150), None);
        assert!(!t.is_free_for(&mac(3), a, 150));
        assert!(
            t.choose(&mac(3), &pool(), &reserved, 250).is_some(),
            "expired leases free their addresses"
        );
        assert!(t.release(&mac(2), 160));
        // The search resumes after the last address handed out (.12, now
        // released), before coming round to .10.
        assert_eq!(
            t.choose(&mac(3), &pool(), &none, 170),
            Some(Ipv4Addr::new(10, 0, 0, 12))
        );
        let back = LeaseTable::from_json(&t.to_json()).unwrap();
        assert_eq!(back.leases, t.leases);
        assert_eq!(back.by_ip, t.by_ip);
    }
}
