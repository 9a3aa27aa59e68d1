//! Kubernetes nodes as systemd-nspawn containers, through kprov-cluster's
//! nspawn target, all real: the node image is Debian 12 prebaked by the
//! static release kprov (`provision --phase base --root --node-in-container`)
//! from a bundle with the harness's control-plane images (made once per
//! content, cached); inside a network namespace of the test's own, two
//! machines of one cluster boot systemd; `kprov init --pod-network bridge`
//! makes the master, the worker joins with `kprov provision --phase join`
//! (token and CA hash), and `kubectl get nodes` shows both Ready. Then both
//! machines and the cluster's network are destroyed, and nothing may be
//! left: no process, mount, veth, bridge, cgroup or directory.
//!
//! Needs root, systemd-nspawn, docker-registry and skopeo (for the bundle,
//! once) and the cached Debian root and Kubernetes build: `#[ignore]`d,
//! run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Admin, JoinCommand, BUSYBOX};
use common::netns::Netns;
use common::registry::control_plane_bundle;
use common::{bench, debian_root_tarball, extract, harness_images, kprov_release_bin, scratch, sh};
use kprov_cluster::target::nspawn::{warm_containerd, NspawnTarget};
use kprov_cluster::{
    ClusterName, ClusterNetwork, MachineCommand, MachineName, MachineSpec, Role, Target,
};

/// The cluster's network: its gateway (the bridge, in the test's
/// namespace) and prefix.
const NETWORK: &str = "10.84.0.1/24";

