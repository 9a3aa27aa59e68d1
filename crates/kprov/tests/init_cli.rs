//! `kprov init` (its file phases) and `kprov token` on the command line:
//! bad input is refused before anything is written, a second run changes
//! nothing, manifests are private, API phases refuse --root. The real
//! control plane built from these files runs in controlplane.rs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{diff, kprov, snapshot};

fn init_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "init",
        "--skip-phases",
        "base,kubelet-start",
        "--root",
        root,
        "--node-name",
        "master-1",
        "--advertise-address",
        "192.0.2.10",
        "--kubernetes-version",
        "v1.20.2",
        "--key-type",
        "ecdsa",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for (args, code, message) in [
        (
            vec!["--pod-cidr", "10.96.0.0/16"],
            1,
            "--pod-cidr 10.96.0.0/16 overlaps --service-cidr 10.96.0.0/12",
        ),
        (
            vec!["--pod-cidr", "10.244.0.0/25"],
            1,
            "--pod-cidr 10.244.0.0/25: too small to give each node a /24",
        ),
        (
            vec!["--advertise-address", "10.244.1.1"],
            1,
            "--advertise-address 10.244.1.1 lies in --pod-cidr 10.244.0.0/16",
        ),
        (
            vec!["--advertise-address", "master-1"],
            2,
            "expected an IPv4 or IPv6 address",
        ),
        (
            vec!["--pod-cidr", "10.244.0.0"],
            2,
            "expected ADDRESS/PREFIX",
        ),
    ] {
        let run = kprov(&init_args(root, &args), &[]);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{args:?}: stderr lacks {message:?}:\n{}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} wrote files"
        );
    }
}

#[test]
fn an_unreadable_ca_stops_init_before_any_other_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let pki = dir.path().join("etc/kubernetes/pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::write(pki.join("ca.crt"), "not a certificate\n").unwrap();
    std::fs::write(pki.join("ca.key"), "not a key\n").unwrap();
    let before = snapshot(dir.path());
    let run = kprov(&init_args(root, &[]), &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("ca.crt"), "{}", run.stderr);
    // Only the (empty) node lock the certs phase took.
    let after = common::without_node_lock(snapshot(dir.path()));
    assert_eq!(diff(&before, &after), Vec::<String>::new());
}

