//! `kprov init` for real: a Debian 12 VM (qemu, TCG) prebaked by
//! `kprov provision --phase base --root` from a bundle whose control-plane
//! images the harness built (v1.20.2 binaries, Debian's etcd, the pause
//! program) and pushed through a loopback registry. The VM has no route to
//! any registry: the images reach containerd through kprov-images.service.
//! In the VM, `kprov init` brings etcd, the API server, the controller
//! manager and the scheduler up as static pods; from the host (inside the
//! test's network namespace) `kubectl get nodes` shows the master. Then a
//! worker VM (Debian's cloud image prebaked from a bundle) joins it with
//! the user-data `kprov userdata` renders, and `kubectl get nodes` shows
//! both Ready: kprov's main job, which tools/demo.sh shows by running
//! this test. A third VM, from the master's disk image, runs kubeadm
//! v1.20.2 `init` with the same images, for the benchmark.
//!
//! Needs root, qemu, docker-registry, skopeo and many minutes: `#[ignore]`d,
//! run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{
    kprov_user_data, nocloud, prebake, worker_disk, Admin, SETUP_DONE, SETUP_FAILED,
};
use common::controlplane::wait_for;
use common::netns::Netns;
use common::registry::control_plane_bundle;
use common::vm::{
    derive_disk, install_boot_script, make_disk, marked, start, Network, Options, VmDisk,
    KUBEADM_KUBELET_DROPIN,
};
use common::{bench, debian_vm_root_tarball, extract, kubernetes_bin, scratch};

const PREFIX: &str = "10.79.0";
const MASTER_IP: &str = "10.79.0.10";
const NODE_NAME: &str = "master-1";
const WORKER: &str = "worker-1";

/// Runs in the VM once it is up and the images are imported; what it does
/// depends on `kprov.test=` on the kernel command line. Progress goes to
/// the console (ttyS0), admin.conf to the private serial port (ttyS1).
const TEST_SCRIPT: &str = r#"#!/bin/sh
exec > /dev/ttyS0 2>&1
mode=$(sed -n 's/.*kprov\.test=\([a-z]*\).*/\1/p' /proc/cmdline)
ip link set eth0 up
ip addr add @MASTER_IP@/24 dev eth0
ip route add default via @GATEWAY@
now() { date +%s.%N; }
took() { echo "$1 $2" | awk '{printf "%.1f", $2 - $1}'; }
fail() { echo "INITVM failed: $*"; systemctl poweroff; exit 1; }
echo "INITVM images-unit=$(systemctl is-active kprov-images.service) images=$(ctr -n k8s.io images ls -q | grep -c k8s.gcr.io)"
case "$mode" in
kprov)
    t0=$(now)
    # Progress (stderr) to the console as it comes; the join command
    # (stdout, with the token) only to a file.
    { kprov init --node-name @NODE@ --advertise-address @MASTER_IP@ --kubernetes-version v1.20.2 \
        --pod-network bridge --timeout 900 2>&1 > /root/init.out; echo $? > /root/init.rc; } | sed 's/^/INITLOG /'
    rc=$(cat /root/init.rc)
    t1=$(now)
    [ $rc = 0 ] || { journalctl -u kubelet -o cat --no-pager | grep -E '^[EWF][0-9]{4}' | grep -v 'not found' | tail -n 25 | sed 's/^/KUBELET /'; ctr -n k8s.io containers ls | sed 's/^/CTR /'; fail "kprov init exited $rc"; }
    echo "INITVM kprov-init seconds=$(took $t0 $t1)"
    journalctl -o cat -u kprov-pod-network.service --no-pager | grep '^pod-network' | tail -n 3 | sed 's/^/POD-NETWORK /'
    echo "INITVM join-command-printed=$(grep -cE '^KPROV_TOKEN=[a-z0-9]{6}\.[a-z0-9]{16} kprov provision --phase all --api-server https://@MASTER_IP@:6443 --discovery-token-ca-cert-hash sha256:[0-9a-f]{64}$' /root/init.out)"
    cat /etc/kubernetes/admin.conf > /dev/ttyS1
    echo "INITVM ready"
    # The host checks the cluster from outside, then leaves a ConfigMap.
    until kubectl --kubeconfig /etc/kubernetes/admin.conf -n default get configmap kprov-test-host-done > /dev/null 2>&1; do sleep 2; done
    kprov init --node-name @NODE@ --advertise-address @MASTER_IP@ --kubernetes-version v1.20.2 \
        --pod-network bridge --timeout 600 > /root/rerun.out 2> /root/rerun.err
    rc=$?
    sed 's/^/RERUN /' /root/rerun.err
    echo "INITVM rerun rc=$rc"
    ;;
