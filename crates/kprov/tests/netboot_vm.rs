//! A real PXE boot from `kprov netboot serve` alone: a diskless qemu VM
//! (TCG) on a tap in a namespace the test creates. Its virtio NIC's iPXE
//! ROM asks DHCP, gets its iPXE script's URL, fetches the script over
//! HTTP, then the kernel (the Debian VM root's) and a tiny busybox initrd
//! whose /init brings the NIC up with udhcpc, fetches its machine's
//! user-data with wget from the seed URL on its command line, prints it
//! and a marker on the serial console, and powers off. A second VM with a
//! MAC no Machine names gets no answer and never fetches anything.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::Netns;

const MAC: &str = "52:54:00:dd:00:01";
const UNKNOWN_MAC: &str = "52:54:00:dd:00:99";

/// Modules the cloud kernel needs for a virtio NIC, in load order.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "KPROV-INITRD: started"
for m in MODULES; do insmod /lib/modules/$m; done
ip link set lo up
seed=$(sed -n 's/.*kprov\.seed=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "KPROV-INITRD: seed $seed"
if udhcpc -i eth0 -n -q -t 10 -T 2 -s /udhcpc.sh && wget -q -O /user-data "${seed}user-data"; then
    echo "KPROV-USERDATA: $(tr '\n' '|' < /user-data)"
    echo "KPROV-NETBOOT-OK"
else
    echo "KPROV-NETBOOT-FAIL"
fi
poweroff -f
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew) ifconfig "$interface" "$ip" netmask "$subnet" up; echo "KPROV-INITRD: address $ip" ;;
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
esac
exit 0
"#;

/// Builds the initrd (newc cpio, via busybox cpio) and copies the kernel
/// out of the cached Debian VM root into `http`.
fn build_boot_files(work: &Path, http: &Path) {
    let root = work.join("vmroot");
    std::fs::create_dir_all(&root).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&root)
        .arg("-xf")
        .arg(common::debian_vm_root_tarball())
        .arg("--wildcards")
        .arg("./boot/vmlinuz-*");
    for m in MODULES {
        tar.arg(format!("./usr/lib/modules/*/kernel/{m}"));
    }
    common::sh(&mut tar);
    let kernel = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&kernel, http.join("vmlinuz")).unwrap();

    let initrd = work.join("initrd");
    for d in ["bin", "proc", "sys", "dev", "lib/modules"] {
        std::fs::create_dir_all(initrd.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", initrd.join("bin/busybox")).unwrap();
    let modules_dir = std::fs::read_dir(root.join("usr/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut names = Vec::new();
    for m in MODULES {
        let name = Path::new(m).file_name().unwrap().to_str().unwrap();
        std::fs::copy(
            modules_dir.join("kernel").join(m),
            initrd.join("lib/modules").join(name),
        )
        .unwrap();
        names.push(name);
    }
    std::fs::write(
        initrd.join("init"),
        INIT.replace("MODULES", &names.join(" ")),
    )
    .unwrap();
    std::fs::write(initrd.join("udhcpc.sh"), UDHCPC_SCRIPT).unwrap();
    common::sh(
        Command::new("chmod")
            .args(["755"])
            .arg(initrd.join("init"))
            .arg(initrd.join("udhcpc.sh")),
    );
    let out = http.join("initrd.img");
    common::sh(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
        initrd.display(),
        out.display()
    )));
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[test]
#[ignore = "needs root, qemu (TCG), ipxe-qemu, busybox-static and the cached Debian VM root"]
fn a_diskless_vm_pxe_boots_from_kprov_and_fetches_its_user_data_and_an_unknown_one_does_not() {
    let dir = common::scratch("netboot-vm-");
    let d = dir.path();
    for sub in ["machines", "tftp", "http", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    build_boot_files(d, &d.join("http"));
    std::fs::write(
        d.join("machines/pxe1.yaml"),
        format!(
            "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata: {{name: pxe1}}\nspec:\n  macAddress: {MAC}\n  ipAddress: 10.78.0.31\n  hostname: pxe1\n  boot:\n    kernel: vmlinuz\n    initrd: initrd.img\n    cmdline: console=ttyS0 panic=-1 rdinit=/init\n  userData: |\n    #cloud-config\n    hostname: pxe1-from-kprov\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("netboot.yaml"),
        "mode: full\ninterface: br0\nserverAddress: 10.78.0.1\nsubnet: 10.78.0.0/24\nmachinesDir: machines\ntftpRoot: tftp\nhttpRoot: http\nstateDir: state\nports: {http: 8080}\n",
    )
    .unwrap();
    std::fs::copy("/usr/lib/ipxe/undionly.kpxe", d.join("tftp/undionly.kpxe")).unwrap();

    let mut ns = Netns::new("10.78.0");
    ns.add_tap("tap0");
    let log = d.join("server.log");
    let server = ns.serve_netboot(&d.join("netboot.yaml"), &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The known machine: expected in about 30 s under TCG (iPXE also waits
    // for IPv6 router advertisements, which nothing sends here).
    let console = d.join("console-known.log");
    let started = Instant::now();
    let mut vm = common::vm::start_netboot(ns.command("qemu-system-x86_64"), "tap0", MAC, &console);
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    let finished = wait_for(Duration::from_secs(240), || {
        let t = console_text();
        t.contains("KPROV-NETBOOT-OK")
            || t.contains("KPROV-NETBOOT-FAIL")
            || vm.try_wait().unwrap().is_some()
    });
    let _ = vm.kill();
    let _ = vm.wait();
    let text = console_text();
    assert!(
        finished && text.contains("KPROV-NETBOOT-OK"),
        "the VM did not netboot; console:\n{text}\nserver log:\n{}",
        log_text()
    );
    common::bench(&format!(
        "netboot_vm_pxe_boot_seconds {:.1}",
        started.elapsed().as_secs_f64()
    ));
    assert!(
        text.contains("KPROV-USERDATA: #cloud-config|hostname: pxe1-from-kprov|"),
        "{text}"
    );
    assert!(text.contains("KPROV-INITRD: address 10.78.0.31"), "{text}");
    let server_log = log_text();
    assert!(
        server_log.contains(&format!("iPXE script served mac={MAC}")),
        "{server_log}"
    );
    assert!(
        server_log.contains(&format!("NoCloud document served mac={MAC}")),
        "{server_log}"
    );

    // An unknown MAC: the server ignores it; the VM never fetches a script.
    let console = d.join("console-unknown.log");
    let mut vm = common::vm::start_netboot(
        ns.command("qemu-system-x86_64"),
        "tap0",
        UNKNOWN_MAC,
        &console,
    );
    let ignored = wait_for(Duration::from_secs(90), || {
        log_text().contains(&format!(
            "DHCP ignored: unknown MAC and no default profile mac={UNKNOWN_MAC}"
        )) || log_text().contains(&format!("mac={UNKNOWN_MAC} from="))
            && log_text().contains("unknown MAC")
    });
    // Give it time to retry and give up; nothing may be served meanwhile.
    std::thread::sleep(Duration::from_secs(20));
    let _ = vm.kill();
    let _ = vm.wait();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let server_log = log_text();
    assert!(ignored, "the unknown VM's DHCP request never reached the server; console:\n{text}\nlog:\n{server_log}");
    assert!(
        !text.contains("KPROV-"),
        "the unknown VM booted something:\n{text}"
    );
    let about_unknown: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains(UNKNOWN_MAC))
        .collect();
    assert!(
        about_unknown.iter().all(|l| l.contains("DHCP ignored")),
        "{about_unknown:?}"
    );
    ns.stop(server);
}
