//! `kprov provision --phase base` on a live host: a Debian 12 VM (qemu,
//! TCG) in which kprov runs with `--root /`, so it loads kernel modules,
//! sets sysctls, turns swap off, reloads systemd and (re)starts containerd
//! and the health timer; the VM then reboots to show the settings persist.
//!
//! Needs root, qemu and minutes: `#[ignore]`d, run by `tools/test.sh`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::vm::{boot, make_disk, marked};
use common::{
    artifacts_dir, base_args, copy_tree, debian_vm_root_tarball, extract, kprov, kprov_release_bin,
    scratch, sh,
};

/// Runs in the VM at every boot; reports on the serial console.
const TEST_SCRIPT: &str = r#"#!/bin/sh
exec > /dev/ttyS0 2>&1
t=/var/lib/kprov-test
report() {
    mods=""
    for m in overlay br_netfilter; do [ -d /sys/module/$m ] && mods="$mods$m,"; done
    echo "LIVE $1 swaps=$(tail -n +2 /proc/swaps | wc -l) ip_forward=$(sysctl -n net.ipv4.ip_forward) bridge_nf=$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null || echo absent) panic=$(sysctl -n kernel.panic) overcommit=$(sysctl -n vm.overcommit_memory) modules=$mods containerd=$(systemctl is-active containerd) timer=$(systemctl is-active kprov-healthcheck.timer)"
}
provision() {
    $t/kprov provision --phase base --artifacts-dir $t/artifacts --kubelet-version v1.20.2 --arch amd64 > $t/$1.txt 2>&1
}
if [ ! -e $t/provisioned ]; then
    report before
    if ! provision run1; then echo "LIVE-FAILED first run"; cat $t/run1.txt; systemctl poweroff; exit 1; fi
    grep -E '^  (created|changed) ' $t/run1.txt | sed 's/^/LIVE-CHANGE /'
    echo "LIVE first-run $(grep ' resources: ' $t/run1.txt | tail -n 1)"
    if ! provision run2; then echo "LIVE-FAILED second run"; cat $t/run2.txt; systemctl poweroff; exit 1; fi
    echo "LIVE second-run $(grep ' resources: ' $t/run2.txt | tail -n 1) / $(tail -n 1 $t/run2.txt)"
    report after-provision
    touch $t/provisioned
    systemctl reboot
else
    report after-reboot
    systemctl poweroff
fi
"#;

const TEST_UNIT: &str = "[Unit]\nDescription=kprov live test\nAfter=multi-user.target\n\
[Service]\nType=oneshot\nExecStart=/usr/local/sbin/kprov-live-test\n\
[Install]\nWantedBy=multi-user.target\n";

#[test]
#[ignore = "needs root, qemu, the Debian archive and the cached Kubernetes build; run by tools/test.sh"]
fn a_live_host_gets_modules_sysctls_and_swap_off_now_and_after_reboot() {
    let dir = scratch("live-vm-");
    let root = dir.path().join("root");
    extract(debian_vm_root_tarball(), &root);
    // Packages first, from the host (the VM has no network): kprov stops
    // after its first resource.
    let run = kprov(
        &base_args(root.to_str().unwrap(), artifacts_dir().to_str().unwrap()),
        &[("KPROV_FAILPOINTS", "resource.applied=1")],
    );
    assert_eq!(run.code, Some(86), "{}", run.stderr);

    // What the VM runs: kprov under test (the static release binary), the artifacts, a real swap file
    // (random data: mkfs.ext4 -d would turn zeros into holes, and swapon
    // refuses files with holes), and the test script as a unit.
    let t = root.join("var/lib/kprov-test");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::copy(kprov_release_bin(), t.join("kprov")).unwrap();
    copy_tree(artifacts_dir(), &t.join("artifacts"));
    let swapfile = root.join("swapfile");
    sh(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", swapfile.display()))
        .args(["bs=1M", "count=64", "status=none"]));
    std::fs::set_permissions(&swapfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    sh(Command::new("mkswap").arg("-q").arg(&swapfile));
    let script = root.join("usr/local/sbin/kprov-live-test");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, TEST_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/kprov-live-test.service"),
        TEST_UNIT,
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/kprov-live-test.service",
        root.join("etc/systemd/system/multi-user.target.wants/kprov-live-test.service"),
    )
    .unwrap();
    // No login prompt on the serial line: agetty's vhangup would cut the
    // test script off the console.
    std::os::unix::fs::symlink(
        "/dev/null",
        root.join("etc/systemd/system/serial-getty@ttyS0.service"),
    )
    .unwrap();
    let vm = make_disk(&root, dir.path(), "3G");
    std::fs::remove_dir_all(&root).unwrap();

    let console_path = dir.path().join("console-1.log");
    let console = boot(&vm, &console_path, Duration::from_secs(600));
    let live = marked(&console, "LIVE");
    let show = || format!("markers {live:#?}\nconsole:\n{console}");
    assert!(
        !live.iter().any(|l| l.starts_with("LIVE-FAILED")),
        "{}",
        show()
    );
    assert!(
        live.contains(&"LIVE before swaps=1 ip_forward=0 bridge_nf=absent panic=-1 overcommit=0 modules=overlay, containerd=active timer=inactive"),
        "{}",
        show()
    );
    for change in [
        "LIVE-CHANGE   created      kernel module br_netfilter loaded (not loaded)",
        "LIVE-CHANGE   changed      sysctl net.ipv4.ip_forward = 1 in effect (is 0)",
        "LIVE-CHANGE   changed      no swap in use (1 swap area(s) in use)",
        "LIVE-CHANGE   changed      unit containerd.service active (/etc/containerd/config.toml changed after containerd.service started)",
    ] {
        assert!(live.contains(&change), "missing {change:?}\n{}", show());
    }
    assert!(
        live.iter()
            .any(|l| l.starts_with("LIVE first-run ") && l.ends_with(" unchanged")),
        "{}",
        show()
    );
    assert!(
        live.iter().any(|l| l.starts_with("LIVE second-run ")
            && l.contains(": 0 created, 0 changed,")
            && l.ends_with("/ kprov: nothing changed")),
        "{}",
        show()
    );
    let settled = "swaps=0 ip_forward=1 bridge_nf=1 panic=10 overcommit=1 modules=overlay,br_netfilter, containerd=active timer=active";
    assert!(
        live.contains(&format!("LIVE after-provision {settled}").as_str()),
        "{}",
        show()
    );

    let console_path = dir.path().join("console-2.log");
    let console = boot(&vm, &console_path, Duration::from_secs(300));
    let live = marked(&console, "LIVE");
    assert!(
        live.contains(&format!("LIVE after-reboot {settled}").as_str()),
        "markers {live:#?}\nconsole:\n{console}"
    );
}
