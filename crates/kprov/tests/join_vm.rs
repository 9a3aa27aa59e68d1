//! The join end to end, all real: a v1.20.2 control plane from `kprov init`
//! (processes in a network namespace, common::controlplane, with the
//! `bridge` pod network) and a worker VM (qemu, TCG, Debian 12 with
//! cloud-init) prebaked by `kprov provision --phase base --root` from a
//! bundle that also ships kube-proxy and busybox. `kprov userdata` gives it
//! its join over NoCloud; it joins with the token and the pinned CA hash.
//! Then: the node is Ready, a busybox pod runs on it, `kubectl logs` and
//! `kubectl exec` work through its kubelet; containerd stopped in the VM
//! is restarted by kprov's health check; `kprov reset` and a second join
//! bring the node back. A second VM from the same disk image, booted once
//! the first is off, joins with kubeadm v1.20.2, for the benchmark, with
//! what kprov's upload-config phase put in the cluster.
//!
//! Needs root, qemu, dnsmasq, docker-registry, skopeo and many minutes:
//! `#[ignore]`d, run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{
    kprov_user_data, nocloud, worker_disk, Admin, JoinCommand, BUSYBOX, JOIN_STARTS, SETUP_DONE,
    SETUP_FAILED,
};
use common::controlplane::{text, wait_for, ControlPlane};
use common::vm::{derive_disk, marked, start, Network, Options, KUBEADM_KUBELET_DROPIN};
use common::{bench, scratch};

const PREFIX: &str = "10.81.0";
const WORKER: &str = "worker-1";
const KUBEADM_WORKER: &str = "worker-kubeadm";

/// Runs in the worker after cloud-init; with `kprov.test=kprov` on the
/// kernel command line it reports on the join and then goes through the
/// health check, reset and rejoin steps as the host signals them (files
/// it serves under /signal/).
const TEST_SCRIPT: &str = r#"#!/bin/sh
exec > /dev/ttyS0 2>&1
grep -q 'kprov.test=kprov' /proc/cmdline || exit 0
site=http://@GATEWAY@:8080/signal
wait_signal() {
    i=0
    until curl -sf "$site/$1" -o "/root/signal-$1"; do
        i=$((i + 1))
        if [ $i -gt 900 ]; then echo "JOINVM failed: no signal $1 from the host"; systemctl poweroff; exit 1; fi
        sleep 1
    done
}
present() { if [ -e "$1" ]; then echo present; else echo gone; fi; }
echo "JOINVM joined kubelet-conf=$(present /etc/kubernetes/kubelet.conf) kubelet=$(systemctl is-active kubelet)"

wait_signal health
systemctl stop containerd
t0=$(date +%s)
until [ "$(systemctl is-active containerd)" = active ] || [ $(($(date +%s) - t0)) -gt 180 ]; do sleep 1; done
echo "JOINVM containerd $(systemctl is-active containerd) after $(($(date +%s) - t0)) s"
journalctl -o cat -u kprov-healthcheck.service --no-pager | grep 'containerd' | grep 'restarted' | tail -n 1 | sed 's/^/JOINVM-HEALTH /'

wait_signal reset
kprov reset > /root/reset.out 2>&1
rc=$?
sed 's/^/JOINVM-RESET /' /root/reset.out
if [ "$(systemctl is-active kubelet)" != inactive ]; then
    journalctl -o short-monotonic -n 8 --no-pager -u kubelet -u kprov-healthcheck.service | sed 's/^/JOINVM-DEBUG /'
fi
echo "JOINVM reset rc=$rc kubelet=$(systemctl is-active kubelet) kubelet-conf=$(present /etc/kubernetes/kubelet.conf) bootstrap=$(present /etc/kubernetes/bootstrap-kubelet.conf) kubelet-dir=$(present /var/lib/kubelet/config.yaml) cni-conf=$(ls /etc/cni/net.d | wc -l) kubelet-bin=$(present /usr/local/bin/kubelet) containerd=$(systemctl is-active containerd)"

