//! Per-machine state and the rules that bind a machine's data to it.
//! Pure: time comes in as seconds since the Unix epoch; the server keeps
//! the table in memory and saves it to `stateDir/machines.json`
//! ([`States::to_json`], [`States::from_json`]) so that a restart does not
//! re-open a user-data window or revive a spent token.
//!
//! A [`Record`] holds what the server has seen of one MAC: its token
//! epoch and the serial of its newest seed token, whether that token has
//! opened user-data, when user-data was first served (the window), the
//! stage2 "installed" report, the address seen and the last contact. The
//! machine's phase ([`Phase`]) is derived from it, as a later Machine
//! status will be.
//!
//! The rules ([`States::open_script`], [`States::open_doc`],
//! [`States::report_installed`]):
//! - every request must come from the machine's own address: its fixed
//!   `ipAddress`, else its bound pool lease, else (proxy mode) the address
//!   its PXE boot request came from ([`Binding`]);
//! - the script needs the script token of a DHCP reply; each script that
//!   boots a kernel carries a new seed token (serial + 1), which makes the
//!   older ones invalid;
//! - NoCloud documents and the installed report need the newest seed
//!   token of the machine's current epoch, unexpired;
//! - user-data is served once per seed token (what stays on the node's
//!   `/proc/cmdline` is spent after first boot), only within
//!   `userDataWindowSeconds` of the first time it was served, and never
//!   once the Machine says `installed: true`;
//! - a new epoch (`kprov netboot rotate-token`) refuses every token of
//!   the earlier ones and starts the machine's record over (the window
//!   opens again).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::machine::MacAddr;
use crate::token::{Claims, Purpose, TokenError, Tokens};

/// Lifetimes (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long script and seed tokens stay valid.
    pub token_ttl: u64,
    /// How long after it was first served user-data stays available.
    pub user_data_window: u64,
}

/// Where a machine may ask from, as the caller knows it now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Binding {
    /// The Machine's fixed `ipAddress`; when set, the only address.
    pub fixed: Option<Ipv4Addr>,
    /// Its bound, unexpired pool lease (full mode).
    pub lease: Option<Ipv4Addr>,
}

/// One request for a machine's data: whose, in which epoch, from where,
/// with which token, where the machine may ask from, and when.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The machine.
    pub mac: MacAddr,
    /// Its current token epoch.
    pub epoch: u32,
    /// The address the request came from.
    pub peer: IpAddr,
    /// The token in the request.
    pub token: &'a str,
    /// Where the machine may ask from.
    pub binding: Binding,
    /// Now (seconds since the epoch).
    pub now: u64,
}

/// A NoCloud document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// meta-data.
    MetaData,
    /// user-data.
    UserData,
    /// vendor-data.
    VendorData,
}

/// Where a machine is in its life: Pending, PXEBooting, Installing,
/// Installed, Joining, Ready or Failed.
// Record::phase derives the first five from what netboot saw; Ready and
// Failed need the Node and the join's outcome, known only in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Phase {
    /// Nothing seen yet.
    Pending,
    /// DHCP answered or a kernel-booting script served.
    #[serde(rename = "PXEBooting")]
    PxeBooting,
    /// A script that boots an image (the stage2 writer) served.
    Installing,
    /// The stage2 report came in (or the Machine says `installed: true`).
    Installed,
    /// Its OS took its user-data (cloud-init runs the join).
    Joining,
    /// Its Node is Ready.
    Ready,
    /// Something failed; the status says what.
    Failed,
}

/// A machine's phase and when it began, from its record (if any), its
/// spec's `installed` and its Node (Ready or not) when one exists: the
/// one rule behind Machine status and the phase metrics.
pub fn phase_of(
    record: Option<&Record>,
    spec_installed: bool,
    node: Option<bool>,
) -> (Phase, Option<u64>) {
    match (node, record) {
        (Some(true), _) => (Phase::Ready, None),
        (Some(false), r) => (Phase::Joining, r.and_then(|r| r.user_data_at)),
        (None, Some(r)) => r.phase_since(spec_installed),
        (None, None) if spec_installed => (Phase::Installed, None),
        (None, None) => (Phase::Pending, None),
    }
}

