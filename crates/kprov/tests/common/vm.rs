//! qemu VMs for tests: a root directory turned into an ext4 disk and booted
//! with its own kernel under TCG (KVM guests crash on this machine's nested
//! KVM). No network device: these VMs talk through their serial console,
//! which is written to a file the test reads after the VM powers off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::sh;

/// A bootable VM: its disk, and the kernel and initrd qemu boots directly
/// (from the root) or none, when the disk boots through the firmware.
pub struct VmDisk {
    pub kernel: Option<DirectKernel>,
    pub disk: PathBuf,
}

/// A kernel and initrd qemu loads itself (`-kernel`, `-initrd`).
#[derive(Clone)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl VmDisk {
    /// A whole disk (partition table, boot loader) that SeaBIOS boots;
    /// its output and the boot loader's go to the serial console too.
    pub fn bootable(disk: PathBuf) -> Self {
        VmDisk { kernel: None, disk }
    }
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
        kernel: Some(DirectKernel { kernel, initrd }),
        disk,
    }
}

/// Boots the VM until it powers off or reboots (qemu runs with
/// -no-reboot) and returns its console output. Kills it and panics,
/// printing the console, if it is still running after `limit`.
pub fn boot(vm: &VmDisk, console: &Path, limit: Duration) -> String {
    let mut child = qemu(
        Command::new("qemu-system-x86_64"),
        vm,
        &Options {
            console,
            ..Options::default()
        },
    );
    if !super::wait_bounded(&mut child, limit, |c| {
        let _ = c.kill();
    }) {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        panic!("the VM did not power off within {limit:?}; console:\n{text}");
    }
    std::fs::read_to_string(console).unwrap_or_default()
}

/// How a VM is networked.
pub enum Network {
    /// No network device.
    None,
    /// A virtio NIC on an existing tap device, with this MAC.
    Tap { tap: String, mac: String },
}

/// Boots the VM (qemu started through `launcher`, e.g. `ip netns exec NS
/// qemu-system-x86_64`) and watches its console until a line contains one
/// of `markers`; then stops it and returns the console and the marker
/// seen. Kills it and panics, printing the console, after `limit`.
pub fn boot_until(
    launcher: Command,
    vm: &VmDisk,
    console: &Path,
    network: &Network,
    extra_cmdline: &str,
    markers: &[&str],
    limit: Duration,
) -> (String, String) {
    let mut running = start(
        launcher,
        vm,
        &Options {
            console,
            network,
            extra_cmdline,
            ..Options::default()
        },
    );
    running.wait_for(markers, limit)
}

/// How a VM is started.
pub struct Options<'a> {
    /// Where the serial console (ttyS0) is written.
    pub console: &'a Path,
    pub network: &'a Network,
    /// Appended to the kernel command line.
    pub extra_cmdline: &'a str,
    pub memory_mib: u32,
    /// Where a second serial port (ttyS1) is written, for what must not go
    /// to the console, such as credentials.
    pub private_serial: Option<&'a Path>,
    /// For VMs that run Kubernetes: qemu's `max` CPU (every instruction
    /// set extension TCG emulates, so Go's crypto takes its AES-NI and
    /// ADX paths instead of generic code) and a larger translation cache
    /// for the big Go binaries. Otherwise the plain `qemu64`.
    pub full_cpu: bool,
    /// vCPUs (threads under multi-threaded TCG). A control-plane VM gets
    /// 2: etcd, the API server and the kubelet starve each other on one.
    pub vcpus: u32,
    /// A second virtio disk (`/dev/vdb` in the VM), written through the
    /// host's page cache with its flushes honoured.
    pub data_disk: Option<&'a Path>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            console: Path::new("/dev/null"),
            network: &Network::None,
            extra_cmdline: "",
            memory_mib: 1024,
            private_serial: None,
            full_cpu: false,
            vcpus: 1,
            data_disk: None,
        }
    }
}

/// A VM that is running; killed when dropped.
pub struct Running {
    child: std::process::Child,
    console: std::path::PathBuf,
    started: std::time::Instant,
}

