//! `kprov userdata` as users run it: flags and a --config node spec in,
//! user-data out (stdout or a 0600 file); bad input refused naming the
//! flag; the bootstrap token never on stderr. What the user-data contains
//! is checked in depth by kprov-bootconfig's own tests (golden files, the
//! real cloud-init validator, the Ignition schema, setup.sh runs).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{kprov, Run};
use kprov_bootconfig::cloud_init::CloudConfig;
use sha2::{Digest, Sha256};

// Not the example token of the error messages, so that a leak shows.
const TOKEN: &str = "kp7q2x.s3cr3tv4lu3xyz9w";
const SECRET: &str = "s3cr3tv4lu3xyz9w";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kprov-bootconfig/tests/fixtures")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A scratch directory with a stand-in binary "kprov-amd64" (whose
/// sha256 is returned) to pin.
fn scratch() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = b"#!/bin/sh\necho stand-in for kprov\n";
    std::fs::write(dir.path().join("kprov-amd64"), bin).unwrap();
    (dir, hex::encode(Sha256::digest(bin)))
}

/// The flags of a typical worker, with the token passed in KPROV_TOKEN.
fn worker_args(dir: &Path) -> Vec<String> {
    [
        "userdata",
        "--format",
        "cloud-init",
        "--hostname",
        "worker-1",
        "--ssh-authorized-keys-file",
        s(&fixture("authorized_keys")),
        "--ca-cert",
        s(&fixture("ca.crt")),
        "--api-server",
        "https://10.0.0.1:6443",
        "--cloud-provider",
        "openstack",
        "--cloud-config-file",
        s(&fixture("cloud-config.ini")),
        "--provision-source",
        "https://boot.example.com/kprov",
        "--provision-binary",
        s(&dir.join("kprov-amd64")),
        "--kubelet-version",
        "v1.20.2",
    ]
    .map(str::to_string)
    .to_vec()
}

fn run(args: &[String], env: &[(&str, &str)]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kprov(&args, env)
}

fn cloud_config(text: &str) -> CloudConfig {
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn a_worker_s_cloud_config_has_its_files_and_pins_the_binary_s_sha256() {
    let (dir, sha) = scratch();
    let out = run(&worker_args(dir.path()), &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    let config = cloud_config(&out.stdout);
    assert_eq!(config.hostname, "worker-1");
    assert_eq!(config.ssh_authorized_keys.len(), 3);
    let files: Vec<(&str, &str)> = config
        .write_files
        .iter()
        .map(|f| (f.path.as_str(), f.permissions.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("/etc/kubernetes/pki/ca.crt", "0644"),
            ("/etc/kubernetes/cloud-config", "0600"),
            ("/etc/kprov/bootstrap-token", "0600"),
            ("/opt/kprov/setup.sh", "0700"),
        ]
    );
    let setup = &config.write_files[3].content;
    assert!(setup.contains(&format!("want_sha256='{sha}'")), "{setup}");
    assert!(setup.contains("'--cloud-config' '/etc/kubernetes/cloud-config'"));
    assert!(setup.contains("'--phase' 'all'"));
    assert!(
        setup.contains("'--api-server' 'https://10.0.0.1:6443'"),
        "{setup}"
    );
    assert!(!setup.contains(TOKEN));
    assert_eq!(
        out.stderr,
        format!(
            "kprov: rendered cloud-init user-data for worker-1 ({} bytes)\n",
            out.stdout.len()
        )
    );
}

#[test]
fn a_pinned_ca_hash_reaches_setup_sh_and_a_malformed_one_is_refused() {
    let (dir, _) = scratch();
    let hash = format!("sha256:{}", "ab".repeat(32));
    let mut args = worker_args(dir.path());
    let i = args.iter().position(|a| a == "--ca-cert").unwrap();
    args.drain(i..i + 2);
    args.extend(["--discovery-token-ca-cert-hash".to_string(), hash.clone()]);
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    let config = cloud_config(&out.stdout);
    let setup = &config.write_files.last().unwrap().content;
    assert!(
        setup.contains(&format!("'--discovery-token-ca-cert-hash' '{hash}'")),
        "{setup}"
    );
    let n = args.len();
    args[n - 1] = "sha256:xyz".into();
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("kprov: error: invalid --discovery-token-ca-cert-hash \"sha256:xyz\""),
        "{}",
        out.stderr
    );
    let i = args
        .iter()
        .position(|a| a == "--discovery-token-ca-cert-hash")
        .unwrap();
    args.drain(i..i + 2);
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(
        out.stderr
            .contains("--phase all needs a way to trust the API server"),
        "{}",
        out.stderr
    );
}

#[test]
fn ftp_provision_source_is_refused_with_the_exact_error() {
    let (dir, _) = scratch();
    let mut args = worker_args(dir.path());
    let i = args.iter().position(|a| a == "--provision-source").unwrap();
    args[i + 1] = "ftp://boot.example.com/kprov".into();
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "kprov: error: invalid --provision-source \"ftp://boot.example.com/kprov\": unsupported scheme \"ftp\"; expected an http://, https:// or file:// URL\n"
    );
}