/// What the server has seen of one MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Record {
    /// The token epoch this record belongs to.
    pub epoch: u32,
    /// The serial of the newest seed token (the only valid one).
    pub serial: u64,
    /// Whether that token has opened user-data.
    pub seed_used: bool,
    /// The address last seen (DHCP, boot request, HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The last time the machine was heard from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<u64>,
    /// The last DHCP reply to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhcp_at: Option<u64>,
    /// The address of its PXE boot request (proxy mode), valid until
    /// `boot_address_until`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_address: Option<Ipv4Addr>,
    /// See `boot_address`.
    pub boot_address_until: u64,
    /// The last script served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_at: Option<u64>,
    /// Whether that script boots an image (stage2).
    pub image_boot: bool,
    /// When user-data was first served in this epoch (the window start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data_first: Option<u64>,
    /// When user-data was last served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data_at: Option<u64>,
    /// When the stage2 "installed" report came in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<u64>,
    /// The last request from the machine's own address that was refused,
    /// and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Record {
    /// The phase, given whether the Machine says `installed: true`.
    pub fn phase(&self, spec_installed: bool) -> Phase {
        if spec_installed {
            return Phase::Installed;
        }
        if let Some(at) = self.installed_at {
            return match self.user_data_at {
                Some(u) if u > at => Phase::Joining,
                _ => Phase::Installed,
            };
        }
        if self.user_data_first.is_some() {
            Phase::Joining
        } else if self.script_at.is_some() && self.image_boot {
            Phase::Installing
        } else if self.script_at.is_some() || self.dhcp_at.is_some() {
            Phase::PxeBooting
        } else {
            Phase::Pending
        }
    }

    /// The phase and when it began (None: Pending, or installed by its
    /// spec).
    pub fn phase_since(&self, spec_installed: bool) -> (Phase, Option<u64>) {
        let phase = self.phase(spec_installed);
        let since = match phase {
            _ if spec_installed => None,
            Phase::Joining if self.installed_at.is_some() => self.user_data_at,
            Phase::Joining => self.user_data_first,
            Phase::Installed => self.installed_at,
            Phase::Installing => self.script_at,
            Phase::PxeBooting => match (self.dhcp_at, self.script_at) {
                (Some(d), Some(s)) => Some(d.min(s)),
                (d, s) => d.or(s),
            },
            Phase::Pending | Phase::Ready | Phase::Failed => None,
        };
        (phase, since)
    }

    fn touch(&mut self, address: Option<Ipv4Addr>, now: u64) {
        if address.is_some() {
            self.address = address;
        }
        self.last_contact = Some(now);
    }

    /// Starts the record over for a new epoch; what was seen of the
    /// network (address, contact, DHCP) stays.
    fn new_epoch(&mut self, epoch: u32) {
        *self = Self {
            epoch,
            serial: self.serial,
            address: self.address,
            last_contact: self.last_contact,
            dhcp_at: self.dhcp_at,
            boot_address: self.boot_address,
            boot_address_until: self.boot_address_until,
            ..Self::default()
        };
    }
}

/// Why a request for a machine's data was refused. Texts never include
/// a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request came from an address that is not the machine's.
    #[error("{peer} is not this machine's address ({})", expected_text(*.expected))]
    NotItsAddress {
        /// Where it came from.
        peer: IpAddr,
        /// The machine's address, if any is known.
        expected: Option<Ipv4Addr>,
    },
    /// The token is malformed, forged, of another epoch, or expired.
    #[error("{0}")]
    Token(TokenError),
    /// A newer script has been served since this seed token.
    #[error("token {serial} was superseded by token {newest} (a newer boot)")]
    Superseded {
        /// The token's serial.
        serial: u64,
        /// The newest serial.
        newest: u64,
    },
    /// This seed token has already opened user-data.
    #[error("user-data was already served for this boot's token")]
    UserDataUsed,
    /// The user-data window is over.
    #[error("the user-data window closed {ago} s ago (rotate the token to open a new one)")]
    WindowClosed {
        /// Seconds since it closed.
        ago: u64,
    },
    /// The Machine says `installed: true`.
    #[error("the machine is installed: its user-data is no longer served")]
    Installed,
}

