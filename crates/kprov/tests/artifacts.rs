//! Artifacts end to end with real files: a local mirror in upstream's
//! layout holding the Kubernetes v1.20.2 binaries built from Debian's
//! source (with .sha256 files) and Debian's CNI plugins packed as the
//! upstream release tarball, served over HTTP on 127.0.0.1 by
//! kprov-testkit's file server; bundles made from it provision a Debian
//! root inside a network namespace with no interfaces at all.
//!
//! Needs root and the cached builds: `#[ignore]`d, run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{
    build_mirror, diff, kprov, link_tree, root_with_packages, scratch, sh, sha256_hex, snapshot,
};
use kprov_testkit::http::{Fault, FileServer};

const KUBELET: &str = "/release/v1.20.2/bin/linux/amd64/kubelet";

/// `kprov bundle create` for v1.20.2/amd64 from `mirror`, with extras.
fn create_bundle(mirror: &str, output: &str, cache: &str, extras: &[&str]) -> common::Run {
    let mut args = vec![
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
        cache,
        // Binaries only: the image tests (images.rs) run a registry.
        "--no-images",
    ];
    for extra in extras {
        args.extend(["--include", extra]);
    }
    kprov(&args, &[])
}

fn provision_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "provision",
        "--phase",
        "base",
        "--root",
        root,
        "--kubelet-version",
        "v1.20.2",
        "--arch",
        "amd64",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
