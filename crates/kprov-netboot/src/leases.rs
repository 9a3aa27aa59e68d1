//! The lease table of the dynamic pool (full mode): which MAC holds which
//! pool address until when. Pure: time comes in as seconds since the Unix
//! epoch; the server saves it as JSON after each change so leases survive
//! a restart ([`LeaseTable::to_json`], [`LeaseTable::from_json`]).
//!
//! An entry is an offer (made on DISCOVER, held briefly) or a bound lease
//! (ACKed). Each address has at most one entry, so the table never holds
//! more entries than the pool has addresses: when an address goes to a
//! new client, the entry of its previous holder goes. A pool with no free
//! address takes back the oldest pending offer before giving up, so
//! DISCOVERs that are never followed by a REQUEST cannot empty it.
//! Expired offers and entries outside the pool are pruned; expired bound
//! leases stay until their address is needed, so a returning client gets
//! its old address back.

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
    /// Only offered (not yet requested and ACKed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub offered: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
    /// When expired offers were last pruned.
    #[serde(skip)]
    pruned_at: u64,
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
        // Nothing free: take back the oldest offer made to another client
        // (it has not asked for it yet; it will get a NAK if it does).
        let oldest = self
            .leases
            .iter()
            .filter(|(holder, l)| {
                **holder != me
                    && l.offered
                    && (first..=last).contains(&u32::from(l.ip))
                    && !reserved(l.ip)
            })
            .min_by_key(|(_, l)| l.expires)
            .map(|(holder, l)| (holder.clone(), l.ip));
        let (holder, ip) = oldest?;
        self.leases.remove(&holder);
        self.by_ip.remove(&ip);
        Some(ip)
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

    /// Records a bound lease (ACK). Returns whether the table changed.
    pub fn commit(&mut self, mac: &MacAddr, ip: Ipv4Addr, expires: u64) -> bool {
        self.put(
            mac,
            Lease {
                ip,
                expires,
                offered: false,
            },
        )
    }

    /// Holds `ip` for `mac` until `until` after an OFFER. A bound lease of
    /// `mac` on the same address that lasts longer is kept as it is.
    /// Returns whether the table changed.
    pub fn offer(&mut self, mac: &MacAddr, ip: Ipv4Addr, until: u64) -> bool {
        if let Some(l) = self.leases.get(&mac.to_string()) {
            if l.ip == ip && !l.offered && l.expires >= until {
                return false;
            }
        }
        self.put(
            mac,
            Lease {
                ip,
                expires: until,
                offered: true,
            },
        )
    }

    fn put(&mut self, mac: &MacAddr, new: Lease) -> bool {
        let me = mac.to_string();
        // The address's previous holder loses its entry: one entry per
        // address.
        if let Some(holder) = self.by_ip.get(&new.ip).cloned() {
            if holder != me {
                self.leases.remove(&holder);
            }
        }
        let old = self.leases.insert(me.clone(), new);
        if let Some(old) = old {
            if old.ip != new.ip && self.by_ip.get(&old.ip) == Some(&me) {
                self.by_ip.remove(&old.ip);
            }
        }
        self.by_ip.insert(new.ip, me);
        old != Some(new)
    }

    /// The address `mac` holds by a bound, unexpired lease.
    pub fn bound(&self, mac: &MacAddr, now: u64) -> Option<Ipv4Addr> {
        self.leases
            .get(&mac.to_string())
            .filter(|l| !l.offered && l.expires > now)
            .map(|l| l.ip)
    }

    /// Removes expired offers and entries outside `pool` (at most once per
    /// second of `now`). Returns whether the table changed.
    pub fn prune(&mut self, pool: Option<&Pool>, now: u64) -> bool {
        if now == self.pruned_at {
            return false;
        }
        self.pruned_at = now;
        let before = self.leases.len();
        let in_pool = |ip: Ipv4Addr| {
            pool.is_some_and(|p| (u32::from(p.start)..=u32::from(p.end)).contains(&u32::from(ip)))
        };
        self.leases
            .retain(|_, l| in_pool(l.ip) && !(l.offered && l.expires <= now));
        if self.leases.len() == before {
            return false;
        }
        self.by_ip = self.leases.iter().map(|(m, l)| (l.ip, m.clone())).collect();
        true
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

    #[test]
    fn offers_never_empty_the_pool_and_the_table_holds_one_entry_per_address() {
        let mut t = LeaseTable::default();
        let none = |_| false;
        // Three DISCOVERs that are never followed up fill the pool.
        for n in 1..=3 {
            let ip = t
                .choose(&mac(n), &pool(), &none, 100 + u64::from(n))
                .unwrap();
            assert!(t.offer(&mac(n), ip, 110 + u64::from(n)));
        }
        // A real client still gets an address: the oldest offer's.
        let ip = t.choose(&mac(9), &pool(), &none, 105).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 10));
        assert!(t.get(&mac(1)).is_none(), "the oldest offer was taken back");
        t.offer(&mac(9), ip, 115);
        assert!(t.is_free_for(&mac(9), ip, 106));
        assert!(!t.is_free_for(&mac(1), ip, 106));
        t.commit(&mac(9), ip, 4000);
        assert_eq!(t.bound(&mac(9), 106), Some(ip));
        assert_eq!(t.bound(&mac(2), 106), None, "an offer binds nothing");
        // Bound leases are never taken back for an offer.
        for n in 10..=12 {
            let _ = t
                .choose(&mac(n), &pool(), &none, 107)
                .map(|ip| t.offer(&mac(n), ip, 117));
        }
        assert_eq!(t.bound(&mac(9), 107), Some(ip));
        assert!(t.len() <= 3, "{:?}", t.leases);
        // A DISCOVER from a bound client keeps its lease bound.
        assert!(!t.offer(&mac(9), ip, 200));
        assert_eq!(t.bound(&mac(9), 300), Some(ip));
        // Expired offers go; bound leases stay (even expired) until their
        // address is needed.
        assert!(t.prune(Some(&pool()), 5000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&mac(9)).unwrap().ip, ip);
        assert!(!t.prune(Some(&pool()), 5000), "once per second");
        // Another client taking the expired address removes the old entry.
        let next = t.choose(&mac(20), &pool(), &|a| a != ip, 5001).unwrap();
        assert_eq!(next, ip);
        t.commit(&mac(20), ip, 9000);
        assert!(t.get(&mac(9)).is_none());
        // Entries outside the pool (it shrank) are pruned.
        let small = Pool {
            start: Ipv4Addr::new(10, 0, 0, 11),
            end: Ipv4Addr::new(10, 0, 0, 12),
        };
        assert!(t.prune(Some(&small), 5002));
        assert!(t.is_empty());
    }
}
