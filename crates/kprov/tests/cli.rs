//! The kprov command line against small synthetic roots: help, bad input,
//! dry runs and re-runs. These run everywhere in seconds; the same flows on
//! a real Debian root with real apt are in prebake.rs.
//!
//! The synthetic root is a directory with an os-release, a dpkg status file
//! listing the packages as installed and a containerd unit file, and the
//! artifacts are small stand-in files: these tests check the engine's
//! mechanics (what is written, when, with which mode), not the binaries.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;

use common::{base_args, diff, kprov, snapshot};

const DEBIAN_12: &str =
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn synthetic_root(dir: &Path, os_release: &str) {
    write(&dir.join("etc/os-release"), os_release);
    write(
        &dir.join("etc/fstab"),
        "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
    );
    // The packages the plan asks for, from kprov's own tables.
    let os = kprov_provision::os::detect(DEBIAN_12, "os-release").unwrap();
    let mut packages = kprov_provision::tables::base_packages(&os);
    packages.extend(kprov_provision::tables::runtime_packages(
        &os,
        kprov_core::ContainerRuntime::Containerd,
    ));
    let status: String = packages
        .iter()
        .map(|p| format!("Package: {p}\nStatus: install ok installed\nVersion: 1\n\n"))
        .collect();
    write(&dir.join("var/lib/dpkg/status"), &status);
    write(
        &dir.join("lib/systemd/system/containerd.service"),
        "[Service]\nExecStart=/usr/bin/containerd\n",
    );
}

fn stand_in_artifacts(dir: &Path) {
    write(&dir.join("kubelet"), "#!/bin/sh\necho Kubernetes v1.20.2\n");
    write(&dir.join("kubectl"), "#!/bin/sh\necho kubectl\n");
    let cni = dir.join("cni-src");
    for plugin in ["bridge", "host-local", "loopback"] {
        write(&cni.join(plugin), &format!("#!/bin/sh\necho {plugin}\n"));
    }
    common::sh(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&cni)
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(dir.join("cni-plugins.tgz"))
            .arg("."),
    );
    std::fs::remove_dir_all(&cni).unwrap();
    common::sh(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("sha256sum kubelet kubectl cni-plugins.tgz > SHA256SUMS")
            .current_dir(dir),
    );
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: String,
    artifacts: String,
}

fn fixture(os_release: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let artifacts = dir.path().join("artifacts");
    synthetic_root(&root, os_release);
    stand_in_artifacts(&artifacts);
    Fixture {
        root: root.display().to_string(),
        artifacts: artifacts.display().to_string(),
        _dir: dir,
    }
}

#[test]
fn help_explains_every_provision_flag() {
    let run = kprov(&["provision", "--help"], &[]);
    assert!(run.ok(), "{}", run.stderr);
    for flag in [
        "--phase",
        "--root",
        "--kubelet-version",
        "--container-runtime",
        "--proxy-mode",
        "--arch",
        "--artifacts-dir",
        "--sandbox-image",
        "--cloud-provider",
        "--cloud-config",
        "--token",
        "--ca-cert",
        "--dry-run",
        "--output",
    ] {
        let line_and_next: Vec<&str> = run
            .stdout
            .lines()
            .skip_while(|l| {
                let l = l.trim_start();
                !(l == flag || l.starts_with(&format!("{flag} <")))
            })
            .take(2)
            .collect();
        assert_eq!(line_and_next.len(), 2, "{flag} missing from --help");
        assert!(
            line_and_next[1].trim().len() > 10,
            "{flag} has no explanation"
        );
    }
    let top = kprov(&["--help"], &[]);
    assert!(top.stdout.contains("provision") && top.stdout.contains("health-check"));
}