impl Running {
    /// The console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// When qemu was started.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Waits until a console line contains one of `markers`; returns the
    /// console and the marker. Panics, printing the console, if the VM
    /// stops or `limit` passes first.
    pub fn wait_for(&mut self, markers: &[&str], limit: Duration) -> (String, String) {
        let start = std::time::Instant::now();
        loop {
            let text = self.console();
            if let Some(m) = markers.iter().find(|m| text.contains(*m)) {
                return (text, m.to_string());
            }
            let exited = self.child.try_wait().unwrap().is_some();
            if exited || start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the VM showed none of {markers:?} within {limit:?} (exited: {exited}); console:\n{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits up to `limit` for the VM to power off; panics, printing the
    /// console, if it does not.
    pub fn wait_poweroff(mut self, limit: Duration) -> String {
        if !super::wait_bounded(&mut self.child, limit, |c| {
            let _ = c.kill();
        }) {
            panic!(
                "the VM did not power off within {limit:?}; console:\n{}",
                self.console()
            );
        }
        self.console()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCG (see DESIGN.md) with `vcpus` and `memory_mib` of memory.
fn tcg_args(memory_mib: u32, full_cpu: bool, vcpus: u32) -> Vec<String> {
    let (tb_size, cpu) = if full_cpu {
        (512, "max")
    } else {
        (128, "qemu64")
    };
    [
        "-accel".to_string(),
        // One host thread per vCPU.
        format!(
            "tcg,tb-size={tb_size}{}",
            if vcpus > 1 { ",thread=multi" } else { "" }
        ),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        vcpus.to_string(),
        "-m".into(),
        memory_mib.to_string(),
    ]
    .to_vec()
}

/// Starts the VM through `launcher`.
pub fn start(launcher: Command, vm: &VmDisk, options: &Options) -> Running {
    let started = std::time::Instant::now();
    let child = qemu(launcher, vm, options);
    Running {
        child,
        console: options.console.to_path_buf(),
        started,
    }
}

fn qemu(mut launcher: Command, vm: &VmDisk, options: &Options) -> std::process::Child {
    let console = options.console;
    let _ = std::fs::remove_file(console);
    let child = launcher
        .args(tcg_args(
            options.memory_mib,
            options.full_cpu,
            options.vcpus,
        ))
        .args([
            "-machine",
            if vm.kernel.is_some() {
                "pc"
            } else {
                "pc,graphics=off"
            },
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-no-user-config",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            vm.disk.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(data) = options.data_disk {
        child.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=writeback",
            data.display()
        ));
    }
    if let Some(private) = options.private_serial {
        child
            .arg("-serial")
            .arg(format!("file:{}", private.display()));
    }
    if let Some(direct) = &vm.kernel {
        let cmdline = format!(
            "root=/dev/vda rw console=ttyS0 panic=-1 quiet {}",
            options.extra_cmdline
        );
        child
            .arg("-kernel")
            .arg(&direct.kernel)
            .arg("-initrd")
            .arg(&direct.initrd)
            .arg("-append")
            .arg(cmdline.trim());
    }
    match options.network {
        Network::None => {
            child.args(["-nic", "none"]);
        }
        Network::Tap { tap, mac } => {
            child
                .arg("-netdev")
                .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"));
        }
    }
    child.spawn().unwrap()
}

/// The console lines that start with `prefix`.
pub fn marked<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// Starts a diskless VM that boots from the network: SeaBIOS hands over
/// to the iPXE ROM of its virtio NIC (Debian's ipxe-qemu) on `tap` with
/// `mac`. `-machine pc,graphics=off` puts SeaBIOS and iPXE output on the
/// serial console, which goes to `console`. The caller watches the
/// console and kills the VM (by the returned child).
pub fn start_netboot(
    launcher: Command,
    tap: &str,
    mac: &str,
    console: &Path,
) -> std::process::Child {
    start_netboot_with_disk(launcher, tap, mac, console, None)
}

/// [`start_netboot`] with a disk (virtio, raw) the VM boots from when
/// the network boot ends (iPXE's `exit`): boot order network, then disk.
pub fn start_netboot_with_disk(
    mut launcher: Command,
    tap: &str,
    mac: &str,
    console: &Path,
    disk: Option<&Path>,
) -> std::process::Child {
    let _ = std::fs::remove_file(console);
    if let Some(disk) = disk {
        launcher.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ));
    }
    // With a disk it is a node to be (it installs, then runs the kubelet):
    // as much memory and CPU as the join VMs get.
    let (memory_mib, full_cpu) = if disk.is_some() {
        (1536, true)
    } else {
        (512, false)
    };
    launcher
        .args(tcg_args(memory_mib, full_cpu, 1))
        .args([
            "-machine",
            "pc,graphics=off",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-boot",
            if disk.is_some() {
                "order=nc"
            } else {
                "order=n"
            },
        ])
        .arg("-netdev")
        .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Installs `script` in `root` as /usr/local/sbin/NAME, run once at boot by
/// NAME.service after `after`, and keeps agetty off the serial console
/// (its vhangup would cut the script's output off).
pub fn install_boot_script(root: &Path, name: &str, script: &str, after: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join("usr/local/sbin").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let unit = format!(
        "[Unit]\nDescription=kprov test script {name}\nAfter=multi-user.target {after}\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/{name}\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    let units = root.join("etc/systemd/system");
    std::fs::write(units.join(format!("{name}.service")), unit).unwrap();
    std::os::unix::fs::symlink(
        format!("/etc/systemd/system/{name}.service"),
        units.join(format!("multi-user.target.wants/{name}.service")),
    )
    .unwrap();
    let getty = units.join("serial-getty@ttyS0.service");
    if getty.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("/dev/null", getty).unwrap();
    }
}

/// A sparse copy of `vm`'s disk at `dir/NAME.raw` with `files` (node path,
/// contents) written into its ext4 filesystem by debugfs, unmounted.
pub fn derive_disk(vm: &VmDisk, dir: &Path, name: &str, files: &[(&str, &str)]) -> VmDisk {
    let disk = dir.join(format!("{name}.raw"));
    sh(Command::new("cp")
        .arg("--sparse=always")
        .arg(&vm.disk)
        .arg(&disk));
    let mut commands = String::new();
    for (i, (node_path, contents)) in files.iter().enumerate() {
        let local = dir.join(format!("{name}.file{i}"));
        std::fs::write(&local, contents).unwrap();
        let parent = Path::new(node_path).parent().unwrap();
        // mkdir fails harmlessly when the directory exists.
        commands.push_str(&format!(
            "mkdir {}\nwrite {} {node_path}\n",
            parent.display(),
            local.display()
        ));
    }
    let script = dir.join(format!("{name}.debugfs"));
    std::fs::write(&script, commands).unwrap();
    sh(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&disk));
    VmDisk {
        disk,
        kernel: vm.kernel.clone(),
    }
}

/// The drop-in kubeadm's Debian/RPM packages ship for the kubelet, for
/// VMs that run kubeadm beside kprov in benchmarks.
pub const KUBEADM_KUBELET_DROPIN: (&str, &str) = (
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "[Service]
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
",
);
