//! Machines as Kubernetes resources, against a real v1.20.2 API server
//! (`common::controlplane`): the definition `kprov netboot crd` prints is
//! accepted (a structural schema), Machine files that `kprov netboot
//! serve` accepts are valid objects of it, and the API server refuses a
//! malformed MAC naming the field.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::controlplane::{kprov_in, text, wait_for, ControlPlane};

const PREFIX: &str = "10.91.0";

fn machine(name: &str, mac: &str, ip: &str) -> String {
    format!(
        "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: {name}\nspec:\n  macAddress: {mac}\n  ipAddress: {ip}\n  hostname: {name}\n  role: worker\n  boot:\n    image: images/node.img.zst\n"
    )
}

/// `kubectl apply -f -` with `doc` on its stdin.
fn apply(cp: &ControlPlane, doc: &str) -> std::process::Output {
    let mut child = cp
        .ns
        .command(&cp.kubectl_bin)
        .args(["--kubeconfig", &cp.admin, "apply", "-f", "-"])
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

#[test]
#[ignore = "needs root, network namespaces, etcd and the Kubernetes v1.20.2 build"]
fn the_machine_crd_is_accepted_takes_machine_files_and_refuses_a_bad_mac_naming_the_field() {
    let cp = ControlPlane::start(PREFIX);
    let crd = kprov_in(&cp.ns, &["netboot", "crd"]);
    assert!(crd.status.success(), "{}", text(&crd));
    let applied = apply(&cp, &String::from_utf8(crd.stdout).unwrap());
    assert!(
        applied.status.success(),
        "{}\n{}",
        text(&applied),
        cp.logs.dump()
    );
    let established = wait_for(Duration::from_secs(30), || {
        let o = cp.kubectl(&[
            "get",
            "crd",
            "machines.kprov.dev",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
    });
    assert!(
        established.is_some(),
        "machines.kprov.dev never Established"
    );

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
    let bad = apply(&cp, &machine("node2", "52:54:00:aa:00", "10.91.0.21"));
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
    let no_boot = apply(
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
