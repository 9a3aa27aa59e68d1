//! The disk image in qemu: the image made from the Debian VM root boots
//! (SeaBIOS, SYSLINUX from the image, no -kernel) to multi-user after
//! `kprov stage2` has installed it from a real HTTP server; the stage2
//! initrd names what is missing; and end to end (seed 002), netboot runs
//! as a pod on a master made by `kprov cluster up` (nspawn), a Machine is
//! created with `kubectl create -f`, a blank VM PXE-boots from the pod,
//! stage2 installs a prebaked node image, the VM boots its disk,
//! cloud-init takes the user-data netboot made for it (its own token)
//! through the seed stage2 wrote, and the node joins and is Ready, as is
//! its Machine.
//!
//! Tests that boot VMs live in `*_vm.rs` files: tools/test.sh runs them in
//! their own lane, one binary at a time, so that no more than two VMs run.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::image::{build, manifest};
use kprov_testkit::http::FileServer;

#[test]
#[ignore = "needs the Debian VM root, the image tools and qemu (tools/test.sh)"]
fn the_image_of_the_debian_vm_root_installed_by_stage2_boots_to_multi_user() {
    let dir = common::scratch("disk-image-vm-");
    let root = dir.path().join("root");
    common::extract(common::debian_vm_root_tarball(), &root);
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let output = site.join("node.img.zst");
    let run = build(&root, &output, &["--kernel-arg", "console=ttyS0,115200"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    println!("{}", run.stderr.lines().last().unwrap_or_default());
    std::fs::remove_dir_all(&root).unwrap();

    // stage2 installs it from a real HTTP server onto a bigger disk.
    let server = FileServer::start(&site).unwrap();
    let disk = dir.path().join("disk.raw");
    let raw_size = manifest(&output)["raw"]["size"].as_u64().unwrap();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(raw_size + (256 << 20))
        .unwrap();
    let manifest_url = format!("{}/node.img.zst.json", server.url());
    let run = common::kprov(
        &[
            "stage2",
            "--manifest",
            &manifest_url,
            "--disk",
            &disk.display().to_string(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // SeaBIOS runs the image's MBR code, which starts SYSLINUX from the
    // boot partition, which boots the kernel with the root by PARTUUID.
    let vm = common::vm::VmDisk::bootable(disk);
    let console = dir.path().join("console.log");
    let (text, _) = common::vm::boot_until(
        Command::new("qemu-system-x86_64"),
        &vm,
        &console,
        &common::vm::Network::None,
        "",
        &["Multi-User System"],
        Duration::from_secs(300),
    );
    assert!(text.contains("SYSLINUX"), "{text}");
    assert!(!text.contains("emergency mode"), "{text}");
}

#[test]
#[ignore = "needs the Debian VM root, the static release kprov and qemu (tools/test.sh)"]
fn the_stage2_initrd_runs_kprov_as_init_loads_the_modules_finds_the_disk_and_names_what_is_missing()
{
    let dir = common::scratch("stage2-initrd-");
    let root = dir.path().join("root");
    common::extract(common::debian_vm_root_tarball(), &root);
    let initrd = dir.path().join("stage2.initrd");
    let kprov = common::kprov_release_bin().display().to_string();
    let run = common::kprov(
        &[
            "initrd",
            "build",
            "--root",
            &root.display().to_string(),
            "--output",
            &initrd.display().to_string(),
            "--kprov",
            &kprov,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    println!("{}", run.stderr.trim());
    let kernel = run
        .stderr
        .rsplit("boot it with ")
        .next()
        .unwrap()
        .trim()
        .to_string();

    // A machine with a blank disk and no NIC: stage2 comes up as PID 1,
    // loads the virtio modules, finds the disk, and stops at the missing
    // interface with the cause on the console, then powers off as told.
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let vm = common::vm::VmDisk {
        kernel: Some(common::vm::DirectKernel {
            kernel: kernel.into(),
            initrd: initrd.clone(),
        }),
        disk: disk.clone(),
    };
    let console = dir.path().join("console.log");
    let running = common::vm::start(
        Command::new("qemu-system-x86_64"),
        &vm,
        &common::vm::Options {
            console: &console,
            extra_cmdline: "kprov.manifest=http://10.0.0.1:8080/files/node.img.zst.json kprov.on-failure=poweroff",
            ..Default::default()
        },
    );
    let text = running.wait_poweroff(Duration::from_secs(240));
    for expected in [
        "kernel modules loaded",
        "kprov: stage2: disk /dev/vda (2048 MiB)",
        "kprov: stage2: failed: no network interface after 30 s (is its driver in the initrd?",
        "kprov: stage2: powering off (kprov.on-failure=poweroff)",
    ] {
        assert!(
            text.contains(expected),
            "want {expected:?} on the console:\n{text}"
        );
    }
    assert!(!text.contains("failed to load"), "{text}");
    // Nothing was written: the disk is still all holes.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&disk).unwrap().blocks(), 0);
}

#[test]
#[ignore = "needs root, qemu (TCG), ipxe-qemu, systemd-nspawn, the Debian roots, the Kubernetes build and the static release kprov"]
fn seed_002_a_blank_vm_pxe_boots_from_netboot_running_as_a_pod_installs_its_image_and_joins_with_the_join_data_netboot_made(
) {
    use common::nspawn::{
        import_kprov_image, netboot_deploy, netboot_logs, node_image, poll, run_ok, site,
        token_descriptions, wait_netboot_ready, ClusterCli, Teardown,
    };
    use kprov_cluster::workflow::kubectl;
    use kprov_cluster::{ClusterName, Target};
    const MAC: &str = "52:54:00:dd:01:01";
    const NODE: &str = "metal1";
    const ADDRESS: &str = "10.79.9.50";
    let (ns, dir, machines_dir, target) = site("10.79.0", "seed-002-");
    let d = dir.path();
    for sub in ["http/stage2", "tftp"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // The worker root the join VM test uses (the cloud root: cloud-init,
    // which finds the image's CIDATA boot partition and the seed stage2
    // wrote into it; prebaked by `kprov provision --phase base --root`),
    // built into an image, and the stage2 initrd from its kernel.
    let root = common::cluster::worker_root(d, None);
    // No login prompt on the serial line: its hangup would cut cloud-init's
    // output off the console.
    std::os::unix::fs::symlink(
        "/dev/null",
        root.join("etc/systemd/system/serial-getty@ttyS0.service"),
    )
    .unwrap();
    let run = build(
        &root,
        &d.join("http/node.img.zst"),
        &["--kernel-arg", "console=ttyS0,115200"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let kprov = common::kprov_release_bin().display().to_string();
    let initrd = d.join("http/stage2/stage2.initrd");
    let run = common::kprov(
        &[
            "initrd",
            "build",
            "--root",
            root.to_str().unwrap(),
            "--output",
            initrd.to_str().unwrap(),
            "--kprov",
            &kprov,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let kernel = run.stderr.rsplit("boot it with ").next().unwrap().trim();
    std::fs::copy(kernel, d.join("http/stage2/vmlinuz")).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::copy("/usr/lib/ipxe/undionly.kpxe", d.join("tftp/undionly.kpxe")).unwrap();

    // The first node: a master made by `kprov cluster up` (an nspawn
    // machine; `kprov init` inside), on the cluster network the VM joins.
    let image = node_image();
    let kubeconfig = d.join("kube").join("admin.conf");
    let cluster: ClusterName = format!("s{}", std::process::id()).parse().unwrap();
    let _teardown = Teardown {
        target: &target,
        cluster: cluster.clone(),
        armed: true,
    };
    let cli = ClusterCli::new(
        &cluster,
        &machines_dir,
        &ns.name,
        "10.79.9.1/24",
        &kubeconfig,
    );
    let (master, master_ip) = cli.up_one_master(&target, &cluster, &image);
    let on_master = |args: &[&str]| run_ok(&target, &master, &kubectl(args));

    // Netboot as a pod on it: the image with the static kprov, the files
    // it serves in its data directory, deployed with `kprov netboot
    // deploy`; its join data come from the cluster (no user-data here).
    import_kprov_image(&target, &master, d);
    for (file, mode) in [
        ("http/node.img.zst", 0o644),
        ("http/node.img.zst.json", 0o644),
        ("http/stage2/vmlinuz", 0o644),
        ("http/stage2/stage2.initrd", 0o644),
        ("tftp/undionly.kpxe", 0o644),
    ] {
        target
            .copy_in(
                &master,
                &d.join(file),
                &Path::new("/var/lib/kprov/netboot").join(file),
                mode,
            )
            .unwrap();
    }
    let config = d.join("netboot.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: full\ninterface: eth0\nserverAddress: {master_ip}\nsubnet: 10.79.9.0/24\n\
             tftpRoot: /var/lib/kprov/netboot/tftp\nhttpRoot: /var/lib/kprov/netboot/http\n\
             stateDir: /var/lib/kprov/netboot/state\nports: {{http: 8080}}\n\
             stage2: {{kernel: stage2/vmlinuz, initrd: stage2/stage2.initrd, cmdline: console=ttyS0 kprov.on-failure=poweroff}}\n\
             join:\n  provision: {{kubelet-version: v1.20.2}}\n"
        ),
    )
    .unwrap();
    println!("{}", netboot_deploy(&ns, &config, &kubeconfig));
    wait_netboot_ready(&target, &master);

    // Seed 002: `kubectl create -f` a Machine (MAC, IP, role worker, boot
    // image), and power on a blank-disk VM on the cluster's network.
    let machine = d.join("metal1.yaml");
    std::fs::write(
        &machine,
        format!(
            "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata: {{name: metal1}}\nspec:\n  macAddress: {MAC}\n  ipAddress: {ADDRESS}\n  hostname: {NODE}\n  role: worker\n  boot: {{image: node.img.zst}}\n"
        ),
    )
    .unwrap();
    target
        .copy_in(&master, &machine, Path::new("/root/metal1.yaml"), 0o644)
        .unwrap();
    on_master(&["create", "-f", "/root/metal1.yaml"]);
    let bridge = kprov_cluster::network::bridge_name(&cluster);
    ns.add_tap_on(&bridge, "tap0");
    let log_text = || netboot_logs(&target, &master);
    let wait = |limit: Duration, done: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    };

    // First power-on: a blank disk, so PXE; the script boots stage2, which
    // installs the image, reports it and reboots (qemu runs -no-reboot,
    // so the reboot ends this qemu).
    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let console = d.join("console-install.log");
    let started = std::time::Instant::now();
    let vm = std::cell::RefCell::new(common::vm::start_netboot_with_disk(
        ns.command("qemu-system-x86_64"),
        "tap0",
        MAC,
        &console,
        Some(&disk),
    ));
    let exited = wait(Duration::from_secs(900), &|| {
        vm.borrow_mut().try_wait().unwrap().is_some()
            || std::fs::read_to_string(&console)
                .unwrap_or_default()
                .contains("kprov: stage2: failed")
    });
    let _ = vm.borrow_mut().kill();
    let _ = vm.borrow_mut().wait();
    let install_seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let raw_mib = manifest(&d.join("http/node.img.zst"))["raw"]["size"]
        .as_u64()
        .unwrap()
        >> 20;
    for expected in [
        &format!("kprov: stage2: eth0: {ADDRESS}/24 from DHCP server {master_ip}"),
        &format!("kprov: stage2: /dev/vda installed: {raw_mib} MiB verified"),
        "kprov: stage2: the seed is in the image's NoCloud meta-data",
        "kprov: stage2: reported installed to the netboot server",
        "kprov: stage2: installed; rebooting into the installed system",
    ] {
        assert!(
            exited && text.contains(expected),
            "want {expected:?}; console:\n{text}\nnetboot's log:\n{}",
            log_text()
        );
    }
    let phase = |name: &str| on_master(&["get", "machine", name, "-o", "jsonpath={.status.phase}"]);
    let installed = poll(Duration::from_secs(20), || {
        (phase("metal1") == "Installed").then_some(())
    });
    assert!(
        installed.is_some(),
        "metal1's phase: {}\n{}",
        phase("metal1"),
        log_text()
    );
    let rate = text
        .lines()
        .find(|l| l.contains(" installed: "))
        .and_then(|l| l.rsplit(", ").next())
        .unwrap_or_default()
        .trim()
        .to_string();
    common::bench(&format!(
        "stage2_vm_power_on_to_installed_seconds {install_seconds:.1} (write {rate}, TCG; netboot in a pod)"
    ));

    // Second power-on: PXE again, but the machine is installed: its script
    // says so and exits, and the BIOS boots the disk stage2 wrote; there
    // cloud-init follows the seed to the user-data netboot made (its own
    // token, kprov fetched from netboot), and the node joins.
    let console = d.join("console-disk.log");
    let mut running = common::vm::start_netboot_with_disk(
        ns.command("qemu-system-x86_64"),
        "tap0",
        MAC,
        &console,
        Some(&disk),
    );
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    let ready = poll(Duration::from_secs(900), || {
        let out = target
            .run(
                &master,
                &kubectl(&[
                    "get",
                    "node",
                    NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]),
            )
            .ok()?;
        (out.stdout_text() == "True").then_some(())
    });
    let ready_seconds = started.elapsed().as_secs_f64();
    if ready.is_none() {
        let _ = running.kill();
        let _ = running.wait();
        panic!(
            "{NODE} never Ready; console:\n{}\nnetboot's log:\n{}\nnodes:\n{}",
            console_text(),
            log_text(),
            on_master(&["get", "nodes", "-o", "wide"])
        );
    }
    // `kubectl get machines` says Ready; its token is gone.
    let machine_ready = poll(Duration::from_secs(30), || {
        (phase("metal1") == "Ready").then_some(())
    });
    let tokens = poll(Duration::from_secs(30), || {
        let out = token_descriptions(&target, &master);
        // netboot's description, base64: "kprov netboot: joins Machine ..."
        (!out.contains("a3Byb3YgbmV0Ym9vdDog")).then_some(())
    });
    let _ = running.kill();
    let _ = running.wait();
    println!("{}", on_master(&["get", "machines", "-o", "wide"]));
    println!("{}", on_master(&["get", "nodes", "-o", "wide"]));
    assert!(machine_ready.is_some(), "{}", log_text());
    assert!(
        tokens.is_some(),
        "metal1's token outlived its Ready node:\n{}",
        log_text()
    );
    let text = console_text();
    assert!(
        text.contains("installed, booting from the local disk"),
        "{text}"
    );
    let log = log_text();
    assert!(
        log.lines().any(|l| l.contains("NoCloud document served")
            && l.contains("UserData")
            && l.contains(ADDRESS)),
        "{log}"
    );
    common::bench(&format!(
        "stage2_vm_pxe_power_on_to_node_ready_seconds {ready_seconds:.1} (TCG, 1 vCPU; includes the install and the reboot; netboot in a pod of an nspawn master)"
    ));
    let down = cli.run("down", &[]);
    assert_eq!(down.code, Some(0), "{}", down.stderr);
}

/// Runs in the benchmark VM once it is up: both writers, three times each, from
/// the HTTP server on the host's bridge onto the VM's second disk, with
/// the times on the console.
const BENCH_SCRIPT: &str = r#"#!/bin/sh
exec > /dev/ttyS0 2>&1
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
ip link set "$nic" up
ip addr add @ADDRESS@/24 dev "$nic"
site=http://@GATEWAY@:8080
i=0
until curl -sf -o /dev/null "$site/node.img.zst.json"; do
    i=$((i + 1))
    if [ $i -gt 60 ]; then echo "BENCHVM failed: no HTTP server at $site"; systemctl poweroff; exit 1; fi
    sleep 1
done
echo "BENCHVM cpus with sha_ni: $(grep -c -w sha_ni /proc/cpuinfo)"
now() { date +%s.%N; }
for round in 1 2 3; do
    t0=$(now)
    kprov stage2 --manifest "$site/node.img.zst.json" --disk /dev/vdb > /root/stage2.log 2>&1 ||
        { echo "BENCHVM failed: kprov stage2"; tail -n 5 /root/stage2.log; }
    t1=$(now)
    curl -sSf "$site/node.img.zst" | zstd -d -q | dd of=/dev/vdb bs=1M conv=fsync status=none ||
        echo "BENCHVM failed: curl | zstd -d | dd"
    t2=$(now)
    echo "BENCHVM round $round $(awk "BEGIN {printf \"%.3f %.3f\", $t1 - $t0, $t2 - $t1}")"
done
echo "BENCHVM done"
systemctl poweroff
"#;

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_stage2_in_a_vm_against_curl_zstd_dd_onto_the_same_disk() {
    // The issue's "same VM, same disk": a Debian VM (the cloud root, with
    // curl; zstd copied from this host, same release) with a second
    // virtio disk, both writers fetching the same image from an HTTP
    // server on the host's bridge.
    const RAW: usize = 256 << 20;
    const PREFIX: &str = "10.88.0";
    let dir = common::scratch("bench-stage2-vm-");
    let d = dir.path();
    let site = d.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let compressed = common::image::publish(&site, &common::image::node_like(RAW));

    let root = d.join("root");
    common::extract(common::debian_cloud_root_tarball(), &root);
    for (from, to) in [
        (common::kprov_release_bin(), "usr/local/bin/kprov"),
        (std::path::Path::new("/usr/bin/zstd"), "usr/local/bin/zstd"),
    ] {
        std::fs::copy(from, root.join(to)).unwrap();
    }
    let script = BENCH_SCRIPT
        .replace("@ADDRESS@", &format!("{PREFIX}.2"))
        .replace("@GATEWAY@", &format!("{PREFIX}.1"));
    common::vm::install_boot_script(&root, "kprov-bench", &script, "");
    let vm = common::vm::make_disk(&root, d, "3G");
    std::fs::remove_dir_all(&root).unwrap();
    let data = d.join("data.raw");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(RAW as u64 + (64 << 20))
        .unwrap();

    let mut ns = common::netns::Netns::new(PREFIX);
    ns.add_tap("tap0");
    ns.serve_http(&site, 8080);
    let console = d.join("console.log");
    let vcpus = 2;
    let mut running = common::vm::start(
        ns.command("qemu-system-x86_64"),
        &vm,
        &common::vm::Options {
            console: &console,
            network: &common::vm::Network::Tap {
                tap: "tap0".into(),
                mac: "52:54:00:88:00:02".into(),
            },
            extra_cmdline: "cloud-init=disabled",
            memory_mib: 1024,
            full_cpu: true,
            vcpus,
            data_disk: Some(&data),
            ..Default::default()
        },
    );
    let (text, marker) = running.wait_for(
        &["BENCHVM done", "BENCHVM failed"],
        Duration::from_secs(900),
    );
    assert_eq!(marker, "BENCHVM done", "console:\n{text}");
    let rounds: Vec<(f64, f64)> = common::vm::marked(&text, "BENCHVM round ")
        .iter()
        .map(|line| {
            let fields: Vec<f64> = line
                .split_whitespace()
                .skip(3)
                .map(|f| f.parse().unwrap())
                .collect();
            (fields[0], fields[1])
        })
        .collect();
    assert_eq!(rounds.len(), 3, "console:\n{text}");
    let best = |pick: fn(&(f64, f64)) -> f64| rounds.iter().map(pick).fold(f64::INFINITY, f64::min);
    let (stage2, peer) = (best(|r| r.0), best(|r| r.1));
    let sha_extensions = common::vm::marked(&text, "BENCHVM cpus with sha_ni: ")
        .first()
        .is_some_and(|line| !line.ends_with(": 0"));
    let hashing = if sha_extensions {
        "SHA extensions"
    } else {
        "no SHA extensions: sha256 in software"
    };
    common::image::bench_against_curl_zstd_dd(
        &format!(
            "in a VM (TCG, {vcpus} vCPUs, {hashing}) onto its second virtio disk, from HTTP on the host's bridge, best of 3"
        ),
        RAW,
        compressed,
        stage2,
        peer,
    );
}
