//! The static binary: `cargo build --release` makes a static-pie executable
//! (see .cargo/config.toml) that runs in a root holding nothing but itself,
//! /etc/hosts and a served directory: no libc, no loader, no NSS module.
//! There it reports its version, reads a root's os-release and makes a
//! bundle from a mirror on loopback named by a host name, which it resolves
//! itself: from /etc/hosts, and from a DNS server (Debian's dnsmasq on a
//! loopback address) named in /etc/resolv.conf, for which the root also
//! gets /dev/random and /dev/urandom (DNS query ids are random). kube-rs's client, which
//! would resolve with getaddrinfo, reaches a named API server too. strace
//! shows that glibc's NSS is never consulted.
//!
//! Needs root (chroot, port 53): `#[ignore]`d, run by tools/test.sh. The
//! size of the binary is a benchmark figure.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kprov_release_bin, sh, sha256_hex, Run};
use kprov_testkit::http::FileServer;

/// Files glibc's NSS and resolver read; kprov must open none of them.
const NSS_FILES: &[&str] = &[
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/host.conf",
    "/etc/gai.conf",
    "libnss_",
];

fn write(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A mirror in upstream's layout for v1.20.2/amd64 with stand-in payloads
/// (the bundle checks sums, not contents): kubelet, kubectl and a real CNI
/// plugins tarball, each with its .sha256 file. Returns the sums by name.
fn stand_in_mirror(mirror: &Path, scratch: &Path) -> Vec<(String, String)> {
    let release = mirror.join("release/v1.20.2/bin/linux/amd64");
    let mut sums = Vec::new();
    for (name, size) in [("kubelet", 3 << 20), ("kubectl", 1 << 20)] {
        // Deterministic, incompressible enough to be a real transfer.
        let mut x: u32 = size as u32 ^ 0x9e37_79b9;
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let path = release.join(name);
        write(&path, &data);
        let sum = sha256_hex(&path);
        write(&release.join(format!("{name}.sha256")), sum.as_bytes());
        sums.push((name.to_string(), sum));
    }
    let plugins = scratch.join("plugins");
    for plugin in ["bridge", "host-local", "loopback"] {
        write(
            &plugins.join(plugin),
            format!("#!/bin/sh\necho {plugin}\n").as_bytes(),
        );
    }
    let dir = mirror.join("containernetworking/plugins/releases/download/v0.8.7");
    std::fs::create_dir_all(&dir).unwrap();
    let tgz = dir.join("cni-plugins-linux-amd64-v0.8.7.tgz");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&plugins)
        .arg("-czf")
        .arg(&tgz)
        .args(["bridge", "host-local", "loopback"]));
    let sum = sha256_hex(&tgz);
    write(
        &dir.join("cni-plugins-linux-amd64-v0.8.7.tgz.sha256"),
        format!("{sum}  cni-plugins-linux-amd64-v0.8.7.tgz\n").as_bytes(),
    );
    sums.push(("cni-plugins".to_string(), sum));
    sums
}

/// Runs `/kprov ARGS` chrooted into `root` under strace, which records
/// every file opened, connection made and datagram sent to `trace`.
fn in_root(root: &Path, trace: &Path, args: &[&str]) -> Run {
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,connect,sendto,sendmsg",
            "-o",
        ])
        .arg(trace)
        .arg("chroot")
        .arg(root)
        .arg("/kprov")
        .args(args)
        // Nothing from the test's environment but a PATH for strace.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(out)
}

/// The strace record must show no NSS file opened; returns it.
fn assert_no_nss(trace: &Path, what: &str) -> String {
    let log = std::fs::read_to_string(trace).unwrap();
    for file in NSS_FILES {
        assert!(
            !log.contains(file),
            "{what}: kprov opened {file} (glibc's NSS):\n{log}"
        );
    }
    log
}

/// A TCP listener on 127.0.0.1 that counts connections and closes them.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn listener() -> Listener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Listener { port, accepted }
}

/// dnsmasq answering `*.dns.test` with 127.0.0.1 on 127.0.0.77:53, and
/// nothing else (no upstream, no hosts file). Killed on drop.
struct Dns(std::process::Child);

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DNS_ADDRESS: &str = "127.0.0.77";

