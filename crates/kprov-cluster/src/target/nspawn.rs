//! The nspawn target: every machine is a systemd-nspawn container booting
//! systemd from an overlay of the node image, in a network namespace of
//! its own with a veth on the cluster's bridge.
//!
//! # What a machine is, on the host
//!
//! - A directory `BASE/NAME/` (BASE is `/var/lib/kprov/machines` by
//!   default): `machine.json` (its labels, address, network and image:
//!   the record by which it is found), `upper/` and `work/` (the overlay's
//!   writable layer over the image: what the machine changed),
//!   `rootfs/` (the overlay's mount point, empty on the host),
//!   `containerd/` (bound to `/var/lib/containerd`: containerd's overlay
//!   snapshotter cannot work on an overlay; it starts as hard links of the
//!   image's own `/var/lib/containerd` when the image has one, see
//!   [`warm_containerd`] and [`link_tree`]) and `console.log`.
//! - While it runs: one process tree, found by its command line (the
//!   launcher, then `systemd-nspawn --directory=BASE/NAME/rootfs`), in
//!   the cgroup `kprov/NAME` of every cgroup hierarchy. The network
//!   namespace, the veth pair and the overlay mount belong to that process
//!   alone (the launcher makes them in namespaces of its own, see
//!   `nspawn-launch.sh`), so they go when it goes, even if it is killed.
//! - The cluster's bridge `kpbr<hash>` (alias `kprov cluster NAME`) with
//!   the network's gateway address, in the network namespace kprov runs in
//!   (or the one [`NspawnTarget::with_netns`] names); made by the first
//!   [`Target::start`], removed by [`Target::destroy_network`].
//!
//! Nothing else is kept: no inventory, no PID files. `destroy` stops the
//! process tree (SIGTERM to nspawn: a clean poweroff; then SIGKILL to
//! everything in the machine's cgroups), removes the cgroups and the
//! directory, after checking that nothing is mounted under it.
//!
//! # What kubelet and containerd need in a container here
//!
//! Found on a host whose PID 1 is not systemd, with cgroup v1 controllers
//! plus a cgroup2 at `/sys/fs/cgroup/unified` (hybrid), no kernel modules
//! (built in), and no `CAP_SYS_RESOURCE` in the bounding set:
//! - a cgroup of its own per machine (`kprov/NAME` in every hierarchy,
//!   cpuset's cpus and mems copied down, `cgroup.clone_children` on), so
//!   that two machines' systemd and kubelet never share `kubepods.slice`;
//!   nspawn then makes it the root of the machine's cgroup namespace;
//! - nspawn mounts the cgroup controllers read-only (as it does without a
//!   user namespace); the kubelet and runc write to them, so the
//!   machine's PID 1 is a shell that remounts each controller read-write
//!   (inside the namespace: only the machine's own subtree) and then
//!   execs systemd ([`CONTAINER_INIT`]);
//! - `--capability=all --private-users=no` (a privileged container, as
//!   kind's nodes are: not a security boundary), and
//!   `--system-call-filter=@keyring`: runc joins a session keyring, which
//!   nspawn's default filter refuses;
//! - `SYSTEMD_NSPAWN_API_VFS_WRITABLE=network`: `/proc/sys/net` writable
//!   for kube-proxy and the CNI plugins, the rest of `/proc/sys`
//!   read-only; so the base phase's sysctls are split: the `net.*` ones
//!   are set in each machine's network namespace by the launcher, the
//!   others (kernel.*, vm.*, fs.inotify.*) on the host by
//!   [`Target::prepare_host`] (they are the host's, shared by all nodes);
//! - `/dev/kmsg` bound read-only (the kubelet's OOM watcher reads it and
//!   does not start without it);
//! - the node's own machine-id, host name, `/etc/hosts` entry (the
//!   kubelet resolves its own name: with the image's resolver and no DNS
//!   server reachable that costs 5 s per lookup) and a resolv.conf
//!   without servers;
//! - in the node image (flags of kprov, `--node-in-container`):
//!   containerd's `restrict_oom_score_adj` (without `CAP_SYS_RESOURCE`
//!   nothing may lower an OOM score, and runc refuses to start pod
//!   sandboxes that ask for -998), the kubelet's `failSwapOn: false`,
//!   disk eviction thresholds at 0% and image garbage collection at 100%
//!   (swap and disk are the host's: this host's disk looks 90% full to
//!   the kubelet, whose default thresholds then report DiskPressure and
//!   delete every image no container uses, kube-proxy's included), and
//!   kube-proxy's `conntrack.maxPerCore: 0` (the conntrack table size is
//!   the host's).
//!
//! - no cloud: the metadata address 169.254.169.254 is an unreachable
//!   route in every machine, so that the kubelet's in-tree credential
//!   providers fail at once instead of waiting for timeouts.
//!
//! [`Target::prepare_host`] changes the host's kernel settings for good
//! (it does not put them back when the last machine goes): kernel.panic
//! 10, kernel.panic_on_oops 1, vm.overcommit_memory 1, vm.panic_on_oom 0,
//! kernel.keys.root_maxkeys and root_maxbytes, fs.inotify limits (the
//! kubelet's `protectKernelDefaults` values, from the base phase's
//! table); it loads overlay and br_netfilter when they are missing.
//!
//! # Costs measured here (2 cores, `cluster_nspawn.rs`)
//!
//! A master with the control plane: about 410 MiB resident, 136 MiB of
//! disk of its own; a worker: about 60 MiB resident, 12 MiB of disk; both
//! share the image and its containerd store (547 MiB, hard links). Two
//! machines start and boot in 3 to 4.5 s; a clean stop takes 0.2 s, a
//! destroy (SIGKILL) 0.3 s per machine.
//!
//! # Limits
//!
//! - Hosts with a pure cgroup v2 hierarchy are refused for now (untested:
//!   they need the controllers delegated through `subtree_control`).
//! - kprov must see the host's `/sys/fs/cgroup`: to run it in another
//!   network namespace, enter it with `nsenter --net=/run/netns/NAME`
//!   (which keeps the mounts) rather than `ip netns exec` (which mounts a
//!   fresh /sys without cgroups), or name the namespace with
//!   [`NspawnTarget::with_netns`].
//! - Machine names are host-wide (cgroups, the nspawn machine name): two
//!   base directories must not hold machines of the same name.
//! - Commands run by [`Target::run`] enter every namespace of the machine
//!   but stay in the caller's cgroup; a command's timeout is coreutils'
//!   `timeout` inside the machine.
//! - The cluster bridge's traffic passes the iptables FORWARD chain of the
//!   network namespace it lives in when that namespace has
//!   `net.bridge.bridge-nf-call-iptables` on: a host whose FORWARD policy
//!   is DROP (Docker sets it) keeps machines from reaching each other.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kprov_host::fs::FileAttrs;
use kprov_host::Root;
use serde::{Deserialize, Serialize};

use super::host::{
    describe, ensure_no_machines, last_lines, machine_dirs, run_checked, set_mode, strip_ansi,
    BridgeNetns, PATH,
};
use super::{
    CommandOutput, HostChange, Machine, MachineCommand, MachineSpec, MachineState, Target,
    TargetError, LABEL_CLUSTER,
};
use crate::name::{ClusterName, MachineName};
use crate::network::{bridge_name, machine_mac, veth_name, ClusterNetwork};