#[test]
fn bad_input_is_refused_naming_the_flag_and_nothing_is_written() {
    let (dir, sha) = scratch();
    let bad_keys = dir.path().join("keys");
    std::fs::write(&bad_keys, "# ok\nssh-ed25519 AAAA\n").unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out_file = dir.path().join("user-data");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "userdata",
            "--format",
            "cloud-init",
            "--phase",
            "base",
            "--output",
            s(&out_file),
        ]
        .map(str::to_string)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let src = ["--provision-source", "https://h/kprov"];
    let pin = ["--provision-sha256", &sha];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut e = vec!["--hostname", "w"];
        e.extend(src);
        e.extend(pin);
        e.extend(extra);
        base(&e)
    };
    for (args, want) in [
        (base(&[]), "kprov: error: --hostname is required: the node's host name, e.g. worker-1"),
        (with(&["--hostname", "Worker_1"]), "kprov: error: invalid --hostname \"Worker_1\": label \"Worker_1\" has 'W'"),
        (base(&["--hostname", "w"]), "kprov: error: --provision-source is required"),
        (base(&["--hostname", "w", "--provision-source", "https://h/kprov"]), "kprov: error: --provision-sha256 or --provision-binary is required"),
        (with(&["--provision-sha256", "abc"]), "kprov: error: invalid --provision-sha256 \"abc\": expected 64 hexadecimal digits"),
        (
            with(&["--provision-binary", s(&junk)]),
            &format!("kprov: error: --provision-sha256 {sha} does not match --provision-binary {}, whose sha256 is ", junk.display()),
        ),
        (with(&["--provision-binary", "/nonexistent/kprov"]), "kprov: error: --provision-binary /nonexistent/kprov: "),
        (with(&["--ssh-authorized-key", "ssh-dss AAAA"]), "kprov: error: --ssh-authorized-key (number 1): invalid SSH public key: unknown key type \"ssh-dss\""),
        (with(&["--ssh-authorized-keys-file", s(&bad_keys)]), &format!("kprov: error: --ssh-authorized-keys-file {} line 2: invalid SSH public key", bad_keys.display())),
        (with(&["--ca-cert", s(&junk)]), &format!("kprov: error: --ca-cert {}: not a PEM-encoded certificate", junk.display())),
        (with(&["--cloud-config", "cloud.conf", "--cloud-provider", "openstack"]), "kprov: error: invalid --cloud-config \"cloud.conf\": it is not absolute"),
        (with(&["--cloud-config-file", s(&fixture("cloud-config.ini"))]), "kprov: error: --cloud-config needs --cloud-provider"),
        (with(&["--cloud-config-file", "/nonexistent/cc"]), "kprov: error: --cloud-config-file /nonexistent/cc: cannot read"),
        (with(&["--artifacts-dir", "artifacts"]), "kprov: error: invalid --artifacts-dir \"artifacts\": it is not absolute"),
        (with(&["--kubelet-version", "v1.19.0"]), "kprov: error: --kubelet-version: Kubernetes version v1.19.0 is not supported: the minimum is v1.20.0"),
        (with(&["--phase", "all"]), "kprov: error: --phase all needs --token"),
        (with(&["--container-runtime", "docker", "--kubelet-version", "v1.30.0"]), "kprov: error: "),
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with(want), "{args:?}:\n{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(out.stdout, "");
        assert!(!out_file.exists(), "{args:?} wrote the output");
    }
}