#[ignore = "needs root and the cached Kubernetes build and Debian root; run by tools/test.sh"]
fn a_bundle_from_a_local_mirror_provisions_a_root_with_no_network_at_all() {
    let dir = scratch("bundle-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let cache = dir.path().join("cache");
    let bundle = dir.path().join("bundle");
    let server = FileServer::start(&site).unwrap();
    let start = Instant::now();
    let created = create_bundle(
        &server.url(),
        bundle.to_str().unwrap(),
        cache.to_str().unwrap(),
        &["kubeadm"],
    );
    let took = start.elapsed();
    assert!(created.ok(), "{}", created.stderr);
    eprintln!("bundle create took {:.2} s", took.as_secs_f64());
    drop(server);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kubelet", "kubectl", "cni-plugins", "kubeadm"]);
    let kubelet = &manifest["artifacts"][0];
    assert_eq!(
        kubelet["sha256"].as_str().unwrap(),
        sha256_hex(&site.join(KUBELET.trim_start_matches('/')))
    );
    assert_eq!(
        (
            kubelet["kind"].as_str(),
            kubelet["version"].as_str(),
            kubelet["path"].as_str()
        ),
        (Some("binary"), Some("v1.20.2"), Some("bin/kubelet"))
    );

    let verified = common::kprov_offline(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert!(verified.ok(), "{}", verified.stderr);
    assert_eq!(
        verified.stdout.trim(),
        format!(
            "bundle {}: Kubernetes v1.20.2 (amd64), 4 artifacts verified",
            bundle.display()
        )
    );

    let root = dir.path().join("root");
    link_tree(root_with_packages(), &root);
    let run = common::kprov_offline(&provision_args(
        root.to_str().unwrap(),
        &["--bundle", bundle.to_str().unwrap()],
    ));
    assert!(
        run.ok(),
        "provisioning from the bundle with no network failed:\n{}",
        run.stderr
    );
    let out = sh(Command::new("chroot")
        .arg(&root)
        .args(["/usr/local/bin/kubelet", "--version"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Kubernetes v1.20.2"
    );
    assert!(root.join("opt/cni/bin/bridge").is_file());

    // The same as one .tar.zst file.
    let single = dir.path().join("node-v1.20.2.tar.zst");
    let server = FileServer::start(&site).unwrap();
    let created = create_bundle(
        &server.url(),
        single.to_str().unwrap(),
        cache.to_str().unwrap(),
        &[],
    );
    assert!(created.ok(), "{}", created.stderr);
    drop(server);
    let root2 = dir.path().join("root2");
    link_tree(root_with_packages(), &root2);
    let run = common::kprov_offline(&provision_args(
        root2.to_str().unwrap(),
        &["--bundle", single.to_str().unwrap()],
    ));
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(
        diff(&snapshot(&root), &snapshot(&root2)),
        Vec::<String>::new(),
        "a directory and a .tar.zst bundle must provision the same node"
    );
}

#[test]
#[ignore = "needs root and the cached Kubernetes build and Debian root; run by tools/test.sh"]
fn bad_sources_fail_naming_the_artifact_and_install_nothing() {
    let dir = scratch("bad-sources-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let root = dir.path().join("root");
    link_tree(root_with_packages(), &root);
    let before = snapshot(&root);
    let r = root.to_str().unwrap().to_string();
    let url = server.url();
    let fresh_cache = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // A release the mirror does not have: 404, named.
    let c1 = fresh_cache("c1");
    let mut args = provision_args(&r, &["--mirror", &url, "--cache-dir", &c1]);
    args.extend(["--kubelet-version", "v1.21.0"]);
    let run = kprov(&args, &[]);
    assert_ne!(run.code, Some(0));
    // (The CNI plugins come first in the plan; v1.21 pairs with v0.9.1.)
    let want = format!("artifact cni-plugins (amd64): GET {url}/containernetworking/plugins/releases/download/v0.9.1/cni-plugins-linux-amd64-v0.9.1.tgz.sha256: server answered 404");
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("server answered 404").count(),
        1,
        "the cause is repeated:\n{}",
        run.stderr
    );

    // A corrupted file: both sums named.
    server.set_fault(KUBELET, Fault::Corrupt);
    let c2 = fresh_cache("c2");
    let run = kprov(
        &provision_args(&r, &["--mirror", &url, "--cache-dir", &c2]),
        &[],
    );
    let expected = sha256_hex(&site.join(KUBELET.trim_start_matches('/')));
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains(&format!(
            "sha256 mismatch for {url}{KUBELET}: expected {expected}, got "
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was installed"),
        "{}",
        run.stderr
    );
    // The node lock (an empty file) is the only thing a failed run leaves.
    assert_eq!(
        diff(
            &common::without_node_lock(before.clone()),
            &common::without_node_lock(snapshot(&root))
        ),
        Vec::<String>::new(),
        "a failed download changed the root"
    );

    // An altered bundle: refused before anything is installed.
    let fixed = FileServer::start(&site).unwrap();
    let bundle = dir.path().join("bundle");
    let c3 = fresh_cache("c3");
    let created = create_bundle(&fixed.url(), bundle.to_str().unwrap(), &c3, &[]);
    assert!(created.ok(), "{}", created.stderr);
    let kubectl = bundle.join("bin/kubectl");
    std::fs::remove_file(&kubectl).unwrap();
    std::fs::write(&kubectl, b"#!/bin/sh\necho altered\n").unwrap();
    let run = common::kprov_offline(&provision_args(&r, &["--bundle", bundle.to_str().unwrap()]));
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("artifact kubectl v1.20.2 (amd64): sha256 mismatch for"),
        "{}",
        run.stderr
    );
    let verify = common::kprov_offline(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert!(
        verify
            .stderr
            .contains("artifact kubectl: bin/kubectl was altered: expected sha256"),
        "{}",
        verify.stderr
    );
    std::fs::write(bundle.join("manifest.json"), b"[").unwrap();
    let run = common::kprov_offline(&provision_args(&r, &["--bundle", bundle.to_str().unwrap()]));
    assert!(
        run.stderr.contains("manifest.json does not parse"),
        "{}",
        run.stderr
    );
    // The node lock (an empty file) is the only thing a failed run leaves.
    assert_eq!(
        diff(
            &common::without_node_lock(before.clone()),
            &common::without_node_lock(snapshot(&root))
        ),
        Vec::<String>::new(),
        "a bad bundle changed the root"
    );
}

#[test]
#[ignore = "needs root and the cached Kubernetes build and Debian root; run by tools/test.sh"]
fn a_download_cut_off_midway_resumes_and_installs_the_verified_file() {
    let dir = scratch("resume-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    server.set_fault(
        KUBELET,
        Fault::DropAfter {
            bytes: 40 << 20,
            times: 1,
        },
    );
    let root = dir.path().join("root");
    link_tree(root_with_packages(), &root);
    let cache = dir.path().join("cache");
    let run = kprov(
        &provision_args(
            root.to_str().unwrap(),
            &[
                "--mirror",
                &server.url(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
        ),
        &[],
    );
    assert!(run.ok(), "{}", run.stderr);
    let kubelet_requests: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.path == KUBELET)
        .collect();
    assert_eq!(kubelet_requests.len(), 2, "{kubelet_requests:?}");
    assert_eq!(
        kubelet_requests[1].range.as_deref(),
        Some("bytes=41943040-")
    );
    assert_eq!(kubelet_requests[1].status, 206);
    assert_eq!(
        sha256_hex(&root.join("usr/local/bin/kubelet")),
        sha256_hex(&site.join(KUBELET.trim_start_matches('/')))
    );
}

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_download_throughput_against_curl() {
    let dir = scratch("bench-download-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let url = format!("{}{KUBELET}", server.url());
    let size = std::fs::metadata(site.join(KUBELET.trim_start_matches('/')))
        .unwrap()
        .len() as f64;
    let sum: [u8; 32] = {
        let mut s = [0u8; 32];
        hex::decode_to_slice(
            sha256_hex(&site.join(KUBELET.trim_start_matches('/'))),
            &mut s,
        )
        .unwrap();
        s
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut kprov_times = Vec::new();
    let mut curl_times = Vec::new();
    for i in 0..3 {
        let cache: PathBuf = dir.path().join(format!("cache-{i}"));
        let downloader = kprov_fetch::download::Downloader::new(&cache).unwrap();
        let start = Instant::now();
        rt.block_on(downloader.fetch_verified(&url, sum, "kubelet"))
            .unwrap();
        kprov_times.push(start.elapsed().as_secs_f64());
        let out = dir.path().join(format!("curl-{i}"));
        let start = Instant::now();
        sh(Command::new("curl")
            .args(["-sSf", "-o"])
            .arg(&out)
            .arg(&url));
        curl_times.push(start.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (k, c) = (best(&kprov_times), best(&curl_times));
    println!(
        "BENCH download of the kubelet ({:.0} MiB) from the loopback mirror, best of 3: kprov {:.0} MiB/s (sha256 verified, cached), curl {:.0} MiB/s; ratio {:.2} (goal >= 0.9)",
        size / 1048576.0,
        size / k / 1048576.0,
        size / c / 1048576.0,
        c / k
    );
}

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_bundle_creation() {
    let dir = scratch("bench-bundle-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    for (label, output) in [("directory", "bundle"), (".tar.zst", "bundle.tar.zst")] {
        // A fresh cache each time: the figure includes every download.
        let cache = dir.path().join(format!("cache-{output}"));
        let out = dir.path().join(output);
        let start = Instant::now();
        let run = create_bundle(
            &server.url(),
            out.to_str().unwrap(),
            cache.to_str().unwrap(),
            &["kubeadm"],
        );
        assert!(run.ok(), "{}", run.stderr);
        println!(
            "BENCH bundle create as a {label} (kubelet, kubectl, kubeadm, CNI plugins: {:.0} MiB downloaded from the loopback mirror and verified): {:.2} s",
            run.json()["artifacts"].as_array().unwrap().iter().map(|a| a["size"].as_u64().unwrap()).sum::<u64>() as f64 / 1048576.0,
            start.elapsed().as_secs_f64()
        );
    }
}
