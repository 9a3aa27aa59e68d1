//! qemu VMs for tests: a root directory turned into an ext4 disk and booted
//! with its own kernel under TCG (KVM guests crash on this machine's nested
//! KVM). No network device: these VMs talk through their serial console,
//! which is written to a file the test reads after the VM powers off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::sh;

/// A bootable VM: kernel and initrd from the root, and its disk.
pub struct VmDisk {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
}

/// Copies `root`'s kernel and initrd out and makes `disk` (sparse, `size`
/// as for truncate) an ext4 filesystem holding `root`, without a loop
/// device or a partition table: the kernel mounts /dev/vda directly.
pub fn make_disk(root: &Path, dir: &Path, size: &str) -> VmDisk {
    let boot = root.join("boot");
    let find = |prefix: &str| -> PathBuf {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        names.sort();
        names
            .pop()
            .unwrap_or_else(|| panic!("no {prefix}* in {}", boot.display()))
    };
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    std::fs::copy(find("vmlinuz-"), &kernel).unwrap();
    std::fs::copy(find("initrd.img-"), &initrd).unwrap();
    let disk = dir.join("disk.raw");
    sh(Command::new("truncate").arg("-s").arg(size).arg(&disk));
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "kprov-root", "-d"])
        .arg(root)
        .arg(&disk));
    VmDisk {
        kernel,
        initrd,
        disk,
    }
}

/// Boots the VM until it powers off or reboots (qemu runs with
/// -no-reboot) and returns its console output. Kills it and panics,
/// printing the console, if it is still running after `limit`.
pub fn boot(vm: &VmDisk, console: &Path, limit: Duration) -> String {
    let _ = std::fs::remove_file(console);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,tb-size=128",
            "-cpu",
            "qemu64",
            "-smp",
            "1",
            "-m",
            "1024",
        ])
        .args([
            "-machine",
            "pc",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-no-user-config",
        ])
        .arg("-kernel")
        .arg(&vm.kernel)
        .arg("-initrd")
        .arg(&vm.initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", vm.disk.display()))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-nic", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !super::wait_bounded(&mut child, limit, |c| {
        let _ = c.kill();
    }) {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        panic!("the VM did not power off within {limit:?}; console:\n{text}");
    }
    std::fs::read_to_string(console).unwrap_or_default()
}

/// The console lines that start with `prefix`.
pub fn marked<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with(prefix))
        .collect()
}