fn expected_text(expected: Option<Ipv4Addr>) -> String {
    match expected {
        Some(ip) => ip.to_string(),
        None => "none known: no fixed address, lease or boot request".into(),
    }
}

impl Refusal {
    /// The HTTP status: 403 for who is asking, 410 for data that is gone.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotItsAddress { .. } | Refusal::Token(_) | Refusal::Superseded { .. } => 403,
            Refusal::UserDataUsed | Refusal::WindowClosed { .. } | Refusal::Installed => 410,
        }
    }
}

/// What the script of a granted request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptGrant {
    /// The new seed token, or None when the script boots the local disk.
    pub seed: Option<String>,
}

/// What the machine's script does, as [`States::open_script`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// Boots a kernel (with a seed on its command line).
    Kernel,
    /// Boots the stage2 writer for an image (with a seed too).
    Image,
    /// Exits to the local disk (installed): no seed.
    LocalDisk,
}

/// The records of every MAC seen, by MAC.
#[derive(Debug, Clone, Default)]
pub struct States {
    records: BTreeMap<MacAddr, Record>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    machines: BTreeMap<String, SavedRecord>,
}

#[derive(Serialize, Deserialize)]
struct SavedRecord {
    #[serde(default = "pending")]
    phase: Phase,
    #[serde(flatten)]
    record: Record,
}

fn pending() -> Phase {
    Phase::Pending
}

/// The script token a DHCP reply hands to iPXE for `mac`.
pub fn script_token(
    tokens: &Tokens,
    mac: &MacAddr,
    epoch: u32,
    policy: &Policy,
    now: u64,
) -> String {
    tokens.issue(
        Purpose::Script,
        mac,
        epoch,
        Claims {
            serial: 0,
            expires: now + policy.token_ttl,
        },
    )
}

fn check_address(
    peer: IpAddr,
    binding: &Binding,
    record: Option<&Record>,
    now: u64,
) -> Result<(), Refusal> {
    let expected = binding.fixed.or(binding.lease).or_else(|| {
        record
            .filter(|r| binding.fixed.is_none() && r.boot_address_until > now)
            .and_then(|r| r.boot_address)
    });
    match (peer, expected) {
        (IpAddr::V4(p), Some(e)) if p == e => Ok(()),
        _ => Err(Refusal::NotItsAddress { peer, expected }),
    }
}