#[test]
fn bad_input_is_refused_with_the_flag_named_and_the_root_untouched() {
    let f = fixture(DEBIAN_12);
    let junk_pem = format!("{}/junk.pem", f.artifacts);
    std::fs::write(&junk_pem, "not a certificate\n").unwrap();
    let fedora = tempfile::tempdir().unwrap();
    synthetic_root(fedora.path(), "ID=fedora\nVERSION_ID=40\n");
    let fedora_root = fedora.path().display().to_string();
    let no_sums = tempfile::tempdir().unwrap();
    let no_sums_dir = no_sums.path().display().to_string();
    let token = "q1w2e3.r4t5y6u7i8o9p0as";
    let near_token = "q1w2e3.R4T5Y6U7I8O9P0AS";
    let ca_pem = format!("{}/ca.pem", f.artifacts);
    common::openssl_ca(Path::new(&ca_pem));
    let other_hash = format!("sha256:{}", "ab".repeat(32));
    let join = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "--phase",
            "join",
            "--token",
            "q1w2e3.r4t5y6u7i8o9p0as",
            "--api-server",
            "https://10.0.0.1:6443",
            "--discovery-token-unsafe-skip-ca-verification",
        ];
        v.extend_from_slice(extra);
        v
    };

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--kubelet-version", "1.x"], "invalid value '1.x' for '--kubelet-version <VERSION>': malformed Kubernetes version \"1.x\": expected vMAJOR.MINOR.PATCH"),
        (vec!["--kubelet-version", "v1.13.1"], "Kubernetes version v1.13.1 is not supported: the minimum is v1.20.0"),
        (vec!["--token", near_token], "--token: malformed bootstrap token: expected [a-z0-9]{6}.[a-z0-9]{16}"),
        (vec!["--ca-cert", "/nonexistent/ca.crt"], "--ca-cert /nonexistent/ca.crt: cannot read"),
        (vec!["--ca-cert", &junk_pem], "not a PEM-encoded certificate"),
        (vec!["--container-runtime", "podman"], "invalid value 'podman' for '--container-runtime <CONTAINER_RUNTIME>'"),
        (vec!["--container-runtime", "docker", "--kubelet-version", "v1.24.0"], "--container-runtime docker needs a kubelet older than v1.24"),
        (vec!["--phase", "join"], "--phase join needs --token"),
        (vec!["--phase", "all", "--token", token], "--phase all needs --api-server"),
        (vec!["--phase", "join", "--token", token, "--api-server", "https://10.0.0.1:6443"], "--phase join needs a way to trust the API server: --discovery-token-ca-cert-hash sha256:"),
        (join(&["--api-server", "http://10.0.0.1:6443"]), "invalid --api-server \"http://10.0.0.1:6443\": expected https://HOST:PORT"),
        (join(&["--discovery-token-ca-cert-hash", "sha256:123"]), "invalid --discovery-token-ca-cert-hash \"sha256:123\": expected sha256: and 64 hex digits"),
        (join(&["--node-name", "Worker_1"]), "invalid --node-name \"Worker_1\""),
        (join(&["--node-ip", "10.0.0.300"]), "invalid --node-ip \"10.0.0.300\": expected an IPv4 or IPv6 address"),
        (join(&["--node-labels", "role"]), "invalid --node-labels \"role\": expected comma-separated KEY=VALUE"),
        (join(&["--register-with-taints", "gpu=yes:Never"]), "invalid --register-with-taints \"gpu=yes:Never\""),
        (join(&["--timeout", "0"]), "--timeout 0: expected a number of seconds above 0"),
        (join(&["--cluster-domain", "Cluster Local"]), "invalid --cluster-domain \"Cluster Local\""),
        (vec!["--phase", "join", "--token", token, "--api-server", "https://10.0.0.1:6443", "--ca-cert", &ca_pem, "--discovery-token-ca-cert-hash", &other_hash], "--ca-cert: CA mismatch: the cluster's CA has public-key hash sha256:"),
        (vec!["--cloud-config", "relative.conf", "--cloud-provider", "openstack"], "invalid --cloud-config \"relative.conf\""),
        (vec!["--root", "/nonexistent/root"], "--root /nonexistent/root: target root /nonexistent/root:"),
        (vec!["--root", &fedora_root], "unsupported operating system: ID=fedora VERSION_ID=40; supported: ubuntu 18.04/20.04/22.04/24.04"),
        (vec!["--artifacts-dir", &no_sums_dir], "SHA256SUMS: No such file"),
    ];
    let before = snapshot(Path::new(&f.root));
    for (extra, expected) in cases {
        let mut args = base_args(&f.root, &f.artifacts);
        // Later flags win in clap, so the case's flags override the base ones.
        args.extend(extra.iter().copied());
        let run = kprov(&args, &[]);
        assert_ne!(run.code, Some(0), "{extra:?} was accepted");
        assert!(
            run.stderr.contains(expected),
            "{extra:?}: expected {expected:?} in:\n{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(near_token) && !run.stderr.contains(token),
            "{extra:?} echoed a token"
        );
        assert_eq!(
            diff(&before, &snapshot(Path::new(&f.root))),
            Vec::<String>::new(),
            "{extra:?} changed the root"
        );
    }

    // Sources that cannot be used: refused before any download.
    for (args, expected) in [
        (vec!["--mirror", "ftp://mirror.invalid/k8s"], "--mirror \"ftp://mirror.invalid/k8s\": expected an http:// or https:// base URL"),
        (vec!["--kubelet-version", "v1.99.0", "--mirror", "http://127.0.0.1:9"], "Kubernetes version v1.99.0 is not in kprov's catalog: known releases are v1.20.x to v1.37.x"),
        (vec!["--bundle", "/nonexistent/bundle"], "--bundle /nonexistent/bundle: bundle /nonexistent/bundle: manifest.json cannot be read"),
    ] {
        let mut all = vec!["provision", "--phase", "base", "--root", &f.root];
        all.extend(args.iter().copied());
        let run = kprov(&all, &[]);
        assert_ne!(run.code, Some(0), "{args:?} was accepted");
        assert!(run.stderr.contains(expected), "{args:?}: expected {expected:?} in:\n{}", run.stderr);
    }
    assert_eq!(
        diff(&before, &snapshot(Path::new(&f.root))),
        Vec::<String>::new()
    );
}

