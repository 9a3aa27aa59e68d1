//! The qemu target: every machine is a qemu VM on this host, booted from
//! the node image, with a tap on the cluster's bridge, configured by
//! cloud-init over NoCloud and driven over ssh.
//!
//! - The node image is a root directory prebaked by `kprov provision
//!   --phase base --root` (without `--node-in-container`) from a Debian
//!   root that holds a kernel and initrd, cloud-init and the OpenSSH
//!   server ([`Target::check_image`] names what is missing). The first
//!   machine of a cluster turns it into the cluster's base disk
//!   (`mkfs.ext4 -d`, no loop device or mount) and copies its kernel and
//!   initrd; every machine runs on a qcow2 overlay of that disk, which
//!   qemu boots directly (`-kernel`, `root=/dev/vda`).
//! - Each machine gets a NoCloud seed (a read-only FAT drive labelled
//!   `cidata`, qemu's vvfat of a directory): its host name, its address
//!   on the cluster's network (by MAC), the cluster's ssh key for root,
//!   and an ssh host key made here, so that its key is known before the
//!   first connection: ssh runs with `StrictHostKeyChecking=yes` against a
//!   known_hosts that holds that key alone, and never accepts another.
//! - Commands and copies go through the ssh target's code (`env -i`,
//!   secrets on standard input, digests checked), run in the bridge's
//!   network namespace.
//! - VMs run under TCG unless told to use KVM (nested KVM crashes guests
//!   on some hosts, so KVM is opt-in); qemu daemonizes, so machines
//!   outlive the `kprov` that started them, and is found again by its
//!   pid file and command line.
//! - A machine is `BASE/NAME` ([`Layout`]); what its cluster shares (base
//!   disk, kernel, the ssh client key) is `BASE/.qemu-CLUSTER`, removed
//!   with the cluster's bridge once no machine is left.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::host::{
    command, describe, ensure_no_machines, file_tail, machine_dirs, run_checked, set_mode,
    write_file_atomic, BridgeNetns,
};
use super::ssh::{SshHost, SshTarget};
use super::{
    CommandOutput, HostChange, Machine, MachineCommand, MachineSpec, MachineState, Target,
    TargetError, LABEL_CLUSTER,
};
use crate::name::{ClusterName, MachineName, Role};
use crate::network::{bridge_name, machine_mac, short_hash, ClusterNetwork};

/// The record's file name (not the nspawn target's, so that neither
/// target takes the other's machines for its own).
const RECORD: &str = "qemu-machine.json";
/// The size of the base disk (sparse): room for images and etcd.
const DISK_SIZE: &str = "20G";

/// How qemu runs guest code.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// qemu's own translator: slow, works everywhere.
    #[default]
    Tcg,
    /// The kernel's KVM (`/dev/kvm`).
    Kvm,
}

/// What a VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Virtual CPUs.
    pub cpus: u16,
    /// Memory in MiB.
    pub memory_mib: u32,
}

/// The qemu target. See the module doc.
#[derive(Debug, Clone)]
pub struct QemuTarget {
    base_dir: PathBuf,
    netns: BridgeNetns,
    accel: Accel,
    cpus: Option<u16>,
    memory_mib: Option<u32>,
    kprov: PathBuf,
    stop_timeout: Duration,
}

/// A machine's paths under the base directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `BASE/NAME`.
    pub dir: PathBuf,
    /// The record.
    pub record: PathBuf,
    /// The qcow2 overlay.
    pub disk: PathBuf,
    /// The NoCloud seed's directory.
    pub seed: PathBuf,
    /// The serial console's log.
    pub console: PathBuf,
    /// qemu's pid file.
    pub pid: PathBuf,
    /// The ssh config kprov reaches the machine with.
    pub ssh_config: PathBuf,
    /// The known_hosts with the machine's host key alone.
    pub known_hosts: PathBuf,
}

impl Layout {
    /// The layout of `name` under `base`.
    pub fn new(base: &Path, name: &MachineName) -> Self {
        let dir = base.join(name.to_string());
        Self {
            record: dir.join(RECORD),
            disk: dir.join("disk.qcow2"),
            seed: dir.join("seed"),
            console: dir.join("console.log"),
            pid: dir.join("qemu.pid"),
            ssh_config: dir.join("ssh_config"),
            known_hosts: dir.join("known_hosts"),
            dir,
        }
    }
}

/// What a cluster's machines share, under `BASE/.qemu-CLUSTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    /// The directory.
    pub dir: PathBuf,
    /// The base disk: the node image as an ext4 filesystem.
    pub base_disk: PathBuf,
    /// Which image the base disk was made from.
    pub image_record: PathBuf,
    /// The kernel qemu boots.
    pub kernel: PathBuf,
    /// Its initrd.
    pub initrd: PathBuf,
    /// The ssh client key kprov logs in with (its `.pub` beside it).
    pub client_key: PathBuf,
}