impl States {
    /// Reads a saved table (the phases in it are derived, not read).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let saved: Saved = serde_json::from_str(text)?;
        let records = saved
            .machines
            .into_iter()
            .filter_map(|(mac, r)| mac.parse().ok().map(|m| (m, r.record)))
            .collect();
        Ok(Self { records })
    }

    /// The table as JSON, with each machine's phase.
    pub fn to_json(&self, spec_installed: &dyn Fn(&MacAddr) -> bool) -> String {
        let saved = Saved {
            machines: self
                .records
                .iter()
                .map(|(mac, r)| {
                    (
                        mac.to_string(),
                        SavedRecord {
                            phase: r.phase(spec_installed(mac)),
                            record: r.clone(),
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_string_pretty(&saved).unwrap_or_else(|_| "{}".into())
    }

    /// The record of `mac`, if any.
    pub fn get(&self, mac: &MacAddr) -> Option<&Record> {
        self.records.get(mac)
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record of `mac` in `epoch`, made or started over as needed.
    fn record(&mut self, mac: &MacAddr, epoch: u32) -> &mut Record {
        let r = self.records.entry(*mac).or_insert_with(|| Record {
            epoch,
            ..Record::default()
        });
        if r.epoch != epoch {
            r.new_epoch(epoch);
        }
        r
    }

    /// Notes a DHCP reply to `mac` (with the address it got, if any).
    /// Only known records and Machines (`known`) get one, so that random
    /// MACs do not fill the table.
    pub fn seen_dhcp(
        &mut self,
        mac: &MacAddr,
        epoch: u32,
        known: bool,
        address: Option<Ipv4Addr>,
        now: u64,
    ) {
        if !known && !self.records.contains_key(mac) {
            return;
        }
        let r = self.record(mac, epoch);
        r.dhcp_at = Some(now);
        r.touch(address, now);
    }

    /// Notes the address a PXE boot request (proxy mode, port 4011) came
    /// from: the machine's address until `until`.
    pub fn seen_boot_request(
        &mut self,
        mac: &MacAddr,
        epoch: u32,
        address: Ipv4Addr,
        until: u64,
        now: u64,
    ) {
        let r = self.record(mac, epoch);
        r.boot_address = Some(address);
        r.boot_address_until = until;
        r.dhcp_at = Some(now);
        r.touch(Some(address), now);
    }

    /// Notes a refusal of a request from the machine's own address.
    fn refuse(&mut self, mac: &MacAddr, epoch: u32, why: Refusal) -> Refusal {
        self.record(mac, epoch).last_error = Some(why.to_string());
        why
    }

    /// A request for the iPXE script with a script token. On success, a
    /// script that boots something carries a new seed token, and older
    /// seed tokens stop working.
    pub fn open_script(
        &mut self,
        tokens: &Tokens,
        ask: &Ask<'_>,
        policy: &Policy,
        kind: ScriptKind,
    ) -> Result<ScriptGrant, Refusal> {
        let (mac, epoch, now) = (&ask.mac, ask.epoch, ask.now);
        check_address(ask.peer, &ask.binding, self.records.get(mac), now)?;
        if let Err(e) = tokens.verify(Purpose::Script, mac, epoch, ask.token, now) {
            return Err(self.refuse(mac, epoch, Refusal::Token(e)));
        }
        let r = self.record(mac, epoch);
        r.touch(as_v4(ask.peer), now);
        r.script_at = Some(now);
        r.last_error = None;
        let kind = if r.installed_at.is_some() {
            ScriptKind::LocalDisk
        } else {
            kind
        };
        r.image_boot = kind == ScriptKind::Image;
        if kind == ScriptKind::LocalDisk {
            return Ok(ScriptGrant { seed: None });
        }
        r.serial += 1;
        r.seed_used = false;
        let seed = tokens.issue(
            Purpose::Seed,
            mac,
            epoch,
            Claims {
                serial: r.serial,
                expires: now + policy.token_ttl,
            },
        );
        Ok(ScriptGrant { seed: Some(seed) })
    }

    /// Checks the address and the seed token (the newest of the epoch).
    fn check_seed(&mut self, tokens: &Tokens, ask: &Ask<'_>) -> Result<(), Refusal> {
        let (mac, epoch, now) = (&ask.mac, ask.epoch, ask.now);
        check_address(ask.peer, &ask.binding, self.records.get(mac), now)?;
        let claims = match tokens.verify(Purpose::Seed, mac, epoch, ask.token, now) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(mac, epoch, Refusal::Token(e))),
        };
        let newest = self.record(mac, epoch).serial;
        if claims.serial != newest {
            let why = Refusal::Superseded {
                serial: claims.serial,
                newest,
            };
            return Err(self.refuse(mac, epoch, why));
        }
        Ok(())
    }

    /// A request for a NoCloud document with a seed token.
    /// `spec_installed`: the Machine says `installed: true`.
    pub fn open_doc(
        &mut self,
        tokens: &Tokens,
        ask: &Ask<'_>,
        doc: Doc,
        policy: &Policy,
        spec_installed: bool,
    ) -> Result<(), Refusal> {
        self.check_seed(tokens, ask)?;
        let (mac, epoch, now) = (&ask.mac, ask.epoch, ask.now);
        let r = self.record(mac, epoch);
        r.touch(as_v4(ask.peer), now);
        if doc != Doc::UserData {
            return Ok(());
        }
        let why = if spec_installed {
            Some(Refusal::Installed)
        } else if let Some(ago) = r
            .user_data_first
            .map(|first| first + policy.user_data_window)
            .filter(|end| *end <= now)
            .map(|end| now - end)
        {
            Some(Refusal::WindowClosed { ago })
        } else if r.seed_used {
            Some(Refusal::UserDataUsed)
        } else {
            None
        };
        if let Some(why) = why {
            return Err(self.refuse(mac, epoch, why));
        }
        r.seed_used = true;
        r.user_data_first.get_or_insert(now);
        r.user_data_at = Some(now);
        r.last_error = None;
        Ok(())
    }

    /// The stage2 "installed" report with the machine's seed token: its
    /// script boots the local disk from now on.
    pub fn report_installed(&mut self, tokens: &Tokens, ask: &Ask<'_>) -> Result<(), Refusal> {
        self.check_seed(tokens, ask)?;
        let r = self.record(&ask.mac, ask.epoch);
        r.touch(as_v4(ask.peer), ask.now);
        r.installed_at = Some(ask.now);
        r.last_error = None;
        Ok(())
    }

    /// Drops records of MACs that are not Machines (`keep` says which
    /// are) and were last heard from before `stale_before`; then, if more
    /// than `max_unknown` such records remain, the oldest of them.
    pub fn prune(
        &mut self,
        keep: &dyn Fn(&MacAddr) -> bool,
        stale_before: u64,
        max_unknown: usize,
    ) -> bool {
        let before = self.records.len();
        self.records
            .retain(|mac, r| keep(mac) || r.last_contact.unwrap_or(0) >= stale_before);
        let mut unknown: Vec<(u64, MacAddr)> = self
            .records
            .iter()
            .filter(|(mac, _)| !keep(mac))
            .map(|(mac, r)| (r.last_contact.unwrap_or(0), *mac))
            .collect();
        if unknown.len() > max_unknown {
            unknown.sort();
            for (_, mac) in &unknown[..unknown.len() - max_unknown] {
                self.records.remove(mac);
            }
        }
        self.records.len() != before
    }
}

fn as_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);
    const THIEF: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
    const POLICY: Policy = Policy {
        token_ttl: 600,
        user_data_window: 3600,
    };

    fn fixed() -> Binding {
        Binding {
            fixed: Some(IP),
            lease: None,
        }
    }

    fn ask(epoch: u32, from: Ipv4Addr, token: &str, binding: Binding, now: u64) -> Ask<'_> {
        Ask {
            mac: MAC,
            epoch,
            peer: from.into(),
            token,
            binding,
            now,
        }
    }

    struct World {
        tokens: Tokens,
        states: States,
        epoch: u32,
    }

    impl World {
        fn new() -> Self {
            Self {
                tokens: Tokens::new([9; 32]),
                states: States::default(),
                epoch: 0,
            }
        }

        fn script(&mut self, from: Ipv4Addr, now: u64) -> Result<Option<String>, Refusal> {
            let t = script_token(&self.tokens, &MAC, self.epoch, &POLICY, now);
            self.script_with(from, &t, now)
        }

        fn script_with(
            &mut self,
            from: Ipv4Addr,
            token: &str,
            now: u64,
        ) -> Result<Option<String>, Refusal> {
            let ask = ask(self.epoch, from, token, fixed(), now);
            self.states
                .open_script(&self.tokens, &ask, &POLICY, ScriptKind::Kernel)
                .map(|g| g.seed)
        }

        fn doc(
            &mut self,
            from: Ipv4Addr,
            seed: &str,
            doc: Doc,
            installed: bool,
            now: u64,
        ) -> Result<(), Refusal> {
            let ask = ask(self.epoch, from, seed, fixed(), now);
            self.states
                .open_doc(&self.tokens, &ask, doc, &POLICY, installed)
        }
    }

    #[test]
    fn only_the_machine_s_address_gets_its_script_and_documents() {
        let mut w = World::new();
        let why = w.script(THIEF, 100).unwrap_err();
        assert_eq!(
            why.to_string(),
            "10.77.0.66 is not this machine's address (10.77.0.21)"
        );
        assert_eq!(why.status(), 403);
        assert!(w.states.is_empty(), "a stranger's request leaves no record");
        let seed = w.script(IP, 100).unwrap().unwrap();
        assert_eq!(
            w.doc(THIEF, &seed, Doc::UserData, false, 101)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(w.doc(IP, &seed, Doc::MetaData, false, 101), Ok(()));
        assert_eq!(w.doc(IP, &seed, Doc::UserData, false, 102), Ok(()));
        assert_eq!(w.doc(IP, &seed, Doc::VendorData, false, 102), Ok(()));
        let r = w.states.get(&MAC).unwrap();
        assert_eq!((r.address, r.last_contact), (Some(IP), Some(102)));
        // No binding at all: nobody gets anything.
        let t = script_token(&w.tokens, &MAC, 0, &POLICY, 100);
        let none = w
            .states
            .open_script(
                &w.tokens,
                &ask(0, IP, &t, Binding::default(), 100),
                &POLICY,
                ScriptKind::Kernel,
            )
            .unwrap_err();
        assert_eq!(
            none.to_string(),
            "10.77.0.21 is not this machine's address (none known: no fixed address, lease or boot request)"
        );
    }

    #[test]
    fn a_lease_or_a_boot_request_binds_machines_without_a_fixed_address() {
        let tokens = Tokens::new([1; 32]);
        let mut states = States::default();
        let t = script_token(&tokens, &MAC, 0, &POLICY, 0);
        let open = |states: &mut States, binding: Binding, from: Ipv4Addr, now: u64| {
            states.open_script(
                &tokens,
                &ask(0, from, &t, binding, now),
                &POLICY,
                ScriptKind::Kernel,
            )
        };
        let leased = Binding {
            fixed: None,
            lease: Some(IP),
        };
        assert!(open(&mut states, leased, IP, 1).is_ok());
        assert!(open(&mut states, leased, THIEF, 1).is_err());
        // Proxy mode: the address of the boot request, until it expires.
        states.seen_boot_request(&MAC, 0, THIEF, 50, 2);
        assert!(open(&mut states, Binding::default(), THIEF, 49).is_ok());
        assert!(open(&mut states, Binding::default(), THIEF, 50).is_err());
        // A fixed address wins over anything seen.
        assert!(open(&mut states, fixed(), THIEF, 3).is_err());
    }

    #[test]
    fn user_data_is_served_once_per_boot_within_the_window_and_never_once_installed() {
        let mut w = World::new();
        let seed1 = w.script(IP, 1000).unwrap().unwrap();
        assert_eq!(w.doc(IP, &seed1, Doc::UserData, false, 1001), Ok(()));
        assert_eq!(
            w.doc(IP, &seed1, Doc::UserData, false, 1002),
            Err(Refusal::UserDataUsed)
        );
        assert_eq!(w.doc(IP, &seed1, Doc::VendorData, false, 1002), Ok(()));
        // A new boot: a new token; the old one is superseded.
        let seed2 = w.script(IP, 1100).unwrap().unwrap();
        assert_eq!(
            w.doc(IP, &seed1, Doc::MetaData, false, 1100),
            Err(Refusal::Superseded {
                serial: 1,
                newest: 2
            })
        );
        assert_eq!(
            w.doc(IP, &seed2, Doc::UserData, true, 1101),
            Err(Refusal::Installed)
        );
        assert_eq!(w.doc(IP, &seed2, Doc::UserData, false, 1101), Ok(()));
        // The window runs from the first serve (1001).
        let seed3 = w.script(IP, 4500).unwrap().unwrap();
        let why = w.doc(IP, &seed3, Doc::UserData, false, 4700).unwrap_err();
        assert_eq!(why, Refusal::WindowClosed { ago: 99 });
        assert_eq!(why.status(), 410);
        let r = w.states.get(&MAC).unwrap();
        assert_eq!(
            r.last_error.as_deref(),
            Some("the user-data window closed 99 s ago (rotate the token to open a new one)")
        );
        assert_eq!(r.phase(false), Phase::Joining);
        // Expired tokens.
        assert!(matches!(
            w.doc(IP, &seed3, Doc::MetaData, false, 4500 + 600),
            Err(Refusal::Token(TokenError::Expired { ago: 0 }))
        ));
    }

    #[test]
    fn a_new_epoch_refuses_old_tokens_and_opens_a_new_window() {
        let mut w = World::new();
        let old_script = script_token(&w.tokens, &MAC, 0, &POLICY, 10);
        let seed = w.script(IP, 10).unwrap().unwrap();
        assert_eq!(w.doc(IP, &seed, Doc::UserData, false, 11), Ok(()));
        w.epoch = 1;
        assert_eq!(
            w.doc(IP, &seed, Doc::MetaData, false, 12),
            Err(Refusal::Token(TokenError::Forged))
        );
        assert_eq!(
            w.script_with(IP, &old_script, 12),
            Err(Refusal::Token(TokenError::Forged))
        );
        let seed = w.script(IP, 5000).unwrap().unwrap();
        assert_eq!(
            w.doc(IP, &seed, Doc::UserData, false, 5001),
            Ok(()),
            "the new epoch's window is open"
        );
        let r = w.states.get(&MAC).unwrap();
        assert_eq!((r.epoch, r.user_data_first), (1, Some(5001)));
    }

    #[test]
    fn the_installed_report_makes_the_script_boot_the_disk_and_keeps_the_seed() {
        let mut w = World::new();
        let binding = fixed();
        let seed = w
            .states
            .open_script(
                &w.tokens,
                &ask(
                    0,
                    IP,
                    &script_token(&w.tokens, &MAC, 0, &POLICY, 10),
                    binding,
                    10,
                ),
                &POLICY,
                ScriptKind::Image,
            )
            .unwrap()
            .seed
            .unwrap();
        assert_eq!(w.states.get(&MAC).unwrap().phase(false), Phase::Installing);
        let report = |w: &mut World, from: Ipv4Addr| {
            w.states
                .report_installed(&w.tokens, &ask(0, from, &seed, binding, 20))
        };
        assert_eq!(report(&mut w, THIEF).unwrap_err().status(), 403);
        assert_eq!(report(&mut w, IP), Ok(()));
        assert_eq!(w.states.get(&MAC).unwrap().phase(false), Phase::Installed);
        assert_eq!(w.script(IP, 30), Ok(None), "the disk boots: no new seed");
        // The first boot from disk takes its user-data with the same seed.
        assert_eq!(w.doc(IP, &seed, Doc::UserData, false, 40), Ok(()));
        assert_eq!(w.states.get(&MAC).unwrap().phase(false), Phase::Joining);
        assert_eq!(w.states.get(&MAC).unwrap().phase(true), Phase::Installed);
    }

    #[test]
    fn phases_follow_what_was_seen() {
        let mut s = States::default();
        assert_eq!(Record::default().phase(false), Phase::Pending);
        s.seen_dhcp(&MAC, 0, false, Some(IP), 5);
        assert!(s.is_empty(), "unknown MACs get no record from DHCP alone");
        s.seen_dhcp(&MAC, 0, true, Some(IP), 5);
        assert_eq!(s.get(&MAC).unwrap().phase(false), Phase::PxeBooting);
    }

    #[test]
    fn the_table_round_trips_through_json_and_prunes_strangers() {
        let mut w = World::new();
        let seed = w.script(IP, 10).unwrap().unwrap();
        w.doc(IP, &seed, Doc::UserData, false, 11).unwrap();
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        w.states.seen_boot_request(&other, 0, THIEF, 100, 12);
        let json = w.states.to_json(&|_| false);
        assert!(json.contains("\"phase\": \"Joining\""), "{json}");
        assert!(json.contains("\"address\": \"10.77.0.21\""), "{json}");
        assert!(!json.contains(&seed), "{json}");
        let back = States::from_json(&json).unwrap();
        assert_eq!(back.records, w.states.records);
        let mut s = back;
        assert!(!s.prune(&|m| *m == MAC, 12, 10));
        assert!(s.prune(&|m| *m == MAC, 13, 10));
        assert_eq!(s.len(), 1);
        s.seen_boot_request(&other, 0, THIEF, 100, 20);
        s.seen_boot_request(&MacAddr([2, 0, 0, 0, 0, 8]), 0, THIEF, 100, 21);
        assert!(s.prune(&|m| *m == MAC, 0, 1));
        assert!(s.get(&other).is_none(), "the oldest stranger goes first");
        assert_eq!(s.len(), 2);
    }
}