/// Where machines live unless told otherwise.
pub const DEFAULT_BASE_DIR: &str = "/var/lib/kprov/machines";
/// The cgroup (in every hierarchy) under which each machine gets its own.
pub const CGROUP_PARENT: &str = "kprov";
/// The launcher, run with `sh -c` (see the file).
pub const LAUNCHER: &str = include_str!("nspawn-launch.sh");
/// The launcher's `$0`, by which its processes are recognised.
const LAUNCHER_NAME: &str = "kprov-nspawn-launch";
/// How the launcher's failure message starts.
const LAUNCH_FAILED: &str = "kprov-nspawn-launch: failed";
/// The machine's PID 1: makes its cgroup controllers writable (nspawn
/// mounts them read-only without a user namespace), then becomes systemd.
pub const CONTAINER_INIT: &str = "for d in /sys/fs/cgroup/*; do \
if [ -d \"$d\" ] && [ ! -L \"$d\" ]; then mount -o remount,bind,rw \"$d\" || exit 1; fi; \
done; exec /lib/systemd/systemd";
/// The record's file name.
const RECORD: &str = "machine.json";

/// The nspawn target. See the module doc.
#[derive(Debug, Clone)]
pub struct NspawnTarget {
    base_dir: PathBuf,
    netns: Option<PathBuf>,
    cgroup_fs: PathBuf,
    start_timeout: Duration,
    stop_timeout: Duration,
}

/// A machine's paths under the base directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `BASE/NAME`.
    pub dir: PathBuf,
    /// `machine.json`.
    pub record: PathBuf,
    /// The overlay's upper directory.
    pub upper: PathBuf,
    /// The overlay's work directory.
    pub work: PathBuf,
    /// The overlay's mount point, nspawn's `--directory`.
    pub rootfs: PathBuf,
    /// Bound to `/var/lib/containerd`.
    pub containerd: PathBuf,
    /// The launcher's and nspawn's output (the console).
    pub console: PathBuf,
}

impl Layout {
    /// The layout of `name` under `base`.
    pub fn new(base: &Path, name: &MachineName) -> Self {
        let dir = base.join(name.to_string());
        Self {
            record: dir.join(RECORD),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            containerd: dir.join("containerd"),
            console: dir.join("console.log"),
            dir,
        }
    }
}

/// What `machine.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRecord {
    /// The machine's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its address.
    pub address: Ipv4Addr,
    /// The cluster's network, `GATEWAY/LEN`.
    pub network: String,
    /// The node image.
    pub image: PathBuf,
}

/// What a machine uses on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Resident memory of its processes (the cgroup's `total_rss`), bytes.
    pub memory_rss: Option<u64>,
    /// Page cache charged to it (`total_cache`), bytes; reclaimable.
    pub memory_cache: Option<u64>,
    /// Disk used by its directory alone (its writable layer, what its
    /// containerd added), bytes: files with one link.
    pub disk_own: u64,
    /// Disk its directory shares with the image (containerd's store as
    /// hard links of the image's), bytes: files with more than one link.
    pub disk_shared: u64,
}

impl NspawnTarget {
    /// A target keeping machines under `base_dir` (made, 0700, if
    /// missing), with the cluster bridges in the network namespace this
    /// process runs in.
    pub fn new(base_dir: impl AsRef<Path>) -> Result<Self, TargetError> {
        let given = base_dir.as_ref();
        std::fs::create_dir_all(given)
            .map_err(|e| TargetError::io("creating the machines' directory", given, e))?;
        let base_dir = given
            .canonicalize()
            .map_err(|e| TargetError::io("resolving", given, e))?;
        check_mount_path("the machines' directory", &base_dir)?;
        Ok(Self {
            base_dir,
            netns: None,
            cgroup_fs: PathBuf::from("/sys/fs/cgroup"),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
        })
    }

    /// Puts the cluster bridges in the network namespace at `path` (e.g.
    /// `/run/netns/NAME`) instead of this process's.
    pub fn with_netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// How long a clean shutdown may take before everything is killed.
    pub fn with_stop_timeout(mut self, limit: Duration) -> Self {
        self.stop_timeout = limit;
        self
    }

    /// The base directory.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A machine's paths.
    pub fn layout(&self, name: &MachineName) -> Layout {
        Layout::new(&self.base_dir, name)
    }

    /// The network namespace of the cluster bridges, as a path the
    /// launcher can open while this process lives.
    fn netns_path(&self) -> PathBuf {
        self.netns
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/proc/{}/ns/net", std::process::id())))
    }

    /// `ip ARGS` in the bridges' network namespace.
    fn ip(&self, args: &[&str]) -> Command {
        self.bridge_netns().ip(args)
    }

    fn bridge_netns(&self) -> BridgeNetns {
        BridgeNetns {
            path: self.netns.clone(),
        }
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
        parse_record(&text, name).map_err(|reason| TargetError::BadRecord {
            path: layout.record.clone(),
            reason,
        })
    }

    fn machine(&self, name: &MachineName, record: &MachineRecord) -> Result<Machine, TargetError> {
        let layout = self.layout(name);
        let network = record
            .network
            .parse()
            .map_err(|e: crate::network::NetworkError| TargetError::BadRecord {
                path: layout.record.clone(),
                reason: e.to_string(),
            })?;
        let state = match self.running(&layout) {
            Some(_) => MachineState::Running,
            None => MachineState::Stopped,
        };
        Ok(Machine {
            name: name.clone(),
            labels: record.labels.clone(),
            address: record.address,
            network,
            state,
        })
    }

    /// The PIDs of nspawn and of the machine's init, when it runs.
    fn running(&self, layout: &Layout) -> Option<(u32, u32)> {
        let procs = processes();
        let nspawn = procs
            .iter()
            .find(|p| is_nspawn_of(&p.argv, &layout.rootfs))?;
        let init = init_child(nspawn.pid)?;
        Some((nspawn.pid, init))
    }

    /// The cgroup hierarchies this host mounts under `/sys/fs/cgroup`.
    fn hierarchies(&self) -> Result<Vec<PathBuf>, TargetError> {
        let path = Path::new("/proc/self/mountinfo");
        let text =
            std::fs::read_to_string(path).map_err(|e| TargetError::io("reading", path, e))?;
        cgroup_hierarchies(&text, &self.cgroup_fs).map_err(|reason| TargetError::HostUnsuitable {
            target: "nspawn",
            reason,
        })
    }

    fn machine_cgroups(&self, name: &MachineName) -> Result<Vec<PathBuf>, TargetError> {
        Ok(self
            .hierarchies()?
            .into_iter()
            .map(|h| h.join(CGROUP_PARENT).join(name.to_string()))
            .collect())
    }

