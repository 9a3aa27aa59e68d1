#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! A real control plane from kprov's files: Debian's etcd and the v1.20.2
//! kube-apiserver, kube-controller-manager and kube-scheduler (built from
//! Debian's source), started as processes in a network namespace with
//! kprov's certificates and the command lines of kprov's static pod
//! manifests. Then bootstrap tokens against it: RBAC, cluster-info and its
//! signature (checked against the one the controller manager's
//! bootstrapsigner writes), a token that authenticates and gets a node
//! client certificate approved and signed, and nothing broader.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::controlplane::{kprov_in, run_in, text, wait_for, ControlPlane, Logs};
use common::netns::Netns;
use common::{kprov_bin, sh};

const PREFIX: &str = "10.78.0";

fn try_cluster_info(ns: &Netns, ca: &Path) -> Result<BTreeMap<String, String>, String> {
    // Anonymous, as a joining node reads it.
    let url =
        format!("https://{PREFIX}.1:6443/api/v1/namespaces/kube-public/configmaps/cluster-info");
    let o = run_in(
        ns,
        "curl",
        &[
            "-sS",
            "--fail",
            "--http1.1",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            &url,
        ],
    );
    if !o.status.success() {
        return Err(format!("anonymous read of cluster-info: {}", text(&o)));
    }
    let cm: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    serde_json::from_value(cm["data"].clone()).map_err(|e| e.to_string())
}

fn cluster_info(ns: &Netns, ca: &Path, logs: &Logs) -> BTreeMap<String, String> {
    try_cluster_info(ns, ca).unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()))
}