kubeadm)
    # Both PKIs in the same VM, before anything else runs.
    t0=$(now)
    kprov pki --cert-dir /root/pki-kprov --node-name @NODE@ --advertise-address @MASTER_IP@ \
        --kubernetes-version v1.20.2 > /dev/null || fail "kprov pki"
    t1=$(now)
    kubeadm init phase certs all --cert-dir /root/pki-kubeadm --apiserver-advertise-address @MASTER_IP@ \
        --kubernetes-version v1.20.2 > /dev/null || fail "kubeadm init phase certs"
    t2=$(now)
    echo "INITVM pki kprov-seconds=$(took $t0 $t1) kubeadm-seconds=$(took $t1 $t2)"
    t0=$(now)
    # Preflight needs crictl, which Debian 12 does not ship.
    kubeadm init --config /root/kubeadm.yaml --skip-phases=preflight > /root/init.out 2>&1
    rc=$?
    t1=$(now)
    grep -E '^\[(wait-control-plane|apiclient|addons|bootstrap-token)\]' /root/init.out | sed 's/^/INITLOG /'
    [ $rc = 0 ] || { tail -n 30 /root/init.out; fail "kubeadm init exited $rc"; }
    echo "INITVM kubeadm-init seconds=$(took $t0 $t1)"
    ;;
*) fail "no kprov.test= mode" ;;
esac
echo "INITVM done"
systemctl poweroff
"#;

/// kubeadm's settings for the same cluster: the systemd cgroup driver
/// kprov configures containerd with, and room to wait under TCG.
const KUBEADM_CONFIG: &str = "apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: @MASTER_IP@
  bindPort: 6443
nodeRegistration:
  name: @NODE@
  criSocket: /run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: v1.20.2
apiServer:
  timeoutForControlPlane: 20m0s
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
";

