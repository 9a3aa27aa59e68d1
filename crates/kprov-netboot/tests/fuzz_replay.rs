//! The fuzz target's entry on stable Rust: replays the committed corpus
//! (`fuzz/corpus/datagram/`, made by `KPROV_UPDATE_CORPUS=1` from the
//! requests real clients send: PXE BIOS/UEFI ROMs, iPXE, plain clients,
//! TFTP requests) and then a bounded loop of mutations and random inputs.
//! A panic anywhere fails the test.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use dhcproto::v4::MessageType;
use kprov_netboot::dhcp::{encode, sample_request, ClientKind};
use kprov_netboot::fuzz::fuzz_one;
use kprov_netboot::machine::MacAddr;
use kprov_netboot::tftp::Packet;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/datagram")
}

/// The seed inputs, made from the same builders the unit tests use.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let known = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    let other = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
    let kinds = [
        ("bios", ClientKind::PxeBios),
        ("uefi", ClientKind::PxeUefi),
        ("ipxe", ClientKind::Ipxe),
        ("plain", ClientKind::Plain),
    ];
    for (kname, kind) in kinds {
        for (mname, mac) in [("known", known), ("unknown", other)] {
            for (tname, mtype) in [
                ("discover", MessageType::Discover),
                ("request", MessageType::Request),
                ("release", MessageType::Release),
                ("inform", MessageType::Inform),
            ] {
                let msg = sample_request(
                    mac,
                    mtype,
                    kind,
                    Some(Ipv4Addr::new(10, 77, 0, 20)),
                    Some(Ipv4Addr::new(10, 77, 0, 1)),
                );
                out.push((
                    format!("dhcp-{kname}-{mname}-{tname}"),
                    encode(&msg).unwrap(),
                ));
            }
        }
    }
    let rrq = Packet::Read {
        file: "undionly.kpxe".into(),
        mode: "octet".into(),
        options: vec![
            ("blksize".into(), "1468".into()),
            ("tsize".into(), "0".into()),
            ("windowsize".into(), "8".into()),
            ("timeout".into(), "2".into()),
        ],
    };
    out.push(("tftp-rrq".into(), rrq.encode()));
    out.push(("tftp-ack".into(), Packet::Ack { block: 3 }.encode()));
    out.push((
        "tftp-error".into(),
        Packet::Error {
            code: 0,
            message: "x".into(),
        }
        .encode(),
    ));
    out
}

#[test]
fn the_fuzz_corpus_and_random_mutations_never_panic() {
    let dir = corpus_dir();
    if std::env::var_os("KPROV_UPDATE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        corpus.len() >= 30,
        "the committed corpus is missing ({})",
        dir.display()
    );
    for input in &corpus {
        fuzz_one(input);
    }
    // A fixed seed, so a failure reproduces; bounded in count.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rounds = 100_000;
    for _ in 0..rounds {
        let pick = (next() % (corpus.len() as u64 + 1)) as usize;
        let mut input = if pick == corpus.len() {
            (0..next() % 600).map(|_| next() as u8).collect()
        } else {
            corpus[pick].clone()
        };
        for _ in 0..(1 + next() % 8) {
            if input.is_empty() {
                break;
            }
            let at = (next() % input.len() as u64) as usize;
            match next() % 5 {
                0 => input[at] ^= 1 << (next() % 8),
                1 => input[at] = next() as u8,
                2 => input.truncate(at),
                3 => input.insert(at, next() as u8),
                _ => {
                    let len = input.len();
                    input.extend_from_within(at..len.min(at + 16));
                }
            }
        }
        fuzz_one(&input);
        if next() % 1000 == 0 {
            corpus.push(input);
        }
    }
}