/// The node image: the Debian root prebaked by the release kprov from a
/// control-plane bundle (plus busybox), with `--node-in-container`, and
/// the bundle's images imported into its containerd store by one boot
/// (`warm_containerd`); made once per content under the target directory,
/// and older ones removed.
fn node_image() -> PathBuf {
    let kprov = kprov_release_bin();
    let file_digest = |p: &Path| common::sha256_hex(p);
    let images_dir = &harness_images().0;
    let tarball = debian_root_tarball();
    let key = kprov_cluster::image::content_key([
        "kprov nspawn node image v2: base --node-in-container, control-plane bundle + busybox, containerd warmed"
            .to_string(),
        tarball.display().to_string(),
        std::fs::metadata(tarball).unwrap().len().to_string(),
        std::fs::read_to_string(images_dir.join("SHA256SUMS")).unwrap(),
        std::fs::read_to_string(common::kubernetes_bin_dir().join("../SHA256SUMS"))
            .unwrap_or_default(),
        std::fs::read_to_string(common::artifacts_dir().join("SHA256SUMS")).unwrap(),
        file_digest(kprov),
    ]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nspawn-node-images");
    let started = Instant::now();
    let mut made = false;
    let image = kprov_cluster::image::cached(&cache, &key, |dir| {
        made = true;
        let work = scratch("node-image-");
        let bundle = control_plane_bundle(work.path(), &["--image", BUSYBOX]);
        extract(tarball, dir);
        let out = Command::new(kprov)
            .args(["provision", "--phase", "base", "--root"])
            .arg(dir)
            .args(["--kubelet-version", "v1.20.2", "--arch", "amd64"])
            .arg("--bundle")
            .arg(&bundle)
            .arg("--node-in-container")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // The images imported once, here, rather than by every machine.
        let ns = Netns::new("10.86.0");
        let warmer = NspawnTarget::new(work.path().join("machines"))
            .map_err(|e| e.to_string())?
            .with_netns(format!("/run/netns/{}", ns.name));
        warmer.prepare_host().map_err(|e| e.to_string())?;
        warm_containerd(
            &warmer,
            dir,
            "10.86.1.1/24".parse().unwrap(),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())
    })
    .unwrap();
    if made {
        bench(&format!(
            "nspawn node image (bundle + prebake, once per content): {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    // Images of older builds: never used again by this checkout.
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        if entry.file_name().to_string_lossy() != key {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    image
}

/// Destroys what is left of the cluster when the test ends, passed or
/// not (the machines outlive this process otherwise).
struct Teardown<'a> {
    target: &'a NspawnTarget,
    cluster: ClusterName,
    armed: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for m in self.target.list(&self.cluster).unwrap_or_default() {
            if let Err(e) = self.target.destroy(&m.name) {
                eprintln!("teardown: destroying {}: {e}", m.name);
            }
        }
        if let Err(e) = self.target.destroy_network(&self.cluster) {
            eprintln!("teardown: {e}");
        }
    }
}

/// Runs `argv` in `machine`, failing with its output and the machine's
/// log when it fails.
fn run_ok(target: &NspawnTarget, machine: &MachineName, command: &MachineCommand) -> String {
    let out = target.run(machine, command).unwrap();
    // kprov's progress (its stderr never holds a secret), for the timings.
    if command.argv.first().is_some_and(|p| p == "kprov") {
        eprintln!(
            "==== {machine}: {}\n{}",
            command.argv[..2].join(" "),
            out.stderr_text()
        );
    }
    assert!(
        out.success(),
        "{:?} in {machine} exited {:?}{}\nstdout:\n{}\nstderr:\n{}\n{}",
        command.argv,
        out.code,
        if out.timed_out { " (timed out)" } else { "" },
        out.stdout_text(),
        out.stderr_text(),
        diagnose(target, machine)
    );
    out.stdout_text()
}

/// A machine's last console and kubelet lines, for failures.
fn diagnose(target: &NspawnTarget, machine: &MachineName) -> String {
    let console = target.logs(machine, 25).unwrap_or_else(|e| e.to_string());
    let journal = target
        .run(
            machine,
            &MachineCommand::new([
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-n",
                "25",
                "-u",
                "kubelet",
                "-u",
                "containerd",
            ])
            .timeout(Duration::from_secs(20)),
        )
        .map(|o| o.stdout_text())
        .unwrap_or_else(|e| e.to_string());
    format!("==== {machine} console (last lines)\n{console}\n==== {machine} kubelet and containerd (last lines)\n{journal}")
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
}

/// Processes whose command line or mounts mention `dir`, or that run a
/// machine of `cluster`.
fn leftovers(dir: &Path, cluster: &ClusterName) -> Vec<String> {
    let dir = dir.display().to_string();
    let machine_flag = format!("--machine={cluster}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) || cmdline.contains(&machine_flag) {
            found.push(format!("process {name}: {cmdline}"));
        }
        let mounts = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        if let Some(line) = mounts.lines().find(|l| l.contains(&dir)) {
            found.push(format!("process {name} mounts {line}"));
        }
    }
    found
}

#[test]
#[ignore = "needs root, systemd-nspawn, docker-registry, skopeo and the cached builds; run by tools/test.sh"]
fn two_nspawn_machines_become_a_master_and_a_worker_both_ready_and_leave_nothing_behind() {
    let image = node_image();
    let ns = Netns::new("10.83.0");
    let dir = scratch("cluster-nspawn-");
    let machines_dir = dir.path().join("machines");
    let target = NspawnTarget::new(&machines_dir)
        .unwrap()
        .with_netns(format!("/run/netns/{}", ns.name));
    let cluster: ClusterName = format!("t{}", std::process::id()).parse().unwrap();
    let network: ClusterNetwork = NETWORK.parse().unwrap();
    let master = MachineName::new(&cluster, Role::Master, 1).unwrap();
    let worker = MachineName::new(&cluster, Role::Worker, 1).unwrap();
    let mut teardown = Teardown {
        target: &target,
        cluster: cluster.clone(),
        armed: true,
    };

    for change in target.prepare_host().unwrap() {
        eprintln!(
            "host: {} changed from {} to {}",
            change.what, change.from, change.to
        );
    }

    // Machines: made from the image, started, booted.
    let t0 = Instant::now();
    for name in [&master, &worker] {
        let address: Ipv4Addr = network.default_address(name).unwrap();
        let made = target
            .create(&MachineSpec {
                name: name.clone(),
                image: image.clone(),
                network,
                address,
                labels: Default::default(),
            })
            .unwrap();
        assert_eq!(made.address, address);
        target.start(name).unwrap();
    }
    let started = t0.elapsed();
    let listed: Vec<String> = target
        .list(&cluster)
        .unwrap()
        .iter()
        .map(|m| format!("{} {} {:?}", m.name, m.address, m.state))
        .collect();
    assert_eq!(
        listed,
        [
            format!("{master} 10.84.0.11 Running"),
            format!("{worker} 10.84.0.101 Running")
        ]
    );
    for name in [&master, &worker] {
        if let Err(e) = target.wait_booted(name, Duration::from_secs(180)) {
            panic!("{e}\n{}", diagnose(&target, name));
        }
    }
    let booted = t0.elapsed();
    // Each machine is itself: its name, its address, its machine-id.
    let ids: Vec<String> = [&master, &worker]
        .iter()
        .map(|name| {
            let text = run_ok(
                &target,
                name,
                &MachineCommand::new([
                    "sh",
                    "-c",
                    "hostname; ip -4 -o addr show dev eth0 | awk '{print $4}'; cat /etc/machine-id",
                ]),
            );
            let lines: Vec<&str> = text.lines().collect();
            let address = target.address(name).unwrap();
            assert_eq!(lines[..2], [name.to_string(), format!("{address}/24")]);
            lines[2].to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1], "the machines share a machine-id");

    // The master.
    let master_ip = target.address(&master).unwrap().to_string();
    let init = run_ok(
        &target,
        &master,
        &MachineCommand::new([
            "kprov",
            "init",
            "--node-name",
            &master.to_string(),
            "--advertise-address",
            &master_ip,
            "--kubernetes-version",
            "v1.20.2",
            "--pod-network",
            "bridge",
            "--node-in-container",
            "--timeout",
            "300",
        ])
        .timeout(Duration::from_secs(420)),
    );
    let initialized = t0.elapsed();
    let line = init
        .lines()
        .find(|l| l.starts_with("KPROV_TOKEN="))
        .unwrap_or_else(|| panic!("kprov init printed no join command:\n{init}"));
    let join = JoinCommand::parse(line);
    assert_eq!(join.api_server, format!("https://{master_ip}:6443"));

    // The worker.
    let worker_ip = target.address(&worker).unwrap().to_string();
    run_ok(
        &target,
        &worker,
        &MachineCommand::new([
            "kprov",
            "provision",
            "--phase",
            "join",
            "--kubelet-version",
            "v1.20.2",
            "--api-server",
            &join.api_server,
            "--discovery-token-ca-cert-hash",
            &join.ca_hash,
            "--node-name",
            &worker.to_string(),
            "--node-ip",
            &worker_ip,
            "--node-in-container",
        ])
        .env("KPROV_TOKEN", &join.token)
        .timeout(Duration::from_secs(360)),
    );
    let joined = t0.elapsed();

    // From the test's namespace, through the bridge: both Ready.
    let kubeconfig = dir.path().join("admin.conf");
    let admin_conf = run_ok(
        &target,
        &master,
        &MachineCommand::new(["cat", "/etc/kubernetes/admin.conf"]),
    );
    std::fs::write(&kubeconfig, admin_conf).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
    let admin = Admin {
        ns: &ns,
        kubeconfig: kubeconfig.clone(),
    };
    let context = || {
        format!(
            "{}\n{}",
            diagnose(&target, &master),
            diagnose(&target, &worker)
        )
    };
    for name in [&master, &worker] {
        admin.wait_ready(&name.to_string(), Duration::from_secs(300), &context);
    }
    let ready = t0.elapsed();
    println!("{}", admin.nodes());
    bench(&format!(
        "nspawn 1+1: machine creation to both nodes Ready: {:.1} s (create+start {:.1} s, booted {:.1} s, kprov init done {:.1} s, worker joined {:.1} s)",
        ready.as_secs_f64(),
        started.as_secs_f64(),
        booted.as_secs_f64(),
        initialized.as_secs_f64(),
        joined.as_secs_f64()
    ));
    for name in [&master, &worker] {
        let r = target.resources(name).unwrap();
        bench(&format!(
            "nspawn node cost, {}: memory {} resident + {} page cache; disk {} of its own + {} shared with the image (containerd's store, hard links)",
            name.role,
            mib(r.memory_rss),
            mib(r.memory_cache),
            mib(Some(r.disk_own)),
            mib(Some(r.disk_shared))
        ));
    }

    // Down: both machines, then the cluster's network.
    let t1 = Instant::now();
    for name in [&worker, &master] {
        target.destroy(name).unwrap();
    }
    target.destroy_network(&cluster).unwrap();
    bench(&format!(
        "nspawn 1+1: destroying both machines and the bridge: {:.1} s",
        t1.elapsed().as_secs_f64()
    ));
    teardown.armed = false;

    // Nothing is left.
    assert!(target.list(&cluster).unwrap().is_empty());
    let left = leftovers(&machines_dir, &cluster);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    let entries: Vec<_> = std::fs::read_dir(&machines_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "left in {}: {entries:?}",
        machines_dir.display()
    );
    let links = sh(ns.command("ip").args(["-o", "link", "show"]));
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("kpbr") && !links.contains("kpv"),
        "interfaces left in {}:\n{links}",
        ns.name
    );
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for name in [&master, &worker] {
            let cgroup = hierarchy.path().join("kprov").join(name.to_string());
            assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
        }
    }
    // A second removal finds nothing to do, and says so for a machine.
    target.destroy_network(&cluster).unwrap();
    let err = target.destroy(&master).unwrap_err().to_string();
    assert_eq!(err, format!("no machine {master} on this target"));
}
