//! `kprov stage2` against a real HTTP server on 127.0.0.1 (kprov-testkit's
//! file server, dropping the image's connection once), onto a regular file
//! standing for the disk; crates/kprov-stage2/tests covers the install's
//! failures in depth.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use common::image::{bench_against_curl_zstd_dd, node_like, publish};
use kprov_testkit::http::{Fault, FileServer};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a 6 MiB raw image (data and zeros) as `node.img.zst` with its
/// manifest into `site`; returns the raw image and the compressed size.
fn image_site(site: &std::path::Path) -> (Vec<u8>, usize) {
    let raw: Vec<u8> = (0..6u32 << 20)
        .map(|i| {
            if (i >> 16) % 2 == 0 {
                (i.wrapping_mul(2_654_435_761) >> 13) as u8
            } else {
                0
            }
        })
        .collect();
    let compressed = publish(site, &raw);
    (raw, compressed)
}

#[test]
fn stage2_installs_an_image_through_a_dropped_connection_and_says_how_it_went() {
    let site = tempfile::tempdir().unwrap();
    let (raw, compressed) = image_site(site.path());
    let server = FileServer::start(site.path()).unwrap();
    server.set_fault(
        "/node.img.zst",
        Fault::DropAfter {
            bytes: compressed as u64 / 3,
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
            "kprov: stage2: {disk_arg} installed: 6 MiB verified (sha256 {} of the compressed image, zstd's checksum of the raw), 2 request(s)",
            sha(&std::fs::read(site.path().join("node.img.zst")).unwrap())
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

#[test]
#[ignore = "needs root, network namespaces and dnsmasq (tools/install-deps.sh test)"]
fn stage2_takes_a_dhcp_lease_on_its_interface_and_installs_over_it() {
    // The server side: a bridge with dnsmasq (DHCP, itself as router) and
    // an HTTP server with the image; the client: a namespace of its own
    // whose eth0 is down and has no address, as a netbooted machine's.
    let site = common::scratch("stage2-dhcp-");
    let (raw, _) = image_site(site.path());
    let mut server = common::netns::Netns::new("10.97.0");
    server.serve_dhcp(&site.path().join("leases"));
    server.serve_http(site.path(), 8080);
    let client = server.add_peer("52:54:00:97:00:01");
    client.ip(&["link", "set", "eth0", "down"]);
    let disk = site.path().join("disk");
    std::fs::write(&disk, vec![0xABu8; raw.len()]).unwrap();

    // Under strace: stage2 is PID 1 of a machine that has barely booted,
    // where waiting for the kernel's entropy pool (polling /dev/random, as
    // the getrandom crate does in a static binary, or getrandom(2) without
    // GRND_NONBLOCK or GRND_INSECURE) can last for good on an idle VM.
    // One file per thread (-ff): interleaved threads would cut a call's
    // line in two ("<unfinished ...>"), its flags on the second half.
    let traces = tempfile::tempdir().unwrap();
    let kprov = common::kprov_bin();
    let out = client
        .command("strace")
        .args(["-ff", "-qq", "-e", "trace=getrandom,open,openat", "-o"])
        .arg(traces.path().join("stage2"))
        .arg(&kprov)
        .args([
            "stage2",
            "--dhcp",
            "eth0",
            "--manifest",
            "http://10.97.0.1:8080/node.img.zst.json",
            "--disk",
        ])
        .arg(&disk)
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("kprov: stage2: eth0: 10.97.0."))
        .unwrap_or_else(|| panic!("no lease line:\n{}", run.stderr));
    assert!(
        line.ends_with("/24 from DHCP server 10.97.0.1, router 10.97.0.1"),
        "{line}"
    );
    let address = line
        .trim_start_matches("kprov: stage2: eth0: ")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // The kernel has what the lease said: the link up, the address, the
    // default route; and dnsmasq recorded the lease for this MAC.
    let show = |args: &[&str]| {
        let out = client.command("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = show(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {address}/24")), "{addr}");
    assert!(addr.contains(",UP"), "{addr}");
    let routes = show(&["-4", "route"]);
    assert!(
        routes.contains("default via 10.97.0.1 dev eth0"),
        "{routes}"
    );
    let leases = std::fs::read_to_string(site.path().join("leases")).unwrap();
    assert!(
        leases.contains(&format!("52:54:00:97:00:01 {address}")),
        "{leases}"
    );
    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(sha(&on_disk), sha(&raw));
    let calls: String = std::fs::read_dir(traces.path())
        .unwrap()
        .map(|trace| std::fs::read_to_string(trace.unwrap().path()).unwrap())
        .collect();
    // The trace is whole: it holds the disk's opening.
    assert!(
        calls.contains(&format!("\"{}\"", disk.display())),
        "the disk's openat is not in the trace:\n{calls}"
    );
    let blocking: Vec<&str> = calls
        .lines()
        .filter(|l| {
            l.contains("\"/dev/random\"")
                || l.contains("getrandom(")
                    && !l.contains("GRND_NONBLOCK")
                    && !l.contains("GRND_INSECURE")
        })
        .collect();
    assert!(
        blocking.is_empty(),
        "stage2 waits for the entropy pool:\n{}",
        blocking.join("\n")
    );
}

#[test]
fn stage2_writes_the_machines_seed_into_the_images_slot_and_refuses_a_bad_seed_before_writing() {
    let site = tempfile::tempdir().unwrap();
    let (raw, _) = image_site(site.path());
    // The same image, its manifest naming a seed slot at 2 MiB (as
    // `kprov image build` names the boot partition's meta-data file).
    let slot = 2usize << 20;
    let manifest = std::fs::read_to_string(site.path().join("node.img.zst.json")).unwrap();
    let seeded = manifest.replacen(
        r#""compressed""#,
        &format!(r#""seed":{{"offset":{slot},"size":4096}},"compressed""#),
        1,
    );
    std::fs::write(site.path().join("seeded.json"), seeded).unwrap();
    let server = FileServer::start(site.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk");
    let before = vec![0xABu8; raw.len()];
    std::fs::write(&disk, &before).unwrap();
    let manifest = format!("{}/seeded.json", server.url());
    let stage2 = |seed: &str| {
        common::kprov(
            &[
                "stage2",
                "--manifest",
                &manifest,
                "--disk",
                disk.to_str().unwrap(),
                "--seed",
                seed,
            ],
            &[],
        )
    };

    // A seed that cannot be written: refused before the disk is touched.
    let run = stage2("http://10.0.0.1/machines/x/tok");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("seed URL \"http://10.0.0.1/machines/x/tok\": expected a URL ending in /; nothing written"),
        "{}",
        run.stderr
    );
    assert!(std::fs::read(&disk).unwrap() == before);

    let seed = "http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/";
    let run = stage2(seed);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let on_disk = std::fs::read(&disk).unwrap();
    let expected = kprov_image::nocloud::seeded(seed).unwrap();
    assert_eq!(&on_disk[slot..slot + 4096], &expected[..]);
    assert!(String::from_utf8_lossy(&expected).starts_with(&format!("seedfrom: \"{seed}\"\n")));
    // Everything else is the verified image, the first MiB included.
    assert_eq!(on_disk[..slot], raw[..slot]);
    assert_eq!(on_disk[slot + 4096..], raw[slot + 4096..]);
}

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_stage2_write_against_curl_zstd_dd() {
    const RAW: usize = 512 << 20;
    let dir = common::scratch("bench-stage2-");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let raw = node_like(RAW);
    let compressed = publish(&site, &raw);
    drop(raw);
    let server = FileServer::start(&site).unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, vec![0u8; RAW]).unwrap();
    let manifest = format!("{}/node.img.zst.json", server.url());
    let image = format!("{}/node.img.zst", server.url());

    let (mut stage2, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let start = std::time::Instant::now();
        common::sh(
            std::process::Command::new(common::kprov_release_bin())
                .args(["stage2", "--manifest", &manifest, "--disk"])
                .arg(&disk),
        );
        stage2.push(start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        common::sh(std::process::Command::new("sh").arg("-c").arg(format!(
            "curl -sSf '{image}' | zstd -d -q | dd of='{}' bs=1M conv=notrunc,fsync status=none",
            disk.display()
        )));
        peer.push(start.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    bench_against_curl_zstd_dd(
        "from a loopback HTTP server onto a file, best of 3",
        RAW,
        compressed,
        best(&stage2),
        best(&peer),
    );
}