#[test]
fn init_writes_private_manifests_once_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let dry = kprov(&init_args(root, &["--dry-run"]), &[]);
    assert!(dry.ok(), "{}", dry.stderr);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "--dry-run wrote files"
    );

    let first = kprov(&init_args(root, &[]), &[]);
    assert!(first.ok(), "{}", first.stderr);
    let manifests = dir.path().join("etc/kubernetes/manifests");
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let path = manifests.join(format!("{name}.yaml"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let pod: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["spec"]["containers"][0]["command"][0], name);
    }
    let etcd_dir = dir.path().join("var/lib/etcd");
    assert_eq!(
        std::fs::metadata(&etcd_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let after_first = snapshot(dir.path());
    let second = kprov(&init_args(root, &[]), &[]);
    assert!(second.ok(), "{}", second.stderr);
    assert!(
        second.stderr.contains("kprov: nothing changed"),
        "{}",
        second.stderr
    );
    assert_eq!(
        diff(&after_first, &snapshot(dir.path())),
        Vec::<String>::new()
    );

    let run = kprov(
        &[
            "init",
            "phase",
            "bootstrap-token",
            "--root",
            root,
            "--node-name",
            "master-1",
            "--advertise-address",
            "192.0.2.10",
        ],
        &[],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("cannot run with --root"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_rerun_corrects_the_modes_of_manifests_and_of_etcds_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let first = kprov(&init_args(root, &[]), &[]);
    assert!(first.ok(), "{}", first.stderr);
    let manifest = dir
        .path()
        .join("etc/kubernetes/manifests/kube-apiserver.yaml");
    let etcd_dir = dir.path().join("var/lib/etcd");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Someone made the manifest (it holds the API server's flags)
    // readable by all and etcd's data world-readable.
    std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&etcd_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dry = kprov(&init_args(root, &["--dry-run"]), &[]);
    assert!(dry.ok(), "{}", dry.stderr);
    assert!(
        dry.stdout.contains(
            "would change file /etc/kubernetes/manifests/kube-apiserver.yaml (0600) (mode 0644"
        ),
        "{}",
        dry.stdout
    );
    assert_eq!(mode(&manifest), 0o644, "the dry run changed the mode");
    let again = kprov(&init_args(root, &[]), &[]);
    assert!(again.ok(), "{}", again.stderr);
    assert_eq!(mode(&manifest), 0o600, "{}", again.stdout);
    assert_eq!(mode(&etcd_dir), 0o700, "{}", again.stdout);
    assert!(
        again
            .stdout
            .contains("changed      directory /var/lib/etcd (0700) (mode 0755"),
        "{}",
        again.stdout
    );
}

#[test]
fn token_ttl_must_be_positive_and_checked_before_any_request() {
    for (ttl, message) in [
        ("0", "--ttl 0: a token lifetime must be positive"),
        ("-1h", "--ttl -1h: a token lifetime must be positive"),
        ("1d", "--ttl 1d: expected a duration such as 24h"),
    ] {
        // The kubeconfig does not exist: the TTL is refused first.
        let run = kprov(
            &[
                "token",
                "create",
                "--kubeconfig",
                "/nonexistent/admin.conf",
                "--ttl",
                ttl,
            ],
            &[],
        );
        assert_eq!(run.code, Some(2), "{ttl}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{ttl}: {}", run.stderr);
    }
    let run = kprov(
        &["token", "create", "--kubeconfig", "/nonexistent/admin.conf"],
        &[],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("/nonexistent/admin.conf"),
        "{}",
        run.stderr
    );
    let run = kprov(
        &[
            "token",
            "delete",
            "--kubeconfig",
            "/nonexistent/admin.conf",
            "ABC",
        ],
        &[],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("expected a token id of 6 characters"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_token_ttl_above_the_maximum_is_refused_without_a_panic() {
    for ttl in ["100000000h", "87601h", "5000000000000000000s"] {
        let run = kprov(
            &[
                "token",
                "create",
                "--kubeconfig",
                "/nonexistent/admin.conf",
                "--ttl",
                ttl,
            ],
            &[],
        );
        assert_eq!(run.code, Some(2), "{ttl}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "--ttl {ttl}: longer than the maximum of 87600h (10 years)"
            )),
            "{ttl}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{ttl}: {}", run.stderr);
    }
}

#[test]
fn image_registry_and_flannel_image_are_validated_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for (args, message) in [
        (
            vec!["--image-registry", "bad registry"],
            "--image-registry \"bad registry\": expected a registry host with an optional path, such as registry.example.com:5000/mirror (no tag or digest)",
        ),
        (
            vec!["--image-registry", "registry.example.com/k8s:v1"],
            "--image-registry \"registry.example.com/k8s:v1\": expected a registry host with an optional path",
        ),
        (
            vec!["--flannel-image", "flannel\nimage: x"],
            "--flannel-image \"flannel\\nimage: x\": not an image reference",
        ),
        (
            vec!["--flannel-image", "docker.io/Flannel:v1"],
            "--flannel-image \"docker.io/Flannel:v1\": not an image reference",
        ),
    ] {
        let run = kprov(&init_args(root, &args), &[]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{args:?}: stderr lacks {message:?}:\n{}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} wrote files"
        );
    }
}

#[test]
fn a_malformed_certificate_key_is_refused_by_flag_without_echoing_it_or_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let bad = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeZ";
    let too_short = "0123456789abcdef";
    let expected = "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it)";
    for (args, env) in [
        (vec!["--upload-certs", "--certificate-key", bad], vec![]),
        (
            vec!["--upload-certs"],
            vec![("KPROV_CERTIFICATE_KEY", too_short)],
        ),
    ] {
        let run = kprov(&init_args(root, &args), &env);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(
            !run.stderr.contains(bad) && !run.stderr.contains(too_short),
            "the key was echoed: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    // The master join line checks its key before any request.
    let run = kprov(
        &[
            "token",
            "create",
            "--kubeconfig",
            "/nonexistent/admin.conf",
            "--print-join-command",
            "--control-plane",
            "--certificate-key",
            too_short,
        ],
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(expected), "{}", run.stderr);
    assert!(!run.stderr.contains(too_short), "{}", run.stderr);
    // --control-plane needs the key.
    let run = kprov(
        &[
            "token",
            "create",
            "--kubeconfig",
            "/nonexistent/admin.conf",
            "--print-join-command",
            "--control-plane",
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--certificate-key"), "{}", run.stderr);
}

#[test]
fn upload_certs_is_an_api_phase_and_refuses_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let first = kprov(&init_args(root, &[]), &[]);
    assert!(first.ok(), "{}", first.stderr);
    let run = kprov(
        &[
            "init",
            "phase",
            "upload-certs",
            "--root",
            root,
            "--node-name",
            "master-1",
            "--advertise-address",
            "192.0.2.10",
        ],
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "phase upload-certs talks to the running API server; it cannot run with --root"
        ),
        "{}",
        run.stderr
    );
    // A whole run with --upload-certs into a root writes the files only.
    let again = kprov(&init_args(root, &["--upload-certs"]), &[]);
    assert!(again.ok(), "{}", again.stderr);
    assert!(!again.stdout.contains("kubeadm-certs"), "{}", again.stdout);
    assert!(
        !again
            .stdout
            .lines()
            .any(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit())),
        "a certificate key was printed with no upload: {}",
        again.stdout
    );
}