#[test]
fn a_corrupted_artifact_is_named_with_both_sums_and_nothing_is_installed() {
    let f = fixture(DEBIAN_12);
    let kubelet = Path::new(&f.artifacts).join("kubelet");
    let expected = common::sh(std::process::Command::new("sha256sum").arg(&kubelet)).stdout;
    let expected = String::from_utf8_lossy(&expected)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&kubelet, "#!/bin/sh\necho tampered\n").unwrap();
    let actual = common::sh(std::process::Command::new("sha256sum").arg(&kubelet)).stdout;
    let actual = String::from_utf8_lossy(&actual)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let before = snapshot(Path::new(&f.root));
    let run = kprov(&base_args(&f.root, &f.artifacts), &[]);
    assert_eq!(run.code, Some(1));
    let want = format!(
        "binary:/usr/local/bin/kubelet: artifact kubelet v1.20.2 (amd64): sha256 mismatch for {}: expected {expected}, got {actual}",
        kubelet.display()
    );
    assert!(
        run.stderr.contains(&want),
        "expected {want:?} in:\n{}",
        run.stderr
    );
    assert_eq!(
        // The node lock (an empty file) is the only thing the run leaves.
        diff(
            &before,
            &common::without_node_lock(snapshot(Path::new(&f.root)))
        ),
        Vec::<String>::new()
    );
}

#[test]
fn a_dry_run_lists_what_would_change_and_changes_nothing() {
    let f = fixture(DEBIAN_12);
    let before = snapshot(Path::new(&f.root));
    let mut args = base_args(&f.root, &f.artifacts);
    args.push("--dry-run");
    let run = kprov(&args, &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(run
        .stdout
        .contains("# plan: base phase for Debian GNU/Linux 12 (bookworm) [apt], kubelet v1.20.2"));
    assert!(run.stdout.contains(
        "would create file /etc/sysctl.d/90-kprov-kubernetes.conf (0644) (does not exist)"
    ));
    assert!(run
        .stdout
        .contains("would change swap lines of /etc/fstab commented out (has active swap lines)"));
    assert!(run.stdout.contains("unchanged    packages (apt)"));
    assert!(run
        .stdout
        .contains("dry run, nothing changed: 22 resources:"));
    assert_eq!(
        diff(&before, &snapshot(Path::new(&f.root))),
        Vec::<String>::new()
    );

    args.extend(["--output", "json"]);
    let json = kprov(&args, &[]).json();
    assert_eq!(json["reports"][0]["dry_run"], true);
    assert_eq!(json["plans"][0]["resources"][0]["kind"], "packages");
}

#[test]
fn an_apply_writes_the_plan_and_a_second_run_changes_nothing() {
    let f = fixture(DEBIAN_12);
    let mut args = base_args(&f.root, &f.artifacts);
    args.extend(["--output", "json", "--token", "q1w2e3.r4t5y6u7i8o9p0as"]);
    let first = kprov(&args, &[]);
    assert!(first.ok(), "{}", first.stderr);
    let report = first.json();
    assert_eq!(
        report["reports"][0]["summary"]["unchanged"], 1,
        "only the packages were already there"
    );
    assert!(
        !first.stdout.contains("r4t5y6u7i8o9p0as") && !first.stderr.contains("r4t5y6u7i8o9p0as")
    );

    let root = Path::new(&f.root);
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains("#kprov-swap-off# /swapfile none swap sw 0 0"),
        "{fstab}"
    );
    assert!(root.join("opt/cni/bin/bridge").is_file());
    assert_eq!(
        std::fs::read_link(
            root.join("etc/systemd/system/multi-user.target.wants/containerd.service")
        )
        .unwrap(),
        Path::new("/lib/systemd/system/containerd.service")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/swap.target")).unwrap(),
        Path::new("/dev/null")
    );

    let after_first = snapshot(root);
    let second = kprov(&args, &[]);
    assert!(second.ok(), "{}", second.stderr);
    let summary = &second.json()["reports"][0]["summary"];
    assert_eq!(
        (summary["created"].as_u64(), summary["changed"].as_u64()),
        (Some(0), Some(0)),
        "{summary}"
    );
    assert_eq!(diff(&after_first, &snapshot(root)), Vec::<String>::new());

    // Drift is repaired: a changed file is put back, and only it.
    std::fs::write(
        root.join("etc/sysctl.d/90-kprov-kubernetes.conf"),
        "net.ipv4.ip_forward = 0\n",
    )
    .unwrap();
    let third = kprov(&args, &[]).json();
    assert_eq!(third["reports"][0]["summary"]["changed"], 1);
    assert_eq!(diff(&after_first, &snapshot(root)), Vec::<String>::new());
}

