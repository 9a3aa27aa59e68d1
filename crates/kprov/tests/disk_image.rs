//! `kprov image build`: the disk it makes is read back with the real tools
//! (sfdisk, zstd, mtools, debugfs), built twice it is the same, bad input
//! leaves nothing behind, and the image made from the Debian VM root boots
//! in qemu (SeaBIOS, SYSLINUX from the image, no -kernel) to multi-user
//! after `kprov stage2` has installed it from a real HTTP server. The
//! stage2 initrd names what is missing; and end to end, a blank VM
//! PXE-boots from `kprov netboot serve`, stage2 installs a prebaked node
//! image, the VM boots its disk, cloud-init takes its user-data from
//! netboot through the seed stage2 wrote, and the node joins a control
//! plane made by `kprov init` and is Ready.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::kprov_user_data;
use common::controlplane::{text, ControlPlane};
use common::sh;
use kprov_testkit::http::FileServer;

/// A root with what the build looks for (an init, a kernel and initrd in
/// /boot) and files to find again; it does not boot.
fn small_root(root: &Path) {
    for dir in ["boot", "sbin", "etc", "usr/lib/systemd"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("usr/lib/systemd/systemd"), "not a real init").unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/systemd", root.join("sbin/init")).unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), "old kernel").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-9-amd64"), "old initrd").unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-10-amd64"), "new kernel").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-10-amd64"), "new initrd").unwrap();
    std::fs::write(root.join("etc/hostname"), "image-test\n").unwrap();
}

fn build(root: &Path, output: &Path, extra: &[&str]) -> common::Run {
    let root = root.display().to_string();
    let output = output.display().to_string();
    let mut args = vec!["image", "build", "--root", &root, "--output", &output];
    args.extend_from_slice(extra);
    common::kprov(&args, &[])
}

fn manifest(output: &Path) -> serde_json::Value {
    let path = format!("{}.json", output.display());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(sh(cmd).stdout).unwrap()
}

#[test]
#[ignore = "needs dosfstools, mtools, syslinux and fdisk (tools/install-deps.sh vm)"]
fn an_image_is_a_gpt_disk_holding_the_kernel_and_the_root_and_is_the_same_when_built_again() {
    let dir = common::scratch("disk-image-");
    let root = dir.path().join("root");
    small_root(&root);
    let output = dir.path().join("node.img.zst");
    let run = build(
        &root,
        &output,
        &["--size", "1300M", "--kernel-arg", "quiet"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("kernel 6.1.0-10-amd64"),
        "{}",
        run.stderr
    );
    let first = manifest(&output);
    assert_eq!(first["image"], "node.img.zst");
    assert_eq!(
        first["compressed"]["sha256"].as_str().unwrap(),
        common::sha256_hex(&output)
    );
    assert_eq!(
        first["compressed"]["size"].as_u64().unwrap(),
        std::fs::metadata(&output).unwrap().len()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&output).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // zstd decompresses it to the raw disk the manifest describes.
    let raw = dir.path().join("disk.raw");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw)
        .arg(&output));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1300 << 20);
    assert_eq!(first["raw"]["size"].as_u64().unwrap(), 1300 << 20);
    assert_eq!(
        first["raw"]["sha256"].as_str().unwrap(),
        common::sha256_hex(&raw)
    );

    // sfdisk reads both partitions from the tables kprov wrote.
    let table: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    // sfdisk -V checks both headers, their CRCs and the backup's place.
    let verify = Command::new("sfdisk").arg("-V").arg(&raw).output().unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let root_uuid = parts[1]["uuid"].as_str().unwrap().to_lowercase();
    let boot_offset = parts[0]["start"].as_u64().unwrap() * 512;
    let root_offset = parts[1]["start"].as_u64().unwrap() * 512;

    // The boot partition: the newest kernel, SYSLINUX, its configuration
    // naming the root partition.
    let fat = format!("{}@@{boot_offset}", raw.display());
    let listing = stdout(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-a", "-b", "-i", &fat, "::/"]),
    );
    for file in [
        "vmlinuz",
        "initrd.img",
        "syslinux.cfg",
        "ldlinux.sys",
        "ldlinux.c32",
        "meta-data",
        "user-data",
    ] {
        assert!(listing.contains(&format!("::/{file}")), "{listing}");
    }
    // cloud-init's NoCloud finds the boot partition by its label, and the
    // manifest's seed slot is where stage2 finds the meta-data file's bytes.
    let label = stdout(
        Command::new("mlabel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-i", &fat, "::"]),
    );
    assert_eq!(label.trim(), "Volume label is CIDATA", "{label}");
    let meta_data = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/meta-data",
    ]));
    assert!(
        meta_data.starts_with("# kprov: this image is not seeded"),
        "{meta_data}"
    );
    let slot = &first["seed"];
    let (slot_offset, slot_size) = (
        slot["offset"].as_u64().unwrap() as usize,
        slot["size"].as_u64().unwrap() as usize,
    );
    assert_eq!(slot_size, meta_data.len(), "{first}");
    let raw_bytes = std::fs::read(&raw).unwrap();
    assert!(
        raw_bytes[slot_offset..slot_offset + slot_size] == *meta_data.as_bytes(),
        "the seed slot {slot} is not the meta-data file's bytes"
    );
    let kernel = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/vmlinuz",
    ]));
    assert_eq!(kernel, "new kernel");
    let config = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/syslinux.cfg",
    ]));
    assert!(
        config.contains(&format!("APPEND root=PARTUUID={root_uuid} rw quiet")),
        "{config}"
    );

    // The root partition: ext4 with the root's files.
    let ext4 = dir.path().join("root.ext4");
    sh(Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", ext4.display()))
        .args(["bs=1M", "status=none", "conv=sparse"])
        .arg(format!("skip={}", root_offset >> 20)));
    let hostname = stdout(
        Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&ext4),
    );
    assert_eq!(hostname, "image-test\n");

    // Built again from the same root: the same partition tables and boot
    // partition, byte for byte. (The root filesystem can differ in the
    // access times mkfs.ext4 -d copies from files the first build read.)
    let again = dir.path().join("again.img.zst");
    let run = build(&root, &again, &["--size", "1300M", "--kernel-arg", "quiet"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(manifest(&again)["raw"]["size"], first["raw"]["size"]);
    let raw_again = dir.path().join("again.raw");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw_again)
        .arg(&again));
    let (one, two) = (
        std::fs::read(&raw).unwrap(),
        std::fs::read(&raw_again).unwrap(),
    );
    let root_start = root_offset as usize;
    let tail_start = one.len() - (1 << 20);
    assert!(
        one[..root_start] == two[..root_start],
        "head or boot partition differ"
    );
    assert!(one[tail_start..] == two[tail_start..], "tail differs");
}

