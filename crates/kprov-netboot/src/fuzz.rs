//! The fuzz entry: one datagram through every pure protocol path the
//! servers run on untrusted input. Used by the cargo-fuzz target
//! (`fuzz/`) and by the corpus-replay test that CI runs on stable Rust.

use std::path::Path;
use std::sync::OnceLock;

use crate::config::Config;
use crate::dhcp::{handle_datagram, Listener, View};
use crate::leases::LeaseTable;
use crate::machine::{parse_machine, Registry};
use crate::tftp::{negotiate, Packet};

const MACHINE: &str = "\
apiVersion: kprov.dev/v1alpha1
kind: Machine
metadata: {name: node1}
spec:
  macAddress: 52:54:00:00:00:01
  ipAddress: 10.77.0.20
  uuid: 8c0d3e2a-0000-4000-8000-000000000001
  boot: {kernel: vmlinuz}
";

fn setup() -> &'static (Config, Config, Registry) {
    static S: OnceLock<(Config, Config, Registry)> = OnceLock::new();
    S.get_or_init(|| {
        let base = "interface: br0\nserverAddress: 10.77.0.1\nsubnet: 10.77.0.0/24\n\
                    machinesDir: m\ntftpRoot: t\nhttpRoot: h\nstateDir: s\n\
                    defaultProfile: {boot: {kernel: vmlinuz}}\n";
        let full = format!("mode: full\npool: {{start: 10.77.0.100, end: 10.77.0.200}}\n{base}");
        let proxy = format!("mode: proxy\n{base}");
        let parse = |t: &str| Config::parse(Path::new("fuzz.yaml"), t);
        let machine = parse_machine(Path::new("m.yaml"), MACHINE, None);
        match (parse(&full), parse(&proxy), machine) {
            (Ok(f), Ok(p), Ok(m)) => (f, p, Registry::build(vec![m]).0),
            _ => unreachable!("the fuzz fixtures are valid"),
        }
    })
}

/// Runs `bytes` as a DHCP datagram (full and proxy mode, both ports), as
/// a TFTP packet, and (when UTF-8) as an HTTP request path and a token.
/// Must never panic.
pub fn fuzz_one(bytes: &[u8]) {
    let (full, proxy, machines) = setup();
    for config in [full, proxy] {
        let view = View {
            config,
            machines,
            script_token: &|_| "tok".to_string(),
        };
        for listener in [Listener::Dhcp, Listener::ProxyBoot] {
            let mut leases = LeaseTable::default();
            let _ = handle_datagram(bytes, listener, &view, &mut leases, 1_000);
        }
    }
    // Request paths and tokens come from clients too.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::http::route(text);
        let tokens = crate::token::Tokens::new([0; 32]);
        let mac = crate::machine::MacAddr([2, 0, 0, 0, 0, 1]);
        let _ = tokens.verify(crate::token::Purpose::Seed, &mac, 0, text, 1_000);
    }
    if let Ok(packet) = Packet::parse(bytes) {
        let again = Packet::parse(&packet.encode());
        debug_assert!(again.is_ok());
        if let Packet::Read { options, .. } = packet {
            let _ = negotiate(&options, 1 << 20, 5);
        }
    }
}