    /// Makes the machine's cgroup in every hierarchy; returns them.
    fn make_cgroups(&self, name: &MachineName) -> Result<Vec<PathBuf>, TargetError> {
        let dirs = self.machine_cgroups(name)?;
        for dir in &dirs {
            let parent = dir.parent().unwrap_or(dir);
            for d in [parent, dir.as_path()] {
                match std::fs::create_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(TargetError::io("creating the cgroup", d, e)),
                }
                // cpuset: a new cgroup has no CPUs or memory nodes until given
                // its parent's; with clone_children, the ones made inside the
                // machine get them too.
                let cpus = d.join("cpuset.cpus");
                if cpus.exists() {
                    let up = d.parent().unwrap_or(d);
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = std::fs::read_to_string(up.join(file))
                            .map_err(|e| TargetError::io("reading", &up.join(file), e))?;
                        write_cgroup_file(&d.join(file), value.trim())?;
                    }
                    write_cgroup_file(&d.join("cgroup.clone_children"), "1")?;
                }
            }
        }
        Ok(dirs)
    }

    /// Every process in the machine's cgroups.
    fn cgroup_pids(&self, name: &MachineName) -> Result<Vec<u32>, TargetError> {
        let mut pids = HashSet::new();
        for dir in self.machine_cgroups(name)? {
            collect_cgroup_pids(&dir, &mut pids);
        }
        let mut pids: Vec<u32> = pids.into_iter().collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Removes the machine's cgroups (depth first) and the parent when it
    /// is empty.
    fn remove_cgroups(&self, name: &MachineName) -> Result<(), TargetError> {
        for dir in self.machine_cgroups(name)? {
            // A cgroup whose last process just exited may still be busy.
            let mut attempt = 0;
            loop {
                match remove_cgroup_tree(&dir) {
                    Ok(()) => break,
                    Err(_) if attempt < 50 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(TargetError::io("removing the cgroup", &dir, e)),
                }
            }
            if let Some(parent) = dir.parent() {
                // Busy while other machines run: that is fine.
                let _ = std::fs::remove_dir(parent);
            }
        }
        Ok(())
    }

    /// Processes started for the machine (the launcher, then nspawn), by
    /// their command line.
    fn launch_pids(&self, layout: &Layout) -> Vec<u32> {
        processes()
            .into_iter()
            .filter(|p| is_machine_process(&p.argv, &layout.rootfs))
            .map(|p| p.pid)
            .collect()
    }

    /// The console from byte `from` on.
    fn console_since(&self, layout: &Layout, from: u64, lines: usize) -> String {
        let Ok(mut file) = std::fs::File::open(&layout.console) else {
            return String::new();
        };
        let mut text = Vec::new();
        if file.seek(std::io::SeekFrom::Start(from)).is_err()
            || file.read_to_end(&mut text).is_err()
        {
            return String::new();
        }
        last_lines(&strip_ansi(&String::from_utf8_lossy(&text)), lines)
    }

    /// What the machine uses on the host now.
    pub fn resources(&self, name: &MachineName) -> Result<Resources, TargetError> {
        let layout = self.layout(name);
        if !layout.dir.exists() {
            return Err(TargetError::NoSuchMachine { name: name.clone() });
        }
        let (disk_own, disk_shared) = disk_usage(&layout.dir);
        let mut res = Resources {
            disk_own,
            disk_shared,
            ..Resources::default()
        };
        for dir in self.machine_cgroups(name)? {
            let stat = dir.join("memory.stat");
            if let Ok(text) = std::fs::read_to_string(&stat) {
                let (rss, cache) = memory_stat(&text);
                res.memory_rss = rss;
                res.memory_cache = cache;
            }
        }
        Ok(res)
    }
}