wait_signal rejoin
. /root/signal-rejoin
export KPROV_TOKEN
kprov provision --phase join --kubelet-version v1.20.2 --api-server "$API_SERVER" \
    --discovery-token-ca-cert-hash "$CA_HASH" > /root/rejoin.out 2>&1
rc=$?
tail -n 3 /root/rejoin.out | sed 's/^/JOINVM-REJOIN /'
echo "JOINVM rejoin rc=$rc"

wait_signal done
systemctl poweroff
"#;

/// The number of approved CSRs of `user`.
fn approved_csrs(admin: &Admin, user: &str) -> usize {
    let o = admin.kubectl(&["get", "csr", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|c| c["spec"]["username"] == user)
                .filter(|c| {
                    c["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Approved"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// What a failed wait prints: the control plane's logs and a console.
fn context(cp: &ControlPlane, console: &str) -> String {
    format!("control plane:\n{}\nconsole:\n{console}", cp.logs.dump())
}

fn signal(site: &Path, name: &str, contents: &str) {
    let dir = site.join("signal");
    std::fs::create_dir_all(&dir).unwrap();
    let temp = dir.join(format!(".{name}"));
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(temp, dir.join(name)).unwrap();
}

#[test]
#[ignore = "needs root, qemu, dnsmasq, docker-registry, skopeo and the cached builds; run by tools/test.sh"]
fn a_prebaked_vm_joins_with_its_user_data_runs_a_pod_heals_resets_and_rejoins() {
    let dir = scratch("join-vm-");
    let mut cp = ControlPlane::start(PREFIX);
    // upload-config gives kubeadm join what it reads from the cluster;
    // kprov's join reads none of it.
    for phase in ["upload-config", "bootstrap-token", "addons"] {
        let o = cp.init_phase(phase);
        assert!(o.status.success(), "init phase {phase}: {}", text(&o));
    }
    let gateway = cp.address.clone();
    let script = TEST_SCRIPT.replace("@GATEWAY@", &gateway);
    let vm = worker_disk(dir.path(), Some(("kprov-join-vm-test", &script)));
    let kubeadm_vm = derive_disk(&vm, dir.path(), "kubeadm", &[KUBEADM_KUBELET_DROPIN]);

    let site: PathBuf = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    cp.ns.add_tap("tap0");
    cp.ns.serve_dhcp(&dir.path().join("leases"));
    cp.ns.serve_http(&site, 8080);
    let admin = cp.admin();
    let join: JoinCommand = admin.new_token("2h");
    let (token, hash) = (&join.token, &join.ca_hash);
    nocloud(
        &site,
        WORKER,
        &kprov_user_data(&join, WORKER, &dir.path().join("userdata")),
    );
    let network = Network::Tap {
        tap: "tap0".into(),
        mac: "52:54:00:81:00:11".into(),
    };

    let console_path = dir.path().join("console-kprov.log");
    let mut running = start(
        cp.ns.command("qemu-system-x86_64"),
        &vm,
        &Options {
            console: &console_path,
            network: &network,
            extra_cmdline: &format!(
                "kprov.test=kprov ds=nocloud-net;s=http://{gateway}:8080/{WORKER}/"
            ),
            memory_mib: 1536,
            private_serial: None,
            full_cpu: true,
            vcpus: 1,
            data_disk: None,
        },
    );
    let console = || std::fs::read_to_string(&console_path).unwrap_or_default();
    let (text_so_far, marker) =
        running.wait_for(&[JOIN_STARTS, SETUP_FAILED], Duration::from_secs(900));
    assert_eq!(marker, JOIN_STARTS, "console:\n{text_so_far}");
    let join_started = Instant::now();
    let vm_to_join = running.started().elapsed();
    admin.wait_ready(WORKER, Duration::from_secs(600), &|| {
        context(&cp, &console())
    });
    let join_to_ready = join_started.elapsed();
    let vm_to_ready = running.started().elapsed();
    let (text_so_far, marker) =
        running.wait_for(&[SETUP_DONE, SETUP_FAILED], Duration::from_secs(300));
    assert_eq!(marker, SETUP_DONE, "console:\n{text_so_far}");
    let (text_so_far, _) = running.wait_for(&["JOINVM joined"], Duration::from_secs(300));
    assert!(
        text_so_far.contains("JOINVM joined kubelet-conf=present kubelet=active"),
        "console:\n{text_so_far}"
    );
    let nodes = admin.kubectl(&["get", "nodes", "-o", "wide"]);
    println!("{}", String::from_utf8_lossy(&nodes.stdout));

    // A pod from the bundle's busybox image, on the worker.
    let o = admin.kubectl(&[
        "run",
        "hello",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=Never",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "echo hello from a kprov node; sleep 3600",
    ]);
    assert!(o.status.success(), "kubectl run: {}", text(&o));
    let running_pod = wait_for(Duration::from_secs(300), || {
        let o = admin.kubectl(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ]);
        (String::from_utf8_lossy(&o.stdout).trim() == format!("Running {WORKER}")).then_some(())
    });
    if running_pod.is_none() {
        let o = admin.kubectl(&["describe", "pod", "hello"]);
        panic!("the pod did not run on {WORKER}: {}", text(&o));
    }
    let logs = admin.kubectl(&["logs", "hello"]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout).trim(),
        "hello from a kprov node",
        "kubectl logs: {}",
        text(&logs)
    );
    let exec = admin.kubectl(&["exec", "hello", "--", "cat", "/etc/hostname"]);
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        "hello",
        "kubectl exec: {}",
        text(&exec)
    );

    // containerd stopped: kprov's health check brings it back.
    signal(&site, "health", "");
    let (text_so_far, _) = running.wait_for(&["JOINVM containerd"], Duration::from_secs(300));
    let line = marked(&text_so_far, "JOINVM containerd")[0].to_string();
    let seconds: u64 = line
        .strip_prefix("JOINVM containerd active after ")
        .and_then(|s| s.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("containerd did not come back: {line}\n{text_so_far}"))
        .parse()
        .unwrap();
    assert!(
        seconds <= 60,
        "containerd back only after {seconds} s: {line}"
    );
    let (text_so_far, _) = running.wait_for(&["JOINVM-HEALTH "], Duration::from_secs(30));
    let health = marked(&text_so_far, "JOINVM-HEALTH")[0].to_string();
    assert!(health.contains("restarted"), "{health}");

    // kprov reset, then the same join again.
    let csrs_before = approved_csrs(&admin, &format!("system:bootstrap:{}", &token[..6]));
    signal(&site, "reset", "");
    let (text_so_far, _) = running.wait_for(&["JOINVM reset "], Duration::from_secs(300));
    let reset = marked(&text_so_far, "JOINVM reset ")[0].to_string();
    assert_eq!(
        reset,
        "JOINVM reset rc=0 kubelet=inactive kubelet-conf=gone bootstrap=gone kubelet-dir=gone cni-conf=0 kubelet-bin=present containerd=active",
        "console:\n{text_so_far}"
    );
    signal(
        &site,
        "rejoin",
        &format!(
            "KPROV_TOKEN={token}\nAPI_SERVER={}\nCA_HASH={hash}\n",
            cp.server()
        ),
    );
    let (text_so_far, _) = running.wait_for(&["JOINVM rejoin "], Duration::from_secs(600));
    assert!(
        text_so_far.contains("JOINVM rejoin rc=0"),
        "console:\n{text_so_far}"
    );
    let rejoined = wait_for(Duration::from_secs(120), || {
        (approved_csrs(&admin, &format!("system:bootstrap:{}", &token[..6])) > csrs_before)
            .then_some(())
    });
    assert!(
        rejoined.is_some(),
        "no new node certificate after the rejoin"
    );
    admin.wait_ready(WORKER, Duration::from_secs(300), &|| {
        context(&cp, &console())
    });
    signal(&site, "done", "");
    running.wait_poweroff(Duration::from_secs(300));

    // kubeadm join on a copy of the same disk image, booted once the first
    // VM is off: a VM booting beside the first one's pod, health check and
    // rejoin, with the other tests running beside this one in CI, starved
    // them past their limits. It joins when told, so that the join is
    // timed from its start as kprov's is.
    let kubeadm_join = format!(
        "kubeadm join {}:6443 --token {token} --discovery-token-ca-cert-hash {hash} \
         --node-name {KUBEADM_WORKER} --cri-socket /run/containerd/containerd.sock \
         --ignore-preflight-errors=all",
        cp.address
    );
    nocloud(
        &site,
        KUBEADM_WORKER,
        &format!(
            "#cloud-config\nruncmd:\n  - [sh, -c, \"echo JOINVM kubeadm-waiting > /dev/ttyS0; \
             until curl -sf http://{gateway}:8080/signal/kubeadm -o /dev/null; do sleep 1; done; \
             echo JOINVM kubeadm-start > /dev/ttyS0; \
             {kubeadm_join} > /root/join.log 2>&1; echo JOINVM kubeadm rc=$? > /dev/ttyS0; \
             tail -n 20 /root/join.log > /dev/ttyS0; journalctl -u kubelet -o cat --no-pager | \
             grep -E '^[EF][0-9]{{4}}' | tail -n 10 | sed 's/^/JOINVM-KUBELET /' > /dev/ttyS0\"]\n"
        ),
    );
    let kubeadm_console_path = dir.path().join("console-kubeadm.log");
    cp.ns.add_tap("tap1");
    let kubeadm_network = Network::Tap {
        tap: "tap1".into(),
        mac: "52:54:00:81:00:12".into(),
    };
    let mut kubeadm_running = start(
        cp.ns.command("qemu-system-x86_64"),
        &kubeadm_vm,
        &Options {
            console: &kubeadm_console_path,
            network: &kubeadm_network,
            extra_cmdline: &format!(
                "kprov.test=kubeadm ds=nocloud-net;s=http://{gateway}:8080/{KUBEADM_WORKER}/"
            ),
            memory_mib: 1536,
            private_serial: None,
            full_cpu: true,
            vcpus: 1,
            data_disk: None,
        },
    );
    let (text_so_far, _) =
        kubeadm_running.wait_for(&["JOINVM kubeadm-waiting"], Duration::from_secs(900));
    assert!(
        text_so_far.contains("JOINVM kubeadm-waiting"),
        "console:\n{text_so_far}"
    );
    let kubeadm_vm_to_join = kubeadm_running.started().elapsed();
    signal(&site, "kubeadm", "");
    kubeadm_running.wait_for(&["JOINVM kubeadm-start"], Duration::from_secs(120));
    let kubeadm_started = Instant::now();
    let kubeadm_console = || std::fs::read_to_string(&kubeadm_console_path).unwrap_or_default();
    admin.wait_ready(KUBEADM_WORKER, Duration::from_secs(600), &|| {
        context(&cp, &kubeadm_console())
    });
    let kubeadm_join_to_ready = kubeadm_started.elapsed();
    let kubeadm_vm_to_ready = kubeadm_vm_to_join + kubeadm_join_to_ready;
    drop(kubeadm_running);

    bench(&format!(
        "join VM (TCG, 1 vCPU): join start to node Ready: kprov {:.1} s, kubeadm {:.1} s (ratio {:.2}); \
         VM start to Ready: kprov {:.0} s, kubeadm {:.0} s (VM start to join start: {:.0} s and {:.0} s)",
        join_to_ready.as_secs_f64(),
        kubeadm_join_to_ready.as_secs_f64(),
        join_to_ready.as_secs_f64() / kubeadm_join_to_ready.as_secs_f64(),
        vm_to_ready.as_secs_f64(),
        kubeadm_vm_to_ready.as_secs_f64(),
        vm_to_join.as_secs_f64(),
        kubeadm_vm_to_join.as_secs_f64(),
    ));
    bench(&format!(
        "join VM: containerd stopped, back after {seconds} s (health check every 10 s, restart after 3 failed checks)"
    ));
}
