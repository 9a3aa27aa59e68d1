#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! The join phase against a real v1.20.2 control plane (processes in a
//! network namespace, see common::controlplane): token discovery with the
//! right token and CA hash writes the node's files into a scratch root
//! (prebake style, --root: no kubelet is started); a wrong token, a wrong
//! CA hash, an API server that does not answer, and tokens that were
//! deleted or have expired each fail within a bounded time with the
//! matching diagnosis and leave the root as it was.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::controlplane::{kprov_in, text, ControlPlane};
use common::{diff, scratch, snapshot};

const PREFIX: &str = "10.79.0";

/// A root as the base phase leaves it, as far as the join phase looks:
/// Debian's os-release and the kubelet unit.
fn base_root(dir: &Path) {
    for (path, body) in [
        (
            "etc/os-release",
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        ),
        (
            "etc/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/local/bin/kubelet\n[Install]\nWantedBy=multi-user.target\n",
        ),
    ] {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kprov provision --phase join --root ROOT` in the namespace with the
/// token in the environment, timed.
fn join(cp: &ControlPlane, root: &Path, token: &str, extra: &[&str]) -> (Output, Duration) {
    let mut args = vec![
        "provision",
        "--phase",
        "join",
        "--root",
        root.to_str().unwrap(),
        "--kubelet-version",
        "v1.20.2",
        "--node-name",
        "worker-1",
        "--node-labels",
        "role=worker",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let o = cp
        .ns
        .command(common::kprov_bin().to_str().unwrap())
        .args(&args)
        .env("KPROV_TOKEN", token)
        .output()
        .unwrap();
    (o, started.elapsed())
}

/// A failing join: non-zero, the diagnosis on stderr, within `limit`,
/// nothing written, and the token never shown.
fn assert_fails(
    cp: &ControlPlane,
    what: &str,
    token: &str,
    extra: &[&str],
    diagnosis: &str,
    limit: Duration,
) {
    let dir = scratch("join-fail-");
    base_root(dir.path());
    let before = snapshot(dir.path());
    let (o, took) = join(cp, dir.path(), token, extra);
    println!("{what}: failed in {:.1} s", took.as_secs_f64());
    assert!(!o.status.success(), "{what}: accepted\n{}", text(&o));
    assert!(
        stderr(&o).contains(diagnosis),
        "{what}: expected {diagnosis:?} in\n{}",
        text(&o)
    );
    assert!(took < limit, "{what}: took {took:?}, limit {limit:?}");
    assert_eq!(
        diff(&before, &snapshot(dir.path())),
        Vec::<String>::new(),
        "{what}: the root changed"
    );
    let secret = token.split('.').nth(1).unwrap();
    assert!(
        !text(&o).contains(secret),
        "{what}: the token's secret was shown"
    );
}

#[test]
#[ignore = "starts etcd and the v1.20.2 control plane in a network namespace"]
fn token_discovery_joins_with_the_right_token_and_hash_and_diagnoses_the_rest() {
    let cp = ControlPlane::start(PREFIX);
    let o = cp.init_phase("bootstrap-token");
    assert!(o.status.success(), "{}\n{}", text(&o), cp.logs.dump());
    let (token, hash) = cp.new_token("1h");
    let server = cp.server();

    // The right token and hash: the node's files, with their modes.
    let dir = scratch("join-ok-");
    let root = dir.path();
    base_root(root);
    let good = [
        "--api-server",
        server.as_str(),
        "--discovery-token-ca-cert-hash",
        hash.as_str(),
    ];
    let (o, took) = join(&cp, root, &token, &good);
    assert!(o.status.success(), "{}\n{}", text(&o), cp.logs.dump());
    println!("join into a root: {:.1} s", took.as_secs_f64());
    assert!(!text(&o).contains(token.split('.').nth(1).unwrap()));
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        std::fs::read(root.join("etc/kubernetes/pki/ca.crt")).unwrap(),
        std::fs::read(cp.ca()).unwrap(),
        "ca.crt is not the cluster's CA"
    );
    assert_eq!(mode("etc/kubernetes/pki/ca.crt"), 0o644);
    let bootstrap =
        std::fs::read_to_string(root.join("etc/kubernetes/bootstrap-kubelet.conf")).unwrap();
    assert_eq!(mode("etc/kubernetes/bootstrap-kubelet.conf"), 0o600);
    // Through the node-local balancer, seeded with --api-server.
    assert!(
        bootstrap.contains("server: https://127.0.0.1:6443")
            && bootstrap.contains("tls-server-name: kubernetes"),
        "{bootstrap}"
    );
    let lb_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/kprov-lb.service")).unwrap();
    let seed = server.trim_start_matches("https://");
    assert!(lb_unit.contains(&format!("--seed {seed}")), "{lb_unit}");
    // The link names the unit by its path on the node.
    assert!(std::fs::symlink_metadata(
        root.join("etc/systemd/system/multi-user.target.wants/kprov-lb.service")
    )
    .is_ok());
    assert!(bootstrap.contains(&format!("token: {token}")));
    let config = std::fs::read_to_string(root.join("var/lib/kubelet/config.yaml")).unwrap();
    assert!(config.contains("clusterDNS:\n- 10.96.0.10"), "{config}");
    let dropin =
        std::fs::read_to_string(root.join("etc/systemd/system/kubelet.service.d/10-kprov.conf"))
            .unwrap();
    for flag in [
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--hostname-override=worker-1",
        "--node-labels=role=worker",
    ] {
        assert!(dropin.contains(flag), "{flag} missing from\n{dropin}");
    }
    assert!(root
        .join("etc/systemd/system/multi-user.target.wants/kubelet.service")
        .is_symlink());
    // The bootstrap kubeconfig works: kubectl with it reaches the API
    // server, verifying it with the CA it holds.
    let conf = root.join("etc/kubernetes/bootstrap-kubelet.conf");
    let o = cp
        .ns
        .command(&cp.kubectl_bin)
        .args([
            "--kubeconfig",
            conf.to_str().unwrap(),
            "get",
            "--raw",
            "/version",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bootstrap-kubelet.conf does not work: {}",
        text(&o)
    );

    // A second run changes nothing and says so.
    let before = snapshot(root);
    let (o, _) = join(&cp, root, &token, &good);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(" 0 created, 0 changed"),
        "{}",
        text(&o)
    );
    assert_eq!(diff(&before, &snapshot(root)), Vec::<String>::new());

    // Once kubeadm-config lists 127.0.0.1 (kprov init names it), the
    // balancer's address is checked as it is: no tls-server-name, which
    // kubelet v1.20 would drop at TLS bootstrap (and need a restart).
    let o = cp.init_phase("upload-config");
    assert!(o.status.success(), "{}", text(&o));
    let direct = scratch("join-direct-");
    base_root(direct.path());
    let (o, _) = join(&cp, direct.path(), &token, &good);
    assert!(o.status.success(), "{}", text(&o));
    let conf = direct.path().join("etc/kubernetes/bootstrap-kubelet.conf");
    let bootstrap = std::fs::read_to_string(&conf).unwrap();
    assert!(
        bootstrap.contains("server: https://127.0.0.1:6443")
            && !bootstrap.contains("tls-server-name"),
        "{bootstrap}"
    );
    let o = cp
        .ns
        .command(&cp.kubectl_bin)
        .args(["--kubeconfig", conf.to_str().unwrap()])
        .args(["get", "--raw", "/version"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the API server's certificate does not name 127.0.0.1: {}",
        text(&o)
    );

    // --ca-cert into a root needs no API server at all (prebaking
    // offline): an address nothing answers on still works.
    let offline = scratch("join-offline-");
    base_root(offline.path());
    let ca = cp.ca().display().to_string();
    let (o, took) = join(
        &cp,
        offline.path(),
        &token,
        &[
            "--api-server",
            "https://10.79.0.1:6444",
            "--ca-cert",
            &ca,
            "--discovery-token-ca-cert-hash",
            &hash,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Failures, each with its diagnosis, in bounded time.
    let limit = Duration::from_secs(40);
    let id = token.split('.').next().unwrap();
    let wrong_secret = format!("{id}.0000000000000000");
    assert_fails(
        &cp,
        "wrong token secret",
        &wrong_secret,
        &good,
        "token invalid or expired: bootstrap token",
        limit,
    );
    assert_fails(
        &cp,
        "unknown token",
        "zzzzzz.0000000000000000",
        &good,
        "token invalid or expired: bootstrap token zzzzzz",
        limit,
    );
    let wrong_hash = format!("sha256:{}", "0".repeat(64));
    assert_fails(
        &cp,
        "wrong CA hash",
        &token,
        &[
            "--api-server",
            server.as_str(),
            "--discovery-token-ca-cert-hash",
            &wrong_hash,
        ],
        "CA mismatch: the cluster's CA has public-key hash",
        Duration::from_secs(15),
    );
    assert_fails(
        &cp,
        "unreachable API server",
        &token,
        &[
            "--api-server",
            "https://10.79.0.1:6444",
            "--discovery-token-ca-cert-hash",
            &hash,
            "--timeout",
            "8",
        ],
        "API server unreachable: https://10.79.0.1:6444 did not answer",
        Duration::from_secs(25),
    );
    // A deleted token: its signature leaves cluster-info.
    let (deleted, _) = cp.new_token("1h");
    let o = kprov_in(
        &cp.ns,
        &["token", "delete", "--kubeconfig", &cp.admin, &deleted],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_fails(
        &cp,
        "deleted token",
        &deleted,
        &good,
        "token invalid or expired",
        limit,
    );

    // An expired token: the bootstrapsigner drops its signature, or, if
    // that has not happened yet, the API server refuses the token after
    // its signature verified. Either way the token is named as expired.
    let (expired, _) = cp.new_token("2s");
    std::thread::sleep(Duration::from_secs(4));
    assert_fails(
        &cp,
        "expired token",
        &expired,
        &good,
        "token invalid or expired",
        limit,
    );
    drop(cp);
}

/// `kprov provision --phase join --root ROOT --ca-cert CA` against an
/// address nothing answers on (an offline prebake), token in the
/// environment.
fn offline_join(root: &Path, ca: &Path, token: &str, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "provision",
        "--phase",
        "join",
        "--root",
        root.to_str().unwrap(),
        "--kubelet-version",
        "v1.20.2",
        "--api-server",
        "https://127.0.0.1:1",
        "--ca-cert",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    common::kprov(&args, &[("KPROV_TOKEN", token)])
}

#[test]
fn an_offline_join_with_a_ca_file_is_undone_by_reset_which_keeps_the_base_phase() {
    let dir = scratch("join-reset-");
    let root = dir.path().join("root");
    base_root(&root);
    let ca = dir.path().join("ca.pem");
    common::openssl_ca(&ca);
    let root_s = root.to_str().unwrap();
    let token = "abcdef.0123456789abcdef";
    let base = snapshot(&root);

    // A dry run writes nothing.
    let run = offline_join(&root, &ca, token, &["--dry-run"]);
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(diff(&base, &snapshot(&root)), Vec::<String>::new());

    let run = offline_join(&root, &ca, token, &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    assert_eq!(
        std::fs::read(root.join("etc/kubernetes/pki/ca.crt")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    // What TLS bootstrap and the cluster's pods would have left: a
    // kubelet.conf whose client certificate is valid.
    use base64::Engine;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca).unwrap());
    let kubelet_conf = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca_b64}\n    server: https://127.0.0.1:1\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\nusers:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n"
    );
    let client_cert = dir.path().join("client.pem");
    common::openssl_ca(&client_cert);
    let client_cert = std::fs::read_to_string(&client_cert).unwrap();
    for (path, body) in [
        ("etc/cni/net.d/10-flannel.conflist", "{}"),
        ("var/lib/cni/networks/cbr0/10.244.1.2", "id"),
        (
            "var/lib/kubelet/pki/kubelet-client-current.pem",
            client_cert.as_str(),
        ),
        ("etc/kubernetes/kubelet.conf", kubelet_conf.as_str()),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    // A joined node keeps its bootstrap kubeconfig: a re-run with another
    // (say, expired) token changes nothing.
    let joined = snapshot(&root);
    let run = offline_join(&root, &ca, "zzzzzz.0000000000000000", &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stderr.contains("this node has joined already"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(" 0 created, 0 changed"),
        "{}",
        run.stdout
    );
    assert_eq!(diff(&joined, &snapshot(&root)), Vec::<String>::new());
    // ... and refuses to be pointed at another cluster.
    let other = dir.path().join("other.pem");
    common::openssl_ca(&other);
    let run = offline_join(&root, &other, token, &[]);
    assert!(
        !run.ok() && run.stderr.contains("run `kprov reset` first"),
        "{}",
        run.stderr
    );
    assert_eq!(diff(&joined, &snapshot(&root)), Vec::<String>::new());

    // Reset: a dry run changes nothing; then the join is undone, the
    // base phase (the unit, the CNI config directory) stays.
    let run = common::kprov(&["reset", "--root", root_s, "--dry-run"], &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stdout.contains("would remove /var/lib/kubelet absent"),
        "{}",
        run.stdout
    );
    assert_eq!(diff(&joined, &snapshot(&root)), Vec::<String>::new());
    let run = common::kprov(&["reset", "--root", root_s], &[]);
    assert!(run.ok(), "{}", run.stderr);
    for gone in [
        "etc/kubernetes/kubelet.conf",
        "etc/kubernetes/bootstrap-kubelet.conf",
        "etc/kubernetes/pki/ca.crt",
        "etc/systemd/system/kubelet.service.d/10-kprov.conf",
        "var/lib/kubelet",
        "var/lib/cni",
        "etc/cni/net.d/10-flannel.conflist",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    assert!(root.join("etc/systemd/system/kubelet.service").is_file());
    assert!(root.join("etc/cni/net.d").is_dir());
    let after = snapshot(&root);
    let run = common::kprov(&["reset", "--root", root_s], &[]);
    assert!(
        run.ok() && run.stderr.contains("nothing changed"),
        "{}",
        run.stderr
    );
    assert_eq!(diff(&after, &snapshot(&root)), Vec::<String>::new());

    // It joins again.
    let run = offline_join(&root, &ca, token, &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(
        std::fs::metadata(root.join("etc/kubernetes/bootstrap-kubelet.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
}

#[test]
fn the_join_phase_needs_the_base_phase_in_place() {
    let dir = scratch("join-nobase-");
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    let ca = root.join("ca.pem");
    common::openssl_ca(&ca);
    let before = snapshot(root);
    let run = offline_join(root, &ca, "abcdef.0123456789abcdef", &[]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("the base phase is not in place"),
        "{}",
        run.stderr
    );
    assert_eq!(diff(&before, &snapshot(root)), Vec::<String>::new());
}

#[test]
fn a_symlink_planted_at_a_temporary_name_cannot_redirect_a_write_outside_the_root() {
    let dir = scratch("join-symlink-");
    let root = dir.path().join("root");
    base_root(&root);
    let ca = dir.path().join("ca.pem");
    common::openssl_ca(&ca);
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "precious\n").unwrap();
    let kubernetes = root.join("etc/kubernetes");
    std::fs::create_dir_all(&kubernetes).unwrap();
    // The name older kprov versions wrote through.
    std::os::unix::fs::symlink(
        &outside,
        kubernetes.join(".bootstrap-kubelet.conf.kprov-tmp"),
    )
    .unwrap();

    let token = "abcdef.0123456789abcdef";
    let run = offline_join(&root, &ca, token, &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
    let written = kubernetes.join("bootstrap-kubelet.conf");
    let meta = std::fs::symlink_metadata(&written).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert!(std::fs::read_to_string(&written).unwrap().contains(token));
}

#[test]
fn a_ca_file_holding_a_private_key_is_refused_and_nothing_is_written() {
    let dir = scratch("join-cakey-");
    let root = dir.path().join("root");
    base_root(&root);
    let ca = dir.path().join("ca.pem");
    common::openssl_ca(&ca);
    let bundle = dir.path().join("ca-and-key.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGZha2Uga2V5IG1hdGVyaWFsIGZvciB0ZXN0cyBvbmx5\n-----END PRIVATE KEY-----\n",
            std::fs::read_to_string(&ca).unwrap()
        ),
    )
    .unwrap();
    let before = snapshot(&root);
    let run = offline_join(&root, &bundle, "abcdef.0123456789abcdef", &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let want = format!(
        "--ca-cert {}: block 2 is \"PRIVATE KEY\", expected only CERTIFICATE blocks",
        bundle.display()
    );
    assert!(
        run.stderr.contains(&want),
        "expected {want:?} in:\n{}",
        run.stderr
    );
    assert!(!run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("MC4CAQAw"));
    assert_eq!(diff(&before, &snapshot(&root)), Vec::<String>::new());
}

#[test]
fn a_cloud_config_path_with_a_newline_adds_no_line_to_the_kubelet_unit() {
    let dir = scratch("join-unitvalue-");
    let root = dir.path().join("root");
    base_root(&root);
    let ca = dir.path().join("ca.pem");
    common::openssl_ca(&ca);
    let before = snapshot(&root);
    let crafted = "/etc/kubernetes/cloud.conf\nExecStartPre=/bin/touch /pwned";
    let run = offline_join(
        &root,
        &ca,
        "abcdef.0123456789abcdef",
        &["--cloud-provider", "openstack", "--cloud-config", crafted],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let want = format!("invalid --cloud-config {crafted:?}: expected an absolute path on the node");
    assert!(
        run.stderr.contains(&want),
        "expected {want:?} in:\n{}",
        run.stderr
    );
    assert_eq!(diff(&before, &snapshot(&root)), Vec::<String>::new());
}
