//! `kprov stage2` against a real HTTP server on 127.0.0.1 (kprov-testkit's
//! file server, dropping the image's connection once), onto a regular file
//! standing for the disk; crates/kprov-stage2/tests covers the install's
//! failures in depth.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use kprov_testkit::http::{Fault, FileServer};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn stage2_installs_an_image_through_a_dropped_connection_and_says_how_it_went() {
    let site = tempfile::tempdir().unwrap();
    let raw: Vec<u8> = (0..6u32 << 20)
        .map(|i| {
            if (i >> 16) % 2 == 0 {
                (i.wrapping_mul(2_654_435_761) >> 13) as u8
            } else {
                0
            }
        })
        .collect();
    let compressed = zstd::encode_all(raw.as_slice(), 3).unwrap();
    std::fs::write(site.path().join("node.img.zst"), &compressed).unwrap();
    std::fs::write(
        site.path().join("node.img.zst.json"),
        format!(
            r#"{{"image":"node.img.zst","raw":{{"size":{},"sha256":"{}"}},"compressed":{{"size":{},"sha256":"{}"}}}}"#,
            raw.len(),
            sha(&raw),
            compressed.len(),
            sha(&compressed)
        ),
    )
    .unwrap();
    let server = FileServer::start(site.path()).unwrap();
    server.set_fault(
        "/node.img.zst",
        Fault::DropAfter {
            bytes: compressed.len() as u64 / 3,
            times: 1,
        },
    );
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk");
    std::fs::write(&disk, vec![0xABu8; raw.len() + 4096]).unwrap();
    let manifest = format!("{}/node.img.zst.json", server.url());
    let disk_arg = disk.display().to_string();

    let run = common::kprov(
        &[
            "stage2",
            "--manifest",
            &manifest,
            "--disk",
            &disk_arg,
            "--retry-delay",
            "100ms",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("kprov: stage2: 100% ("),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "kprov: stage2: {disk_arg} installed: 6 MiB verified (sha256 {}), 2 request(s)",
            sha(&raw)
        )),
        "{}",
        run.stderr
    );
    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(sha(&on_disk[..raw.len()]), sha(&raw));

    // No disk there: named, and nothing made.
    let missing = scratch.path().join("no-such-disk");
    let run = common::kprov(
        &[
            "stage2",
            "--manifest",
            &manifest,
            "--disk",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "opening {} (the disk must exist)",
            missing.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!missing.exists());
    let run = common::kprov(
        &[
            "stage2",
            "--manifest",
            &manifest,
            "--disk",
            &disk_arg,
            "--attempts",
            "0",
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--attempts"), "{}", run.stderr);
}