impl Target for NspawnTarget {
    fn kind(&self) -> &'static str {
        "nspawn"
    }

    fn in_container(&self, _name: &MachineName) -> Result<bool, TargetError> {
        Ok(true)
    }

    fn prepare_host(&self) -> Result<Vec<HostChange>, TargetError> {
        let unsuitable = |reason: String| TargetError::HostUnsuitable {
            target: "nspawn",
            reason,
        };
        let mut version = Command::new("systemd-nspawn");
        version.arg("--version").env_clear().env("PATH", PATH);
        run_checked(&mut version)
            .map_err(|e| unsuitable(format!("systemd-nspawn does not run: {e}")))?;
        self.hierarchies()?;
        let mut changes = Vec::new();
        for (module, present) in KERNEL_FEATURES {
            if present() {
                continue;
            }
            let mut modprobe = Command::new("modprobe");
            modprobe.arg(module).env_clear().env("PATH", PATH);
            run_checked(&mut modprobe).map_err(|e| {
                unsuitable(format!(
                    "the kernel lacks {module} and loading it failed: {e}"
                ))
            })?;
            if !present() {
                return Err(unsuitable(format!(
                    "the kernel lacks {module}, even after modprobe"
                )));
            }
            changes.push(HostChange {
                what: format!("kernel module {module}"),
                from: "absent".into(),
                to: "loaded".into(),
            });
        }
        for sysctl in host_sysctls() {
            let path = sysctl_path(sysctl.key);
            let now =
                std::fs::read_to_string(&path).map_err(|e| TargetError::io("reading", &path, e))?;
            let now = now.split_whitespace().collect::<Vec<_>>().join(" ");
            if now == sysctl.value {
                continue;
            }
            std::fs::write(&path, sysctl.value)
                .map_err(|e| TargetError::io("writing", &path, e))?;
            tracing::info!(key = sysctl.key, from = %now, to = sysctl.value, "set a host sysctl for the nodes");
            changes.push(HostChange {
                what: format!("sysctl {}", sysctl.key),
                from: now,
                to: sysctl.value.to_string(),
            });
        }
        Ok(changes)
    }

    fn create(&self, spec: &MachineSpec) -> Result<Machine, TargetError> {
        let name = &spec.name;
        let bad = |reason: String| TargetError::BadSpec {
            name: name.clone(),
            reason,
        };
        spec.network.check_host(spec.address)?;
        let given = spec
            .image
            .as_ref()
            .ok_or_else(|| bad("no node image given".into()))?;
        let image = given
            .canonicalize()
            .map_err(|e| bad(format!("the node image {}: {e}", given.display())))?;
        check_mount_path("the node image", &image)?;
        if !image.join("lib/systemd/systemd").exists() {
            return Err(bad(format!(
                "the node image {} has no /lib/systemd/systemd: expected a root prebaked by `kprov provision --phase base --root`",
                image.display()
            )));
        }
        let layout = self.layout(name);
        if layout.dir.exists() {
            return Err(TargetError::Exists {
                name: name.clone(),
                detail: layout.dir.display().to_string(),
            });
        }
        if let Some(p) = processes()
            .iter()
            .find(|p| is_nspawn_named(&p.argv, &name.to_string()))
        {
            return Err(TargetError::Exists {
                name: name.clone(),
                detail: format!("systemd-nspawn runs it as process {}", p.pid),
            });
        }
        let made = (|| {
            std::fs::create_dir(&layout.dir)
                .map_err(|e| TargetError::io("creating", &layout.dir, e))?;
            set_mode(&layout.dir, 0o700)?;
            for dir in [
                &layout.upper,
                &layout.work,
                &layout.rootfs,
                &layout.containerd,
            ] {
                std::fs::create_dir(dir).map_err(|e| TargetError::io("creating", dir, e))?;
            }
            set_mode(&layout.containerd, 0o711)?;
            let seed = image.join("var/lib/containerd");
            if seed.is_dir() {
                link_tree(&seed, &layout.containerd)?;
            }
            let upper = Root::new(&layout.upper)?;
            for file in node_files(name, spec.address, &machine_id()?) {
                kprov_host::fs::write_atomic(
                    &upper,
                    Path::new(file.path),
                    file.contents.as_bytes(),
                    FileAttrs::root(file.mode),
                )?;
            }
            for unit in MASKED_UNITS {
                let path = Path::new("/etc/systemd/system").join(unit);
                kprov_host::fs::create_dir_all(&upper, Path::new("/etc/systemd/system"))?;
                kprov_host::fs::symlink_atomic(&upper, &path, Path::new("/dev/null"))?;
            }
            let record = MachineRecord {
                name: name.to_string(),
                labels: spec.all_labels(),
                address: spec.address,
                network: spec.network.to_string(),
                image: image.clone(),
            };
            let text =
                serde_json::to_string_pretty(&record).map_err(|e| TargetError::BadRecord {
                    path: layout.record.clone(),
                    reason: e.to_string(),
                })?;
            // The record last: a machine exists once it is written.
            kprov_host::fs::write_file_atomic(&layout.record, text.as_bytes(), 0o600)?;
            Ok(record)
        })();
        match made {
            Ok(record) => self.machine(name, &record),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&layout.dir);
                Err(e)
            }
        }
    }

    fn start(&self, name: &MachineName) -> Result<(), TargetError> {
        let record = self.read_record(name)?;
        let layout = self.layout(name);
        if self.running(&layout).is_some() {
            return Ok(());
        }
        let network: ClusterNetwork =
            record
                .network
                .parse()
                .map_err(|e: crate::network::NetworkError| TargetError::BadRecord {
                    path: layout.record.clone(),
                    reason: e.to_string(),
                })?;
        if self.launch_pids(&layout).is_empty() {
            self.bridge_netns()
                .ensure_bridge("nspawn", &name.cluster, &network)?;
            let cgroups = self.make_cgroups(name)?;
            let console = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&layout.console)
                .map_err(|e| TargetError::io("opening", &layout.console, e))?;
            let from = console
                .metadata()
                .map_err(|e| TargetError::io("reading", &layout.console, e))?
                .len();
            let err = console
                .try_clone()
                .map_err(|e| TargetError::io("opening", &layout.console, e))?;
            let args = LaunchArgs {
                cluster_netns: self.netns_path(),
                veth: veth_name(name),
                mac: machine_mac(name),
                bridge: bridge_name(&name.cluster),
                address: record.address,
                network,
                image: record.image.clone(),
                layout: layout.clone(),
                cgroups,
                nspawn: nspawn_args(name, &layout, Path::new("/lib/modules").is_dir()),
            };
            let mut cmd = Command::new("setsid");
            cmd.args(launch_argv(&args))
                .env_clear()
                .env("PATH", PATH)
                .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
                .stdin(Stdio::null())
                .stdout(console)
                .stderr(err);
            let status = cmd.status().map_err(|e| TargetError::Spawn {
                command: "setsid -f unshare ... systemd-nspawn".into(),
                source: e,
            })?;
            if !status.success() {
                return Err(TargetError::StartFailed {
                    name: name.clone(),
                    log: format!(
                        "setsid exited with {status}\n{}",
                        self.console_since(&layout, from, 20)
                    ),
                });
            }
            tracing::info!(machine = %name, "launched");
            let started = self.wait_started(name, &layout, from);
            if started.is_err() {
                // Leave no half-started machine: processes and cgroups go.
                let _ = self.halt(name, false);
            }
            return started;
        }
        // Another start is under way: wait for it.
        self.wait_started(name, &layout, 0)
    }

    fn wait_booted(&self, name: &MachineName, limit: Duration) -> Result<(), TargetError> {
        let start = Instant::now();
        let probe = MachineCommand::new(["systemctl", "is-system-running"])
            .timeout(Duration::from_secs(10));
        loop {
            // Before systemd listens on its socket, systemctl fails to
            // connect: that is "not yet", like "starting".
            let out = self.run(name, &probe)?;
            match out.stdout_text().trim() {
                "running" => return Ok(()),
                "degraded" => {
                    let failed = self.run(
                        name,
                        &MachineCommand::new(["systemctl", "--failed", "--no-legend", "--plain"])
                            .timeout(Duration::from_secs(10)),
                    )?;
                    let units: Vec<String> = failed
                        .stdout_text()
                        .lines()
                        .filter_map(|l| l.split_whitespace().next().map(String::from))
                        .collect();
                    return Err(TargetError::BootDegraded {
                        name: name.clone(),
                        units: units.join(", "),
                    });
                }
                _ => {}
            }
            if start.elapsed() > limit {
                return Err(TargetError::Timeout {
                    name: name.clone(),
                    what: "finish booting",
                    waited: limit,
                    log: self.logs(name, 25)?,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run(
        &self,
        name: &MachineName,
        command: &MachineCommand,
    ) -> Result<CommandOutput, TargetError> {
        let layout = self.layout(name);
        let Some((_, init)) = self.running(&layout) else {
            self.read_record(name)?;
            return Err(TargetError::NotRunning { name: name.clone() });
        };
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &init.to_string(), "--all", "--"]);
        if let Some(limit) = command.timeout {
            // coreutils' timeout inside the machine, so that the command
            // it ends is its child there and reaped there (killing nsenter
            // from out here would leave the command a zombie of the
            // host's init, which the machine's shutdown then waits for).
            cmd.args([
                "timeout",
                "--kill-after=5",
                &limit.as_secs().max(1).to_string(),
            ]);
        }
        cmd.args(&command.argv)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!(
            "{} in {name}",
            command.argv.first().map_or("", String::as_str)
        );
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| TargetError::Spawn {
            command: what.clone(),
            source: e,
        })?;
        if let (Some(input), Some(mut stdin)) = (&command.stdin, child.stdin.take()) {
            let input = input.clone();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let out = child.wait_with_output().map_err(|e| TargetError::Spawn {
            command: what,
            source: e,
        })?;
        let timed_out = command.timeout.is_some_and(|limit| {
            start.elapsed() >= limit && matches!(out.status.code(), Some(124 | 137) | None)
        });
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out,
        })
    }

    fn address(&self, name: &MachineName) -> Result<Ipv4Addr, TargetError> {
        Ok(self.read_record(name)?.address)
    }

    fn logs(&self, name: &MachineName, lines: usize) -> Result<String, TargetError> {
        let layout = self.layout(name);
        if !layout.dir.exists() {
            return Err(TargetError::NoSuchMachine { name: name.clone() });
        }
        Ok(self.console_since(&layout, 0, lines))
    }

    fn stop(&self, name: &MachineName) -> Result<(), TargetError> {
        self.halt(name, true)
    }

    fn destroy(&self, name: &MachineName) -> Result<(), TargetError> {
        let layout = self.layout(name);
        let has_cgroups = self.machine_cgroups(name)?.iter().any(|d| d.exists());
        if !layout.dir.exists() && !has_cgroups && self.launch_pids(&layout).is_empty() {
            return Err(TargetError::NoSuchMachine { name: name.clone() });
        }
        // Everything of the machine goes: no need for a clean shutdown.
        self.halt(name, false)?;
        let mountinfo = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(mountinfo)
            .map_err(|e| TargetError::io("reading", mountinfo, e))?;
        if let Some(mount) = mounts_under(&text, &layout.dir).first() {
            return Err(TargetError::HostUnsuitable {
                target: "nspawn",
                reason: format!(
                    "{} is still mounted; not removing {}",
                    mount.display(),
                    layout.dir.display()
                ),
            });
        }
        match std::fs::remove_dir_all(&layout.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TargetError::io("removing", &layout.dir, e)),
        }
    }

    fn list(&self, cluster: &ClusterName) -> Result<Vec<Machine>, TargetError> {
        let mut machines = Vec::new();
        for name in machine_dirs(&self.base_dir, cluster)? {
            let record = match self.read_record(&name) {
                Ok(r) => r,
                // Being made or removed.
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
        self.bridge_netns().remove_bridge(cluster)
    }
}

impl NspawnTarget {
    /// Ends every process of the machine, then removes its cgroups.
    /// `graceful`: first SIGTERM to nspawn, which has the machine's
    /// systemd power off, for up to the stop timeout; then (or at once)
    /// SIGKILL to whatever is left in its cgroups and of its launch.
    fn halt(&self, name: &MachineName, graceful: bool) -> Result<(), TargetError> {
        let layout = self.layout(name);
        let launched = self.launch_pids(&layout);
        if graceful && !launched.is_empty() {
            // nspawn turns SIGTERM into the kill signal for the machine's
            // systemd (SIGRTMIN+3: poweroff).
            signal("TERM", &launched)?;
            let deadline = Instant::now() + self.stop_timeout;
            while Instant::now() < deadline && launched.iter().any(|p| alive(*p)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for _ in 0..50 {
            let mut left = self.cgroup_pids(name)?;
            left.extend(self.launch_pids(&layout));
            left.retain(|p| alive(*p));
            if left.is_empty() {
                break;
            }
            if graceful {
                tracing::warn!(machine = %name, processes = ?left, "killing what is left of the machine");
            }
            signal("KILL", &left)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        self.remove_cgroups(name)?;
        self.remove_veth(name)
    }

    /// Removes the host end of the machine's veth. The kernel removes the
    /// pair with the machine's network namespace once its last process is
    /// gone, but later, from a work queue (seconds on a loaded host): a
    /// `destroy` that returned before would leave the interface behind,
    /// and a `start` right after a `stop` would find its name taken.
    fn remove_veth(&self, name: &MachineName) -> Result<(), TargetError> {
        let veth = veth_name(name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut show = self.ip(&["link", "show", "dev", &veth]);
            let out = show.output().map_err(|e| TargetError::Spawn {
                command: describe(&show),
                source: e,
            })?;
            if !out.status.success() {
                return Ok(());
            }
            // Racing the kernel's own removal: either may win.
            let _ = self.ip(&["link", "del", "dev", &veth]).output();
            if Instant::now() >= deadline {
                return Err(TargetError::Command {
                    command: describe(&self.ip(&["link", "del", "dev", &veth])),
                    status: "the interface is still there after 10 s".into(),
                    stderr: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until nspawn runs the machine's init; fails when the
    /// launcher is gone without it, or after the start timeout.
    fn wait_started(
        &self,
        name: &MachineName,
        layout: &Layout,
        console_from: u64,
    ) -> Result<(), TargetError> {
        let start = Instant::now();
        // A process's command line reads empty while it execs (setsid,
        // unshare, sh, nspawn follow each other in one process): the
        // launch has failed only when none is seen for a while, or when
        // the launcher said so.
        let mut unseen_since: Option<Instant> = None;
        loop {
            if self.running(layout).is_some() {
                return Ok(());
            }
            let log = self.console_since(layout, console_from, 25);
            let gone = if self.launch_pids(layout).is_empty() {
                unseen_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
            } else {
                unseen_since = None;
                false
            };
            if gone || log.contains(LAUNCH_FAILED) {
                return Err(TargetError::StartFailed {
                    name: name.clone(),
                    log,
                });
            }
            if start.elapsed() > self.start_timeout {
                return Err(TargetError::Timeout {
                    name: name.clone(),
                    what: "start",
                    waited: self.start_timeout,
                    log: self.console_since(layout, console_from, 25),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Copies containerd's store `src` into `dst` (an existing directory) as
/// hard links: its blobs and committed snapshots are never written in
/// place (containerd writes new files and renames, and unpacked layers
/// are only overlay lower directories), so machines can share them with
/// the image; the bolt databases (`*.db`), which are written in place, are
/// copied. Modes and owners are kept; sockets and other special files are
/// left out.
pub fn link_tree(src: &Path, dst: &Path) -> Result<(), TargetError> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(src).map_err(|e| TargetError::io("listing", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TargetError::io("listing", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = from
            .symlink_metadata()
            .map_err(|e| TargetError::io("reading", &from, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&to).map_err(|e| TargetError::io("creating", &to, e))?;
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let target =
                std::fs::read_link(&from).map_err(|e| TargetError::io("reading", &from, e))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| TargetError::io("creating", &to, e))?;
            continue;
        } else if kind.is_file() && from.extension().is_some_and(|e| e == "db") {
            std::fs::copy(&from, &to).map_err(|e| TargetError::io("copying", &from, e))?;
        } else if kind.is_file() {
            std::fs::hard_link(&from, &to).map_err(|e| TargetError::io("linking", &from, e))?;
            continue;
        } else {
            continue;
        }
        std::os::unix::fs::chown(&to, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| TargetError::io("setting the owner of", &to, e))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| TargetError::io("setting the mode of", &to, e))?;
    }
    Ok(())
}

/// Fills `image`'s `/var/lib/containerd` with the images its base phase
/// staged, imported the way every machine would import them at boot
/// (`kprov-images.service`): boots a throwaway machine (`warm<PID>`,
/// on `network`) from the image, waits until it has booted, stops it and
/// moves its store into the image. Machines made from the image then
/// start with the images in place (hard links, see [`link_tree`]) instead
/// of importing them each; their boot's import finds them there.
pub fn warm_containerd(
    target: &NspawnTarget,
    image: &Path,
    network: ClusterNetwork,
    limit: Duration,
) -> Result<(), TargetError> {
    let cluster: ClusterName =
        format!("warm{}", std::process::id())
            .parse()
            .map_err(|e: crate::name::NameError| TargetError::HostUnsuitable {
                target: "nspawn",
                reason: e.to_string(),
            })?;
    let name = MachineName::new(&cluster, crate::name::Role::Worker, 1)
        .unwrap_or_else(|| unreachable!("index 1 is valid"));
    let address = network
        .default_address(&name)
        .ok_or_else(|| TargetError::BadSpec {
            name: name.clone(),
            reason: format!("{network} has no address for it"),
        })?;
    let spec = MachineSpec {
        name: name.clone(),
        image: Some(image.to_path_buf()),
        network,
        address,
        labels: BTreeMap::new(),
    };
    let warmed = (|| -> Result<(), TargetError> {
        target.create(&spec)?;
        target.start(&name)?;
        target.wait_booted(&name, limit)?;
        target.stop(&name)?;
        let store = target.layout(&name).containerd;
        let dest = image.join("var/lib/containerd");
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| TargetError::io("removing", &dest, e))?;
        }
        std::fs::create_dir_all(image.join("var/lib"))
            .map_err(|e| TargetError::io("creating", &image.join("var/lib"), e))?;
        if std::fs::rename(&store, &dest).is_err() {
            // Another filesystem: copy instead.
            run_checked(
                Command::new("cp")
                    .arg("-a")
                    .arg(&store)
                    .arg(&dest)
                    .env_clear()
                    .env("PATH", PATH),
            )?;
        }
        Ok(())
    })();
    let destroyed = target.destroy(&name);
    let network_removed = target.destroy_network(&cluster);
    warmed?;
    destroyed?;
    network_removed
}

/// Units every machine masks: its console is read-only, so a getty on it
/// only costs memory.
pub const MASKED_UNITS: &[&str] = &["console-getty.service"];

/// Kernel features the nodes need, the module that provides each, and a
/// check that it is there (built in or loaded).
/// A kernel feature: the module that provides it, and a check that it
/// is there.
type KernelFeature = (&'static str, fn() -> bool);

const KERNEL_FEATURES: &[KernelFeature] = &[
    ("overlay", || {
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
    }),
    ("br_netfilter", || {
        Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    }),
];

/// The base phase's sysctls that are the host's: everything but `net.*`
/// (which every network namespace has its own of).
pub fn host_sysctls() -> Vec<&'static kprov_provision::tables::Sysctl> {
    kprov_provision::tables::SYSCTLS
        .iter()
        .filter(|s| !s.key.starts_with("net."))
        .collect()
}

/// The base phase's `net.*` sysctls as `KEY=VALUE`, set in each machine's
/// network namespace.
pub fn netns_sysctls() -> Vec<String> {
    kprov_provision::tables::SYSCTLS
        .iter()
        .filter(|s| s.key.starts_with("net."))
        .map(|s| format!("{}={}", s.key, s.value))
        .collect()
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// A file the target writes into a new machine's layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Path in the machine.
    pub path: &'static str,
    /// Mode.
    pub mode: u32,
    /// Contents.
    pub contents: String,
}

/// The files that make a machine itself: its host name, machine-id, its
/// name in /etc/hosts (the kubelet resolves it) and a resolv.conf without
/// servers (a lookup then fails at once instead of timing out).
pub fn node_files(name: &MachineName, address: Ipv4Addr, machine_id: &str) -> Vec<NodeFile> {
    vec![
        NodeFile {
            path: "/etc/hostname",
            mode: 0o644,
            contents: format!("{name}\n"),
        },
        NodeFile {
            path: "/etc/machine-id",
            mode: 0o444,
            contents: format!("{machine_id}\n"),
        },
        NodeFile {
            path: "/etc/hosts",
            mode: 0o644,
            contents: format!(
                "# Written by kprov for machine {name}.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{name}\n"
            ),
        },
        NodeFile {
            path: "/etc/resolv.conf",
            mode: 0o644,
            contents: format!(
                "# Written by kprov: machines of cluster {} have no DNS server.\n",
                name.cluster
            ),
        },
    ]
}

/// A fresh machine-id: 32 hex digits.
fn machine_id() -> Result<String, TargetError> {
    let path = Path::new("/proc/sys/kernel/random/uuid");
    let uuid = std::fs::read_to_string(path).map_err(|e| TargetError::io("reading", path, e))?;
    Ok(uuid.trim().replace('-', ""))
}

/// systemd-nspawn's arguments for a machine. `modules`: bind the host's
/// /lib/modules read-only (when it has one).
pub fn nspawn_args(name: &MachineName, layout: &Layout, modules: bool) -> Vec<String> {
    let mut args = vec![
        "systemd-nspawn".to_string(),
        "--quiet".into(),
        format!("--directory={}", layout.rootfs.display()),
        format!("--machine={name}"),
        format!("--hostname={name}"),
        // No machined, no scope: kprov gave the process its cgroup.
        "--register=no".into(),
        "--keep-unit".into(),
        "--capability=all".into(),
        "--private-users=no".into(),
        // runc joins a session keyring.
        "--system-call-filter=@keyring".into(),
        "--resolv-conf=off".into(),
        "--timezone=off".into(),
        "--link-journal=no".into(),
        "--console=read-only".into(),
        // PID 1 is a shell that execs systemd: say how to stop systemd.
        "--kill-signal=SIGRTMIN+3".into(),
        format!("--bind={}:/var/lib/containerd", layout.containerd.display()),
        "--bind-ro=/dev/kmsg".into(),
    ];
    if modules {
        args.push("--bind-ro=/lib/modules".into());
    }
    args.extend(["/bin/sh".into(), "-c".into(), CONTAINER_INIT.into()]);
    args
}

/// What the launcher is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    /// The network namespace of the cluster bridge.
    pub cluster_netns: PathBuf,
    /// The host end of the veth pair.
    pub veth: String,
    /// The MAC address of the machine's eth0.
    pub mac: String,
    /// The cluster bridge.
    pub bridge: String,
    /// The machine's address.
    pub address: Ipv4Addr,
    /// The cluster's network.
    pub network: ClusterNetwork,
    /// The node image (the overlay's lower directory).
    pub image: PathBuf,
    /// The machine's paths.
    pub layout: Layout,
    /// The machine's cgroups, one per hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// systemd-nspawn's command line.
    pub nspawn: Vec<String>,
}

/// `setsid`'s arguments: the launcher in a network and mount namespace of
/// its own, detached from kprov's session.
pub fn launch_argv(a: &LaunchArgs) -> Vec<String> {
    let mut argv = vec![
        "-f".to_string(),
        "unshare".into(),
        "--net".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        LAUNCHER.into(),
        LAUNCHER_NAME.into(),
        a.cluster_netns.display().to_string(),
        a.veth.clone(),
        a.bridge.clone(),
        format!("{}/{}", a.address, a.network.prefix_len()),
        a.network.gateway().to_string(),
        a.image.display().to_string(),
        a.layout.upper.display().to_string(),
        a.layout.work.display().to_string(),
        a.layout.rootfs.display().to_string(),
        a.mac.clone(),
    ];
    argv.extend(a.cgroups.iter().map(|c| c.display().to_string()));
    argv.push("--".into());
    argv.extend(netns_sysctls());
    argv.push("--".into());
    argv.extend(a.nspawn.iter().cloned());
    argv
}

/// Refuses paths that cannot go into overlayfs options or the launcher's
/// arguments: only absolute paths of letters, digits and `/._+@=-`.
fn check_mount_path(what: &str, path: &Path) -> Result<(), TargetError> {
    let text = path.to_string_lossy();
    let ok = path.is_absolute()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+@=-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TargetError::HostUnsuitable {
            target: "nspawn",
            reason: format!(
                "{what} {}: expected an absolute path of letters, digits and /._+@=- (it goes into overlayfs options)",
                path.display()
            ),
        })
    }
}

fn write_cgroup_file(path: &Path, value: &str) -> Result<(), TargetError> {
    std::fs::write(path, value).map_err(|e| TargetError::io("writing", path, e))
}

fn collect_cgroup_pids(dir: &Path, pids: &mut HashSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_cgroup_pids(&entry.path(), pids);
            }
        }
    }
}

/// Removes a cgroup and every cgroup under it (cgroupfs: rmdir only).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn signal(name: &str, pids: &[u32]) -> Result<(), TargetError> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .env_clear()
        .env("PATH", PATH)
        .stderr(Stdio::null());
    // A process may exit between the listing and the signal.
    cmd.status().map_err(|e| TargetError::Spawn {
        command: describe(&cmd),
        source: e,
    })?;
    Ok(())
}

/// Whether a process exists and is not a zombie (a zombie is gone for
/// every purpose here; its parent reaps it when it will).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| process_state(&stat).is_some_and(|s| s != 'Z' && s != 'X'))
}

/// The state letter of a `/proc/PID/stat` line (after the command name,
/// which may hold spaces and parentheses).
fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A process and its command line.
struct Proc {
    pid: u32,
    argv: Vec<String>,
}

fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv = parse_cmdline(&raw);
            (!argv.is_empty()).then_some(Proc { pid, argv })
        })
        .collect()
}

/// `/proc/PID/cmdline` as words.
fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

fn is_nspawn(argv: &[String]) -> bool {
    argv.first()
        .is_some_and(|a| a == "systemd-nspawn" || a.ends_with("/systemd-nspawn"))
}

/// systemd-nspawn running the machine whose root is `rootfs`.
fn is_nspawn_of(argv: &[String], rootfs: &Path) -> bool {
    let want = format!("--directory={}", rootfs.display());
    is_nspawn(argv) && argv.contains(&want)
}

/// systemd-nspawn running a machine named `name` (from any directory).
fn is_nspawn_named(argv: &[String], name: &str) -> bool {
    let want = format!("--machine={name}");
    is_nspawn(argv) && argv.contains(&want)
}

/// A process started for the machine whose root is `rootfs`: the
/// launcher at any stage (setsid, unshare, sh) or nspawn.
fn is_machine_process(argv: &[String], rootfs: &Path) -> bool {
    if is_nspawn_of(argv, rootfs) {
        return true;
    }
    let root = rootfs.display().to_string();
    argv.iter().any(|a| a == LAUNCHER_NAME) && argv.contains(&root)
}

/// nspawn's child in another PID namespace: the machine's init.
fn init_child(nspawn: u32) -> Option<u32> {
    let own_ns = std::fs::read_link(format!("/proc/{nspawn}/ns/pid")).ok()?;
    let tasks = std::fs::read_dir(format!("/proc/{nspawn}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let ns = std::fs::read_link(format!("/proc/{child}/ns/pid")).ok();
            if ns.is_some_and(|ns| ns != own_ns) && alive(child) {
                return Some(child);
            }
        }
    }
    None
}

/// The cgroup hierarchies mounted under `cgroup_fs` (each controller's
/// directory, `systemd`, `unified`), from `/proc/self/mountinfo`; an error
/// for a host without them or with a pure cgroup v2 hierarchy.
pub fn cgroup_hierarchies(mountinfo: &str, cgroup_fs: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for (mount_point, fstype) in mounts(mountinfo) {
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if mount_point == cgroup_fs {
            return Err(format!(
                "{} is a pure cgroup v2 hierarchy, which the nspawn target does not support yet (it needs cgroup v1 controllers, as on this project's test hosts)",
                cgroup_fs.display()
            ));
        }
        if mount_point.parent() == Some(cgroup_fs) && !found.contains(&mount_point) {
            found.push(mount_point);
        }
    }
    if found.is_empty() {
        return Err(format!(
            "no cgroup hierarchy is mounted under {} in kprov's mount namespace (run kprov in a network namespace with `nsenter --net=...`, not `ip netns exec`, which mounts a fresh /sys)",
            cgroup_fs.display()
        ));
    }
    found.sort();
    Ok(found)
}

/// `(mount point, filesystem type)` of each line of a mountinfo file.
fn mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((
                PathBuf::from(unescape_mount(mount_point)),
                fstype.to_string(),
            ))
        })
        .collect()
}

