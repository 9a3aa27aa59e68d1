//! Targets: where a cluster's machines run, behind one interface,
//! [`Target`].
//!
//! A target makes machines from the node image (a root prebaked by
//! `kprov provision --phase base --root`), starts and stops them, runs
//! commands in them, copies files in, says their address, destroys them
//! and lists a cluster's machines. It keeps no inventory: every machine
//! is found on the target itself, by its name (`NAME-master-1`,
//! `NAME-worker-2`, ..., see [`crate::name`]) and its labels
//! ([`LABEL_CLUSTER`], [`LABEL_ROLE`]), so that any kprov process can
//! find, converge and remove what another one made. Each method is
//! blocking and does one thing; the cluster layer above (phases, exit
//! criteria, the CLI) decides what to call, in which order, with which
//! timeouts.
//!
//! Implementations:
//! - [`nspawn`]: systemd-nspawn containers on this host, one network
//!   namespace each, on a bridge per cluster.
//! - [`qemu`]: qemu VMs on this host, with a tap each on a bridge per
//!   cluster, configured over NoCloud and driven over ssh.
//! - [`ssh`]: existing hosts, reached with the user's OpenSSH; "create"
//!   adopts a host (labels it, copies kprov over), "destroy" resets it.
//!
//! # Adding a target
//!
//! 1. Add a module here (`target/NAME.rs`) with a struct holding the
//!    target's settings (where machines live, how to reach the host or
//!    API) and `impl Target for` it. Keep what can be computed apart from
//!    what has side effects: the argument lists, file contents and names
//!    a target derives from a [`MachineSpec`] are pure functions with
//!    unit tests; the methods only run them.
//! 2. Store the labels with the machine, in whatever the target offers
//!    for metadata (a file next to the machine's disk, a VM's
//!    description, a cloud's tags), so that [`Target::list`] can answer
//!    from the target alone. A machine whose labels cannot be read is not
//!    one of kprov's and must never be touched.
//! 3. Give every machine the address of its [`MachineSpec`] on the
//!    cluster's network, and make [`Target::destroy`] and
//!    [`Target::destroy_network`] remove everything create/start made
//!    (processes, disks, mounts, interfaces) and nothing else; a second
//!    call finds nothing to do.
//! 4. Put what the host itself must provide for nodes (kernel settings
//!    shared by every machine, tools) into [`Target::prepare_host`], which
//!    reports each change it made.
//! 5. Test it on real parts (see `crates/kprov/tests/cluster_nspawn.rs`):
//!    two machines of a cluster up to Ready nodes, then destroyed, with a
//!    check that nothing is left.

pub mod host;
pub mod nspawn;
pub mod qemu;
pub mod ssh;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::name::{ClusterName, MachineName};
use crate::network::{ClusterNetwork, NetworkError};

/// The label naming a machine's cluster.
pub const LABEL_CLUSTER: &str = "kprov.dev/cluster";
/// The label naming a machine's role (`master` or `worker`).
pub const LABEL_ROLE: &str = "kprov.dev/role";

/// What a machine is made from and given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// Its name, which says its cluster and role.
    pub name: MachineName,
    /// The node image: a root directory prebaked by `kprov provision
    /// --phase base --root`. Machines only read it; it must not change
    /// while any machine made from it exists. `None` for targets whose
    /// machines exist already ([`Target::needs_image`] is false).
    pub image: Option<PathBuf>,
    /// The cluster's network.
    pub network: ClusterNetwork,
    /// The machine's address on it.
    pub address: Ipv4Addr,
    /// Labels besides [`LABEL_CLUSTER`] and [`LABEL_ROLE`], which come
    /// from the name.
    pub labels: BTreeMap<String, String>,
}

impl MachineSpec {
    /// Every label of the machine: the given ones, then cluster and role
    /// from its name (which win).
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_CLUSTER.into(), self.name.cluster.to_string());
        labels.insert(LABEL_ROLE.into(), self.name.role.to_string());
        labels
    }
}

/// Whether a machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    /// Booted or booting: commands can run in it.
    Running,
    /// Created, not running.
    Stopped,
}

/// A machine as the target reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Its name.
    pub name: MachineName,
    /// Its labels, cluster and role included.
    pub labels: BTreeMap<String, String>,
    /// Its address on the cluster's network.
    pub address: Ipv4Addr,
    /// The cluster's network.
    pub network: ClusterNetwork,
    /// Whether it runs.
    pub state: MachineState,
}

/// A command to run in a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineCommand {
    /// The program and its arguments. Secrets never go here (command
    /// lines are visible to every user of the machine): pass them in
    /// `env` or `stdin`.
    pub argv: Vec<String>,
    /// Environment variables besides a standard `PATH`; nothing else of
    /// the caller's environment reaches the command.
    pub env: Vec<(String, String)>,
    /// Standard input; empty when `None`.
    pub stdin: Option<Vec<u8>>,
    /// Killed after this long, when set.
    pub timeout: Option<Duration>,
}

