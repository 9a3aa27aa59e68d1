//! `kprov pki` and `kprov kubeconfig` on the command line, on scratch
//! roots: bad input is refused before anything is written, a second run
//! changes nothing, `pki check` fails on an expired certificate, and the
//! CA hash is what openssl computes; `pod-network sync` with a kubelet.conf
//! whose API server is down exits cleanly. The comparison with kubeadm itself is
//! in pki_kubeadm.rs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{diff, kprov, snapshot};

const NODE: &[&str] = &[
    "--node-name",
    "master-1",
    "--advertise-address",
    "192.0.2.10",
    "--kubernetes-version",
    "v1.20.2",
    "--key-type",
    "ecdsa",
];

fn pki_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pki", "--root", root];
    args.extend_from_slice(NODE);
    args.extend_from_slice(extra);
    args
}

fn kubeconfig_args(root: &str) -> Vec<&str> {
    let mut args = vec!["kubeconfig", "--root", root];
    args.extend_from_slice(NODE);
    args
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for (args, message) in [
        (
            vec!["--advertise-address", "master-1"],
            "invalid value 'master-1' for '--advertise-address <IP>': advertise address \"master-1\" is not valid: expected an IPv4 or IPv6 address, e.g. 192.168.1.10",
        ),
        (
            vec!["--advertise-address", "0.0.0.0"],
            "advertise address \"0.0.0.0\" is not valid: an unspecified address cannot be advertised",
        ),
        (
            vec!["--service-cidr", "10.96.0.0/33"],
            "service CIDR \"10.96.0.0/33\" is not valid: the prefix leaves no room for the API server's service IP: at most /31 for IPv4",
        ),
        (
            vec!["--san", "ok.example.test,not a name"],
            "subject alternative name \"not a name\" is not valid",
        ),
        (
            vec!["--node-name", "Master_1"],
            "node name \"Master_1\" is not valid",
        ),
        (
            vec!["--control-plane-endpoint", "https://cp.example.test"],
            "control-plane endpoint \"https://cp.example.test\" is not valid: expected HOST or HOST:PORT, without a scheme",
        ),
        (
            vec!["--kubernetes-version", "v1.13.1"],
            "Kubernetes version v1.13.1 is not supported: the minimum is v1.20.0",
        ),
        (
            vec!["--cluster-domain", "Cluster.Local"],
            "cluster domain \"Cluster.Local\" is not valid",
        ),
    ] {
        // The flag given last wins, so the bad value overrides NODE's.
        let run = kprov(&pki_args(root, &args), &[]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{args:?}: stderr lacks {message:?}:\n{}",
            run.stderr
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{args:?}");
    }
    let run = kprov(
        &["pki", "--root", root, "--advertise-address", "192.0.2.10"],
        &[],
    );
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--node-name <NAME>"), "{}", run.stderr);
    let run = kprov(
        &[
            "pki",
            "--root",
            root,
            "--cert-dir",
            "pki",
            "--node-name",
            "m",
            "--advertise-address",
            "192.0.2.10",
        ],
        &[],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("--cert-dir pki: must be an absolute path on the node when --root is not /"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_pki_and_kubeconfigs_are_made_once_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let run = kprov(&pki_args(root, &["--dry-run"]), &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("would create  ca "),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("kprov: would write 22 file(s) to /etc/kubernetes/pki"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let run = kprov(&pki_args(root, &["--output", "json"]), &[]);
    assert!(run.ok(), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["command"], "certificates");
    let files = &report["reports"][0];
    assert_eq!(files["plan"], "certificates in /etc/kubernetes/pki");
    assert_eq!(files["summary"]["created"], 22);
    let run = kprov(&kubeconfig_args(root), &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("created       admin.conf"),
        "{}",
        run.stdout
    );
    let before = snapshot(dir.path());

    let run = kprov(&pki_args(root, &[]), &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("certificates in /etc/kubernetes/pki are valid; nothing changed"),
        "{}",
        run.stderr
    );
    let run = kprov(&kubeconfig_args(root), &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(run.stderr.contains("nothing changed"), "{}", run.stderr);
    assert_eq!(diff(&before, &snapshot(dir.path())), Vec::<String>::new());
}

#[test]
fn a_conflict_is_reported_with_what_differs_and_the_exit_status_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    assert!(kprov(&pki_args(root, &[]), &[]).ok());
    let before = snapshot(dir.path());
    let run = kprov(&pki_args(root, &["--san", "new.example.test"]), &[]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.trim_end(),
        "kprov: error: making the PKI in /etc/kubernetes/pki: existing certificate \
         /etc/kubernetes/pki/apiserver.crt cannot be reused: its SANs lack DNS:new.example.test. \
         kprov never replaces an existing certificate: remove apiserver.crt and apiserver.key \
         to have them made again"
    );
    assert_eq!(diff(&before, &snapshot(dir.path())), Vec::<String>::new());
}

#[test]
fn check_lists_every_certificate_and_fails_when_one_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    assert!(kprov(&pki_args(root, &[]), &[]).ok());
    assert!(kprov(&kubeconfig_args(root), &[]).ok());
    let check = |extra: &[&str]| {
        let mut args = vec!["pki", "check", "--root", root];
        args.extend_from_slice(extra);
        kprov(&args, &[])
    };
    let run = check(&["--kubeconfig-dir", "/etc/kubernetes"]);
    assert!(run.ok(), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 10 + 4, "{}", run.stdout);
    assert!(lines[0].starts_with("CERTIFICATE"));
    assert!(lines[2].starts_with("apiserver "), "{}", lines[2]);
    assert!(lines[2].contains("CN=kube-apiserver"), "{}", lines[2]);
    assert!(lines[2].contains(" 364d "), "{}", lines[2]);

    // Replace the front-proxy client by one the same CA issued with the
    // library's clock set two years back: it expired a year ago.
    let spec = {
        let mut node = kprov_pki::ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        node.key_type = kprov_pki::KeyType::Ecdsa;
        kprov_pki::PkiSpec::new(node)
    };
    let pki = dir.path().join("etc/kubernetes/pki");
    let mut found = kprov_pki::generate::Found::default();
    for f in ["front-proxy-ca.crt", "front-proxy-ca.key"] {
        found.insert(f, std::fs::read(pki.join(f)).unwrap());
    }
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(730);
    let old =
        kprov_pki::generate::generate_certificates(&spec, Path::new("/"), &found, past).unwrap();
    for f in old.files {
        if f.rel_path.starts_with("front-proxy-client") {
            std::fs::write(pki.join(&f.rel_path), f.contents.unwrap()).unwrap();
        }
    }
    let run = check(&["--output", "json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("kprov: expired or invalid: front-proxy-client "),
        "{}",
        run.stderr
    );
    let rows = run.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "front-proxy-client")
        .unwrap();
    assert_eq!(row["state"], "present");
    assert_eq!(row["expired"], true);
    assert!(row["remaining_seconds"].as_i64().unwrap() < 0);
}

#[test]
fn ca_hash_is_what_openssl_computes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    assert!(kprov(&pki_args(root, &[]), &[]).ok());
    let run = kprov(&["pki", "ca-hash", "--root", root], &[]);
    assert!(run.ok(), "{}", run.stderr);
    let ca = dir.path().join("etc/kubernetes/pki/ca.crt");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum",
            ca.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let want = format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    );
    assert_eq!(run.stdout.trim(), want);
    let empty = tempfile::tempdir().unwrap();
    let run = kprov(
        &["pki", "ca-hash", "--root", empty.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.trim(),
        "kprov: error: /etc/kubernetes/pki/ca.crt does not exist: run `kprov pki` first to make the cluster CA"
    );
}

/// Every file under `dir`, relative.
fn file_names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = snapshot(dir)
        .into_iter()
        .filter(|(_, e)| matches!(e, common::Entry::File { .. }))
        .map(|(k, _)| k)
        .collect();
    out.sort();
    out
}

#[test]
fn a_run_killed_at_any_write_and_run_again_ends_with_a_complete_valid_pki() {
    let reference = tempfile::tempdir().unwrap();
    let root = reference.path().to_str().unwrap();
    assert!(kprov(&pki_args(root, &[]), &[]).ok());
    assert!(kprov(&kubeconfig_args(root), &[]).ok());
    let want = file_names(reference.path());
    // 22 PKI files, 4 kubeconfigs and the (empty) node lock.
    assert_eq!(want.len(), 22 + 4 + 1);
    assert!(want.contains(&"var/lib/kprov/node.lock".to_string()));

    for (phase, writes) in [("pki", 22), ("kubeconfig", 4)] {
        for n in 1..=writes {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_str().unwrap();
            if phase == "kubeconfig" {
                assert!(kprov(&pki_args(root, &[]), &[]).ok());
            }
            let args = if phase == "pki" {
                pki_args(root, &[])
            } else {
                kubeconfig_args(root)
            };
            let failpoint = format!("write.before-rename={n}");
            let run = kprov(&args, &[("KPROV_FAILPOINTS", &failpoint)]);
            assert_eq!(run.code, Some(86), "{phase} {failpoint}: {}", run.stderr);
            // Run again, then the other phase if it was not run yet.
            let run = kprov(&args, &[]);
            assert!(run.ok(), "{phase} after {failpoint}: {}", run.stderr);
            if phase == "pki" {
                assert!(kprov(&kubeconfig_args(root), &[]).ok());
            }
            assert_eq!(file_names(dir.path()), want, "{phase} after {failpoint}");
            let check = kprov(
                &[
                    "pki",
                    "check",
                    "--root",
                    root,
                    "--kubeconfig-dir",
                    "/etc/kubernetes",
                ],
                &[],
            );
            assert!(check.ok(), "{phase} after {failpoint}: {}", check.stdout);
            let again = kprov(&args, &[]);
            assert!(
                again.stderr.contains("nothing changed"),
                "{phase} after {failpoint}: {}",
                again.stderr
            );
        }
    }
}

/// The bridge network's timer runs `kprov pod-network sync` every 10 s,
/// also while the node's API server is down: that is not a failure.
#[test]
fn pod_network_sync_exits_cleanly_before_a_join_and_while_the_api_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let absent = dir.path().join("absent.conf");
    let run = kprov(
        &[
            "pod-network",
            "sync",
            "--kubeconfig",
            absent.to_str().unwrap(),
        ],
        &[],
    );
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stderr.contains("has not joined a cluster"),
        "{}",
        run.stderr
    );

    assert!(kprov(&pki_args(root, &[]), &[]).ok());
    assert!(kprov(&kubeconfig_args(root), &[]).ok());
    let kubelet_conf = dir.path().join("etc/kubernetes/kubelet.conf");
    // Port 1 on loopback: nothing listens, the connection is refused.
    let text = std::fs::read_to_string(&kubelet_conf)
        .unwrap()
        .replace("https://192.0.2.10:6443", "https://127.0.0.1:1");
    std::fs::write(&kubelet_conf, text).unwrap();
    let run = kprov(
        &[
            "pod-network",
            "sync",
            "--dry-run",
            "--kubeconfig",
            kubelet_conf.to_str().unwrap(),
        ],
        &[],
    );
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stderr.contains("the API server is not available yet"),
        "{}",
        run.stderr
    );
}