#[test]
fn the_token_never_appears_on_stderr() {
    let (dir, _) = scratch();
    let out_file = dir.path().join("user-data");
    let mut args = worker_args(dir.path());
    args.extend([
        "--output".into(),
        s(&out_file).into(),
        "--log-level".into(),
        "trace".into(),
    ]);

    // A good run: the token is in the file, not on stderr.
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
    assert!(std::fs::read_to_string(&out_file).unwrap().contains(TOKEN));

    // Given as a flag, with another flag wrong: still not echoed.
    let mut bad = args.clone();
    bad.extend([
        "--token".into(),
        TOKEN.into(),
        "--hostname".into(),
        "BAD".into(),
    ]);
    let out = run(&bad, &[]);
    assert_eq!(out.code, Some(1));
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);

    // A malformed token is described, not repeated.
    let mut bad = args.clone();
    bad.extend(["--token".into(), "kp7q2x.S3CR3TV4LU3XYZ9W".into()]);
    let out = run(&bad, &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("kprov: error: --token: malformed bootstrap token"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("S3CR3T"), "{}", out.stderr);

    // From a config file with a mistake in it.
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, format!("token: {TOKEN}\nhostname: [1]\n")).unwrap();
    let out = run(
        &["userdata", "--format", "ignition", "--config", s(&config)].map(str::to_string),
        &[],
    );
    assert_eq!(out.code, Some(1));
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
}

#[test]
fn output_is_written_with_mode_0600_even_over_a_readable_file() {
    let (dir, _) = scratch();
    let out_file = dir.path().join("user-data");
    std::fs::write(&out_file, "old").unwrap();
    std::fs::set_permissions(&out_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = worker_args(dir.path());
    args.extend(["--output".into(), s(&out_file).into()]);
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let meta = std::fs::metadata(&out_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&out_file).unwrap();
    cloud_config(&text);
    assert!(out.stderr.contains(&format!(
        "kprov: wrote cloud-init user-data for worker-1 to {} ({} bytes, mode 0600)",
        out_file.display(),
        text.len()
    )));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("kprov-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_symlink_planted_at_a_temporary_name_is_not_written_through() {
    let (dir, _) = scratch();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "precious\n").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // The name older kprov versions wrote through.
    std::os::unix::fs::symlink(&outside, out_dir.join(".user-data.kprov-tmp")).unwrap();
    let out_file = out_dir.join("user-data");
    let mut args = worker_args(dir.path());
    args.extend(["--output".into(), s(&out_file).into()]);
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&out_file).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    cloud_config(&std::fs::read_to_string(&out_file).unwrap());
}

#[test]
fn a_ca_file_holding_a_private_key_is_refused_and_nothing_is_written() {
    let (dir, _) = scratch();
    let bundle = dir.path().join("ca-and-key.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGZha2Uga2V5IG1hdGVyaWFsIGZvciB0ZXN0cyBvbmx5\n-----END PRIVATE KEY-----\n",
            std::fs::read_to_string(fixture("ca.crt")).unwrap()
        ),
    )
    .unwrap();
    let out_file = dir.path().join("user-data");
    for output in [None, Some(&out_file)] {
        let mut args: Vec<String> = worker_args(dir.path())
            .into_iter()
            .map(|a| {
                if a == s(&fixture("ca.crt")) {
                    s(&bundle).to_string()
                } else {
                    a
                }
            })
            .collect();
        if let Some(out) = output {
            args.extend(["--output".into(), s(out).into()]);
        }
        let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let want = format!(
            "--ca-cert {}: block 2 is \"PRIVATE KEY\", expected only CERTIFICATE blocks",
            bundle.display()
        );
        assert!(
            out.stderr.contains(&want),
            "expected {want:?} in:\n{}",
            out.stderr
        );
        assert!(!out.stdout.contains("PRIVATE KEY"), "{}", out.stdout);
        assert!(!out_file.exists());
    }
}