impl MachineCommand {
    /// `argv` with no environment, input or timeout.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets a timeout.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

/// What a command in a machine did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit code; `None` when a signal ended it (or the timeout did).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Whether the timeout ended it.
    pub timed_out: bool,
}

impl CommandOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A change [`Target::prepare_host`] made to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    /// What changed, e.g. `sysctl vm.overcommit_memory`.
    pub what: String,
    /// Its value before.
    pub from: String,
    /// Its value now.
    pub to: String,
}

/// Why a target operation failed. Each names the machine, path or
/// command concerned.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No machine of that name on the target.
    #[error("no machine {name} on this target")]
    NoSuchMachine {
        /// The machine.
        name: MachineName,
    },
    /// A machine of that name exists already.
    #[error("machine {name} exists already ({detail})")]
    Exists {
        /// The machine.
        name: MachineName,
        /// Where it was found.
        detail: String,
    },
    /// The machine must run for this.
    #[error("machine {name} is not running")]
    NotRunning {
        /// The machine.
        name: MachineName,
    },
    /// The cluster still has machines.
    #[error("cluster {cluster} still has machines: {}", .machines.join(", "))]
    ClusterInUse {
        /// The cluster.
        cluster: ClusterName,
        /// Its machines.
        machines: Vec<String>,
    },
    /// A spec the target cannot make.
    #[error("machine {name}: {reason}")]
    BadSpec {
        /// The machine.
        name: MachineName,
        /// What is wrong.
        reason: String,
    },
    /// An address that does not fit the network.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A file of the target's own that cannot be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// kprov-host refused or failed a write.
    #[error(transparent)]
    Host(#[from] kprov_host::HostError),
    /// A record that is not what the target writes.
    #[error("{path}: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}){}", tail(.stderr))]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The host lacks something every machine needs.
    #[error("this host cannot run {target} machines: {reason}")]
    HostUnsuitable {
        /// The target kind.
        target: &'static str,
        /// What is missing.
        reason: String,
    },
    /// A machine did not reach a state in time.
    #[error("machine {name} did not {what} within {} s{}", .waited.as_secs(), tail(.log))]
    Timeout {
        /// The machine.
        name: MachineName,
        /// What it did not do.
        what: &'static str,
        /// How long it was given.
        waited: Duration,
        /// The last lines of its log.
        log: String,
    },
    /// A machine booted with failed units.
    #[error("machine {name} booted degraded: failed units: {units}")]
    BootDegraded {
        /// The machine.
        name: MachineName,
        /// The failed units, as the machine lists them.
        units: String,
    },
    /// A host's key is not the one known_hosts has for it (or none is
    /// known): kprov never accepts a host key on its own.
    #[error("{name}: the host key of {destination} is not the one known_hosts has for it (or none is known); refusing to connect. Check the host, then add its key to known_hosts{}", tail(.detail))]
    HostKey {
        /// The machine.
        name: MachineName,
        /// The ssh destination.
        destination: String,
        /// What ssh said.
        detail: String,
    },
    /// A host could not be reached.
    #[error("{name}: cannot reach {destination} over ssh{}", tail(.detail))]
    Unreachable {
        /// The machine.
        name: MachineName,
        /// The ssh destination.
        destination: String,
        /// What ssh said.
        detail: String,
    },
    /// Something this target does not do.
    #[error("the {target} target cannot {what}")]
    Unsupported {
        /// The target kind.
        target: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// A copied file arrived different from the original.
    #[error("{name}: {dest} has sha256 {got} after the copy, expected {want}")]
    CopyMismatch {
        /// The machine.
        name: MachineName,
        /// The file in the machine.
        dest: PathBuf,
        /// What the machine computed.
        got: String,
        /// The local file's digest.
        want: String,
    },
    /// A machine failed to start.
    #[error("machine {name} failed to start{}", tail(.log))]
    StartFailed {
        /// The machine.
        name: MachineName,
        /// The last lines of its log.
        log: String,
    },
}

fn tail(text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", text.trim_end())
    }
}

impl TargetError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a cluster's machines run. See the module doc for the contract
/// and how to add one.
pub trait Target: Sync {
    /// The target's name, e.g. `nspawn`.
    fn kind(&self) -> &'static str;

    /// Whether [`Target::create`] needs [`MachineSpec::image`] (false for
    /// targets whose machines exist already).
    fn needs_image(&self) -> bool {
        true
    }

    /// Checks that `image` is a node image this target can make machines
    /// from; the reason names what is missing. By default: a root
    /// prebaked by `kprov provision --phase base --root` (it holds kprov
    /// and the kubelet).
    fn check_image(&self, image: &Path) -> Result<(), String> {
        for needed in ["usr/local/bin/kprov", "usr/local/bin/kubelet"] {
            if std::fs::symlink_metadata(image.join(needed)).is_err() {
                return Err(format!(
                    "has no {needed}: expected a root prebaked by `kprov provision --phase base --root`"
                ));
            }
        }
        Ok(())
    }

    /// Whether the machine is a container (its kubelet then needs
    /// `--node-in-container`).
    fn in_container(&self, name: &MachineName) -> Result<bool, TargetError>;