#[test]
fn the_os_command_names_the_detected_system() {
    let f = fixture(DEBIAN_12);
    let run = kprov(&["os", "--root", &f.root], &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        "Debian GNU/Linux 12 (bookworm) (ID Debian, VERSION_ID 12, family apt)"
    );
    // Without /etc/os-release, /usr/lib/os-release is read.
    let usr_lib = tempfile::tempdir().unwrap();
    write(
        &usr_lib.path().join("usr/lib/os-release"),
        "ID=centos\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n",
    );
    let run = kprov(
        &["os", "--root", &usr_lib.path().display().to_string()],
        &[],
    );
    assert_eq!(
        run.stdout.trim(),
        "CentOS Linux 7 (Core) (ID Centos, VERSION_ID 7, family yum)",
        "{}",
        run.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let run = kprov(&["os", "--root", &empty.path().display().to_string()], &[]);
    assert!(run.stderr.contains("neither"), "{}", run.stderr);
}

#[test]
fn etcd_members_without_a_masters_certificates_names_the_missing_file() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().display().to_string();
    let run = kprov(&["etcd", "members", "--cert-dir", &dir], &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("listing etcd's members at --endpoint https://127.0.0.1:2379")
            && run
                .stderr
                .contains(&format!("{dir}/etcd/ca.crt does not exist")),
        "{}",
        run.stderr
    );
    let bad = kprov(&["etcd", "members", "--output", "yaml"], &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}

/// `kprov provision --dry-run --output json` on `f`'s root with `args`
/// after the subcommand; the run must succeed.
fn dry_run_json(f: &Fixture, args: &[&str]) -> String {
    let mut all = vec![
        "provision",
        "--root",
        &f.root,
        "--dry-run",
        "--output",
        "json",
    ];
    all.extend_from_slice(args);
    let run = kprov(&all, &[]);
    assert!(run.ok(), "{args:?}: {}", run.stderr);
    run.stdout
}

/// Writes `text` as node.yaml next to `f`'s artifact directory (so that
/// `artifacts-dir: artifacts` names it) and returns its path.
fn node_yaml(f: &Fixture, text: &str) -> String {
    let path = Path::new(&f.artifacts).parent().unwrap().join("node.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_config_file_gives_the_same_plan_as_the_same_flags() {
    let f = fixture(DEBIAN_12);
    let before = snapshot(Path::new(&f.root));
    let from_flags = dry_run_json(
        &f,
        &[
            "--phase",
            "base",
            "--kubelet-version",
            "v1.20.2",
            "--arch",
            "amd64",
            "--artifacts-dir",
            &f.artifacts,
            "--proxy-mode",
            "ipvs",
            "--sandbox-image",
            "registry.example/pause:3.2",
        ],
    );
    // Not the defaults: the file's values must be the ones used.
    assert!(from_flags.contains("ip_vs"), "{from_flags}");
    assert!(from_flags.contains("registry.example/pause:3.2"));
    let config = node_yaml(
        &f,
        "# a worker's node spec, as kprov userdata --config reads it\n\
         phase: base\n\
         kubelet-version: v1.20.2\n\
         arch: amd64\n\
         artifacts-dir: artifacts\n\
         proxy-mode: ipvs\n\
         sandbox-image: registry.example/pause:3.2\n",
    );
    let from_file = dry_run_json(&f, &["--config", &config]);
    assert_eq!(from_file, from_flags);
    assert_eq!(
        diff(&before, &snapshot(Path::new(&f.root))),
        Vec::<String>::new()
    );
}

#[test]
fn flags_on_the_command_line_override_the_config_file() {
    let f = fixture(DEBIAN_12);
    let config = node_yaml(
        &f,
        "phase: base\n\
         kubelet-version: v1.20.2\n\
         arch: amd64\n\
         bundle: /nonexistent/bundle.tar.zst\n\
         proxy-mode: ipvs\n\
         sandbox-image: registry.example/pause:3.2\n",
    );
    let want = dry_run_json(
        &f,
        &[
            "--phase",
            "base",
            "--kubelet-version",
            "v1.20.2",
            "--arch",
            "amd64",
            "--artifacts-dir",
            &f.artifacts,
            "--sandbox-image",
            "registry.example/pause:3.9",
        ],
    );
    // --proxy-mode and --sandbox-image replace the file's values;
    // --artifacts-dir drops the file's bundle, with which it conflicts.
    let got = dry_run_json(
        &f,
        &[
            "--config",
            &config,
            "--proxy-mode",
            "iptables",
            "--artifacts-dir",
            &f.artifacts,
            "--sandbox-image",
            "registry.example/pause:3.9",
        ],
    );
    assert_eq!(got, want);
    assert!(
        !got.contains("ip_vs") && !got.contains("pause:3.2"),
        "{got}"
    );
    // The flags may come before --config too.
    let got = dry_run_json(
        &f,
        &[
            "--proxy-mode=iptables",
            "--artifacts-dir",
            &f.artifacts,
            "--sandbox-image",
            "registry.example/pause:3.9",
            "--config",
            &config,
        ],
    );
    assert_eq!(got, want);
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_the_key() {
    let f = fixture(DEBIAN_12);
    let before = snapshot(Path::new(&f.root));
    let base = "phase: base\nkubelet-version: v1.20.2\narch: amd64\nartifacts-dir: artifacts\n";
    let join = "phase: join\ntoken: q1w2e3.r4t5y6u7i8o9p0as\napi-server: https://10.0.0.1:6443\n\
                discovery-token-unsafe-skip-ca-verification: true\n";
    let cases: Vec<(String, &[&str], &str)> = vec![
        (format!("{base}node-names: worker-1\n"), &[], "unknown field `node-names`, expected one of `phase`, `kubelet-version`,"),
        // A key of kprov userdata's only: provision has no such flag.
        (format!("{base}hostname: worker-1\n"), &[], "unknown field `hostname`"),
        (format!("{base}proxy-mode: ipvvs\n"), &[], "proxy-mode: unknown variant `ipvvs`, expected `iptables` or `ipvs` at line 5 column 13"),
        ("kubelet-version: v1.13.1\n".into(), &[], "kubelet-version: Kubernetes version v1.13.1 is not supported: the minimum is v1.20.0"),
        (format!("{base}timeout: soon\n"), &[], "timeout: invalid type: string \"soon\", expected u64 at line 5"),
        (format!("{join}node-ip: 10.0.0.300\n"), &[], "invalid --node-ip \"10.0.0.300\": expected an IPv4 or IPv6 address"),
        (format!("{join}register-with-taints: [gpu=yes:Never]\n"), &[], "invalid --register-with-taints \"gpu=yes:Never\""),
        (format!("{base}mirror: http://10.0.0.1/k8s\n"), &[], "the argument '--artifacts-dir <DIR>' cannot be used with '--mirror <URL>'"),
        ("[phase, base]\n".into(), &[], "expected a mapping of flag names (without \"--\") to values"),
    ];
    for (text, extra, want) in cases {
        let config = node_yaml(&f, &text);
        let mut args = vec!["provision", "--root", &f.root, "--config", &config];
        args.extend_from_slice(extra);
        let run = kprov(&args, &[]);
        assert_eq!(run.code, Some(1), "{text}: {}", run.stderr);
        let want = format!("kprov: error: --config {config}: {want}");
        assert!(
            run.stderr.starts_with(&want),
            "{text}:\nwant {want}\ngot  {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(!run.stderr.contains("r4t5y6u7i8o9p0as"), "{}", run.stderr);
    }
    // A bad value on the command line is the command line's, file or not.
    let config = node_yaml(&f, join);
    let run = kprov(
        &[
            "provision",
            "--root",
            &f.root,
            "--config",
            &config,
            "--node-ip",
            "10.0.0.300",
        ],
        &[],
    );
    assert_eq!(
        run.stderr,
        "kprov: error: invalid --node-ip \"10.0.0.300\": expected an IPv4 or IPv6 address\n"
    );
    let run = kprov(
        &[
            "provision",
            "--root",
            &f.root,
            "--config",
            "/nonexistent/node.yaml",
        ],
        &[],
    );
    assert!(
        run.stderr
            .starts_with("kprov: error: --config /nonexistent/node.yaml: cannot read"),
        "{}",
        run.stderr
    );
    assert_eq!(
        diff(&before, &snapshot(Path::new(&f.root))),
        Vec::<String>::new()
    );
}

#[test]
fn setup_sh_runs_provision_with_the_plan_of_the_flags_userdata_was_given() {
    let f = fixture(DEBIAN_12);
    let node_flags = [
        "--phase",
        "base",
        "--kubelet-version",
        "v1.20.2",
        "--arch",
        "amd64",
        "--artifacts-dir",
        &f.artifacts,
        "--proxy-mode",
        "ipvs",
        "--sandbox-image",
        "registry.example/pause:3.2",
    ];
    let sha = "ab".repeat(32);
    let mut args = vec![
        "userdata",
        "--format",
        "cloud-init",
        "--hostname",
        "worker-1",
        "--provision-source",
        "https://boot.example/kprov",
        "--provision-sha256",
        &sha,
    ];
    args.extend(node_flags);
    let userdata = kprov(&args, &[]);
    assert!(userdata.ok(), "{}", userdata.stderr);
    let config: kprov_bootconfig::cloud_init::CloudConfig =
        serde_yaml::from_str(&userdata.stdout).unwrap();
    let setup = &config.write_files.last().unwrap().content;
    // The words of setup.sh's `set -- ...`, as the shell reads them.
    let set: String = setup
        .lines()
        .skip_while(|l| !l.starts_with("set -- "))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let words = common::sh(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{set}printf '%s\\n' \"$@\"")),
    )
    .stdout;
    let words: Vec<String> = String::from_utf8(words)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(words.len() > node_flags.len(), "{words:?}");
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    assert_eq!(dry_run_json(&f, &words), dry_run_json(&f, &node_flags));
}

#[test]
fn a_bogus_log_level_is_refused_naming_the_flag_or_variable() {
    let f = fixture(DEBIAN_12);
    let expected =
        "expected error, warn, info, debug, trace, off or directives such as kprov=debug,warn";
    for (args, env, code, message) in [
        (
            vec!["--log-level", "bogus", "os", "--root", f.root.as_str()],
            vec![],
            2,
            format!("--log-level \"bogus\": {expected}"),
        ),
        (
            vec!["--log-level", "kprov=loud", "os", "--root", f.root.as_str()],
            vec![],
            2,
            format!("--log-level \"kprov=loud\": {expected}"),
        ),
        (
            vec!["os", "--root", f.root.as_str()],
            vec![("KPROV_LOG", "bogus")],
            2,
            format!("KPROV_LOG \"bogus\": {expected}"),
        ),
    ] {
        let run = kprov(&args, &env);
        assert_eq!(run.code, Some(code), "{args:?} {env:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&message),
            "{args:?} {env:?}: expected {message:?} in:\n{}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "{args:?} {env:?} ran the command");
    }
    for (args, env) in [
        (
            vec!["--log-level", "debug", "os", "--root", f.root.as_str()],
            vec![],
        ),
        (
            vec![
                "--log-level",
                "kprov=debug,warn",
                "os",
                "--root",
                f.root.as_str(),
            ],
            vec![],
        ),
        (
            vec!["os", "--root", f.root.as_str()],
            vec![("KPROV_LOG", "info")],
        ),
    ] {
        let run = kprov(&args, &env);
        assert!(run.ok(), "{args:?} {env:?}: {}", run.stderr);
    }
}

/// A bundle directory made from the stand-in artifacts, with one image
/// entry whose reference is `reference`.
fn bundle_with_image(dir: &Path, artifacts: &Path, reference: &str) {
    use sha2::{Digest, Sha256};
    let mut entries = Vec::new();
    for (name, kind, file) in [
        ("kubelet", "binary", "kubelet"),
        ("kubectl", "binary", "kubectl"),
        ("cni-plugins", "archive", "cni-plugins.tgz"),
    ] {
        let bytes = std::fs::read(artifacts.join(file)).unwrap();
        let path = format!("bin/{file}");
        write(&dir.join(&path), "");
        std::fs::write(dir.join(&path), &bytes).unwrap();
        entries.push(serde_json::json!({
            "name": name, "kind": kind, "version": "v1.20.2", "arch": "amd64",
            "path": path, "sha256": hex::encode(Sha256::digest(&bytes)), "size": bytes.len(),
        }));
    }
    let image = b"not really an OCI archive";
    write(&dir.join("images/crafted.tar"), "not really an OCI archive");
    entries.push(serde_json::json!({
        "name": reference, "kind": "image", "version": "3.2", "arch": "amd64",
        "path": "images/crafted.tar", "sha256": hex::encode(Sha256::digest(image)),
        "size": image.len(), "reference": reference,
        "manifest_digest": format!("sha256:{}", "0".repeat(64)),
    }));
    let manifest = serde_json::json!({
        "format": 1, "kubernetes_version": "v1.20.2", "arch": "amd64",
        "control_plane": false, "artifacts": entries,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn a_crafted_image_reference_in_a_bundle_is_refused_and_adds_no_unit_line() {
    let f = fixture(DEBIAN_12);
    let bundle = tempfile::tempdir().unwrap();
    let crafted = "k8s.gcr.io/pause:3.2\nExecStartPre=/bin/touch /pwned";
    bundle_with_image(bundle.path(), Path::new(&f.artifacts), crafted);
    let before = snapshot(Path::new(&f.root));
    let bundle_dir = bundle.path().to_str().unwrap();
    let run = kprov(
        &[
            "provision",
            "--phase",
            "base",
            "--root",
            &f.root,
            "--bundle",
            bundle_dir,
            "--kubelet-version",
            "v1.20.2",
            "--arch",
            "amd64",
        ],
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let want = format!("--bundle {bundle_dir}: bundle {bundle_dir}: manifest.json lists an image reference {crafted:?}: not an image reference");
    assert!(
        run.stderr.contains(&want),
        "expected {want:?} in:\n{}",
        run.stderr
    );
    assert_eq!(
        diff(&before, &snapshot(Path::new(&f.root))),
        Vec::<String>::new()
    );
}

/// Holds `ROOT/var/lib/kprov/node.lock` with util-linux flock(1) for
/// `seconds`, once it holds it.
fn hold_node_lock(root: &Path, seconds: u32) -> std::process::Child {
    let lock = root.join("var/lib/kprov/node.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let ready = root.join("../lock-held");
    let child = std::process::Command::new("flock")
        .arg(&lock)
        .args([
            "sh",
            "-c",
            &format!("touch {}; sleep {seconds}", ready.display()),
        ])
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed().as_secs() < 30,
            "flock did not take the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn provision_waits_for_the_node_lock_and_gives_up_after_its_timeout() {
    let f = fixture(DEBIAN_12);
    let root = Path::new(&f.root);
    let args = base_args(&f.root, &f.artifacts);

    // Held longer than the run may wait: a clear error, nothing changed.
    let mut holder = hold_node_lock(root, 30);
    let before = snapshot(root);
    let run = kprov(&args, &[("KPROV_LOCK_TIMEOUT", "1")]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let lock = format!(
        "{}/var/lib/kprov/node.lock",
        std::fs::canonicalize(root).unwrap().display()
    );
    let want = format!("the node lock {lock} is held by another kprov run (waited 1 s; KPROV_LOCK_TIMEOUT sets how long)");
    assert!(
        run.stderr.contains(&want),
        "expected {want:?} in:\n{}",
        run.stderr
    );
    assert_eq!(diff(&before, &snapshot(root)), Vec::<String>::new());

    // Held for a while: the run waits, says so, and then runs.
    let mut holder = hold_node_lock(root, 3);
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(common::kprov_bin())
        .args(&args)
        .env_remove("KPROV_FAILPOINTS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        diff(&before, &snapshot(root)),
        Vec::<String>::new(),
        "provision changed the root while another run held the lock"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "provision did not wait"
    );
    holder.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    let run = common::Run::from(out);
    assert!(run.ok(), "{}", run.stderr);
    assert!(started.elapsed().as_secs_f64() >= 2.5);
    assert!(
        run.stderr.contains(&format!(
            "kprov: waiting for the node lock {lock} (another kprov run holds it)"
        )),
        "{}",
        run.stderr
    );
    assert!(root.join("usr/local/bin/kubelet").is_file());
}

#[test]
fn an_archive_swapped_after_its_verification_is_not_what_gets_installed() {
    let f = fixture(DEBIAN_12);
    let artifacts = Path::new(&f.artifacts);
    let root = Path::new(&f.root);
    // What an attacker puts in place once the sum has been checked.
    let evil_src = artifacts.join("../evil-src");
    write(&evil_src.join("bridge"), "#!/bin/sh\necho evil\n");
    let evil = artifacts.join("../evil.tgz");
    common::sh(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&evil_src)
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(&evil)
            .arg("."),
    );
    let go = artifacts.join("../go");
    let paused = artifacts.join("../go.paused");
    let mut child = std::process::Command::new(common::kprov_bin())
        .args(base_args(&f.root, &f.artifacts))
        .env(
            "KPROV_FAILPOINTS",
            format!("artifact.verified=pause:{}", go.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !paused.exists() {
        assert!(
            start.elapsed().as_secs() < 60,
            "the failpoint after the verification was not reached"
        );
        assert!(child.try_wait().unwrap().is_none(), "kprov ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::rename(&evil, artifacts.join("cni-plugins.tgz")).unwrap();
    std::fs::write(&go, "").unwrap();
    let run = common::Run::from(child.wait_with_output().unwrap());
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(root.join("opt/cni/bin/bridge")).unwrap(),
        "#!/bin/sh\necho bridge\n",
        "the swapped archive was installed"
    );
    assert!(root.join("opt/cni/bin/host-local").is_file());
}

#[test]
fn kprov_cluster_refuses_bad_configs_before_any_machine_exists() {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    let machines_arg = machines.display().to_string();
    let config = dir.path().join("cluster.yaml");
    std::fs::write(
        &config,
        "name: lab\nworkers: 2\naddress: [lab-worker-2=192.168.9.9]\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["up", "--name", "lab", "--masters", "0"],
            "kprov: error: --masters: 0: a cluster needs at least one master",
        ),
        (
            vec!["up", "--name", "lab", "--address", "lab-worker-1=10.9.0.5"],
            "kprov: error: --address: machine address 10.9.0.5 is not usable in 10.84.0.1/24",
        ),
        (
            vec!["up", "--name", "lab", "--address", "lab-worker-1=10.84.0.11"],
            "kprov: error: --address: lab-worker-1 and lab-master-1 would both have address 10.84.0.11",
        ),
        (
            vec![
                "up",
                "--name",
                "lab",
                "--address",
                "lab-worker-1=10.84.0.50",
                "--address",
                "lab-worker-1=10.84.0.51",
            ],
            "kprov: error: --address: lab-worker-1 is given an address twice",
        ),
        (
            vec!["up", "--config", &config_arg],
            "kprov: error: --address: machine address 192.168.9.9 is not usable in 10.84.0.1/24",
        ),
        (
            vec!["up", "--name", "Lab_1"],
            "kprov: error: --name: ",
        ),
        (
            vec!["up", "--name", "lab", "--target", "qemu", "--qemu-cpus", "0"],
            "kprov: error: --qemu-cpus: 0: expected 1 to 64",
        ),
        (
            vec!["up", "--name", "lab", "--target", "qemu", "--qemu-memory", "100"],
            "kprov: error: --qemu-memory: 100: expected 512 to 1048576 (MiB)",
        ),
        (
            vec!["down", "--name", "unknown", "--target", "qemu"],
            "kprov: error: no cluster unknown on the qemu target",
        ),
        (
            vec!["up", "--name", "lab", "--target", "ssh", "--ssh-host", "lab-master-1=root@10.0.0.5"],
            "kprov: error: --ssh-host: lab-worker-1 has none: the ssh target needs a host for every machine",
        ),
        (
            vec!["down", "--name", "unknown"],
            "kprov: error: no cluster unknown on the nspawn target",
        ),
        (
            vec!["status", "--name", "unknown"],
            "kprov: error: no cluster unknown on the nspawn target",
        ),
    ];
    for (mut args, want) in cases {
        args.insert(0, "cluster");
        args.extend(["--machines-dir", &machines_arg]);
        let run = kprov(&args, &[]);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with(want),
            "{args:?}: got {:?}, want {want:?}",
            run.stderr
        );
        assert!(!machines.exists(), "{args:?} made {}", machines.display());
    }
    // A key the file may not have is named.
    std::fs::write(&config, "name: lab\nworker: 2\n").unwrap();
    let run = kprov(&["cluster", "up", "--config", &config_arg], &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("unknown field `worker`"),
        "{}",
        run.stderr
    );
}
