#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! `kprov init phase upload-certs` against the real v1.20.2 control plane
//! of `common::controlplane`: kubeadm-certs and its 2-hour owner token, a
//! re-upload that changes nothing, what a bootstrap token may read, the
//! master join line, kprov's own download, and kubeadm v1.20.2's
//! `join phase control-plane-prepare download-certs` opening kprov's
//! upload into the very files kprov wrote; the other way round, kprov
//! opens what kubeadm's own `init phase upload-certs` stores. Then the
//! token goes and the garbage collector takes kubeadm-certs with it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::controlplane::{kprov_in, run_in, text, wait_for, ControlPlane};

const PREFIX: &str = "10.94.0";

/// A master's join (`kprov provision --phase join --control-plane`) into
/// `root` (a node root holding only a kubelet unit, as if prebaked), run
/// in the control plane's namespace with the token, and the certificate
/// key when given, in its environment.
fn master_join(
    cp: &ControlPlane,
    root: &Path,
    join: &common::cluster::JoinCommand,
    key: Option<&str>,
) -> Output {
    let unit = root.join("etc/systemd/system/kubelet.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/usr/local/bin/kubelet\n").unwrap();
    let mut command = cp.ns.command(common::kprov_bin().to_str().unwrap());
    command
        .args(["provision", "--phase", "join", "--control-plane", "--root"])
        .arg(root)
        .args(["--kubelet-version", "v1.20.2", "--api-server", &cp.server()])
        .args(["--discovery-token-ca-cert-hash", &join.ca_hash])
        .args([
            "--node-name",
            "master-2",
            "--node-ip",
            &format!("{PREFIX}.2"),
        ])
        .args(["--timeout", "60"])
        .env("KPROV_TOKEN", &join.token)
        .env_remove("KPROV_CERTIFICATE_KEY");
    if let Some(key) = key {
        command.env("KPROV_CERTIFICATE_KEY", key);
    }
    command.output().unwrap()
}

/// The files kubeadm-certs carries, relative to the certificate directory.
const SHARED: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
];