#[test]
#[ignore = "starts etcd and the v1.20.2 control plane in a network namespace"]
fn control_plane_from_kprov_files_runs_and_bootstraps_tokens() {
    let cp = ControlPlane::start(PREFIX);
    let (ns, root, logs, dir) = (&cp.ns, &cp.root, &cp.logs, &cp.dir);
    let root_s = root.display().to_string();
    let address = cp.address.clone();
    let kubectl = cp.kubectl_bin.clone();
    let admin = cp.admin.clone();
    let ca = cp.ca();

    // A dry run of the API phases lists their objects and creates none
    // (asked through the API); the real run then reports exactly those
    // as created, a re-run as unchanged, and a dry run as unchanged.
    for name in ["bootstrap-token", "addons"] {
        let objects = |o: &Output, outcome: &str| -> Vec<String> {
            assert!(o.status.success(), "{}\n{}", text(o), logs.dump());
            let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let report = &doc["reports"][0];
            let ids: Vec<String> = report["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    assert_eq!(r["outcome"], outcome, "{name}: {r}");
                    r["id"].as_str().unwrap().to_string()
                })
                .collect();
            assert!(!ids.is_empty(), "{name}: no objects listed");
            ids
        };
        let json =
            |extra: &[&str]| cp.init_phase_with(name, &[&["--output", "json"], extra].concat());
        let planned = objects(&json(&["--dry-run"]), "created");
        for id in &planned {
            let mut parts: Vec<&str> = id.split('/').collect();
            let kind = parts.remove(0).to_lowercase();
            let (ns_args, object) = match parts.as_slice() {
                [namespace, object] => (vec!["-n", *namespace], *object),
                [object] => (vec![], *object),
                other => panic!("unexpected object id {other:?}"),
            };
            let mut args = vec!["--kubeconfig", admin.as_str()];
            args.extend(ns_args);
            args.extend(["get", kind.as_str(), object]);
            let o = run_in(ns, &kubectl, &args);
            assert!(
                !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("NotFound"),
                "the dry run of {name} created {id}: {}",
                text(&o)
            );
        }
        assert_eq!(objects(&json(&[]), "created"), planned, "{name}");
        assert_eq!(objects(&json(&[]), "unchanged"), planned, "{name}");
        assert_eq!(
            objects(&json(&["--dry-run"]), "unchanged"),
            planned,
            "{name}"
        );
    }

    // Drift: a value kprov owns, changed by someone else, is taken back
    // and reported as changed (that object only).
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &admin,
            "-n",
            "kube-system",
            "patch",
            "configmap",
            "kube-proxy",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"config.conf":"drifted"}}"#,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let again = cp.init_phase_with("addons", &["--output", "json"]);
    assert!(again.status.success(), "{}", text(&again));
    let doc: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let changed: Vec<&str> = doc["reports"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] != "unchanged")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["ConfigMap/kube-system/kube-proxy"], "{doc}");
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &admin,
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kube-proxy",
            "-o",
            "jsonpath={.data.config\\.conf}",
        ],
    );
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("drifted"),
        "the drifted value stayed: {}",
        text(&o)
    );

    // The text report of the bootstrap RBAC and cluster-info; a second
    // run changes nothing.
    let init_phase = |_: &Netns, name: &str| cp.init_phase(name);
    let phase = |ns: &Netns| init_phase(ns, "bootstrap-token");
    let first = phase(ns);
    assert!(first.status.success(), "{}\n{}", text(&first), logs.dump());
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .contains("unchanged    ClusterRoleBinding/kubeadm:kubelet-bootstrap"),
        "{}",
        text(&first)
    );
    let second = phase(ns);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("nothing changed"),
        "{}",
        text(&second)
    );

    // The add-ons; a second run changes nothing.
    let addons = |ns: &Netns| init_phase(ns, "addons");
    let first = addons(ns);
    assert!(first.status.success(), "{}\n{}", text(&first), logs.dump());
    let second = addons(ns);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("nothing changed"),
        "{}",
        text(&second)
    );
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &admin,
            "-n",
            "kube-system",
            "get",
            "service",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "10.96.0.10",
        "{}",
        text(&o)
    );
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &admin,
            "-n",
            "kube-system",
            "get",
            "daemonset",
            "kube-proxy",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "k8s.gcr.io/kube-proxy:v1.20.2",
        "{}",
        text(&o)
    );
    // The controller manager turned the Deployment into CoreDNS pods
    // (Pending: this cluster has no nodes).
    let pods = wait_for(Duration::from_secs(60), || {
        let o = run_in(
            ns,
            &kubectl,
            &[
                "--kubeconfig",
                &admin,
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "k8s-app=kube-dns",
                "-o",
                "name",
            ],
        );
        let n = String::from_utf8_lossy(&o.stdout).lines().count();
        (n == 2).then_some(n)
    });
    assert_eq!(
        pods,
        Some(2),
        "CoreDNS's Deployment did not make 2 pods\n{}",
        logs.dump()
    );

    // A token, with the join command.
    let o = kprov_in(
        ns,
        &[
            "token",
            "create",
            "--kubeconfig",
            &admin,
            "--ttl",
            "1h",
            "--print-join-command",
        ],
    );
    assert!(o.status.success(), "token create: {}", text(&o));
    let join = common::cluster::JoinCommand::parse(String::from_utf8_lossy(&o.stdout).trim());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let token_text = join.token.clone();
    assert!(
        !stderr.contains(&token_text),
        "the token leaked to stderr: {stderr}"
    );
    assert_eq!(join.api_server, format!("https://{address}:6443"));
    let hash = Command::new(kprov_bin())
        .args(["pki", "ca-hash", "--root", &root_s])
        .output()
        .unwrap();
    assert_eq!(
        join.ca_hash,
        String::from_utf8_lossy(&hash.stdout).trim(),
        "the join command's CA hash differs from kprov pki ca-hash"
    );
    let token: kprov_core::BootstrapToken = token_text.parse().unwrap();

    // The token is listed without its secret.
    let o = kprov_in(ns, &["token", "list", "--kubeconfig", &admin]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains(token.id()) && !listed.contains(&token_text),
        "{listed}"
    );

    // cluster-info, read anonymously, verifies with the token and not
    // with a wrong one.
    let data = cluster_info(ns, &ca, logs);
    let kubeconfig = kprov_controlplane::bootstrap::verify_cluster_info(&data, &token)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(kubeconfig.contains(&format!("server: https://{address}:6443")));
    let wrong: kprov_core::BootstrapToken =
        format!("{}.0000000000000000", token.id()).parse().unwrap();
    assert!(kprov_controlplane::bootstrap::verify_cluster_info(&data, &wrong).is_err());

    // The controller manager's bootstrapsigner computes the same
    // signature: drop kprov's and wait for the controller to write one.
    let key = format!("jws-kubeconfig-{}", token.id());
    let ours = data[&key].clone();
    let patch = format!(r#"[{{"op":"remove","path":"/data/{key}"}}]"#);
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &admin,
            "-n",
            "kube-public",
            "patch",
            "configmap",
            "cluster-info",
            "--type=json",
            "-p",
            &patch,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let theirs = wait_for(Duration::from_secs(60), || {
        try_cluster_info(ns, &ca).ok()?.get(&key).cloned()
    });
    assert_eq!(
        theirs.as_deref(),
        Some(ours.as_str()),
        "bootstrapsigner's signature differs\n{}",
        logs.dump()
    );

    // The token authenticates, may create a node CSR, which the
    // controller manager approves and signs; it may not read Secrets.
    let token_config = dir.path().join("token.conf");
    cp.token_kubeconfig(&token_config, &token_text);
    let tok = token_config.display().to_string();
    let o = run_in(
        ns,
        &kubectl,
        &["--kubeconfig", &tok, "-n", "kube-system", "get", "secrets"],
    );
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Forbidden"),
        "a bootstrap token may read Secrets: {}",
        text(&o)
    );

    // What kubeadm join reads with the token: kubeadm-config and the
    // kubelet's ConfigMap, and no other ConfigMap; kubeadm's own parser
    // accepts both documents. A second upload changes nothing.
    let upload = init_phase(ns, "upload-config");
    assert!(
        upload.status.success(),
        "{}\n{}",
        text(&upload),
        logs.dump()
    );
    let again = init_phase(ns, "upload-config");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing changed"),
        "{}",
        text(&again)
    );
    let read_with_token = |name: &str, key: &str| {
        let jsonpath = format!("jsonpath={{.data.{key}}}");
        let args = [
            "--kubeconfig",
            &tok,
            "-n",
            "kube-system",
            "get",
            "configmap",
            name,
            "-o",
            &jsonpath,
        ];
        run_in(ns, &kubectl, &args)
    };
    let config = read_with_token("kubeadm-config", "ClusterConfiguration");
    assert!(config.status.success(), "{}", text(&config));
    let kubelet = read_with_token("kubelet-config-1.20", "kubelet");
    assert!(kubelet.status.success(), "{}", text(&kubelet));
    // Where joining nodes keep the CA, not this harness's --cert-dir.
    assert!(
        String::from_utf8_lossy(&kubelet.stdout)
            .contains("clientCAFile: /etc/kubernetes/pki/ca.crt"),
        "{}",
        text(&kubelet)
    );
    let other = read_with_token("kube-proxy", "config\\.conf");
    assert!(
        !other.status.success() && String::from_utf8_lossy(&other.stderr).contains("Forbidden"),
        "a bootstrap token may read kube-proxy's ConfigMap: {}",
        text(&other)
    );
    let documents = dir.path().join("uploaded.yaml");
    std::fs::write(
        &documents,
        [config.stdout, b"\n---\n".to_vec(), kubelet.stdout].concat(),
    )
    .unwrap();
    let kubeadm = common::kubernetes_bin().join("kubeadm");
    let migrated = Command::new(&kubeadm)
        .args(["config", "migrate", "--old-config"])
        .arg(&documents)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        migrated.status.success()
            && out.contains("podSubnet: 10.244.0.0/16")
            && out.contains("kubernetesVersion: v1.20.2"),
        "kubeadm config migrate on the uploaded configuration: {}",
        text(&migrated)
    );

    let key_file = dir.path().join("node.key");
    let csr_file = dir.path().join("node.csr");
    sh(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key_file));
    sh(Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key_file)
        .args(["-subj", "/O=system:nodes/CN=system:node:worker-1", "-out"])
        .arg(&csr_file));
    use base64::Engine;
    let request =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr_file).unwrap());
    let csr = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-worker-1"},
        "spec": {
            "request": request,
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "key encipherment", "client auth"]
        }
    });
    let csr_path = dir.path().join("csr.json");
    std::fs::write(&csr_path, csr.to_string()).unwrap();
    let o = run_in(
        ns,
        &kubectl,
        &[
            "--kubeconfig",
            &tok,
            "create",
            "-f",
            csr_path.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "the token may not create a CSR: {}",
        text(&o)
    );
    let issued = wait_for(Duration::from_secs(60), || {
        let o = run_in(
            ns,
            &kubectl,
            &[
                "--kubeconfig",
                &tok,
                "get",
                "csr",
                "node-csr-worker-1",
                "-o",
                "jsonpath={.status.certificate}",
            ],
        );
        let b64 = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (!b64.is_empty()).then_some(b64)
    });
    let issued =
        issued.unwrap_or_else(|| panic!("the CSR was not approved and signed\n{}", logs.dump()));
    let cert_pem = base64::engine::general_purpose::STANDARD
        .decode(issued)
        .unwrap();
    let cert_path = dir.path().join("node.crt");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    let o = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca)
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the node certificate does not verify with the CA: {}",
        text(&o)
    );
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("system:node:worker-1"),
        "{}",
        text(&o)
    );

    // Delete: the Secret and the signature go.
    let o = kprov_in(ns, &["token", "delete", "--kubeconfig", &admin, token.id()]);
    assert!(o.status.success(), "{}", text(&o));
    let gone = wait_for(Duration::from_secs(30), || {
        (!try_cluster_info(ns, &ca).ok()?.contains_key(&key)).then_some(())
    });
    assert!(
        gone.is_some(),
        "the deleted token's signature stayed in cluster-info"
    );
    let o = kprov_in(ns, &["token", "delete", "--kubeconfig", &admin, token.id()]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("no bootstrap token with id"),
        "{}",
        text(&o)
    );
    drop(cp);
}