#[test]
fn a_config_file_gives_the_same_user_data_as_the_flags_and_flags_override_it() {
    let (dir, sha) = scratch();
    let from_flags = run(&worker_args(dir.path()), &[("KPROV_TOKEN", TOKEN)]);
    assert!(from_flags.ok(), "{}", from_flags.stderr);

    // The same inputs as a node spec; file paths relative to the spec.
    let spec_dir = dir.path().join("spec");
    std::fs::create_dir(&spec_dir).unwrap();
    for f in ["authorized_keys", "ca.crt", "cloud-config.ini"] {
        std::fs::copy(fixture(f), spec_dir.join(f)).unwrap();
    }
    std::fs::write(
        spec_dir.join("node.yaml"),
        format!(
            "hostname: worker-9\n\
             ssh-authorized-keys-file: authorized_keys\n\
             ca-cert: ca.crt\n\
             api-server: https://10.0.0.1:6443\n\
             cloud-provider: openstack\n\
             cloud-config-file: cloud-config.ini\n\
             token: {TOKEN}\n\
             provision-source: https://boot.example.com/kprov\n\
             provision-sha256: {sha}\n\
             kubelet-version: v1.20.2\n\
             phase: all\n\
             container-runtime: containerd\n\
             proxy-mode: iptables\n"
        ),
    )
    .unwrap();
    let config = spec_dir.join("node.yaml");
    // --hostname on the command line wins over the file's worker-9.
    let from_file = run(
        &[
            "userdata",
            "--format",
            "cloud-init",
            "--config",
            s(&config),
            "--hostname",
            "worker-1",
        ]
        .map(str::to_string),
        &[],
    );
    assert!(from_file.ok(), "{}", from_file.stderr);
    assert_eq!(from_file.stdout, from_flags.stdout);

    // Unknown keys are refused, naming the file and the key.
    std::fs::write(&config, "hostname: w\nssh-keys: []\n").unwrap();
    let out = run(
        &["userdata", "--format", "cloud-init", "--config", s(&config)].map(str::to_string),
        &[],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.starts_with(&format!(
            "kprov: error: --config {}: unknown field `ssh-keys`",
            config.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn gzip_cloud_init_output_is_base64_of_the_gzipped_document() {
    let (dir, _) = scratch();
    let plain = run(&worker_args(dir.path()), &[("KPROV_TOKEN", TOKEN)]);
    let mut args = worker_args(dir.path());
    args.push("--gzip".into());
    let gz = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(gz.ok(), "{}", gz.stderr);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(gz.stdout.as_bytes())
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, plain.stdout);
    assert!(gz.stdout.len() < plain.stdout.len());
    println!(
        "user-data: {} bytes plain, {} bytes gzip+base64",
        plain.stdout.len(),
        gz.stdout.len()
    );
}

#[test]
fn ignition_output_is_an_ignition_3_4_config() {
    let (dir, _) = scratch();
    let mut args = worker_args(dir.path());
    args[2] = "ignition".into();
    let out = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(out.ok(), "{}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["ignition"]["version"], "3.4.0");
    assert_eq!(doc["passwd"]["users"][0]["name"], "core");
    assert_eq!(doc["systemd"]["units"][0]["name"], "kprov-setup.service");
    let paths: Vec<&str> = doc["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/etc/hostname",
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/cloud-config",
            "/etc/kprov/bootstrap-token",
            "/opt/kprov/setup.sh"
        ]
    );
}

#[test]
fn format_is_required_and_help_explains_the_command() {
    let out = kprov(&["userdata", "--hostname", "w"], &[]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--format <FORMAT>"), "{}", out.stderr);
    let help = kprov(&["userdata", "--help"], &[]);
    assert!(help.ok());
    for text in [
        "--provision-source",
        "--ssh-authorized-key",
        "--config",
        "0600",
        "KPROV_TOKEN",
    ] {
        assert!(help.stdout.contains(text), "{text}");
    }
}

/// The `set -- ...` lines of setup.sh in a cloud-config: one flag (and its
/// value) per line, quotes removed.
fn provision_flags(cloud_config_text: &str) -> Vec<String> {
    let config = cloud_config(cloud_config_text);
    let setup = &config.write_files.last().unwrap().content;
    setup
        .lines()
        .skip_while(|l| !l.starts_with("set -- "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim().trim_end_matches(" \\").replace('\'', ""))
        .collect()
}

#[test]
fn every_node_flag_of_provision_reaches_setup_sh() {
    let (dir, sha) = scratch();
    let hash = format!("sha256:{}", "ab".repeat(32));
    let out = run(
        &[
            "userdata",
            "--format",
            "cloud-init",
            "--hostname",
            "worker-1",
            "--provision-source",
            "https://h/kprov",
            "--provision-sha256",
            &sha,
            "--phase",
            "join",
            "--kubelet-version",
            "v1.21.3",
            "--container-runtime",
            "docker",
            "--proxy-mode",
            "ipvs",
            "--arch",
            "arm64",
            "--bundle",
            "/opt/kprov/node.tar.zst",
            "--cache-dir",
            "/var/cache/k",
            "--runtime-source",
            "upstream",
            "--sandbox-image",
            "registry.example/pause:3.2",
            "--cloud-provider",
            "openstack",
            "--cloud-config",
            "/etc/kubernetes/cloud.conf",
            "--api-server",
            "https://10.0.0.1:6443",
            "--discovery-token-ca-cert-hash",
            &hash,
            "--discovery-token-unsafe-skip-ca-verification",
            "--node-name",
            "worker-1",
            "--node-ip",
            "10.0.0.21",
            "--node-labels",
            "role=worker",
            "--register-with-taints",
            "dedicated=gpu:NoSchedule,spot:NoExecute",
            "--cluster-dns",
            "10.32.0.10",
            "--cluster-domain",
            "example.internal",
            "--timeout",
            "600",
        ]
        .map(str::to_string),
        &[("KPROV_TOKEN", TOKEN)],
    );
    assert!(out.ok(), "{}", out.stderr);
    drop(dir);
    assert_eq!(
        provision_flags(&out.stdout),
        [
            "--phase join",
            "--kubelet-version v1.21.3",
            "--container-runtime docker",
            "--proxy-mode ipvs",
            "--arch arm64",
            "--bundle /opt/kprov/node.tar.zst",
            "--cache-dir /var/cache/k",
            "--runtime-source upstream",
            "--sandbox-image registry.example/pause:3.2",
            "--cloud-provider openstack",
            "--cloud-config /etc/kubernetes/cloud.conf",
            "--api-server https://10.0.0.1:6443",
            &format!("--discovery-token-ca-cert-hash {hash}"),
            "--discovery-token-unsafe-skip-ca-verification",
            "--node-name worker-1",
            "--node-ip 10.0.0.21",
            "--node-labels role=worker",
            "--register-with-taints dedicated=gpu:NoSchedule",
            "--register-with-taints spot:NoExecute",
            "--cluster-dns 10.32.0.10",
            "--cluster-domain example.internal",
            "--timeout 600",
        ]
    );
}

#[test]
fn node_keys_of_a_config_file_reach_setup_sh_and_lists_from_both_are_joined() {
    let (dir, sha) = scratch();
    let config = dir.path().join("node.yaml");
    let hash = |c: &str| format!("sha256:{}", c.repeat(64));
    std::fs::write(
        &config,
        format!(
            "hostname: worker-1\n\
             provision-source: https://h/kprov\n\
             provision-sha256: {sha}\n\
             phase: base\n\
             kubelet-version: v1.20.2\n\
             node-labels: role=worker\n\
             register-with-taints: [dedicated=gpu:NoSchedule]\n\
             discovery-token-ca-cert-hashes: [{}]\n\
             timeout: 900\n",
            hash("a")
        ),
    )
    .unwrap();
    let out = run(
        &[
            "userdata",
            "--format",
            "cloud-init",
            "--config",
            s(&config),
            "--timeout",
            "60",
            "--register-with-taints",
            "spot:NoExecute",
            "--discovery-token-ca-cert-hash",
            &hash("b"),
        ]
        .map(str::to_string),
        &[],
    );
    assert!(out.ok(), "{}", out.stderr);
    let flags = provision_flags(&out.stdout);
    for want in [
        "--phase base".to_string(),
        "--node-labels role=worker".into(),
        format!("--discovery-token-ca-cert-hash {}", hash("a")),
        format!("--discovery-token-ca-cert-hash {}", hash("b")),
        "--register-with-taints dedicated=gpu:NoSchedule".into(),
        "--register-with-taints spot:NoExecute".into(),
        "--timeout 60".into(),
    ] {
        assert!(flags.contains(&want), "{want} missing from {flags:#?}");
    }
    assert!(!flags.iter().any(|f| f == "--timeout 900"), "{flags:#?}");

    // A bad node value in the file is blamed on the file.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}node-ip: 10.0.0.300\n")).unwrap();
    let out = run(
        &["userdata", "--format", "cloud-init", "--config", s(&config)].map(str::to_string),
        &[],
    );
    assert_eq!(
        out.stderr,
        format!(
            "kprov: error: --config {}: invalid --node-ip \"10.0.0.300\": expected an IPv4 or IPv6 address\n",
            config.display()
        )
    );
}

#[test]
fn the_token_in_the_environment_wins_over_the_config_file_s() {
    let (dir, sha) = scratch();
    let config = dir.path().join("node.yaml");
    let file_token = "aaaaaa.bbbbbbbbbbbbbbbb";
    std::fs::write(
        &config,
        format!(
            "hostname: worker-1\nprovision-source: https://h/kprov\nprovision-sha256: {sha}\n\
             phase: base\ntoken: {file_token}\n"
        ),
    )
    .unwrap();
    let args = ["userdata", "--format", "cloud-init", "--config", s(&config)].map(str::to_string);
    let from_file = run(&args, &[]);
    assert!(from_file.ok(), "{}", from_file.stderr);
    assert!(from_file.stdout.contains(file_token));
    let from_env = run(&args, &[("KPROV_TOKEN", TOKEN)]);
    assert!(from_env.ok(), "{}", from_env.stderr);
    assert!(from_env.stdout.contains(TOKEN) && !from_env.stdout.contains(file_token));
}