#[test]
fn bad_input_is_refused_by_name_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    small_root(&root);
    // 3 MiB of files: more than the root partition of a 260 MiB disk.
    std::fs::write(root.join("etc/data"), vec![7u8; 3 << 20]).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let output = out.join("node.img.zst");
    let root_text = root.display().to_string();

    let no_kernel = dir.path().join("no-kernel");
    small_root(&no_kernel);
    for name in ["initrd.img-6.1.0-9-amd64", "initrd.img-6.1.0-10-amd64"] {
        std::fs::remove_file(no_kernel.join("boot").join(name)).unwrap();
    }
    let cases: Vec<(common::Run, String)> = vec![
        (
            build(&no_kernel, &output, &[]),
            format!(
                "root {}: /boot has no vmlinuz-VERSION with an initrd.img-VERSION",
                no_kernel.display()
            ),
        ),
        (
            build(&dir.path().join("missing"), &output, &[]),
            "missing: cannot be read".to_string(),
        ),
        (
            build(&root, &output, &["--size", "260M"]),
            format!("--size 260 MiB is too small for root {root_text}: its files take 4 MiB"),
        ),
        (
            build(&root, &output, &["--size", "4T"]),
            "disk size \"4T\": expected a whole number of MiB or GiB".to_string(),
        ),
        (
            build(&root, &output, &["--kernel-arg", "a b"]),
            "kernel argument \"a b\": expected one word".to_string(),
        ),
    ];
    for (run, expected) in cases {
        assert_ne!(run.code, Some(0), "{}", run.stderr);
        assert!(
            run.stderr.contains(&expected),
            "want {expected:?} in:\n{}",
            run.stderr
        );
    }
    // A dry run prints the plan and writes nothing either.
    let run = build(&root, &output, &["--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("dry run: nothing written"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("root partition 1024 MiB"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

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
#[ignore = "needs root, qemu (TCG), ipxe-qemu, the Debian cloud root, the Kubernetes build and the static release kprov"]
fn a_blank_vm_netboots_stage2_installs_the_image_boots_its_disk_takes_its_user_data_from_netboot_and_joins_as_a_ready_node(
) {
    const MAC: &str = "52:54:00:dd:01:01";
    const NODE: &str = "metal1";
    let dir = common::scratch("stage2-vm-");
    let d = dir.path();
    for sub in ["machines", "tftp", "http/stage2", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // The worker root the join VM test uses (the cloud root: cloud-init,
    // which finds the image's CIDATA boot partition and the seed stage2
    // wrote into it; prebaked by `kprov provision --phase base --root`).
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

    // The control plane (`kprov init`, processes in a network namespace)
    // and, on its bridge, the netboot server; the Machine's user-data is
    // `kprov userdata`'s join with a fresh token and the pinned CA.
    let mut cp = ControlPlane::start("10.79.0");
    for phase in ["bootstrap-token", "addons"] {
        let o = cp.init_phase(phase);
        assert!(o.status.success(), "init phase {phase}: {}", text(&o));
    }
    let join = cp.admin().new_token("2h");
    let user_data = kprov_user_data(&join, NODE, &d.join("userdata"));
    let user_data: String = user_data.lines().map(|l| format!("    {l}\n")).collect();
    std::fs::write(
        d.join("machines/metal1.yaml"),
        format!(
            "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata: {{name: metal1}}\nspec:\n  macAddress: {MAC}\n  ipAddress: 10.79.0.31\n  hostname: {NODE}\n  boot: {{image: node.img.zst}}\n  userData: |\n{user_data}"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("netboot.yaml"),
        "mode: full\ninterface: br0\nserverAddress: 10.79.0.1\nsubnet: 10.79.0.0/24\nmachinesDir: machines\ntftpRoot: tftp\nhttpRoot: http\nstateDir: state\nports: {http: 8080}\nstage2: {kernel: stage2/vmlinuz, initrd: stage2/stage2.initrd, cmdline: console=ttyS0 kprov.on-failure=poweroff}\n",
    )
    .unwrap();
    std::fs::copy("/usr/lib/ipxe/undionly.kpxe", d.join("tftp/undionly.kpxe")).unwrap();

    cp.ns.add_tap("tap0");
    let log = d.join("server.log");
    let server = cp.ns.serve_netboot(&d.join("netboot.yaml"), &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
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
        cp.ns.command("qemu-system-x86_64"),
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
        "kprov: stage2: eth0: 10.79.0.31/24 from DHCP server 10.79.0.1",
        &format!("kprov: stage2: /dev/vda installed: {raw_mib} MiB verified"),
        "kprov: stage2: the seed is in the image's NoCloud meta-data",
        "kprov: stage2: reported installed to the netboot server",
        "kprov: stage2: installed; rebooting into the installed system",
    ] {
        assert!(
            exited && text.contains(expected),
            "want {expected:?}; console:\n{text}\nserver log:\n{}",
            log_text()
        );
    }
    let rate = text
        .lines()
        .find(|l| l.contains(" installed: "))
        .and_then(|l| l.rsplit(", ").next())
        .unwrap_or_default()
        .trim()
        .to_string();
    common::bench(&format!(
        "stage2_vm_power_on_to_installed_seconds {install_seconds:.1} (write {rate}, TCG)"
    ));

    // Second power-on: PXE again, but the machine is installed: its script
    // says so and exits, and the BIOS boots the disk stage2 wrote; there
    // cloud-init follows the seed to the machine's user-data on netboot.
    let console = d.join("console-disk.log");
    let vm = common::vm::start_netboot_with_disk(
        cp.ns.command("qemu-system-x86_64"),
        "tap0",
        MAC,
        &console,
        Some(&disk),
    );
    let mut running = vm;
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    // Ready: the kubelet joined with the token from the user-data and the
    // node's pod network is up.
    cp.admin().wait_ready(NODE, Duration::from_secs(900), &|| {
        format!("console:\n{}\nserver log:\n{}", console_text(), log_text())
    });
    let ready_seconds = started.elapsed().as_secs_f64();
    let _ = running.kill();
    let _ = running.wait();
    let text = console_text();
    assert!(
        text.contains("installed, booting from the local disk"),
        "{text}"
    );
    assert!(text.contains("SYSLINUX"), "{text}");
    let log = log_text();
    assert!(
        log.lines().any(|l| l.contains("NoCloud document served")
            && l.contains("UserData")
            && l.contains("10.79.0.31")),
        "{log}"
    );
    common::bench(&format!(
        "stage2_vm_pxe_power_on_to_node_ready_seconds {ready_seconds:.1} (TCG, 1 vCPU; includes the install and the reboot)"
    ));
    cp.ns.stop(server);
}