impl ClusterLayout {
    /// The layout of `cluster` under `base`.
    pub fn new(base: &Path, cluster: &ClusterName) -> Self {
        let dir = base.join(format!(".qemu-{cluster}"));
        Self {
            base_disk: dir.join("base.raw"),
            image_record: dir.join("image"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            client_key: dir.join("id_ed25519"),
            dir,
        }
    }
}

/// What kprov keeps of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineRecord {
    name: String,
    labels: BTreeMap<String, String>,
    address: Ipv4Addr,
    network: String,
}

impl QemuTarget {
    /// A target keeping machines under `base_dir` (made, 0700, if
    /// missing), with the cluster bridges in `netns`, running VMs with
    /// `accel`, `cpus` and `memory_mib` each (by default
    /// [`default_size`] of its role); `kprov` (this program) is what the
    /// machines must run.
    pub fn new(
        base_dir: impl AsRef<Path>,
        netns: BridgeNetns,
        accel: Accel,
        cpus: Option<u16>,
        memory_mib: Option<u32>,
        kprov: PathBuf,
    ) -> Result<Self, TargetError> {
        let given = base_dir.as_ref();
        std::fs::create_dir_all(given)
            .map_err(|e| TargetError::io("creating the machines' directory", given, e))?;
        let base_dir = given
            .canonicalize()
            .map_err(|e| TargetError::io("resolving", given, e))?;
        Ok(Self {
            base_dir,
            netns,
            accel,
            cpus,
            memory_mib,
            kprov,
            stop_timeout: Duration::from_secs(60),
        })
    }

    /// A machine's paths.
    pub fn layout(&self, name: &MachineName) -> Layout {
        Layout::new(&self.base_dir, name)
    }

    fn cluster_layout(&self, cluster: &ClusterName) -> ClusterLayout {
        ClusterLayout::new(&self.base_dir, cluster)
    }