    /// Checks the host and sets what every machine of the target shares
    /// with it (kernel settings, modules); idempotent. Returns each change
    /// it made.
    fn prepare_host(&self) -> Result<Vec<HostChange>, TargetError>;

    /// Makes a machine from `spec.image`, stopped. Refuses a name that
    /// exists.
    fn create(&self, spec: &MachineSpec) -> Result<Machine, TargetError>;

    /// Starts a created machine and returns once commands can run in it
    /// (its init runs; booting goes on). Starting a running machine does
    /// nothing.
    fn start(&self, name: &MachineName) -> Result<(), TargetError>;

    /// Waits until a started machine has booted: its init reports the
    /// system running. Fails naming the failed units when it boots
    /// degraded, or with the machine's last log lines after `limit`.
    fn wait_booted(&self, name: &MachineName, limit: Duration) -> Result<(), TargetError>;

    /// Runs a command in a running machine, as root, and waits for it.
    fn run(
        &self,
        name: &MachineName,
        command: &MachineCommand,
    ) -> Result<CommandOutput, TargetError>;

    /// Copies the host file `src` to `dest` in a running machine with
    /// `mode` (never readable by others while it is written); replaces
    /// `dest` atomically and makes its directory, and checks that the
    /// copy's sha256 is the original's. By default [`copy_in_by_run`],
    /// through [`Target::run`].
    fn copy_in(
        &self,
        name: &MachineName,
        src: &Path,
        dest: &Path,
        mode: u32,
    ) -> Result<(), TargetError> {
        copy_in_by_run(self, name, src, dest, mode)
    }

    /// The machine's address on its cluster's network.
    fn address(&self, name: &MachineName) -> Result<Ipv4Addr, TargetError>;

    /// The last `lines` lines of the machine's console or boot log, for
    /// diagnoses.
    fn logs(&self, name: &MachineName, lines: usize) -> Result<String, TargetError>;

    /// Stops a machine (a clean shutdown, forced after a time); its disk
    /// stays. Stopping a stopped machine does nothing.
    fn stop(&self, name: &MachineName) -> Result<(), TargetError>;

    /// Stops the machine and removes everything that belongs to it.
    fn destroy(&self, name: &MachineName) -> Result<(), TargetError>;

    /// The machines of `cluster`, by name.
    fn list(&self, cluster: &ClusterName) -> Result<Vec<Machine>, TargetError>;

    /// Removes what a cluster's machines shared (its network), once none
    /// is left; does nothing when there is nothing to remove.
    fn destroy_network(&self, cluster: &ClusterName) -> Result<(), TargetError>;
}

/// Writes `dest` (`$1`) from standard input with mode `$2`, through a
/// temporary file made under umask 077 and renamed, and prints the sha256
/// of what it wrote.
pub const COPY_SCRIPT: &str = "set -eu; umask 077; mkdir -p \"$(dirname \"$1\")\"; \
t=\"$1.kprov-copy.$$\"; cat > \"$t\"; chmod \"$2\" \"$t\"; sha256sum < \"$t\"; mv -f \"$t\" \"$1\"";

/// [`Target::copy_in`] for targets that can pass standard input to a
/// command: [`write_in_by_run`] with the file's contents.
pub fn copy_in_by_run<T: Target + ?Sized>(
    target: &T,
    name: &MachineName,
    src: &Path,
    dest: &Path,
    mode: u32,
) -> Result<(), TargetError> {
    let contents = std::fs::read(src).map_err(|e| TargetError::io("reading", src, e))?;
    write_in_by_run(target, name, contents, dest, mode)
}

/// Writes `contents` to `dest` in a machine with `mode`: [`COPY_SCRIPT`]
/// run there, the digest it prints compared with that of `contents`.
pub fn write_in_by_run<T: Target + ?Sized>(
    target: &T,
    name: &MachineName,
    contents: Vec<u8>,
    dest: &Path,
    mode: u32,
) -> Result<(), TargetError> {
    if !dest.is_absolute() {
        return Err(TargetError::BadSpec {
            name: name.clone(),
            reason: format!(
                "copy destination {} is not an absolute path",
                dest.display()
            ),
        });
    }
    let want = sha256_hex(&contents);
    let mut command = MachineCommand::new([
        "sh",
        "-c",
        COPY_SCRIPT,
        "kprov-copy-in",
        &dest.to_string_lossy(),
        &format!("{mode:o}"),
    ]);
    command.stdin = Some(contents);
    command.timeout = Some(Duration::from_secs(300));
    let out = target.run(name, &command)?;
    if !out.success() {
        return Err(TargetError::Command {
            command: format!("writing {}:{}", name, dest.display()),
            status: format!("{:?}", out.code),
            stderr: out.stderr_text(),
        });
    }
    let got = out
        .stdout_text()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if got != want {
        return Err(TargetError::CopyMismatch {
            name: name.clone(),
            dest: dest.to_path_buf(),
            got,
            want,
        });
    }
    Ok(())
}

/// The hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}