fn dns_server() -> Dns {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            // Only this address: nothing else on loopback's port 53.
            "--bind-interfaces",
            "--port=53",
            "--address=/dns.test/127.0.0.1",
            "--user=root",
            "--pid-file",
        ])
        .arg(format!("--listen-address={DNS_ADDRESS}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("dnsmasq (tools/install-deps.sh test): {e}"));
    let mut dns = Dns(child);
    // Ready when it answers.
    let start = Instant::now();
    loop {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // A DNS query for a.dns.test, type A.
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["a", "dns", "test"] {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 1, 0, 1]);
        probe.send_to(&q, format!("{DNS_ADDRESS}:53")).unwrap();
        let mut buf = [0u8; 512];
        if probe.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dnsmasq did not answer on {DNS_ADDRESS}:53 (exited: {:?})",
            dns.0.try_wait()
        );
    }
    dns
}

fn bundle_args<'a>(mirror: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "bundle",
        "create",
        "--kubernetes-version",
        "v1.20.2",
        "--arch",
        "amd64",
        "--mirror",
        mirror,
        "--output",
        output,
        "--cache-dir",
        "/work/cache",
        "--no-images",
    ]
}

/// Checks a bundle made in the root against the mirror's sums.
fn assert_bundle(root: &Path, output: &str, sums: &[(String, String)]) {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join(output.trim_start_matches('/'))
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let got: Vec<(String, String)> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, sums);
}

