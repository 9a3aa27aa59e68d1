//! Machines as Kubernetes resources, against a real v1.20.2 API server
//! (`common::controlplane`): the definition `kprov netboot crd` prints is
//! accepted (a structural schema), Machine files that `kprov netboot
//! serve` accepts are valid objects of it, and the API server refuses a
//! malformed MAC naming the field.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::controlplane::{kprov_in, text, wait_for, ControlPlane};
use common::netns::Peer;

const PREFIX: &str = "10.91.0";

fn machine(name: &str, mac: &str, ip: &str) -> String {
    format!(
        "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: {name}\nspec:\n  macAddress: {mac}\n  ipAddress: {ip}\n  hostname: {name}\n  role: worker\n  boot:\n    image: images/node.img.zst\n"
    )
}

/// `kubectl apply -f -` with `doc` on its stdin.
fn apply(cp: &ControlPlane, doc: &str) -> std::process::Output {
    apply_with(cp, doc, &[])
}

/// [`apply`] with kubectl's client-side validation off: the API server
/// answers (kubectl's own check words it differently once it has
/// fetched the schema).
fn apply_to_server(cp: &ControlPlane, doc: &str) -> std::process::Output {
    apply_with(cp, doc, &["--validate=false"])
}

fn apply_with(cp: &ControlPlane, doc: &str, extra: &[&str]) -> std::process::Output {
    let mut child = cp
        .ns
        .command(&cp.kubectl_bin)
        .args(["--kubeconfig", &cp.admin, "apply", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A field of a Machine's object (kubectl's jsonpath).
fn field(cp: &ControlPlane, name: &str, path: &str) -> String {
    let o = cp.kubectl(&[
        "get",
        "machine",
        name,
        "-o",
        &format!("jsonpath={{{path}}}"),
    ]);
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The server's `/metrics` (HTTP on port 8080 of `address`).
fn metrics(cp: &ControlPlane, address: &str) -> String {
    let o = cp
        .ns
        .command("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{address}:8080/metrics"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// busybox udhcpc once in `peer` (3 tries a second apart): the address
/// it bound and the server that gave it ("IP SERVER"), or None.
fn udhcpc(peer: &Peer, scratch: &Path) -> Option<String> {
    udhcpc_as(peer, scratch, &[], "$ip $serverid")
}

/// [`udhcpc`] with `extra` options, returning `vars` (shell words of the
/// udhcpc script's environment) as bound.
fn udhcpc_as(peer: &Peer, scratch: &Path, extra: &[&str], vars: &str) -> Option<String> {
    let out = scratch.join(format!("udhcpc-{}.out", peer.name));
    let script = scratch.join(format!("udhcpc-{}.sh", peer.name));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"{vars}\" > {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(&out);
    peer.command("timeout")
        .args([
            "30", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-A",
            "1",
        ])
        .args(extra)
        .arg("-s")
        .arg(&script)
        .output()
        .unwrap();
    std::fs::read_to_string(&out)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Registers Node `name` (by hand: no kubelet runs in these tests).
fn register_node(cp: &ControlPlane, name: &str) {
    let node = apply(
        cp,
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
    );
    assert!(node.status.success(), "{}", text(&node));
}

/// Sets Node `name`'s Ready condition to True, as its kubelet would.
fn make_node_ready(cp: &ControlPlane, name: &str, scratch: &Path) {
    let got = cp.kubectl(&["get", "node", name, "-o", "json"]);
    let mut object: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    object["status"]["conditions"] = serde_json::json!([{
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "set by the test",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]);
    let status_file = scratch.join(format!("{name}-status.json"));
    std::fs::write(&status_file, object.to_string()).unwrap();
    let put = cp.kubectl(&[
        "replace",
        "--raw",
        &format!("/api/v1/nodes/{name}/status"),
        "-f",
        status_file.to_str().unwrap(),
    ]);
    assert!(put.status.success(), "{}", text(&put));
}

#[test]
#[ignore = "needs root, network namespaces, etcd and the Kubernetes v1.20.2 build"]
fn the_machine_crd_is_accepted_takes_machine_files_and_refuses_a_bad_mac_naming_the_field() {
    let cp = ControlPlane::start(PREFIX);
    // Before the definition is installed, the server refuses to start
    // watching, saying how to install it.
    let dir = common::scratch("netboot-nocrd-");
    for sub in ["tftp", "http", "state"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let config = dir.path().join("netboot.yaml");
    std::fs::write(
        &config,
        "mode: full\ninterface: br0\nserverAddress: 10.91.0.1\nsubnet: 10.91.0.0/24\n\
         tftpRoot: tftp\nhttpRoot: http\nstateDir: state\nports: {http: 8080}\n",
    )
    .unwrap();
    let early = kprov_in(
        &cp.ns,
        &[
            "netboot",
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--machines",
            "kubernetes",
            "--kubeconfig",
            &cp.admin,
        ],
    );
    assert!(
        !early.status.success()
            && String::from_utf8_lossy(&early.stderr)
                .contains("does not serve machines.kprov.dev: install its definition with `kprov netboot crd | kubectl apply -f -`"),
        "{}",
        text(&early)
    );
    cp.install_machine_crd();

    // A file the server accepts is a valid object, shown with its columns.
    let good = machine("node1", "52:54:00:aa:00:01", "10.91.0.20");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node1.yaml"), &good).unwrap();
    let (registry, errors) = kprov_netboot::machine::load_dir(dir.path(), None).unwrap();
    assert!(errors.is_empty() && registry.len() == 1, "{errors:?}");
    let created = apply(&cp, &good);
    assert!(created.status.success(), "{}", text(&created));
    let listed = cp.kubectl(&["get", "machines", "--no-headers"]);
    let line = String::from_utf8_lossy(&listed.stdout).to_string();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns.get(..4),
        Some(&["node1", "52:54:00:aa:00:01", "10.91.0.20", "worker"][..]),
        "{}",
        text(&listed)
    );
    let short = cp.kubectl(&["get", "mach", "node1", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&short.stdout).trim(),
        "machine.kprov.dev/node1",
        "{}",
        text(&short)
    );

    // A malformed MAC: refused by the API server, naming the field, and
    // no object is made.
    let bad = apply_to_server(&cp, &machine("node2", "52:54:00:aa:00", "10.91.0.21"));
    let said = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(said.contains("spec.macAddress"), "{said}");
    println!("a bad MAC: {}", said.trim());
    let absent = cp.kubectl(&["get", "machine", "node2"]);
    assert!(
        !absent.status.success() && String::from_utf8_lossy(&absent.stderr).contains("NotFound"),
        "{}",
        text(&absent)
    );
    // A spec without what it boots: refused naming spec.boot.
    let no_boot = apply_to_server(
        &cp,
        "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: node3\nspec:\n  macAddress: 52:54:00:aa:00:03\n",
    );
    assert!(!no_boot.status.success(), "{}", text(&no_boot));
    assert!(
        String::from_utf8_lossy(&no_boot.stderr).contains("spec.boot"),
        "{}",
        text(&no_boot)
    );
}

#[test]
#[ignore = "needs root, network namespaces, busybox, etcd and the Kubernetes v1.20.2 build"]
fn netboot_serves_the_machines_it_watches_and_writes_their_status() {
    const MAC: &str = "52:54:00:bb:00:01";
    let mut cp = ControlPlane::start("10.92.0");
    cp.install_machine_crd();
    let dir = common::scratch("netboot-kube-");
    let d = dir.path();
    for sub in ["tftp", "http", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // No machinesDir: Machines come from the API server only.
    std::fs::write(
        d.join("netboot.yaml"),
        "mode: full\ninterface: br0\nserverAddress: 10.92.0.1\nsubnet: 10.92.0.0/24\n\
         router: 10.92.0.1\ntftpRoot: tftp\nhttpRoot: http\nstateDir: state\nports: {http: 8080}\n",
    )
    .unwrap();
    let log = d.join("server.log");
    let config = d.join("netboot.yaml");
    let server = cp.serve_netboot_watching(&common::kprov_bin(), &config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let loaded = wait_for(Duration::from_secs(30), || {
        log_text()
            .contains("machines loaded from the API server")
            .then_some(())
    });
    assert!(
        loaded.is_some(),
        "netboot never listed the Machines:\n{}",
        log_text()
    );

    // A Machine applied after the server started: its status says
    // Pending, its MAC gets its address, and its status moves to
    // PXEBooting at that address.
    let created = apply(&cp, &machine("node1", MAC, "10.92.0.20"));
    assert!(created.status.success(), "{}", text(&created));
    let pending = wait_for(Duration::from_secs(20), || {
        (field(&cp, "node1", ".status.phase") == "Pending").then_some(())
    });
    assert!(
        pending.is_some(),
        "node1's status never said Pending:\n{}",
        log_text()
    );
    let peer = cp.ns.add_peer(MAC);
    let got = udhcpc(&peer, d);
    assert_eq!(
        got.as_deref(),
        Some("10.92.0.20 10.92.0.1"),
        "{}",
        log_text()
    );
    let booting = wait_for(Duration::from_secs(20), || {
        let phase = field(&cp, "node1", ".status.phase");
        let seen = field(&cp, "node1", ".status.address");
        (phase == "PXEBooting" && seen == "10.92.0.20").then_some(())
    });
    assert!(
        booting.is_some(),
        "node1's status: {}\n{}",
        field(&cp, "node1", ".status"),
        log_text()
    );
    let reason = field(
        &cp,
        "node1",
        ".status.conditions[?(@.type==\"PXEBooted\")].reason",
    );
    assert_eq!(reason, "DHCPAnswered");
    println!("node1's status: {}", field(&cp, "node1", ".status"));
    let served = metrics(&cp, "10.92.0.1");
    assert!(
        served.contains("kprov_netboot_machines_by_phase{phase=\"PXEBooting\"} 1\n")
            && served.contains(
                "kprov_netboot_machine_phase_seconds{machine=\"node1\",phase=\"PXEBooting\"}"
            ),
        "{served}"
    );

    // Its Node registers (made here by hand: no kubelet runs in this
    // test): the Machine is Joining and served as installed (local disk,
    // no more user-data); once the Node is Ready, the Machine is Ready.
    register_node(&cp, "node1");
    let joining = wait_for(Duration::from_secs(20), || {
        let reason = field(
            &cp,
            "node1",
            ".status.conditions[?(@.type==\"NodeReady\")].reason",
        );
        (field(&cp, "node1", ".status.phase") == "Joining" && reason == "NodeNotReady")
            .then_some(())
    });
    assert!(
        joining.is_some(),
        "node1's status: {}\n{}",
        field(&cp, "node1", ".status"),
        log_text()
    );
    assert!(
        log_text().contains("its Node exists: served as installed"),
        "{}",
        log_text()
    );
    make_node_ready(&cp, "node1", d);
    let ready = wait_for(Duration::from_secs(20), || {
        (field(&cp, "node1", ".status.phase") == "Ready").then_some(())
    });
    assert!(
        ready.is_some(),
        "node1's status: {}\n{}",
        field(&cp, "node1", ".status"),
        log_text()
    );

    // A Machine the API server takes but netboot refuses (its address is
    // outside the subnet): its status says Failed, naming the field.
    let outside = apply(&cp, &machine("node2", "52:54:00:bb:00:02", "10.1.0.9"));
    assert!(outside.status.success(), "{}", text(&outside));
    let failed = wait_for(Duration::from_secs(20), || {
        let error = field(&cp, "node2", ".status.lastError");
        (field(&cp, "node2", ".status.phase") == "Failed" && error.contains("spec.ipAddress"))
            .then_some(error)
    });
    assert!(
        failed.is_some(),
        "node2's status: {}\n{}",
        field(&cp, "node2", ".status"),
        log_text()
    );
    println!("node2 refused: {}", failed.unwrap());
    let served = metrics(&cp, "10.92.0.1");
    assert!(
        served.contains("kprov_netboot_machines_by_phase{phase=\"Ready\"} 1\n")
            && served.contains("kprov_netboot_machines_by_phase{phase=\"Failed\"} 1\n"),
        "{served}"
    );

    // Deleted, node1 is no longer answered (there is no default profile).
    let deleted = cp.kubectl(&["delete", "machine", "node1"]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let forgotten = wait_for(Duration::from_secs(20), || {
        (udhcpc(&peer, d).is_none()).then_some(())
    });
    assert!(
        forgotten.is_some(),
        "node1 is still answered after its deletion:\n{}",
        log_text()
    );
    drop(peer);
    cp.ns.stop(server);
}

#[test]
#[ignore = "needs root, network namespaces, busybox, etcd and the Kubernetes v1.20.2 build"]
fn two_replicas_share_a_lease_and_the_other_answers_dhcp_once_the_leader_stops() {
    const MAC: &str = "52:54:00:cc:00:01";
    let mut cp = ControlPlane::start("10.90.0");
    cp.install_machine_crd();
    let created = apply(&cp, &machine("node1", MAC, "10.90.0.20"));
    assert!(created.status.success(), "{}", text(&created));
    let dir = common::scratch("netboot-replicas-");
    let d = dir.path();
    // Replica a on the bridge (10.90.0.1), replica b in a namespace of its
    // own on the same bridge (10.90.0.2).
    let replica = |name: &str, interface: &str, address: &str| -> (PathBuf, Vec<String>) {
        let root = d.join(name);
        for sub in ["tftp", "http", "state"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("netboot.yaml"),
            format!(
                "mode: full\ninterface: {interface}\nserverAddress: {address}\n\
                 subnet: 10.90.0.0/24\ntftpRoot: tftp\nhttpRoot: http\nstateDir: state\n\
                 ports: {{http: 8080}}\n"
            ),
        )
        .unwrap();
        let config = root.join("netboot.yaml");
        let args = [
            "--log-level",
            "info",
            "netboot",
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--machines",
            "kubernetes",
            "--kubeconfig",
            &cp.admin,
            "--identity",
            name,
        ];
        (
            root.join("server.log"),
            args.iter().map(|a| a.to_string()).collect(),
        )
    };
    let (log_a, args_a) = replica("replica-a", "br0", "10.90.0.1");
    let (log_b, args_b) = replica("replica-b", "eth0", "10.90.0.2");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = cp.ns.spawn_logged(&common::kprov_bin(), &args_a, &log_a);
    let read = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    let leading = wait_for(Duration::from_secs(30), || {
        read(&log_a)
            .contains("leading: this replica answers DHCP")
            .then_some(())
    });
    assert!(leading.is_some(), "replica a never led:\n{}", read(&log_a));

    let b_ns = cp.ns.add_peer("52:54:00:cc:00:0b");
    b_ns.ip(&["addr", "add", "10.90.0.2/24", "dev", "eth0"]);
    let mut b = b_ns
        .command(common::kprov_bin().to_str().unwrap())
        .args(&args_b)
        .stdout(std::fs::File::create(&log_b).unwrap())
        .stderr(std::fs::File::create(d.join("replica-b/stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let log_b_all = || read(&log_b) + &read(&d.join("replica-b/stderr.log"));
    let following = wait_for(Duration::from_secs(30), || {
        log_b_all()
            .contains("following: replica-a answers DHCP")
            .then_some(())
    });
    assert!(following.is_some(), "replica b:\n{}", log_b_all());

    // Only the holder answers.
    let client = cp.ns.add_peer(MAC);
    let first = udhcpc(&client, d);
    assert_eq!(
        first.as_deref(),
        Some("10.90.0.20 10.90.0.1"),
        "a:\n{}\nb:\n{}",
        read(&log_a),
        log_b_all()
    );

    // The holder stops (its Lease is not released): the other takes over
    // once the Lease has run out, and answers.
    let stopped = std::time::Instant::now();
    cp.ns.stop(a);
    let took_over = wait_for(Duration::from_secs(40), || {
        log_b_all()
            .contains("leading: this replica answers DHCP")
            .then_some(())
    });
    assert!(
        took_over.is_some(),
        "replica b never took over:\n{}",
        log_b_all()
    );
    println!(
        "replica b took over {:.1} s after replica a stopped (lease {} s)",
        stopped.elapsed().as_secs_f64(),
        kprov_netboot::leader::LEASE_SECONDS
    );
    let second = udhcpc(&client, d);
    assert_eq!(
        second.as_deref(),
        Some("10.90.0.20 10.90.0.2"),
        "{}",
        log_b_all()
    );
    let holder = cp.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "lease",
        kprov_netboot::leader::LEASE_NAME,
        "-o",
        "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&holder.stdout),
        "replica-b 1",
        "{}",
        text(&holder)
    );
    let _ = b.kill();
    let _ = b.wait();
    drop(client);
    drop(b_ns);
}

/// netboot's bootstrap tokens for Machine `machine`: (id, secret,
/// expiration), oldest expiry first.
fn join_tokens(cp: &ControlPlane, machine: &str) -> Vec<(String, String, String)> {
    use base64::Engine;
    let o = cp.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "secrets",
        "--field-selector",
        "type=bootstrap.kubernetes.io/token",
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let field = |item: &serde_json::Value, key: &str| {
        let b64 = item["data"][key].as_str().unwrap_or_default();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    let mut tokens: Vec<(String, String, String)> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|item| {
            field(item, "description") == format!("kprov netboot: joins Machine {machine}")
        })
        .map(|item| {
            (
                field(item, "token-id"),
                field(item, "token-secret"),
                field(item, "expiration"),
            )
        })
        .collect();
    tokens.sort_by(|a, b| a.2.cmp(&b.2));
    tokens
}

/// A file of cloud-init user-data's write_files, decoded.
fn written_file(user_data: &str, path: &str) -> String {
    use base64::Engine;
    let doc: serde_yaml::Value = serde_yaml::from_str(user_data).unwrap();
    let file = doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in the user-data"));
    let content = file["content"].as_str().unwrap();
    match file["encoding"].as_str() {
        Some("b64") => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(content)
                .unwrap(),
        )
        .unwrap(),
        _ => content.to_string(),
    }
}

#[test]
#[ignore = "needs root, network namespaces, busybox, curl, etcd and the Kubernetes v1.20.2 build"]
fn netboot_makes_a_worker_its_own_token_and_user_data_renews_the_token_and_deletes_it_once_the_node_is_ready(
) {
    const MAC: &str = "52:54:00:dd:00:01";
    let mut cp = ControlPlane::start("10.85.0");
    // cluster-info, which the join data's API server and CA come from.
    let o = cp.init_phase("bootstrap-token");
    assert!(o.status.success(), "{}", text(&o));
    cp.install_machine_crd();
    let dir = common::scratch("netboot-join-");
    let d = dir.path();
    for sub in ["tftp", "http", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // The shortest token lifetime: renewed after 30 s.
    std::fs::write(
        d.join("netboot.yaml"),
        "mode: full\ninterface: br0\nserverAddress: 10.85.0.1\nsubnet: 10.85.0.0/24\n\
         tftpRoot: tftp\nhttpRoot: http\nstateDir: state\nports: {http: 8080}\n\
         stage2: {kernel: stage2/vmlinuz, initrd: stage2/stage2.initrd}\n\
         join:\n  provision: {kubelet-version: v1.20.2}\n  tokenTtlSeconds: 60\n",
    )
    .unwrap();
    let log = d.join("server.log");
    let config = d.join("netboot.yaml");
    let server = cp.serve_netboot_watching(&common::kprov_bin(), &config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // A worker Machine without user-data: netboot makes it a token.
    let created = apply(&cp, &machine("metal1", MAC, "10.85.0.20"));
    assert!(created.status.success(), "{}", text(&created));
    let started = std::time::Instant::now();
    let first = wait_for(Duration::from_secs(30), || join_tokens(&cp, "metal1").pop());
    let Some((id, secret, expiration)) = first else {
        panic!("no token for metal1:\n{}", log_text());
    };
    println!(
        "metal1's token {id} after {:.1} s, expires {expiration}",
        started.elapsed().as_secs_f64()
    );
    let lifetime =
        time::OffsetDateTime::parse(&expiration, &time::format_description::well_known::Rfc3339)
            .unwrap()
            - time::OffsetDateTime::now_utc();
    assert!(
        (40..=61).contains(&lifetime.whole_seconds()),
        "{expiration}: {lifetime}"
    );
    // It is a real bootstrap token: it may ask for a kubelet certificate.
    let can = cp
        .ns
        .command(&cp.kubectl_bin)
        .args([
            "--server",
            "https://10.85.0.1:6443",
            "--insecure-skip-tls-verify",
            "--token",
            &format!("{id}.{secret}"),
            "auth",
            "can-i",
            "create",
            "certificatesigningrequests.certificates.k8s.io",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&can.stdout).trim(),
        "yes",
        "{}",
        text(&can)
    );

    // The machine boots as iPXE would, and takes its user-data: it joins
    // the cluster from cluster-info with that token, fetching kprov from
    // this server, whose binary it is.
    let peer = cp.ns.add_peer(MAC);
    let lease = udhcpc_as(&peer, d, &["-x", "0x4d:69505845"], "$ip $boot_file")
        .unwrap_or_else(|| panic!("no lease:\n{}", log_text()));
    let (ip, url) = lease.split_once(' ').unwrap();
    assert_eq!(ip, "10.85.0.20");
    peer.ip(&["addr", "add", "10.85.0.20/24", "dev", "eth0"]);
    let fetch = |url: &str| -> (u16, Vec<u8>) {
        let body = d.join("curl.out");
        let _ = std::fs::remove_file(&body);
        let o = peer
            .command("curl")
            .args(["-s", "--max-time", "20", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", url])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, std::fs::read(&body).unwrap_or_default())
    };
    let (code, script) = fetch(url);
    assert_eq!(code, 200, "{url}\n{}", log_text());
    let script = String::from_utf8(script).unwrap();
    let seed = script
        .split("kprov.seed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no seed in the script:\n{script}"));
    let (code, user_data) = fetch(&format!("{seed}user-data"));
    let user_data = String::from_utf8(user_data).unwrap();
    assert_eq!(code, 200, "{user_data}\n{}", log_text());
    assert_eq!(
        written_file(&user_data, "/etc/kprov/bootstrap-token").trim(),
        format!("{id}.{secret}")
    );
    let setup = written_file(&user_data, "/opt/kprov/setup.sh");
    let pem = cp.kubectl(&[
        "-n",
        "kube-public",
        "get",
        "configmap",
        "cluster-info",
        "-o",
        "jsonpath={.data.kubeconfig}",
    ]);
    let info: serde_yaml::Value = serde_yaml::from_slice(&pem.stdout).unwrap();
    let ca_data = info["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(ca_data)
            .unwrap()
    };
    assert_eq!(
        written_file(&user_data, "/etc/kubernetes/pki/ca.crt").trim(),
        String::from_utf8_lossy(&ca).trim()
    );
    let (code, binary) = fetch("http://10.85.0.1:8080/kprov");
    assert_eq!(code, 200);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&binary))
    };
    assert_eq!(binary, std::fs::read(common::kprov_bin()).unwrap());
    for line in [
        "source_url='http://10.85.0.1:8080/kprov'".to_string(),
        format!("want_sha256='{sha}'"),
        "'--phase' 'join'".into(),
        "'--kubelet-version' 'v1.20.2'".into(),
        "'--api-server' 'https://10.85.0.1:6443'".into(),
        "'--node-name' 'metal1'".into(),
        "'--node-ip' '10.85.0.20'".into(),
    ] {
        assert!(setup.contains(&line), "{line} not in\n{setup}");
    }
    assert!(!setup.contains(&secret), "{setup}");
    assert!(
        !log_text().contains(&secret),
        "the log has the token's secret"
    );

    // Past half its life, the token is renewed; the old one stays until it
    // expires (the machine may be joining with it), then goes (deleted by
    // netboot or by the controller manager's token cleaner, whichever
    // comes first).
    let renewed = wait_for(Duration::from_secs(45), || {
        let tokens = join_tokens(&cp, "metal1");
        (tokens.len() == 2).then_some(tokens)
    });
    let Some(tokens) = renewed else {
        panic!("metal1's token was never renewed:\n{}", log_text());
    };
    assert_eq!(tokens[0].0, id);
    let new_id = tokens[1].0.clone();
    let expired = wait_for(Duration::from_secs(40), || {
        let tokens = join_tokens(&cp, "metal1");
        (tokens.len() == 1 && tokens[0].0 == new_id).then_some(())
    });
    assert!(
        expired.is_some(),
        "{:?}\n{}",
        join_tokens(&cp, "metal1"),
        log_text()
    );
    // Its Node registers and turns Ready: the token goes at once.
    register_node(&cp, "metal1");
    make_node_ready(&cp, "metal1", d);
    let deleted = wait_for(Duration::from_secs(20), || {
        join_tokens(&cp, "metal1").is_empty().then_some(())
    });
    assert!(
        deleted.is_some() && log_text().contains("join token deleted: its Node is Ready"),
        "{:?}\n{}",
        join_tokens(&cp, "metal1"),
        log_text()
    );
    drop(peer);
    cp.ns.stop(server);
}