fn fill(template: &str, gateway: &str) -> String {
    template
        .replace("@MASTER_IP@", MASTER_IP)
        .replace("@GATEWAY@", gateway)
        .replace("@NODE@", NODE_NAME)
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The VM's disk: the Debian VM root, base phase from the bundle, kprov and
/// kubeadm, the test script and, for kubeadm's run only, its drop-in.
fn master_disk(dir: &Path, gateway: &str) -> VmDisk {
    let bundle = control_plane_bundle(&dir.join("bundle-work"), &[]);
    let root = dir.join("root");
    extract(debian_vm_root_tarball(), &root);
    prebake(&root, &bundle, "master");
    std::fs::remove_dir_all(dir.join("bundle-work")).unwrap();
    let bin = root.join("usr/local/bin");
    std::fs::copy(kubernetes_bin().join("kubeadm"), bin.join("kubeadm")).unwrap();
    install_boot_script(
        &root,
        "kprov-init-vm-test",
        &fill(TEST_SCRIPT, gateway),
        "kprov-images.service containerd.service",
    );
    write(
        &root.join("root/kubeadm.yaml"),
        &fill(KUBEADM_CONFIG, gateway),
        0o600,
    );
    let vm = make_disk(&root, dir, "6G");
    std::fs::remove_dir_all(&root).unwrap();
    vm
}

/// The figure after `key=` on the marker line starting with `prefix`.
fn figure(console: &str, prefix: &str, key: &str) -> f64 {
    let line = marked(console, prefix)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {prefix:?} line; console:\n{console}"));
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    value.parse().unwrap()
}

#[test]
#[ignore = "needs root, qemu, docker-registry, skopeo and the cached builds; run by tools/test.sh"]
fn kprov_init_runs_the_control_plane_as_static_pods_in_a_vm_and_kubeadm_is_measured_beside_it() {
    let dir = scratch("init-vm-");
    let mut ns = Netns::new(PREFIX);
    let gateway = ns.gateway();
    let vm = master_disk(dir.path(), &gateway);
    let kubeadm_vm = derive_disk(&vm, dir.path(), "kubeadm", &[KUBEADM_KUBELET_DROPIN]);
    let worker_vm = worker_disk(dir.path(), None);
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    ns.serve_dhcp(&dir.path().join("leases"));
    ns.serve_http(&site, 8080);
    ns.add_tap("tap0");
    ns.add_tap("tap1");
    let network = Network::Tap {
        tap: "tap0".into(),
        mac: "52:54:00:79:00:10".into(),
    };

    // kprov first.
    let private: PathBuf = dir.path().join("ttyS1.log");
    let mut running = start(
        ns.command("qemu-system-x86_64"),
        &vm,
        &Options {
            console: &dir.path().join("console-kprov.log"),
            network: &network,
            extra_cmdline: "net.ifnames=0 kprov.test=kprov",
            memory_mib: 2048,
            private_serial: Some(&private),
            full_cpu: true,
            vcpus: 2,
        },
    );
    let (console, marker) = running.wait_for(
        &["INITVM ready", "INITVM failed"],
        Duration::from_secs(1500),
    );
    let vm_to_ready = running.started().elapsed();
    assert_eq!(marker, "INITVM ready", "console:\n{console}");
    assert!(
        console.contains("INITVM images-unit=active images=6"),
        "the images were not imported; console:\n{console}"
    );
    assert!(
        console.contains("INITVM join-command-printed=1"),
        "{console}"
    );
    for progress in [
        "INITLOG kprov: waiting for the API server at https://10.79.0.10:6443 (",
        "INITLOG kprov: init phase addons",
    ] {
        assert!(
            console.contains(progress),
            "no {progress:?}; console:\n{console}"
        );
    }
    let kprov_init = figure(&console, "INITVM kprov-init", "seconds");

    let admin = dir.path().join("admin.conf");
    std::fs::copy(&private, &admin).unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cluster = Admin {
        ns: &ns,
        kubeconfig: admin.clone(),
    };
    cluster.wait_ready(NODE_NAME, Duration::from_secs(300), &|| {
        format!("master console:\n{}", running.console())
    });
    let nodes = cluster.nodes();
    println!("kubectl get nodes (from the host):\n{nodes}");
    assert!(nodes.contains(MASTER_IP), "{nodes}");
    // The kubelet posts its static pods' mirror pods to the API server
    // once it answers; their status follows a few seconds later.
    let components = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    let is_running = |pods: &str, component: &str| {
        let line = format!("{component}-{NODE_NAME} ");
        pods.lines()
            .any(|l| l.starts_with(&line) && l.contains(" Running "))
    };
    let mut pods = String::new();
    let all_running = wait_for(Duration::from_secs(180), || {
        let o = cluster.kubectl(&["-n", "kube-system", "get", "pods", "-o", "wide"]);
        pods = String::from_utf8_lossy(&o.stdout).into_owned();
        components
            .iter()
            .all(|c| is_running(&pods, c))
            .then_some(())
    });
    println!("kube-system pods:\n{pods}");
    assert!(
        all_running.is_some(),
        "not all of {components:?} are running static pods within 180 s:\n{pods}"
    );
    // A worker joins with the user-data `kprov userdata` renders.
    let join = cluster.new_token("1h");
    nocloud(
        &site,
        WORKER,
        &kprov_user_data(&join, WORKER, &dir.path().join("userdata")),
    );
    let worker_console = dir.path().join("console-worker.log");
    let mut worker = start(
        ns.command("qemu-system-x86_64"),
        &worker_vm,
        &Options {
            console: &worker_console,
            network: &Network::Tap {
                tap: "tap1".into(),
                mac: "52:54:00:79:00:21".into(),
            },
            extra_cmdline: &format!("ds=nocloud-net;s=http://{gateway}:8080/{WORKER}/"),
            memory_mib: 1536,
            private_serial: None,
            full_cpu: true,
            vcpus: 1,
        },
    );
    let (text_so_far, marker) =
        worker.wait_for(&[SETUP_DONE, SETUP_FAILED], Duration::from_secs(1200));
    assert_eq!(marker, SETUP_DONE, "worker console:\n{text_so_far}");
    cluster.wait_ready(WORKER, Duration::from_secs(600), &|| {
        format!(
            "worker console:\n{}\nmaster console:\n{}",
            std::fs::read_to_string(&worker_console).unwrap_or_default(),
            running.console()
        )
    });
    let worker_to_ready = worker.started().elapsed();
    let nodes = cluster.nodes();
    println!("kubectl get nodes (from the host):\n{nodes}");
    for node in [NODE_NAME, WORKER] {
        assert!(cluster.node_ready(node), "{node} is not Ready:\n{nodes}");
    }
    drop(worker);

    let done = cluster.kubectl(&[
        "-n",
        "default",
        "create",
        "configmap",
        "kprov-test-host-done",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let console = running.wait_poweroff(Duration::from_secs(900));
    let rerun = marked(&console, "INITVM rerun")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no re-run; console:\n{console}"))
        .to_string();
    assert!(
        rerun == "INITVM rerun rc=0",
        "a second kprov init on a working master failed: {rerun}\nconsole:\n{console}"
    );
    let rerun_lines = marked(&console, "RERUN ");
    let changes: Vec<&str> = rerun_lines
        .iter()
        .copied()
        .filter(|l| !l.contains("nothing changed") && !l.contains(" unchanged "))
        .filter(|l| {
            ["created", "changed", "updated", "wrote", "replaced"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        changes.is_empty() && rerun_lines.iter().any(|l| l.contains("nothing changed")),
        "a second kprov init on a working master changed something: {changes:?}\n{}",
        rerun_lines.join("\n")
    );

    // kubeadm on a copy of the same disk image.
    let mut running = start(
        ns.command("qemu-system-x86_64"),
        &kubeadm_vm,
        &Options {
            console: &dir.path().join("console-kubeadm.log"),
            network: &network,
            extra_cmdline: "net.ifnames=0 kprov.test=kubeadm",
            memory_mib: 2048,
            private_serial: None,
            full_cpu: true,
            vcpus: 2,
        },
    );
    let (console, marker) =
        running.wait_for(&["INITVM done", "INITVM failed"], Duration::from_secs(1500));
    assert_eq!(marker, "INITVM done", "console:\n{console}");
    let kubeadm_init = figure(&console, "INITVM kubeadm-init", "seconds");
    let pki_kprov = figure(&console, "INITVM pki", "kprov-seconds");
    let pki_kubeadm = figure(&console, "INITVM pki", "kubeadm-seconds");

    bench(&format!(
        "init VM (TCG, 2 vCPUs): kprov init {kprov_init:.1} s, kubeadm init {kubeadm_init:.1} s \
         (ratio {:.2}; same images, same disk image); VM start to kprov's control plane ready {:.0} s",
        kprov_init / kubeadm_init,
        vm_to_ready.as_secs_f64()
    ));
    bench(&format!(
        "cluster VMs (TCG, 1 vCPU each): worker VM start to Ready in the kprov init cluster {:.0} s",
        worker_to_ready.as_secs_f64()
    ));
    bench(&format!(
        "init VM PKI (RSA 2048): kprov pki {pki_kprov:.1} s, kubeadm init phase certs all {pki_kubeadm:.1} s"
    ));
}