/// Mount points at or under `dir`.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mounts(mountinfo)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_record(text: &str, name: &MachineName) -> Result<MachineRecord, String> {
    let record: MachineRecord =
        serde_json::from_str(text).map_err(|e| format!("not a machine record: {e}"))?;
    if record.name != name.to_string() {
        return Err(format!(
            "the record is of machine {:?}, not {name}",
            record.name
        ));
    }
    Ok(record)
}

/// `total_rss` and `total_cache` of a cgroup v1 `memory.stat`.
fn memory_stat(text: &str) -> (Option<u64>, Option<u64>) {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    (get("total_rss"), get("total_cache"))
}

/// Bytes of disk under `dir` (allocated blocks, symlinks not followed):
/// of files with one link and directories, and of files with several
/// links (each counted once).
fn disk_usage(dir: &Path) -> (u64, u64) {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, own: &mut u64, shared: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let bytes = meta.blocks() * 512;
            if meta.is_file() && meta.nlink() > 1 {
                *shared += bytes;
            } else {
                *own += bytes;
            }
            if meta.is_dir() {
                walk(&entry.path(), seen, own, shared);
            }
        }
    }
    let (mut own, mut shared) = (0, 0);
    walk(dir, &mut HashSet::new(), &mut own, &mut shared);
    (own, shared)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::name::Role;

    fn name(s: &str) -> MachineName {
        s.parse().unwrap()
    }

    #[test]
    fn a_machines_layout_is_one_directory_named_after_it() {
        let l = Layout::new(Path::new("/var/lib/kprov/machines"), &name("demo-worker-2"));
        assert_eq!(l.dir, Path::new("/var/lib/kprov/machines/demo-worker-2"));
        assert_eq!(l.rootfs, l.dir.join("rootfs"));
        assert_eq!(l.record, l.dir.join("machine.json"));
        for p in [&l.upper, &l.work, &l.containerd, &l.console] {
            assert_eq!(p.parent(), Some(l.dir.as_path()));
        }
    }

    #[test]
    fn nspawn_boots_a_shell_that_makes_cgroups_writable_then_execs_systemd() {
        let l = Layout::new(Path::new("/m"), &name("demo-master-1"));
        let args = nspawn_args(&name("demo-master-1"), &l, false);
        assert_eq!(args[0], "systemd-nspawn");
        for want in [
            "--directory=/m/demo-master-1/rootfs",
            "--machine=demo-master-1",
            "--hostname=demo-master-1",
            "--register=no",
            "--keep-unit",
            "--capability=all",
            "--private-users=no",
            "--system-call-filter=@keyring",
            "--kill-signal=SIGRTMIN+3",
            "--bind=/m/demo-master-1/containerd:/var/lib/containerd",
            "--bind-ro=/dev/kmsg",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        assert!(!args.iter().any(|a| a == "--bind-ro=/lib/modules"));
        assert!(!args.iter().any(|a| a == "-b" || a == "--boot"));
        assert_eq!(&args[args.len() - 3..], ["/bin/sh", "-c", CONTAINER_INIT]);
        assert!(CONTAINER_INIT.ends_with("exec /lib/systemd/systemd"));
        assert!(nspawn_args(&name("demo-master-1"), &l, true)
            .iter()
            .any(|a| a == "--bind-ro=/lib/modules"));
    }

    #[test]
    fn the_launcher_gets_its_values_as_arguments_in_the_order_it_reads_them() {
        let l = Layout::new(Path::new("/m"), &name("demo-worker-1"));
        let a = LaunchArgs {
            cluster_netns: "/run/netns/t".into(),
            veth: "kpv0123456789".into(),
            mac: "02:00:00:00:00:01".into(),
            bridge: "kpbr0123456789".into(),
            address: Ipv4Addr::new(10, 80, 0, 101),
            network: "10.80.0.1/24".parse().unwrap(),
            image: "/images/node".into(),
            layout: l.clone(),
            cgroups: vec!["/sys/fs/cgroup/cpu/kprov/demo-worker-1".into()],
            nspawn: vec!["systemd-nspawn".into(), "--quiet".into()],
        };
        let argv = launch_argv(&a);
        let script_at = argv.iter().position(|w| w == LAUNCHER).unwrap();
        assert_eq!(
            &argv[..script_at],
            [
                "-f",
                "unshare",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c"
            ]
        );
        let rest = &argv[script_at + 1..];
        assert_eq!(
            &rest[..11],
            [
                LAUNCHER_NAME,
                "/run/netns/t",
                "kpv0123456789",
                "kpbr0123456789",
                "10.80.0.101/24",
                "10.80.0.1",
                "/images/node",
                "/m/demo-worker-1/upper",
                "/m/demo-worker-1/work",
                "/m/demo-worker-1/rootfs",
                "02:00:00:00:00:01"
            ]
        );
        let seps: Vec<usize> = rest
            .iter()
            .enumerate()
            .filter(|(_, w)| *w == "--")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(seps.len(), 2, "{rest:?}");
        assert_eq!(
            &rest[11..seps[0]],
            ["/sys/fs/cgroup/cpu/kprov/demo-worker-1"]
        );
        assert_eq!(rest[seps[0] + 1..seps[1]].to_vec(), netns_sysctls());
        assert_eq!(&rest[seps[1] + 1..], ["systemd-nspawn", "--quiet"]);
        // The launcher reads nine values, then the lists.
        assert!(LAUNCHER.contains("shift 9"));
        assert!(LAUNCHER.contains(&format!("echo \"{LAUNCH_FAILED} while $step")));
        // Nothing of a machine's goes into the script's text.
        assert!(!LAUNCHER.contains("demo"));
        assert!(!LAUNCHER.contains("$(") && !LAUNCHER.contains('`'));
    }

    #[test]
    fn the_launcher_and_the_containers_init_are_valid_sh() {
        for script in [LAUNCHER, CONTAINER_INIT, super::super::COPY_SCRIPT] {
            let out = Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "sh -n: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn the_base_phases_sysctls_split_into_the_hosts_and_each_namespaces() {
        let net = netns_sysctls();
        assert!(
            net.contains(&"net.ipv4.ip_forward=1".to_string()),
            "{net:?}"
        );
        assert!(net.contains(&"net.bridge.bridge-nf-call-iptables=1".to_string()));
        let host: Vec<&str> = host_sysctls().iter().map(|s| s.key).collect();
        for key in [
            "vm.overcommit_memory",
            "kernel.panic",
            "fs.inotify.max_user_watches",
        ] {
            assert!(host.contains(&key), "{key} not in {host:?}");
        }
        assert!(host.iter().all(|k| !k.starts_with("net.")));
        assert_eq!(
            net.len() + host.len(),
            kprov_provision::tables::SYSCTLS.len()
        );
        assert_eq!(
            sysctl_path("vm.overcommit_memory"),
            Path::new("/proc/sys/vm/overcommit_memory")
        );
    }

    #[test]
    fn node_files_name_the_machine_and_give_it_no_dns_server() {
        let files = node_files(
            &name("demo-worker-1"),
            Ipv4Addr::new(10, 80, 0, 101),
            "ab12",
        );
        let get = |p: &str| files.iter().find(|f| f.path == p).unwrap().contents.clone();
        assert_eq!(get("/etc/hostname"), "demo-worker-1\n");
        assert_eq!(get("/etc/machine-id"), "ab12\n");
        assert!(get("/etc/hosts")
            .lines()
            .any(|l| l == "10.80.0.101\tdemo-worker-1"));
        assert!(get("/etc/hosts")
            .lines()
            .any(|l| l.starts_with("127.0.0.1\tlocalhost")));
        assert!(!get("/etc/resolv.conf").contains("nameserver"));
    }

    #[test]
    fn cgroup_hierarchies_come_from_mountinfo_and_a_pure_v2_host_is_refused() {
        let hybrid = "\
24 1 0:22 / /sys rw - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 1 0:31 / /var/lib/x\\040y rw - ext4 /dev/vda rw
";
        let fs = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_hierarchies(hybrid, fs).unwrap(),
            ["cpu", "memory", "systemd", "unified"].map(|h| fs.join(h))
        );
        let v2 = "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(cgroup_hierarchies(v2, fs)
            .unwrap_err()
            .contains("pure cgroup v2"));
        let none = "24 1 0:22 / /sys rw - sysfs sysfs rw\n";
        assert!(cgroup_hierarchies(none, fs)
            .unwrap_err()
            .contains("ip netns exec"));
        assert_eq!(
            mounts_under(hybrid, Path::new("/var/lib")),
            [PathBuf::from("/var/lib/x y")]
        );
        assert!(mounts_under(hybrid, Path::new("/var/lib/x")).is_empty());
    }

    #[test]
    fn machine_processes_are_recognised_by_their_command_line() {
        let rootfs = Path::new("/m/demo-master-1/rootfs");
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let nspawn = words(
            "systemd-nspawn --quiet --directory=/m/demo-master-1/rootfs --machine=demo-master-1",
        );
        assert!(is_nspawn_of(&nspawn, rootfs));
        assert!(is_machine_process(&nspawn, rootfs));
        assert!(is_nspawn_named(&nspawn, "demo-master-1"));
        assert!(!is_nspawn_named(&nspawn, "demo-master-10"));
        let other = words("systemd-nspawn --directory=/m/demo-master-10/rootfs");
        assert!(!is_machine_process(&other, rootfs));
        let launcher = vec![
            "sh".to_string(),
            "-c".into(),
            LAUNCHER.into(),
            LAUNCHER_NAME.into(),
            "/run/netns/t".into(),
            "/m/demo-master-1/rootfs".into(),
        ];
        assert!(is_machine_process(&launcher, rootfs));
        assert!(!is_nspawn_of(&launcher, rootfs));
        let unrelated = words("cat /m/demo-master-1/rootfs");
        assert!(!is_machine_process(&unrelated, rootfs));
        assert_eq!(parse_cmdline(b"a\0b c\0\0"), ["a", "b c"]);
    }

    #[test]
    fn a_seed_store_is_linked_except_its_databases_which_are_copied() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let blobs = src.join("io.containerd.content.v1.content/blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("abc"), "layer").unwrap();
        let bolt = src.join("io.containerd.metadata.v1.bolt");
        std::fs::create_dir_all(&bolt).unwrap();
        std::fs::write(bolt.join("meta.db"), "db").unwrap();
        std::fs::set_permissions(&bolt, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("blobs", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        link_tree(&src, &dst).unwrap();

        let ino = |p: &Path| p.metadata().unwrap().ino();
        let blob = Path::new("io.containerd.content.v1.content/blobs/sha256/abc");
        assert_eq!(
            ino(&src.join(blob)),
            ino(&dst.join(blob)),
            "blobs are shared"
        );
        let db = Path::new("io.containerd.metadata.v1.bolt/meta.db");
        assert_ne!(
            ino(&src.join(db)),
            ino(&dst.join(db)),
            "databases are copied"
        );
        assert_eq!(std::fs::read_to_string(dst.join(db)).unwrap(), "db");
        let mode = dst
            .join("io.containerd.metadata.v1.bolt")
            .metadata()
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("blobs")
        );
        // Writing the copy's database leaves the seed's alone.
        std::fs::write(dst.join(db), "changed").unwrap();
        assert_eq!(std::fs::read_to_string(src.join(db)).unwrap(), "db");
    }

    #[test]
    fn disk_usage_tells_a_machines_own_files_from_those_it_shares() {
        let dir = tempfile::tempdir().unwrap();
        let machine = dir.path().join("m");
        std::fs::create_dir(&machine).unwrap();
        std::fs::write(machine.join("own"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(dir.path().join("image-file"), vec![2u8; 128 * 1024]).unwrap();
        std::fs::hard_link(dir.path().join("image-file"), machine.join("shared")).unwrap();
        let (own, shared) = disk_usage(&machine);
        assert!((64 * 1024..96 * 1024).contains(&own), "{own}");
        assert!((128 * 1024..160 * 1024).contains(&shared), "{shared}");
    }

    #[test]
    fn process_states_are_read_after_the_command_name() {
        assert_eq!(process_state("12 (systemd-nspawn) S 1 12"), Some('S'));
        assert_eq!(process_state("12 (a) b (c)) Z 1 12"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn records_must_name_the_machine_they_belong_to() {
        let good = r#"{"name":"demo-master-1","labels":{"kprov.dev/cluster":"demo"},"address":"10.80.0.11","network":"10.80.0.1/24","image":"/i"}"#;
        let r = parse_record(good, &name("demo-master-1")).unwrap();
        assert_eq!(r.address, Ipv4Addr::new(10, 80, 0, 11));
        assert!(parse_record(good, &name("demo-master-2"))
            .unwrap_err()
            .contains("not demo-master-2"));
        assert!(parse_record("{}", &name("demo-master-1"))
            .unwrap_err()
            .starts_with("not a machine record"));
        let extra = good.replace("\"image\"", "\"extra\":1,\"image\"");
        assert!(parse_record(&extra, &name("demo-master-1")).is_err());
    }

    #[test]
    fn mount_paths_are_limited_to_what_overlayfs_options_can_carry() {
        for good in [
            "/var/lib/kprov/machines",
            "/var/tmp/kprov-tests/run-1/x_y.z+1@a=b",
        ] {
            assert!(check_mount_path("p", Path::new(good)).is_ok(), "{good}");
        }
        for bad in ["relative", "/a,b", "/a:b", "/a b", "/a\\b", "/a\nb"] {
            let err = check_mount_path("the node image", Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("the node image") && err.contains("overlayfs"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn memory_stat_gives_rss_and_cache() {
        let text = "cache 1\nrss 2\ntotal_cache 300\ntotal_rss 400\n";
        assert_eq!(memory_stat(text), (Some(400), Some(300)));
        assert_eq!(memory_stat(""), (None, None));
    }

    #[test]
    fn all_labels_carry_cluster_and_role_from_the_name() {
        let spec = MachineSpec {
            name: MachineName::new(&"demo".parse().unwrap(), Role::Worker, 2).unwrap(),
            image: Some("/i".into()),
            network: "10.80.0.1/24".parse().unwrap(),
            address: Ipv4Addr::new(10, 80, 0, 102),
            labels: BTreeMap::from([
                ("team".to_string(), "a".to_string()),
                (LABEL_CLUSTER.to_string(), "other".to_string()),
            ]),
        };
        let labels = spec.all_labels();
        assert_eq!(labels[LABEL_CLUSTER], "demo");
        assert_eq!(labels[super::super::LABEL_ROLE], "worker");
        assert_eq!(labels["team"], "a");
    }
}