#[test]
#[ignore = "needs root (chroot, a DNS server on port 53), strace and dnsmasq; run by tools/test.sh"]
fn the_release_binary_is_static_and_runs_alone_in_an_empty_root() {
    let bin = kprov_release_bin();

    // Static: file(1) says so, and there is no interpreter and no library.
    let file = sh(Command::new("file").arg("-b").arg(bin));
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("static-pie linked"),
        "{}: {file}",
        bin.display()
    );
    let headers = sh(Command::new("readelf").args(["-l", "-d"]).arg(bin));
    let headers = String::from_utf8_lossy(&headers.stdout);
    assert!(
        !headers.contains("INTERP") && !headers.contains("(NEEDED)"),
        "{headers}"
    );

    // The root: the binary, /etc/hosts, the served mirror, a fake root for
    // `kprov os` and an empty work directory. No libc, no loader.
    let dir = common::scratch("static-");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(bin, root.join("kprov")).unwrap();
    write(
        &root.join("etc/hosts"),
        b"127.0.0.1 localhost\n127.0.0.1 artifacts.test apiserver.test\n",
    );
    let sums = stand_in_mirror(&root.join("srv/mirror"), dir.path());
    write(
        &root.join("x/etc/os-release"),
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    std::fs::create_dir_all(root.join("work")).unwrap();
    let listing = tree(&root);
    assert!(
        listing
            .iter()
            .all(|p| !p.contains("lib") && !p.contains("ld-linux")),
        "{listing:?}"
    );
    let trace = dir.path().join("strace.log");

    let version = in_root(&root, &trace, &["version"]);
    assert!(version.ok(), "kprov version: {}", version.stderr);
    assert!(
        version.stdout.starts_with(&format!(
            "kprov {}\ngit commit: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        version.stdout
    );
    assert_no_nss(&trace, "kprov version");

    let os = in_root(&root, &trace, &["os", "--root", "/x"]);
    assert!(os.ok(), "kprov os: {}", os.stderr);
    // What the binary under test says of the same root from outside.
    let outside = common::kprov(&["os", "--root", root.join("x").to_str().unwrap()], &[]);
    assert!(outside.ok(), "{}", outside.stderr);
    assert!(os.stdout.starts_with("Debian GNU/Linux 12 (bookworm) "));
    assert_eq!(os.stdout, outside.stdout);
    assert_no_nss(&trace, "kprov os");

    // A download from a mirror named in /etc/hosts (no /etc/resolv.conf:
    // the hosts file alone answers, without waiting for a DNS server).
    let server = FileServer::start(&root.join("srv/mirror")).unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let mirror = format!("http://artifacts.test:{port}");
    let start = Instant::now();
    let made = in_root(&root, &trace, &bundle_args(&mirror, "/work/bundle"));
    let took = start.elapsed();
    assert!(made.ok(), "bundle create from {mirror}: {}", made.stderr);
    assert_bundle(&root, "/work/bundle", &sums);
    let log = assert_no_nss(&trace, "bundle create");
    assert!(
        log.contains("\"/etc/hosts\""),
        "/etc/hosts never read:\n{log}"
    );
    assert!(
        took < Duration::from_secs(20),
        "bundle create took {took:?}: a DNS wait?"
    );
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.path == "/release/v1.20.2/bin/linux/amd64/kubelet" && l.status == 200),
        "{:?}",
        server.log()
    );
    let verified = in_root(&root, &trace, &["bundle", "verify", "/work/bundle"]);
    assert!(verified.ok(), "{}", verified.stderr);
    assert_eq!(
        verified.stdout,
        "bundle /work/bundle: Kubernetes v1.20.2 (amd64), 3 artifacts verified\n"
    );

    // A name only DNS knows: /etc/resolv.conf names dnsmasq. A DNS query
    // needs random numbers, which a static binary reads from /dev/urandom
    // (getrandom finds no getrandom() through a static glibc's dlsym):
    // without the device, a clear error, not a panic; every real system
    // and initrd has it.
    let _dns = dns_server();
    write(
        &root.join("etc/resolv.conf"),
        format!("nameserver {DNS_ADDRESS}\n").as_bytes(),
    );
    let dns_mirror = format!("http://mirror.dns.test:{port}");
    let no_dev = in_root(&root, &trace, &bundle_args(&dns_mirror, "/work/none"));
    assert_eq!(no_dev.code, Some(1), "{}", no_dev.stderr);
    assert!(
        no_dev.stderr.contains(
            "resolving host name mirror.dns.test: no random numbers for DNS queries (/dev/urandom)"
        ),
        "{}",
        no_dev.stderr
    );
    std::fs::create_dir(root.join("dev")).unwrap();
    for (name, minor) in [("random", "8"), ("urandom", "9")] {
        sh(Command::new("mknod")
            .args(["-m", "666"])
            .arg(root.join("dev").join(name))
            .args(["c", "1", minor]));
    }
    std::fs::remove_dir_all(root.join("work/cache")).unwrap();
    let made = in_root(&root, &trace, &bundle_args(&dns_mirror, "/work/bundle-dns"));
    assert!(made.ok(), "bundle create by DNS: {}", made.stderr);
    assert_bundle(&root, "/work/bundle-dns", &sums);
    let log = assert_no_nss(&trace, "bundle create by DNS");
    assert!(
        log.contains(DNS_ADDRESS),
        "no query to {DNS_ADDRESS}:\n{log}"
    );

    // A name in neither /etc/hosts nor DNS: an error naming it.
    let unknown = in_root(
        &root,
        &trace,
        &bundle_args(&format!("http://unlisted.test:{port}"), "/work/none"),
    );
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("resolving host name unlisted.test: "),
        "{}",
        unknown.stderr
    );
    assert!(!root.join("work/none").exists());

    // kube-rs's client, to an API server named in /etc/hosts: the
    // connection reaches the address (TLS then fails: nothing speaks it).
    // The cluster's CA is in the kubeconfig, as always: the root has no
    // system certificates.
    let api = listener();
    let ca = dir.path().join("ca.crt");
    common::openssl_ca(&ca);
    let ca_data = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca).unwrap())
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://apiserver.test:{}\n    certificate-authority-data: {ca_data}\n\
         users:\n- name: u\n  user:\n    token: abcdef.0123456789abcdef\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        api.port
    );
    write(&root.join("work/admin.conf"), kubeconfig.as_bytes());
    let listed = in_root(
        &root,
        &trace,
        &["token", "list", "--kubeconfig", "/work/admin.conf"],
    );
    assert_eq!(listed.code, Some(1), "{}", listed.stderr);
    assert!(
        api.accepted.load(Ordering::SeqCst) > 0,
        "no connection reached apiserver.test's address: {}",
        listed.stderr
    );
    assert!(
        !listed.stderr.contains("resolving host name"),
        "{}",
        listed.stderr
    );
    assert_no_nss(&trace, "token list");
    write(
        &root.join("work/admin.conf"),
        kubeconfig
            .replace("apiserver.test", "unlisted.test")
            .as_bytes(),
    );
    let listed = in_root(
        &root,
        &trace,
        &["token", "list", "--kubeconfig", "/work/admin.conf"],
    );
    assert_eq!(listed.code, Some(1), "{}", listed.stderr);
    assert!(
        listed.stderr.contains("resolving host name unlisted.test"),
        "{}",
        listed.stderr
    );
}

#[test]
#[ignore = "a figure for tools/test.sh (builds the release binary when run alone)"]
fn benchmark_static_binary_size() {
    let bin: PathBuf = kprov_release_bin().to_path_buf();
    let size = std::fs::metadata(&bin).unwrap().len();
    common::bench(&format!(
        "static release binary {}: {size} bytes ({:.1} MiB)",
        bin.display(),
        size as f64 / (1024.0 * 1024.0)
    ));
}