/// Run inside the control plane's namespace by the test below (the test
/// binary started again with `ip netns exec`): kprov-workflow's download
/// with the bootstrap token, its files (or its error) written to
/// `KPROV_TEST_DOWNLOAD_OUT`. Does nothing when run on its own.
#[test]
#[ignore = "a helper: run by upload_certs_... inside the control plane's namespace"]
fn download_helper() {
    let Some(out) = std::env::var_os("KPROV_TEST_DOWNLOAD_OUT") else {
        return;
    };
    let out = Path::new(&out);
    let var = |k: &str| std::env::var(k).unwrap();
    let ca = std::fs::read(var("KPROV_TEST_CA")).unwrap();
    let token: kprov_core::BootstrapToken = var("KPROV_TOKEN").parse().unwrap();
    let key: kprov_controlplane::copy_certs::CertificateKey =
        var("KPROV_CERTIFICATE_KEY").parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    match kprov_workflow::copy_certs::download(
        rt.handle(),
        &var("KPROV_TEST_SERVER"),
        &ca,
        &token,
        &key,
    ) {
        Ok(files) => {
            for (path, bytes) in files.iter() {
                let file = out.join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, bytes).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        Err(e) => std::fs::write(out.join("ERROR"), e.to_string()).unwrap(),
    }
}

/// Runs [`download_helper`] in the namespace; Ok(files dir) or the error.
fn kprov_download(
    cp: &ControlPlane,
    out: &Path,
    token: &str,
    key: &str,
) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(out).unwrap();
    let exe = std::env::current_exe().unwrap();
    let o = cp
        .ns
        .command(exe.to_str().unwrap())
        .args([
            "--exact",
            "download_helper",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("KPROV_TEST_DOWNLOAD_OUT", out)
        .env("KPROV_TEST_SERVER", cp.server())
        .env("KPROV_TEST_CA", cp.ca())
        .env("KPROV_TOKEN", token)
        .env("KPROV_CERTIFICATE_KEY", key)
        .output()
        .unwrap();
    assert!(o.status.success(), "the download helper: {}", text(&o));
    match std::fs::read_to_string(out.join("ERROR")) {
        Ok(error) => Err(error),
        Err(_) => Ok(out.to_path_buf()),
    }
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn outcomes(report: &serde_json::Value) -> Vec<(String, String)> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn is_key_line(line: &str) -> bool {
    line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files of `dir` named in [`SHARED`], each equal to the one under
/// `pki`; `what` names the writer in the message.
fn assert_same_files(dir: &Path, pki: &Path, what: &str) {
    for path in SHARED {
        let got = std::fs::read(dir.join(path))
            .unwrap_or_else(|e| panic!("{what} did not write {path}: {e}"));
        assert_eq!(
            got,
            std::fs::read(pki.join(path)).unwrap(),
            "{what}'s {path} differs from kprov's PKI"
        );
    }
}

/// The kubeadm v1.20.2 JoinConfiguration for download-certs (0600: it
/// holds the token and the key).
fn join_configuration(
    dir: &Path,
    name: &str,
    server: &str,
    token: &str,
    hash: &str,
    key: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let host = server.trim_start_matches("https://");
    let address = host.split(':').next().unwrap();
    std::fs::write(
        &path,
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta2
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {host}
    token: {token}
    caCertHashes: [\"{hash}\"]
controlPlane:
  localAPIEndpoint:
    advertiseAddress: {address}
    bindPort: 6443
  certificateKey: {key}
nodeRegistration:
  name: master-2
  criSocket: /run/containerd/containerd.sock
"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Runs kubeadm's download-certs in the namespace, in a mount namespace
/// of its own where `target` is mounted over the certificate directory
/// the cluster's ClusterConfiguration names (kprov's `pki`), so that
/// kubeadm writes into `target` and kprov's files stay as they are.
fn kubeadm_download(cp: &ControlPlane, pki: &Path, target: &Path, config: &Path) -> Output {
    std::fs::create_dir_all(target).unwrap();
    let kubeadm = common::kubernetes_bin().join("kubeadm");
    run_in(
        &cp.ns,
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$0" "$1" && exec "$2" join phase control-plane-prepare download-certs --config "$3""#,
            target.to_str().unwrap(),
            pki.to_str().unwrap(),
            kubeadm.to_str().unwrap(),
            config.to_str().unwrap(),
        ],
    )
}

#[test]
#[ignore = "starts etcd and the v1.20.2 control plane in a network namespace and runs kubeadm v1.20.2"]
fn upload_certs_is_read_by_kprov_and_kubeadm_with_a_token_and_goes_with_its_token() {
    let cp = ControlPlane::start(PREFIX);
    let (ns, logs, dir) = (&cp.ns, &cp.logs, cp.dir.path());
    let admin = cp.admin.clone();
    let pki = cp.root.join("etc/kubernetes/pki");
    // What a joining master reads first: cluster-info, kubeadm-config.
    for phase in ["bootstrap-token", "upload-config"] {
        let o = cp.init_phase(phase);
        assert!(o.status.success(), "{phase}: {}\n{}", text(&o), logs.dump());
    }

    // No key given: kprov makes one and prints it, on stdout only.
    let first = cp.init_phase_with("upload-certs", &["--output", "json"]);
    let doc = json(&first);
    let key = doc["outputs"]["certificate_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no certificate key in {doc}"))
        .to_string();
    assert!(is_key_line(&key), "{key}");
    assert!(
        !String::from_utf8_lossy(&first.stderr).contains(&key),
        "the key went to stderr"
    );
    let reports = doc["reports"].as_array().unwrap();
    let uploaded = outcomes(&reports[0]);
    assert_eq!(uploaded.len(), 2, "{uploaded:?}");
    assert!(uploaded[0]
        .0
        .starts_with("Secret/kube-system/bootstrap-token-"));
    assert_eq!(uploaded[0].1, "created");
    assert_eq!(
        uploaded[1],
        (
            "Secret/kube-system/kubeadm-certs".to_string(),
            "created".to_string()
        )
    );
    assert_eq!(
        outcomes(&reports[1]),
        [
            (
                "Role/kube-system/kubeadm:kubeadm-certs".to_string(),
                "created".to_string()
            ),
            (
                "RoleBinding/kube-system/kubeadm:kubeadm-certs".to_string(),
                "created".to_string()
            )
        ]
    );

    // The same key again (and its dry run): nothing changes, no new token,
    // no key printed (AES-GCM's nonces would make every upload's bytes
    // new; kprov compares what they decrypt to).
    let dry = cp.init_phase_with(
        "upload-certs",
        &["--certificate-key", &key, "--dry-run", "--output", "json"],
    );
    let dry_doc = json(&dry);
    for report in dry_doc["reports"].as_array().unwrap() {
        for (id, outcome) in outcomes(report) {
            assert_eq!(outcome, "unchanged", "dry run: {id}");
        }
    }
    let again = cp.init_phase_with("upload-certs", &["--certificate-key", &key]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("kprov: nothing changed"),
        "{}",
        text(&again)
    );
    assert!(
        !String::from_utf8_lossy(&again.stdout)
            .lines()
            .any(is_key_line),
        "a given key was printed: {}",
        text(&again)
    );

    // The Secret: Opaque, kubeadm's eight entries, owned by a bootstrap
    // token's Secret that expires in 2 h and can do nothing else.
    let secret = json(&cp.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        "kubeadm-certs",
        "-o",
        "json",
    ]));
    assert_eq!(secret["type"], "Opaque");
    let mut entries: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "ca.crt",
            "ca.key",
            "etcd-ca.crt",
            "etcd-ca.key",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "sa.key",
            "sa.pub"
        ]
    );
    let owners = secret["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(owner["apiVersion"], "v1");
    assert_eq!(owner["kind"], "Secret");
    assert_eq!(owner["controller"], true);
    let owner_name = owner["name"].as_str().unwrap().to_string();
    assert_eq!(
        format!("Secret/kube-system/{owner_name}"),
        uploaded[0].0,
        "the owner is not the token the first run made"
    );
    let token_secret = json(&cp.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        &owner_name,
        "-o",
        "json",
    ]));
    assert_eq!(owner["uid"], token_secret["metadata"]["uid"]);
    assert_eq!(token_secret["type"], "bootstrap.kubernetes.io/token");
    use base64::Engine;
    let field = |k: &str| {
        let b64 = token_secret["data"][k].as_str().unwrap_or_default();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        field("description"),
        "Proxy for managing TTL for the kubeadm-certs secret"
    );
    let expires = time::OffsetDateTime::parse(
        &field("expiration"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(110) && left <= time::Duration::minutes(120),
        "the upload's token expires in {left}, not about 2 h"
    );
    let keys: Vec<&String> = token_secret["data"].as_object().unwrap().keys().collect();
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("usage-") || *k == "auth-extra-groups"),
        "the upload's token can be used: {keys:?}"
    );

    // The master join line: a wrong key is refused by name and makes no
    // token; the right one prints the line with both secrets in the
    // environment.
    let token_count = || {
        let o = kprov_in(
            ns,
            &["token", "list", "--kubeconfig", &admin, "--output", "json"],
        );
        json(&o).as_array().unwrap().len()
    };
    let before = token_count();
    let mut wrong = key.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let create = |key: &str| {
        kprov_in(
            ns,
            &[
                "token",
                "create",
                "--kubeconfig",
                &admin,
                "--print-join-command",
                "--control-plane",
                "--certificate-key",
                key,
            ],
        )
    };
    let refused = create(&wrong);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr)
                .contains("certificate key does not decrypt kubeadm-certs (wrong key?)"),
        "{}",
        text(&refused)
    );
    assert!(!String::from_utf8_lossy(&refused.stderr).contains(&wrong));
    assert_eq!(token_count(), before, "a refused key made a token");
    let o = create(&key);
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let join = common::cluster::JoinCommand::parse(&line);
    assert!(
        line.contains(&format!(" KPROV_CERTIFICATE_KEY={key} kprov provision "))
            && line.ends_with(" --control-plane")
            && !line.contains("--certificate-key"),
        "{line}"
    );
    assert_eq!(join.api_server, cp.server());
    assert_eq!(token_count(), before + 1);

    // The token reads kubeadm-certs, and no other Secret.
    let tok = dir.join("token.conf");
    cp.token_kubeconfig(&tok, &join.token);
    let tok = tok.to_str().unwrap();
    let as_token = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", tok, "-n", "kube-system"];
        all.extend_from_slice(args);
        run_in(ns, &cp.kubectl_bin, &all)
    };
    let o = as_token(&["get", "secret", "kubeadm-certs", "-o", "name"]);
    assert!(o.status.success(), "{}", text(&o));
    for args in [
        vec!["get", "secret", owner_name.as_str()],
        vec!["get", "secrets"],
    ] {
        let o = as_token(&args);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Forbidden"),
            "a bootstrap token may {args:?}: {}",
            text(&o)
        );
    }

    // kprov's download with the token: the files on disk, byte for byte;
    // a wrong key is a named error and yields nothing.
    let files = kprov_download(&cp, &dir.join("kprov-download"), &join.token, &key)
        .unwrap_or_else(|e| panic!("kprov's download: {e}"));
    assert_same_files(&files, &pki, "kprov's download");
    let wrong_dir = dir.join("kprov-download-wrong");
    let error = kprov_download(&cp, &wrong_dir, &join.token, &wrong).unwrap_err();
    assert!(
        error.starts_with("certificate key does not decrypt kubeadm-certs (wrong key?)"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(&wrong_dir).unwrap().count(), 1);

    // A master's join into a root: without a key, or with a wrong one, a
    // named error and nothing written; with the key, the shared files
    // byte for byte (keys 0600) and this master's own certificates and
    // kubeconfigs.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let master_root = dir.join("master-2-root");
    for (given, error) in [
        (None, "--control-plane needs --certificate-key"),
        (
            Some(wrong.as_str()),
            "certificate key does not decrypt kubeadm-certs (wrong key?)",
        ),
    ] {
        let o = master_join(&cp, &master_root, &join, given);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains(error),
            "{}",
            text(&o)
        );
        assert!(
            !stderr.contains(&wrong) && !stderr.contains(&key),
            "{stderr}"
        );
        assert!(!master_root.join("etc/kubernetes").exists(), "{}", text(&o));
        assert!(!master_root.join("var").exists(), "{}", text(&o));
    }
    let o = master_join(&cp, &master_root, &join, Some(&key));
    assert!(o.status.success(), "{}", text(&o));
    // Where the cluster keeps certificates (kubeadm-config's
    // certificatesDir: this control plane's scratch directory).
    let master_pki = master_root.join(pki.strip_prefix("/").unwrap());
    assert_same_files(&master_pki, &pki, "a master's join");
    assert_eq!(mode(&master_pki.join("ca.key")), 0o600);
    for own in [
        "apiserver.crt",
        "etcd/peer.crt",
        "apiserver-etcd-client.key",
    ] {
        assert!(master_pki.join(own).exists(), "no {own}");
    }
    assert!(master_root.join("etc/kubernetes/admin.conf").exists());
    assert!(!master_root
        .join("etc/kubernetes/manifests/etcd.yaml")
        .exists());

    // kubeadm v1.20.2 opens kprov's upload into the same files; with a
    // wrong key it fails and writes nothing.
    let config = join_configuration(
        dir,
        "join.yaml",
        &cp.server(),
        &join.token,
        &join.ca_hash,
        &key,
    );
    let target = dir.join("kubeadm-pki");
    let o = kubeadm_download(&cp, &pki, &target, &config);
    assert!(
        o.status.success(),
        "kubeadm download-certs: {}\n{}",
        text(&o),
        logs.dump()
    );
    println!(
        "kubeadm download-certs:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_same_files(&target, &pki, "kubeadm download-certs");
    assert_eq!(mode(&target.join("ca.key")), 0o600);
    let config = join_configuration(
        dir,
        "join-wrong.yaml",
        &cp.server(),
        &join.token,
        &join.ca_hash,
        &wrong,
    );
    let target = dir.join("kubeadm-pki-wrong");
    let o = kubeadm_download(&cp, &pki, &target, &config);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr)
                .contains("error decoding secret data with provided key"),
        "kubeadm with a wrong key: {}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);

    // The other way round: kprov opens what kubeadm v1.20.2's own
    // upload-certs stores (a new key), and a kprov upload with that key
    // leaves kubeadm's Secret as it is.
    let kubeadm_key = "5e".repeat(32);
    let init_config = dir.join("init.yaml");
    std::fs::write(
        &init_config,
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
certificateKey: {kubeadm_key}
localAPIEndpoint:
  advertiseAddress: {address}
  bindPort: 6443
nodeRegistration:
  name: master-1
  criSocket: /run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: v1.20.2
certificatesDir: {pki}
",
            address = cp.address,
            pki = pki.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&init_config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let kubeadm = common::kubernetes_bin().join("kubeadm");
    let o = run_in(
        ns,
        kubeadm.to_str().unwrap(),
        &[
            "init",
            "phase",
            "upload-certs",
            "--upload-certs",
            "--config",
            init_config.to_str().unwrap(),
            "--kubeconfig",
            &admin,
        ],
    );
    assert!(o.status.success(), "kubeadm upload-certs: {}", text(&o));
    let files = kprov_download(
        &cp,
        &dir.join("kprov-download-kubeadm"),
        &join.token,
        &kubeadm_key,
    )
    .unwrap_or_else(|e| panic!("kprov's download of kubeadm's upload: {e}"));
    assert_same_files(&files, &pki, "kprov's download of kubeadm's upload");
    let o = cp.init_phase_with(
        "upload-certs",
        &["--certificate-key", &kubeadm_key, "--output", "json"],
    );
    let doc = json(&o);
    assert_eq!(
        outcomes(&doc["reports"][0]),
        [(
            "Secret/kube-system/kubeadm-certs".to_string(),
            "unchanged".to_string()
        )],
        "{doc}"
    );
    let secret = json(&cp.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        "kubeadm-certs",
        "-o",
        "json",
    ]));
    let owner_name = secret["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // The owner token goes (as the token cleaner removes it at expiry):
    // the garbage collector deletes kubeadm-certs, and both readers say
    // by name that there is no upload.
    let o = cp.kubectl(&["-n", "kube-system", "delete", "secret", &owner_name]);
    assert!(o.status.success(), "{}", text(&o));
    let gone = wait_for(Duration::from_secs(90), || {
        let o = cp.kubectl(&["-n", "kube-system", "get", "secret", "kubeadm-certs"]);
        (!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("NotFound"))
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "kubeadm-certs outlived its token\n{}",
        logs.dump()
    );
    let expired = "no kubeadm-certs in kube-system (expired after 2 h, or never uploaded: run kprov init phase upload-certs)";
    let error =
        kprov_download(&cp, &dir.join("kprov-download-gone"), &join.token, &key).unwrap_err();
    assert_eq!(error, expired);
    let o = create(&key);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(expired),
        "{}",
        text(&o)
    );
    let late_root = dir.join("master-late-root");
    let o = master_join(&cp, &late_root, &join, Some(&key));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(expired),
        "{}",
        text(&o)
    );
    assert!(!late_root.join("etc/kubernetes").exists() && !late_root.join("var").exists());
    drop(cp);
}
