//! Container images end to end with real parts: Debian's `docker-registry`
//! on 127.0.0.1 (anonymous, and with htpasswd basic auth), the v1.20.2
//! images built from real binaries by tools/build-images.sh pushed into it
//! with `skopeo`, `kprov bundle create --control-plane --registry-mirror`
//! pulling them, `bundle verify` and `provision --bundle` with no network,
//! and containerd in the provisioned root (booted with systemd-nspawn)
//! listing the images under their canonical names.
//!
//! CoreDNS has no Debian package and is not built: the control-plane
//! bundle leaves it out explicitly with `--exclude-image`.
//!
//! Needs root and the cached builds: `#[ignore]`d, run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::registry::{
    create_bundle, harness_archive, harness_manifest_digest, Registry, CONTROL_PLANE_IMAGES,
    COREDNS,
};
use common::{build_mirror, copy_tree, root_with_packages, scratch, sh};
use kprov_testkit::http::FileServer;

#[test]
#[ignore = "needs root, docker-registry, skopeo, systemd-nspawn and the cached builds; run by tools/test.sh"]
fn control_plane_images_from_a_registry_mirror_end_up_in_a_prebaked_roots_containerd() {
    let dir = scratch("images-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), None);
    registry.push_control_plane();

    let bundle = dir.path().join("bundle");
    let cache = dir.path().join("cache");
    let created = create_bundle(
        &server.url(),
        &registry.addr,
        &bundle,
        &cache,
        &["--control-plane", "--exclude-image", COREDNS],
        &[],
    );
    assert!(created.ok(), "{}", created.stderr);
    drop(server);
    drop(registry);

    // The manifest: every image with its canonical name, the manifest
    // digest the harness built, and the archive's sum and size.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let images: Vec<&serde_json::Value> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "image")
        .collect();
    let names: Vec<&str> = images
        .iter()
        .map(|a| a["reference"].as_str().unwrap())
        .collect();
    assert_eq!(names, CONTROL_PLANE_IMAGES);
    for image in &images {
        let reference = image["reference"].as_str().unwrap();
        assert_eq!(
            image["manifest_digest"].as_str().unwrap(),
            harness_manifest_digest(reference),
            "{reference}"
        );
        let path = bundle.join(image["path"].as_str().unwrap());
        assert_eq!(image["sha256"].as_str().unwrap(), common::sha256_hex(&path));
        assert_eq!(
            image["size"].as_u64().unwrap(),
            std::fs::metadata(&path).unwrap().len()
        );
    }

    let verified = common::kprov_offline(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert!(verified.ok(), "{}", verified.stderr);
    assert!(
        verified.stdout.contains("9 artifacts verified"),
        "{}",
        verified.stdout
    );

    // Provisioned with no network; the images are staged, and imported at
    // boot by kprov-images.service, since no containerd runs while prebaking.
    let root = dir.path().join("root");
    copy_tree(root_with_packages(), &root);
    // The release binary: the base phase installs it, and the root boots.
    let run = common::kprov_release_offline(&[
        "provision",
        "--phase",
        "base",
        "--root",
        root.to_str().unwrap(),
        "--kubelet-version",
        "v1.20.2",
        "--arch",
        "amd64",
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        run.ok(),
        "provisioning from the bundle failed:\n{}",
        run.stderr
    );
    for image in &images {
        let staged = root.join("var/lib/kprov/images").join(
            Path::new(image["path"].as_str().unwrap())
                .file_name()
                .unwrap(),
        );
        assert_eq!(
            common::sha256_hex(&staged),
            image["sha256"].as_str().unwrap()
        );
    }
    assert!(root
        .join("etc/systemd/system/multi-user.target.wants/kprov-images.service")
        .symlink_metadata()
        .is_ok());
    common::assert_release_binary_installed(&root);
    let again = common::kprov_release_offline(&[
        "provision",
        "--phase",
        "base",
        "--root",
        root.to_str().unwrap(),
        "--kubelet-version",
        "v1.20.2",
        "--arch",
        "amd64",
        "--bundle",
        bundle.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(again.ok(), "{}", again.stderr);
    let changed: Vec<String> = again.json()["reports"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] != "unchanged")
        .map(|r| r["id"].to_string())
        .collect();
    assert_eq!(
        changed,
        Vec::<String>::new(),
        "a second run changed something"
    );

    // Boot it: a probe waits for kprov-images.service and lists what
    // containerd holds.
    std::fs::write(
        root.join("etc/systemd/system/kprov-test-probe.service"),
        "[Unit]\nAfter=kprov-images.service\n\
         [Service]\nType=oneshot\nTimeoutStartSec=200\nStandardOutput=append:/var/lib/kprov-probe.log\nStandardError=append:/var/lib/kprov-probe.log\n\
         ExecStart=/bin/sh -c 'echo \"PROBE images-unit=$(systemctl is-active kprov-images.service)\"; \
         ctr -n k8s.io images ls -q | sed \"s/^/PROBE image /\"; \
         journalctl -o cat -u kprov-images.service | tail -n 20 | sed \"s/^/JOURNAL /\"; systemctl poweroff'\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/kprov-test-probe.service",
        root.join("etc/systemd/system/multi-user.target.wants/kprov-test-probe.service"),
    )
    .unwrap();
    let console = common::boot_nspawn(&root, Duration::from_secs(240));
    let probe_log =
        std::fs::read_to_string(root.join("var/lib/kprov-probe.log")).unwrap_or_default();
    eprintln!("{probe_log}");
    let context = format!("{console}\n--- probe log ---\n{probe_log}");
    assert!(
        probe_log.contains("PROBE images-unit=active"),
        "kprov-images.service did not finish; {context}"
    );
    let listed: Vec<&str> = probe_log
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE image "))
        .map(str::trim)
        .filter(|l| !l.starts_with("sha256:"))
        .collect();
    for name in CONTROL_PLANE_IMAGES {
        assert!(
            listed.contains(&name),
            "containerd does not list {name}: {listed:?}; {context}"
        );
    }
}

#[test]
#[ignore = "needs root, docker-registry, skopeo, htpasswd and the cached builds; run by tools/test.sh"]
fn a_registry_with_basic_auth_needs_the_right_password() {
    let dir = scratch("images-auth-");
    let htpasswd = dir.path().join("htpasswd");
    let out = sh(Command::new("htpasswd").args(["-Bbn", "kprov", "s3cret-pw"]));
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), Some(&htpasswd));
    registry.push(
        harness_archive("k8s.gcr.io/pause:3.2"),
        "k8s.gcr.io/pause:3.2",
        Some("kprov:s3cret-pw"),
    );
    let cache = dir.path().join("cache");

    let good = dir.path().join("good");
    let run = create_bundle(
        &server.url(),
        &registry.addr,
        &good,
        &cache,
        &["--registry-username", "kprov"],
        &[("KPROV_REGISTRY_PASSWORD", "s3cret-pw")],
    );
    assert!(run.ok(), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret-pw") && !run.stdout.contains("s3cret-pw"));
    let manifest = std::fs::read_to_string(good.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"reference\": \"k8s.gcr.io/pause:3.2\""));

    for (label, extra, env) in [
        (
            "a wrong password",
            vec!["--registry-username", "kprov"],
            vec![("KPROV_REGISTRY_PASSWORD", "wrong")],
        ),
        ("no credentials", vec![], vec![]),
    ] {
        let output = dir.path().join(format!("bad-{}", label.replace(' ', "-")));
        let run = create_bundle(&server.url(), &registry.addr, &output, &cache, &extra, &env);
        assert!(!run.ok(), "{label}: bundle create succeeded");
        assert!(
            run.stderr.contains(&format!(
                "image k8s.gcr.io/pause:3.2 (pulled from {}/pause:3.2)",
                registry.addr
            )),
            "{label}: {}",
            run.stderr
        );
        assert!(!output.exists(), "{label}: the bundle was written");
        assert!(!run.stderr.contains("s3cret-pw"));
    }
    // A username without a password in the environment: refused up front.
    let run = create_bundle(
        &server.url(),
        &registry.addr,
        &dir.path().join("nopw"),
        &cache,
        &["--registry-username", "kprov"],
        &[],
    );
    assert!(!run.ok());
    assert!(
        run.stderr.contains("KPROV_REGISTRY_PASSWORD"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs root, docker-registry, skopeo and the cached builds; run by tools/test.sh"]
fn a_missing_image_or_a_tampered_blob_fails_naming_the_image_and_writes_nothing() {
    let dir = scratch("images-bad-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), None);
    let cache = dir.path().join("cache");

    // Nothing pushed yet: the registry answers 404 for the pause image.
    let output = dir.path().join("missing");
    let run = create_bundle(&server.url(), &registry.addr, &output, &cache, &[], &[]);
    assert!(
        !run.ok(),
        "bundle create succeeded against an empty registry"
    );
    assert!(
        run.stderr.contains(&format!(
            "image k8s.gcr.io/pause:3.2 (pulled from {}/pause:3.2): fetching the manifest",
            registry.addr
        )),
        "{}",
        run.stderr
    );
    assert!(!output.exists(), "a bundle was written");

    // A layer altered in the registry's storage (same size, one byte
    // flipped): the registry serves it, kprov refuses it.
    registry.push(
        harness_archive("k8s.gcr.io/pause:3.2"),
        "k8s.gcr.io/pause:3.2",
        None,
    );
    let out = sh(Command::new("tar")
        .arg("-xOf")
        .arg(harness_archive("k8s.gcr.io/pause:3.2"))
        .arg(format!(
            "blobs/sha256/{}",
            harness_manifest_digest("k8s.gcr.io/pause:3.2").trim_start_matches("sha256:")
        )));
    let image_manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = image_manifest["layers"][0]["digest"].as_str().unwrap();
    let hex = layer.trim_start_matches("sha256:");
    let data = registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let output = dir.path().join("tampered.tar.zst");
    let run = create_bundle(&server.url(), &registry.addr, &output, &cache, &[], &[]);
    assert!(!run.ok(), "bundle create accepted a tampered layer");
    assert!(
        run.stderr.contains("image k8s.gcr.io/pause:3.2")
            && run.stderr.contains(layer)
            && run.stderr.contains("mismatch"),
        "{}",
        run.stderr
    );
    assert!(!output.exists(), "a bundle was written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kprov-"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "scratch files left behind");

    // An image the catalog does not have cannot be excluded.
    let run = create_bundle(
        &server.url(),
        &registry.addr,
        &dir.path().join("unknown"),
        &cache,
        &["--exclude-image", "k8s.gcr.io/nope:1"],
        &[],
    );
    assert!(!run.ok());
    assert!(
        run.stderr
            .contains("--exclude-image \"k8s.gcr.io/nope:1\": not an image of this bundle"),
        "{}",
        run.stderr
    );
    // An extra image must be a full reference; nothing is written.
    let output = dir.path().join("bad-extra");
    let run = create_bundle(
        &server.url(),
        &registry.addr,
        &output,
        &cache,
        &["--image", "busybox"],
        &[],
    );
    assert!(!run.ok());
    assert!(
        run.stderr
            .contains("--image \"busybox\": expected REGISTRY/REPOSITORY:TAG"),
        "{}",
        run.stderr
    );
    assert!(!output.exists());
}

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_control_plane_bundle_creation() {
    let bin = common::kprov_bin_for_benchmarks();
    let dir = scratch("bench-images-");
    let site = dir.path().join("mirror");
    build_mirror(&site);
    let server = FileServer::start(&site).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), None);
    registry.push_control_plane();
    let output = dir.path().join("bundle");
    let start = Instant::now();
    let out = Command::new(&bin)
        .args([
            "bundle",
            "create",
            "--kubernetes-version",
            "v1.20.2",
            "--arch",
            "amd64",
            "--mirror",
            &server.url(),
            "--registry-mirror",
            &registry.addr,
            "--insecure-registry",
            "--control-plane",
            "--exclude-image",
            COREDNS,
            "--output",
        ])
        .arg(&output)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut images, mut total) = (0, 0u64);
    for a in manifest["artifacts"].as_array().unwrap() {
        images += usize::from(a["kind"] == "image");
        total += a["size"].as_u64().unwrap();
    }
    common::bench(&format!(
        "bundle create --control-plane (binaries from the loopback mirror, {images} images from the loopback registry, {:.0} MiB verified): {:.2} s",
        total as f64 / 1048576.0,
        took.as_secs_f64()
    ));
}