    fn read_record(&self, name: &MachineName) -> Result<MachineRecord, TargetError> {
        let layout = self.layout(name);
        let text = match std::fs::read_to_string(&layout.record) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TargetError::NoSuchMachine { name: name.clone() })
            }
            Err(e) => return Err(TargetError::io("reading", &layout.record, e)),
        };
        let record: MachineRecord =
            serde_json::from_str(&text).map_err(|e| TargetError::BadRecord {
                path: layout.record.clone(),
                reason: format!("not a machine record: {e}"),
            })?;
        if record.name != name.to_string() {
            return Err(TargetError::BadRecord {
                path: layout.record,
                reason: format!("names machine {}, not {name}", record.name),
            });
        }
        Ok(record)
    }

    fn network_of(&self, name: &MachineName) -> Result<ClusterNetwork, TargetError> {
        let record = self.read_record(name)?;
        record
            .network
            .parse()
            .map_err(|e: crate::network::NetworkError| TargetError::BadRecord {
                path: self.layout(name).record,
                reason: e.to_string(),
            })
    }

    /// The ssh target's view of one machine: how commands reach it.
    fn ssh(&self, name: &MachineName) -> Result<SshTarget, TargetError> {
        let record = self.read_record(name)?;
        let layout = self.layout(name);
        Ok(SshTarget::new(
            vec![SshHost {
                machine: name.clone(),
                destination: name.to_string(),
                address: record.address,
            }],
            self.network_of(name)?,
            Some(layout.ssh_config),
            self.kprov.clone(),
        )
        .with_netns(self.netns.path.clone()))
    }

    /// qemu's pid when it runs this machine.
    fn running_pid(&self, layout: &Layout) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&layout.pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let disk = layout.disk.display().to_string();
        is_qemu_of(&cmdline, &disk).then_some(pid)
    }

    /// Makes what the cluster's machines share, once: the base disk and
    /// kernel from `image`, and the ssh client key. Refuses an image
    /// other than the one the cluster was made from.
    fn ensure_cluster(&self, cluster: &ClusterName, image: &Path) -> Result<(), TargetError> {
        let layout = self.cluster_layout(cluster);
        let image = image
            .canonicalize()
            .map_err(|e| TargetError::io("resolving the node image", image, e))?;
        if let Ok(made_from) = std::fs::read_to_string(&layout.image_record) {
            if Path::new(made_from.trim()) != image {
                return Err(TargetError::HostUnsuitable {
                    target: "qemu",
                    reason: format!(
                        "cluster {cluster}'s machines are made from the image {}, not {}: bring the cluster down first to change its image",
                        made_from.trim(),
                        image.display()
                    ),
                });
            }
            return Ok(());
        }
        std::fs::create_dir_all(&layout.dir)
            .map_err(|e| TargetError::io("creating", &layout.dir, e))?;
        set_mode(&layout.dir, 0o700)?;
        let boot = image.join("boot");
        let kernel = newest(&boot, "vmlinuz-")?;
        let initrd = newest(&boot, "initrd.img-")?;
        copy(&kernel, &layout.kernel)?;
        copy(&initrd, &layout.initrd)?;
        // Made under a temporary name: a base disk exists only whole.
        let temp = layout.dir.join(".base.raw.tmp");
        let _ = std::fs::remove_file(&temp);
        run_checked(command("truncate").args(["-s", DISK_SIZE]).arg(&temp))?;
        tracing::info!(cluster = %cluster, image = %image.display(), "making the cluster's base disk");
        run_checked(
            command("mkfs.ext4")
                .args(["-q", "-F", "-L", "kprov-root", "-d"])
                .arg(&image)
                .arg(&temp),
        )?;
        std::fs::rename(&temp, &layout.base_disk)
            .map_err(|e| TargetError::io("renaming into place", &layout.base_disk, e))?;
        if !layout.client_key.exists() {
            ssh_keygen(&layout.client_key, &format!("kprov cluster {cluster}"))?;
        }
        write_file_atomic(
            &layout.image_record,
            format!("{}\n", image.display()).as_bytes(),
            0o600,
        )
    }

    /// qemu's command line for the machine (run in the bridge's
    /// namespace).
    fn qemu_argv(
        &self,
        name: &MachineName,
        layout: &Layout,
        cluster: &ClusterLayout,
    ) -> Vec<String> {
        qemu_argv(&QemuArgs {
            name,
            accel: self.accel,
            size: VmSize {
                cpus: self.cpus.unwrap_or(default_size(name.role).cpus),
                memory_mib: self
                    .memory_mib
                    .unwrap_or(default_size(name.role).memory_mib),
            },
            kernel: &cluster.kernel,
            initrd: &cluster.initrd,
            disk: &layout.disk,
            seed: &layout.seed,
            console: &layout.console,
            pid: &layout.pid,
            tap: &tap_name(name),
            mac: &machine_mac(name),
        })
    }

    fn ensure_tap(&self, name: &MachineName) -> Result<(), TargetError> {
        let tap = tap_name(name);
        let exists = self
            .netns
            .ip(&["link", "show", "dev", &tap])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            run_checked(
                &mut self
                    .netns
                    .ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]),
            )?;
            run_checked(&mut self.netns.ip(&[
                "link",
                "set",
                &tap,
                "alias",
                &format!("kprov machine {name}"),
            ]))?;
        }
        run_checked(&mut self.netns.ip(&[
            "link",
            "set",
            &tap,
            "master",
            &bridge_name(&name.cluster),
            "up",
        ]))?;
        Ok(())
    }

    fn remove_tap(&self, name: &MachineName) -> Result<(), TargetError> {
        let tap = tap_name(name);
        let mut show = self.netns.ip(&["link", "show", "dev", &tap]);
        let out = show.output().map_err(|e| TargetError::Spawn {
            command: describe(&show),
            source: e,
        })?;
        if out.status.success() {
            run_checked(&mut self.netns.ip(&["link", "del", "dev", &tap]))?;
        }
        Ok(())
    }

    /// Ends the machine's qemu: a clean power-off over ssh first when
    /// `graceful`, then SIGKILL after the stop timeout (or at once).
    fn halt(&self, name: &MachineName, graceful: bool) -> Result<(), TargetError> {
        let layout = self.layout(name);
        let Some(pid) = self.running_pid(&layout) else {
            return Ok(());
        };
        if graceful {
            if let Ok(ssh) = self.ssh(name) {
                // The connection drops as the machine goes down: the
                // outcome is read from qemu's exit, not from ssh.
                let _ = ssh.run(
                    name,
                    &MachineCommand::new(["systemctl", "--no-block", "poweroff"])
                        .timeout(Duration::from_secs(20)),
                );
            }
            let deadline = Instant::now() + self.stop_timeout;
            while Instant::now() < deadline {
                if self.running_pid(&layout).is_none() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        run_checked(command("kill").args(["-KILL", &pid.to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running_pid(&layout).is_some() {
            if Instant::now() >= deadline {
                return Err(TargetError::Command {
                    command: format!("kill -KILL {pid}"),
                    status: "qemu still runs after 10 s".into(),
                    stderr: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn machine(&self, name: &MachineName, record: &MachineRecord) -> Result<Machine, TargetError> {
        Ok(Machine {
            name: name.clone(),
            labels: record.labels.clone(),
            address: record.address,
            network: self.network_of(name)?,
            state: if self.running_pid(&self.layout(name)).is_some() {
                MachineState::Running
            } else {
                MachineState::Stopped
            },
        })
    }

    fn make(&self, spec: &MachineSpec, layout: &Layout) -> Result<Machine, TargetError> {
        let name = &spec.name;
        let image = spec.image.as_deref().ok_or_else(|| TargetError::BadSpec {
            name: name.clone(),
            reason: "no node image given".into(),
        })?;
        self.ensure_cluster(&name.cluster, image)?;
        let cluster = self.cluster_layout(&name.cluster);
        run_checked(
            command("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&cluster.base_disk)
                .arg(&layout.disk),
        )?;
        let host_key = layout.dir.join("ssh_host_ed25519_key");
        ssh_keygen(&host_key, &name.to_string())?;
        let host_public = read_text(&host_key.with_extension("pub"))?;
        let host_private = read_text(&host_key)?;
        let client_public = read_text(&cluster.client_key.with_extension("pub"))?;
        std::fs::create_dir(&layout.seed)
            .map_err(|e| TargetError::io("creating", &layout.seed, e))?;
        set_mode(&layout.seed, 0o700)?;
        let seed = SeedInput {
            name,
            address: spec.address,
            network: spec.network,
            mac: &machine_mac(name),
            host_private: host_private.trim(),
            host_public: host_public.trim(),
            client_public: client_public.trim(),
        };
        for (file, contents) in seed_files(&seed) {
            write_file_atomic(&layout.seed.join(file), contents.as_bytes(), 0o600)?;
        }
        // The private host key now lives in the seed only.
        std::fs::remove_file(&host_key).map_err(|e| TargetError::io("removing", &host_key, e))?;
        write_file_atomic(
            &layout.known_hosts,
            known_hosts_line(name, host_public.trim()).as_bytes(),
            0o600,
        )?;
        write_file_atomic(
            &layout.ssh_config,
            ssh_config(name, spec.address, &cluster.client_key, &layout.known_hosts).as_bytes(),
            0o600,
        )?;
        let record = MachineRecord {
            name: name.to_string(),
            labels: spec.all_labels(),
            address: spec.address,
            network: spec.network.to_string(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| TargetError::BadRecord {
            path: layout.record.clone(),
            reason: e.to_string(),
        })?;
        // Last: the machine exists once its record does.
        write_file_atomic(&layout.record, &json, 0o600)?;
        tracing::info!(machine = %name, address = %spec.address, "created");
        self.machine(name, &record)
    }
}

impl Target for QemuTarget {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn check_image(&self, image: &Path) -> Result<(), String> {
        check_vm_image(image)
    }

    fn in_container(&self, _name: &MachineName) -> Result<bool, TargetError> {
        Ok(false)
    }

    fn prepare_host(&self) -> Result<Vec<HostChange>, TargetError> {
        for (program, flag, package) in [
            ("qemu-system-x86_64", "--version", "qemu-system-x86"),
            ("qemu-img", "--version", "qemu-utils"),
            ("ssh", "-V", "openssh-client"),
            ("ssh-keygen", "--help", "openssh-client"),
            ("mkfs.ext4", "-V", "e2fsprogs"),
        ] {
            let found = command(program)
                .arg(flag)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if found.is_err() {
                return Err(TargetError::HostUnsuitable {
                    target: "qemu",
                    reason: format!("{program} is not installed (Debian package {package})"),
                });
            }
        }
        if self.accel == Accel::Kvm {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(|e| TargetError::HostUnsuitable {
                    target: "qemu",
                    reason: format!("--qemu-accel kvm: /dev/kvm cannot be opened: {e}"),
                })?;
        }
        Ok(Vec::new())
    }

    fn create(&self, spec: &MachineSpec) -> Result<Machine, TargetError> {
        let name = &spec.name;
        spec.network.check_host(spec.address)?;
        let layout = self.layout(name);
        if layout.dir.exists() {
            return Err(TargetError::Exists {
                name: name.clone(),
                detail: layout.dir.display().to_string(),
            });
        }
        std::fs::create_dir(&layout.dir)
            .map_err(|e| TargetError::io("creating", &layout.dir, e))?;
        set_mode(&layout.dir, 0o700)?;
        let made = self.make(spec, &layout);
        if made.is_err() {
            // Nothing half-made stays behind.
            let _ = std::fs::remove_dir_all(&layout.dir);
        }
        made
    }

    fn start(&self, name: &MachineName) -> Result<(), TargetError> {
        let network = self.network_of(name)?;
        let layout = self.layout(name);
        if self.running_pid(&layout).is_some() {
            return Ok(());
        }
        self.netns.ensure_bridge("qemu", &name.cluster, &network)?;
        self.ensure_tap(name)?;
        let cluster = self.cluster_layout(&name.cluster);
        let argv = self.qemu_argv(name, &layout, &cluster);
        let _ = std::fs::remove_file(&layout.pid);
        // qemu daemonizes once the VM is set up: its exit says whether
        // it started.
        let mut qemu = self.netns.command(&argv[0]);
        qemu.args(&argv[1..]).stdin(Stdio::null());
        run_checked(&mut qemu).map_err(|e| TargetError::StartFailed {
            name: name.clone(),
            log: e.to_string(),
        })?;
        if self.running_pid(&layout).is_none() {
            return Err(TargetError::StartFailed {
                name: name.clone(),
                log: format!("qemu exited; console:\n{}", file_tail(&layout.console, 20)),
            });
        }
        tracing::info!(machine = %name, "started");
        Ok(())
    }

    fn wait_booted(&self, name: &MachineName, limit: Duration) -> Result<(), TargetError> {
        let layout = self.layout(name);
        let ssh = self.ssh(name)?;
        let deadline = Instant::now() + limit;
        // sshd answers some time into the boot: until then, connecting
        // fails and is tried again.
        loop {
            if self.running_pid(&layout).is_none() {
                return Err(TargetError::StartFailed {
                    name: name.clone(),
                    log: format!("qemu is gone; console:\n{}", file_tail(&layout.console, 30)),
                });
            }
            match ssh.run(
                name,
                &MachineCommand::new(["true"]).timeout(Duration::from_secs(20)),
            ) {
                Ok(out) if out.success() => break,
                Ok(_) | Err(TargetError::Unreachable { .. }) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(TargetError::Timeout {
                    name: name.clone(),
                    what: "answer over ssh",
                    waited: limit,
                    log: file_tail(&layout.console, 30),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        ssh.wait_booted(name, deadline.saturating_duration_since(Instant::now()))
    }

    fn run(
        &self,
        name: &MachineName,
        command: &MachineCommand,
    ) -> Result<CommandOutput, TargetError> {
        if self.running_pid(&self.layout(name)).is_none() {
            self.read_record(name)?;
            return Err(TargetError::NotRunning { name: name.clone() });
        }
        self.ssh(name)?.run(name, command)
    }

    fn address(&self, name: &MachineName) -> Result<Ipv4Addr, TargetError> {
        Ok(self.read_record(name)?.address)
    }

    fn logs(&self, name: &MachineName, lines: usize) -> Result<String, TargetError> {
        self.read_record(name)?;
        Ok(file_tail(&self.layout(name).console, lines))
    }

    fn stop(&self, name: &MachineName) -> Result<(), TargetError> {
        self.read_record(name)?;
        self.halt(name, true)?;
        self.remove_tap(name)
    }

    fn destroy(&self, name: &MachineName) -> Result<(), TargetError> {
        self.read_record(name)?;
        self.halt(name, false)?;
        self.remove_tap(name)?;
        let dir = self.layout(name).dir;
        std::fs::remove_dir_all(&dir).map_err(|e| TargetError::io("removing", &dir, e))?;
        tracing::info!(machine = %name, "destroyed");
        Ok(())
    }

    fn list(&self, cluster: &ClusterName) -> Result<Vec<Machine>, TargetError> {
        let mut machines = Vec::new();
        for name in machine_dirs(&self.base_dir, cluster)? {
            let record = match self.read_record(&name) {
                Ok(r) => r,
                // Being made or removed, or another target's machine.
                Err(TargetError::NoSuchMachine { .. }) => continue,
                Err(e) => return Err(e),
            };
            if record.labels.get(LABEL_CLUSTER).map(String::as_str) != Some(cluster.as_str()) {
                continue;
            }
            machines.push(self.machine(&name, &record)?);
        }
        Ok(machines)
    }

    fn destroy_network(&self, cluster: &ClusterName) -> Result<(), TargetError> {
        ensure_no_machines(cluster, &self.list(cluster)?)?;
        self.netns.remove_bridge(cluster)?;
        let shared = self.cluster_layout(cluster).dir;
        match std::fs::remove_dir_all(&shared) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(TargetError::io("removing", &shared, e))
            }
            _ => Ok(()),
        }
    }
}

/// Checks that `image` can boot as a VM of this target; the reason names
/// what is missing.
pub fn check_vm_image(image: &Path) -> Result<(), String> {
    let expected = "expected a Debian root with a kernel, cloud-init and openssh-server, prebaked by `kprov provision --phase base --root` (without --node-in-container)";
    for (needed, what) in [
        ("usr/local/bin/kprov", "kprov"),
        ("usr/local/bin/kubelet", "the kubelet"),
        ("usr/bin/cloud-init", "cloud-init"),
        ("usr/sbin/sshd", "the OpenSSH server"),
    ] {
        if std::fs::symlink_metadata(image.join(needed)).is_err() {
            return Err(format!("has no {needed} ({what}): {expected}"));
        }
    }
    for prefix in ["vmlinuz-", "initrd.img-"] {
        newest(&image.join("boot"), prefix)
            .map_err(|_| format!("has no boot/{prefix}*: {expected}"))?;
    }
    Ok(())
}

/// The machine's tap: `kpt` and 10 hex digits of the name's sha256.
pub fn tap_name(machine: &MachineName) -> String {
    format!("kpt{}", short_hash(&machine.to_string()))
}

/// The default size of a machine of `role`: a master runs etcd and the
/// API server, which one emulated CPU (TCG) cannot keep answering its
/// probes and clients.
pub fn default_size(role: Role) -> VmSize {
    match role {
        Role::Master => VmSize {
            cpus: 2,
            memory_mib: 2048,
        },
        Role::Worker => VmSize {
            cpus: 1,
            memory_mib: 1536,
        },
    }
}

/// The values of qemu's command line.
pub struct QemuArgs<'a> {
    /// The machine.
    pub name: &'a MachineName,
    /// How guest code runs.
    pub accel: Accel,
    /// CPUs and memory.
    pub size: VmSize,
    /// The kernel.
    pub kernel: &'a Path,
    /// Its initrd.
    pub initrd: &'a Path,
    /// The machine's overlay.
    pub disk: &'a Path,
    /// The NoCloud seed's directory.
    pub seed: &'a Path,
    /// The console log.
    pub console: &'a Path,
    /// The pid file.
    pub pid: &'a Path,
    /// The tap.
    pub tap: &'a str,
    /// The NIC's MAC.
    pub mac: &'a str,
}

/// qemu's command line: a daemon with no display, its serial console in
/// a file, the kernel booted directly from the overlay, the seed as a
/// read-only FAT drive labelled `cidata`, one virtio NIC on the tap.
pub fn qemu_argv(a: &QemuArgs<'_>) -> Vec<String> {
    let (accel, cpu) = match a.accel {
        // `max`: every instruction the big Go binaries may use.
        Accel::Tcg => (
            format!(
                "tcg,tb-size=512{}",
                if a.size.cpus > 1 { ",thread=multi" } else { "" }
            ),
            "max",
        ),
        Accel::Kvm => ("kvm".to_string(), "host"),
    };
    vec![
        "qemu-system-x86_64".into(),
        "-name".into(),
        format!("kprov-{},process=kprov-{}", a.name, a.name),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        accel,
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        a.size.cpus.to_string(),
        "-m".into(),
        a.size.memory_mib.to_string(),
        "-display".into(),
        "none".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-daemonize".into(),
        "-pidfile".into(),
        a.pid.display().to_string(),
        "-serial".into(),
        format!("file:{}", a.console.display()),
        "-kernel".into(),
        a.kernel.display().to_string(),
        "-initrd".into(),
        a.initrd.display().to_string(),
        "-append".into(),
        "root=/dev/vda rw console=ttyS0 panic=-1".into(),
        "-drive".into(),
        format!(
            "file={},format=qcow2,if=virtio,cache=writeback",
            a.disk.display()
        ),
        "-drive".into(),
        format!(
            "file.driver=vvfat,file.dir={},file.label=cidata,format=raw,if=virtio,readonly=on",
            a.seed.display()
        ),
        "-netdev".into(),
        format!("tap,id=n0,ifname={},script=no,downscript=no", a.tap),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={}", a.mac),
    ]
}

/// Whether a `/proc/PID/cmdline` is qemu's running the overlay `disk`.
fn is_qemu_of(cmdline: &[u8], disk: &str) -> bool {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let want = format!("file={disk},");
    args.first()
        .is_some_and(|p| p.ends_with("qemu-system-x86_64"))
        && args.iter().any(|a| a.starts_with(&want))
}

/// What a machine's seed is made from.
pub struct SeedInput<'a> {
    /// The machine.
    pub name: &'a MachineName,
    /// Its address.
    pub address: Ipv4Addr,
    /// The cluster's network.
    pub network: ClusterNetwork,
    /// Its NIC's MAC.
    pub mac: &'a str,
    /// Its ssh host key (OpenSSH private key text).
    pub host_private: &'a str,
    /// The public half.
    pub host_public: &'a str,
    /// The key kprov logs in as root with.
    pub client_public: &'a str,
}

/// The NoCloud seed's files: `meta-data` (instance id, host name),
/// `network-config` (version 2: the address by MAC, the bridge as the
/// default route: there is no uplink behind it) and `user-data`
/// (cloud-config: root's ssh key, the host key, /etc/hosts with the
/// machine's name, no DNS server). JSON is valid YAML: the documents are
/// written as JSON, so no value needs YAML quoting.
pub fn seed_files(s: &SeedInput<'_>) -> Vec<(&'static str, String)> {
    let name = s.name.to_string();
    let meta = serde_json::json!({
        "instance-id": format!("kprov-{name}-{}", short_hash(s.host_public)),
        "local-hostname": name,
    });
    let network = serde_json::json!({
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": s.mac},
                "set-name": "eth0",
                "addresses": [format!("{}/{}", s.address, s.network.prefix_len())],
                "gateway4": s.network.gateway().to_string(),
            }
        }
    });
    let hosts = format!(
        "# Written by kprov for machine {name}.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{name}\n",
        s.address
    );
    let resolv = format!(
        "# Written by kprov: machines of cluster {} have no DNS server.\n",
        s.name.cluster
    );
    let user = serde_json::json!({
        "hostname": name,
        // A node image has no locales: the default (en_US.UTF-8) would
        // fail cloud-init's locale module, and so the boot; C.UTF-8 is
        // built into the C library.
        "locale": "C.UTF-8",
        "manage_etc_hosts": false,
        "disable_root": false,
        "ssh_pwauth": false,
        "ssh_deletekeys": true,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": format!("{}\n", s.host_private),
            "ed25519_public": s.host_public,
        },
        "ssh_authorized_keys": [s.client_public],
        "write_files": [
            {"path": "/etc/hosts", "content": hosts, "owner": "root:root", "permissions": "0644"},
            {"path": "/etc/resolv.conf", "content": resolv, "owner": "root:root", "permissions": "0644"},
        ],
    });
    let json = |v: &serde_json::Value| {
        format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
    };
    vec![
        ("meta-data", json(&meta)),
        ("network-config", json(&network)),
        ("user-data", format!("#cloud-config\n{}", json(&user))),
    ]
}

/// The known_hosts line of the machine's host key, under the alias the
/// ssh config gives it.
pub fn known_hosts_line(name: &MachineName, host_public: &str) -> String {
    let mut words = host_public.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let key = words.next().unwrap_or_default();
    format!("{name} {kind} {key}\n")
}

/// The ssh config for the machine: root with the cluster's key, the
/// machine's own known_hosts and nothing of the user's.
pub fn ssh_config(name: &MachineName, address: Ipv4Addr, key: &Path, known_hosts: &Path) -> String {
    format!(
        "# Written by kprov for machine {name}.\nHost {name}\n  HostName {address}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  IdentityAgent none\n  HostKeyAlias {name}\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  CheckHostIP no\n  LogLevel ERROR\n",
        key.display(),
        known_hosts.display()
    )
}

fn newest(dir: &Path, prefix: &str) -> Result<PathBuf, TargetError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TargetError::io("listing", dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        TargetError::io(
            "finding the kernel",
            &dir.join(format!("{prefix}*")),
            std::io::ErrorKind::NotFound.into(),
        )
    })
}

fn ssh_keygen(path: &Path, comment: &str) -> Result<(), TargetError> {
    run_checked(
        command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .stdin(Stdio::null()),
    )?;
    Ok(())
}

fn copy(src: &Path, dst: &Path) -> Result<(), TargetError> {
    std::fs::copy(src, dst).map_err(|e| TargetError::io("copying", src, e))?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String, TargetError> {
    std::fs::read_to_string(path).map_err(|e| TargetError::io("reading", path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn name(s: &str) -> MachineName {
        s.parse().unwrap()
    }

    fn seed() -> Vec<(&'static str, String)> {
        let n = name("demo-worker-1");
        seed_files(&SeedInput {
            name: &n,
            address: "10.84.0.101".parse().unwrap(),
            network: "10.84.0.1/24".parse().unwrap(),
            mac: "02:aa:bb:cc:dd:ee",
            host_private:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
            host_public: "ssh-ed25519 AAAAHOST demo-worker-1",
            client_public: "ssh-ed25519 AAAACLIENT kprov cluster demo",
        })
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_seed_gives_the_machine_its_name_address_and_keys_as_yaml() {
        let files: BTreeMap<_, _> = seed().into_iter().collect();
        let meta = yaml(&files["meta-data"]);
        assert_eq!(meta["local-hostname"], "demo-worker-1");
        let network = yaml(&files["network-config"]);
        let eth0 = &network["ethernets"]["eth0"];
        assert_eq!(network["version"], 2);
        assert_eq!(eth0["match"]["macaddress"], "02:aa:bb:cc:dd:ee");
        assert_eq!(eth0["addresses"][0], "10.84.0.101/24");
        assert_eq!(eth0["gateway4"], "10.84.0.1");
        let user = &files["user-data"];
        assert!(user.starts_with("#cloud-config\n"), "{user}");
        let user = yaml(user);
        assert_eq!(user["disable_root"], false);
        assert_eq!(user["locale"], "C.UTF-8");
        assert_eq!(
            user["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAACLIENT kprov cluster demo"
        );
        assert_eq!(
            user["ssh_keys"]["ed25519_public"],
            "ssh-ed25519 AAAAHOST demo-worker-1"
        );
        assert!(user["ssh_keys"]["ed25519_private"]
            .as_str()
            .unwrap()
            .ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        let hosts = user["write_files"][0]["content"].as_str().unwrap();
        assert!(hosts.contains("10.84.0.101\tdemo-worker-1\n"), "{hosts}");
    }

    #[test]
    fn ssh_trusts_only_the_machines_own_host_key_under_its_name() {
        let n = name("demo-master-1");
        assert_eq!(
            known_hosts_line(&n, "ssh-ed25519 AAAAKEY demo-master-1"),
            "demo-master-1 ssh-ed25519 AAAAKEY\n"
        );
        let config = ssh_config(
            &n,
            "10.84.0.11".parse().unwrap(),
            Path::new("/m/.qemu-demo/id_ed25519"),
            Path::new("/m/demo-master-1/known_hosts"),
        );
        for line in [
            "Host demo-master-1\n",
            "HostName 10.84.0.11\n",
            "User root\n",
            "IdentityFile /m/.qemu-demo/id_ed25519\n",
            "IdentitiesOnly yes\n",
            "HostKeyAlias demo-master-1\n",
            "UserKnownHostsFile /m/demo-master-1/known_hosts\n",
            "GlobalKnownHostsFile /dev/null\n",
        ] {
            assert!(config.contains(line), "{line:?} in {config}");
        }
    }

    #[test]
    fn qemu_boots_the_overlay_with_the_seed_and_the_tap() {
        let n = name("demo-worker-1");
        let argv = qemu_argv(&QemuArgs {
            name: &n,
            accel: Accel::Tcg,
            size: VmSize {
                cpus: 1,
                memory_mib: 1536,
            },
            kernel: Path::new("/m/.qemu-demo/vmlinuz"),
            initrd: Path::new("/m/.qemu-demo/initrd.img"),
            disk: Path::new("/m/demo-worker-1/disk.qcow2"),
            seed: Path::new("/m/demo-worker-1/seed"),
            console: Path::new("/m/demo-worker-1/console.log"),
            pid: Path::new("/m/demo-worker-1/qemu.pid"),
            tap: "kpt0123456789",
            mac: "02:aa:bb:cc:dd:ee",
        });
        let line = argv.join(" ");
        for part in [
            "-accel tcg,tb-size=512 -cpu max -smp 1 -m 1536",
            "-daemonize -pidfile /m/demo-worker-1/qemu.pid",
            "file=/m/demo-worker-1/disk.qcow2,format=qcow2,if=virtio",
            "file.dir=/m/demo-worker-1/seed,file.label=cidata,format=raw,if=virtio,readonly=on",
            "tap,id=n0,ifname=kpt0123456789,script=no",
            "mac=02:aa:bb:cc:dd:ee",
        ] {
            assert!(line.contains(part), "{part:?} in {line}");
        }
        let cmdline = argv.join("\0").into_bytes();
        assert!(is_qemu_of(&cmdline, "/m/demo-worker-1/disk.qcow2"));
        assert!(!is_qemu_of(&cmdline, "/m/demo-worker-2/disk.qcow2"));
        assert!(!is_qemu_of(
            b"sleep\0file=/m/demo-worker-1/disk.qcow2,",
            "/m/demo-worker-1/disk.qcow2"
        ));
        let kvm = qemu_argv(&QemuArgs {
            accel: Accel::Kvm,
            size: VmSize {
                cpus: 2,
                memory_mib: 2048,
            },
            ..placeholder_args(&n)
        });
        assert!(kvm
            .join(" ")
            .contains("-accel kvm -cpu host -smp 2 -m 2048"));
    }

    fn placeholder_args(n: &MachineName) -> QemuArgs<'_> {
        QemuArgs {
            name: n,
            accel: Accel::Tcg,
            size: VmSize {
                cpus: 1,
                memory_mib: 1,
            },
            kernel: Path::new("/k"),
            initrd: Path::new("/i"),
            disk: Path::new("/d"),
            seed: Path::new("/s"),
            console: Path::new("/c"),
            pid: Path::new("/p"),
            tap: "t",
            mac: "m",
        }
    }

    #[test]
    fn an_image_without_a_kernel_cloud_init_or_sshd_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = check_vm_image(root).unwrap_err();
        assert!(err.contains("usr/local/bin/kprov"), "{err}");
        for f in [
            "usr/local/bin/kprov",
            "usr/local/bin/kubelet",
            "usr/bin/cloud-init",
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), "").unwrap();
        }
        let err = check_vm_image(root).unwrap_err();
        assert!(err.contains("usr/sbin/sshd (the OpenSSH server)"), "{err}");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        let err = check_vm_image(root).unwrap_err();
        assert!(err.contains("boot/vmlinuz-*"), "{err}");
        std::fs::write(root.join("boot/vmlinuz-6.1.0-1-cloud-amd64"), "").unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-1-cloud-amd64"), "").unwrap();
        check_vm_image(root).unwrap();
    }

    #[test]
    fn taps_are_named_within_the_interface_name_limit() {
        let t = tap_name(&name("a-very-long-cluster-name-worker-12"));
        assert!(t.len() <= 15 && t.starts_with("kpt"), "{t}");
        assert_ne!(t, tap_name(&name("a-very-long-cluster-name-worker-13")));
    }
}
