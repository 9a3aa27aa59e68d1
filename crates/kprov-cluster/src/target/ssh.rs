//! The ssh target: existing hosts, listed in the cluster's config
//! (`--ssh-host MACHINE=DESTINATION`), reached with the user's OpenSSH
//! client, so their ssh config, agent and known_hosts apply.
//!
//! - Host keys are always checked: ssh runs with
//!   `StrictHostKeyChecking=yes` and `BatchMode=yes`, so a host whose key
//!   is unknown or differs from known_hosts is refused
//!   ([`TargetError::HostKey`]) before anything runs on it, and no prompt
//!   ever waits for an answer.
//! - The ssh user must be root on the host (`User root` in the ssh
//!   config, or `root@` in the destination).
//! - "Create" adopts a host: it writes the machine's record
//!   ([`RECORD_PATH`]: its name, labels and address), which is how
//!   [`Target::list`] finds it again; a host recorded as another machine
//!   is refused. Every `wait_booted` makes sure the host runs this very
//!   kprov: the local binary is copied to [`REMOTE_KPROV`] when the host's
//!   differs, and the copy's sha256 is checked before it runs.
//! - "Destroy" undoes what kprov did there: `kprov reset`, the record,
//!   and kprov itself when kprov copied it. The base phase stays: the
//!   hosts come with it done (`kprov provision --phase base`, or an image
//!   prebaked with it), as a user's machines would.
//! - Hosts are never stopped or started: [`Target::stop`] is refused.
//!
//! Commands run through `env -i` with a standard `PATH` (as on the other
//! targets); their environment variables (secrets such as the join
//! token) travel on ssh's standard input ahead of the command's own input,
//! never on a command line. A command's timeout is enforced on the host
//! (coreutils' `timeout`) and, 30 s later, by killing the local ssh.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    copy_in_by_run, sha256_hex, write_in_by_run, CommandOutput, HostChange, Machine,
    MachineCommand, MachineSpec, MachineState, Target, TargetError, LABEL_CLUSTER,
};
use crate::name::{ClusterName, MachineName};
use crate::network::ClusterNetwork;

/// Where a host's machine record is kept.
pub const RECORD_PATH: &str = "/etc/kprov/cluster-machine.json";
/// Where kprov is on a host.
pub const REMOTE_KPROV: &str = "/usr/local/bin/kprov";
/// The `PATH` of commands on a host.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long connecting may take.
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// How long a command without a timeout of its own may take.
const DEFAULT_COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// A host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// The machine it is.
    pub machine: MachineName,
    /// Its ssh destination (`[user@]host`, or a Host of the ssh config).
    pub destination: String,
    /// Its address on the cluster's network.
    pub address: Ipv4Addr,
}

/// What kprov keeps on a host: enough to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    /// The machine the host is.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its address.
    pub address: Ipv4Addr,
    /// Whether kprov copied itself there (and so removes itself on
    /// destroy).
    pub kprov_copied: bool,
}

/// Existing hosts over ssh.
#[derive(Debug, Clone)]
pub struct SshTarget {
    hosts: Vec<SshHost>,
    network: ClusterNetwork,
    ssh_config: Option<PathBuf>,
    kprov: PathBuf,
    /// The sha256 of `kprov`, read once.
    kprov_digest: OnceLock<String>,
    /// The network namespace ssh runs in; `None`: this process's.
    netns: Option<PathBuf>,
}

impl SshTarget {
    /// The target of `hosts` on `network`, copying `kprov` (this program)
    /// to them; `ssh_config` replaces the user's ssh config when given.
    pub fn new(
        hosts: Vec<SshHost>,
        network: ClusterNetwork,
        ssh_config: Option<PathBuf>,
        kprov: PathBuf,
    ) -> Self {
        Self {
            hosts,
            network,
            ssh_config,
            kprov,
            kprov_digest: OnceLock::new(),
            netns: None,
        }
    }

    /// Runs ssh in the network namespace at `path` (e.g.
    /// `/run/netns/NAME`) when given, for hosts reachable only there.
    pub fn with_netns(mut self, path: Option<PathBuf>) -> Self {
        self.netns = path;
        self
    }

    /// ssh with `argv`, in the target's network namespace; the caller's
    /// environment (its agent) stays.
    fn ssh_command(&self, argv: &[String]) -> Command {
        let mut c = match &self.netns {
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg("ssh");
                c
            }
            None => Command::new("ssh"),
        };
        c.args(argv);
        c
    }

    fn kprov_digest(&self) -> Result<&str, TargetError> {
        if let Some(digest) = self.kprov_digest.get() {
            return Ok(digest);
        }
        let bytes =
            std::fs::read(&self.kprov).map_err(|e| TargetError::io("reading", &self.kprov, e))?;
        Ok(self.kprov_digest.get_or_init(|| sha256_hex(&bytes)))
    }

    fn host(&self, name: &MachineName) -> Result<&SshHost, TargetError> {
        self.hosts
            .iter()
            .find(|h| &h.machine == name)
            .ok_or_else(|| TargetError::NoSuchMachine { name: name.clone() })
    }

    /// The host's record, or `None` when kprov has not adopted it.
    fn read_record(&self, host: &SshHost) -> Result<Option<HostRecord>, TargetError> {
        let out = self.run_on(
            host,
            &MachineCommand::new([
                "sh",
                "-c",
                "if [ -e \"$1\" ]; then cat \"$1\"; fi",
                "kprov-read",
                RECORD_PATH,
            ])
            .timeout(Duration::from_secs(30)),
        )?;
        if !out.success() {
            return Err(command_failed(host, "reading the machine record", &out));
        }
        let text = out.stdout_text();
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TargetError::BadRecord {
                path: PathBuf::from(format!("{}:{RECORD_PATH}", host.destination)),
                reason: e.to_string(),
            })
    }

    /// The host's record when it says it is `host.machine`; an error when
    /// it names another machine; `None` when there is none.
    fn own_record(&self, host: &SshHost) -> Result<Option<HostRecord>, TargetError> {
        match self.read_record(host)? {
            Some(r) if r.name == host.machine.to_string() => Ok(Some(r)),
            Some(r) => Err(TargetError::Exists {
                name: host.machine.clone(),
                detail: format!(
                    "host {} is recorded as machine {} ({RECORD_PATH}); not touching it",
                    host.destination, r.name
                ),
            }),
            None => Ok(None),
        }
    }

    fn run_on(
        &self,
        host: &SshHost,
        command: &MachineCommand,
    ) -> Result<CommandOutput, TargetError> {
        let remote = remote_command(command)?;
        let argv = ssh_argv(self.ssh_config.as_deref(), &host.destination, &remote);
        let mut input = env_script(&command.env)?.into_bytes();
        input.extend_from_slice(command.stdin.as_deref().unwrap_or_default());
        let limit = command.timeout.unwrap_or(DEFAULT_COMMAND_LIMIT) + Duration::from_secs(30);
        let what = format!(
            "ssh {} {}",
            host.destination,
            command.argv.first().map_or("", String::as_str)
        );
        let mut out =
            run_bounded(&mut self.ssh_command(&argv), input, limit).map_err(|source| {
                TargetError::Spawn {
                    command: what,
                    source,
                }
            })?;
        // coreutils' timeout on the host: 124, or 137 after its kill.
        if command.timeout.is_some() && matches!(out.code, Some(124 | 137)) {
            out.timed_out = true;
        }
        // 255: ssh's own failure (a remote command's 255 reads the same;
        // it only matters when ssh's stderr says so).
        if out.code == Some(255) {
            let detail = out.stderr_text();
            if is_host_key_failure(&detail) {
                return Err(TargetError::HostKey {
                    name: host.machine.clone(),
                    destination: host.destination.clone(),
                    detail: detail.trim().to_string(),
                });
            }
            if is_connect_failure(&detail) {
                return Err(TargetError::Unreachable {
                    name: host.machine.clone(),
                    destination: host.destination.clone(),
                    detail: detail.trim().to_string(),
                });
            }
        }
        Ok(out)
    }

    fn run_ok(
        &self,
        host: &SshHost,
        what: &str,
        command: &MachineCommand,
    ) -> Result<String, TargetError> {
        let out = self.run_on(host, command)?;
        if !out.success() {
            return Err(command_failed(host, what, &out));
        }
        Ok(out.stdout_text())
    }

    /// Makes sure the host runs this kprov: copied (and its digest
    /// checked) when the host's differs. Returns whether it copied.
    fn ensure_kprov(&self, host: &SshHost) -> Result<bool, TargetError> {
        let want = self.kprov_digest()?;
        let there = self.run_ok(
            host,
            "reading kprov's digest",
            &MachineCommand::new([
                "sh",
                "-c",
                "if [ -e \"$1\" ]; then sha256sum < \"$1\"; fi",
                "kprov-digest",
                REMOTE_KPROV,
            ])
            .timeout(Duration::from_secs(60)),
        )?;
        if there.split_whitespace().next() == Some(want) {
            return Ok(false);
        }
        // Copied, and the copy's digest checked against the file's own.
        copy_in_by_run(
            self,
            &host.machine,
            &self.kprov,
            Path::new(REMOTE_KPROV),
            0o755,
        )?;
        Ok(true)
    }
}

fn command_failed(host: &SshHost, what: &str, out: &CommandOutput) -> TargetError {
    TargetError::Command {
        command: format!("{what} on {} ({})", host.machine, host.destination),
        status: match (out.code, out.timed_out) {
            (_, true) => "timed out".into(),
            (Some(c), _) => format!("exit {c}"),
            (None, _) => "killed by a signal".into(),
        },
        stderr: out.stderr_text(),
    }
}

impl Target for SshTarget {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn needs_image(&self) -> bool {
        false
    }

    fn in_container(&self, name: &MachineName) -> Result<bool, TargetError> {
        let host = self.host(name)?;
        let out = self.run_on(
            host,
            &MachineCommand::new(["systemd-detect-virt", "--container"])
                .timeout(Duration::from_secs(30)),
        )?;
        Ok(out.success())
    }

    fn prepare_host(&self) -> Result<Vec<HostChange>, TargetError> {
        let found = Command::new("ssh")
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(TargetError::HostUnsuitable {
                target: "ssh",
                reason: "no OpenSSH client (`ssh -V` failed): install openssh-client".into(),
            });
        }
        if !self.kprov.is_file() {
            return Err(TargetError::HostUnsuitable {
                target: "ssh",
                reason: format!("kprov itself ({}) cannot be read", self.kprov.display()),
            });
        }
        Ok(Vec::new())
    }

    fn create(&self, spec: &MachineSpec) -> Result<Machine, TargetError> {
        let host = self.host(&spec.name).map_err(|_| TargetError::BadSpec {
            name: spec.name.clone(),
            reason: "no --ssh-host names it".into(),
        })?;
        if spec.address != host.address {
            return Err(TargetError::BadSpec {
                name: spec.name.clone(),
                reason: format!(
                    "address {} is not its host's ({})",
                    spec.address, host.address
                ),
            });
        }
        if let Some(record) = self.own_record(host)? {
            return Err(TargetError::Exists {
                name: spec.name.clone(),
                detail: format!(
                    "host {} has its record since an earlier up ({})",
                    host.destination, record.address
                ),
            });
        }
        let uid = self.run_ok(
            host,
            "id -u",
            &MachineCommand::new(["id", "-u"]).timeout(Duration::from_secs(30)),
        )?;
        if uid.trim() != "0" {
            return Err(TargetError::BadSpec {
                name: spec.name.clone(),
                reason: format!(
                    "the ssh user on {} is not root (uid {}): use root@ or `User root`",
                    host.destination,
                    uid.trim()
                ),
            });
        }
        let had_kprov = self
            .run_on(
                host,
                &MachineCommand::new(["test", "-e", REMOTE_KPROV]).timeout(Duration::from_secs(30)),
            )?
            .success();
        self.ensure_kprov(host)?;
        let record = HostRecord {
            name: spec.name.to_string(),
            labels: spec.all_labels(),
            address: host.address,
            kprov_copied: !had_kprov,
        };
        let mut text = serde_json::to_string_pretty(&record).expect("a record serializes");
        text.push('\n');
        write_in_by_run(
            self,
            &spec.name,
            text.into_bytes(),
            Path::new(RECORD_PATH),
            0o644,
        )?;
        Ok(self.machine(host, &record))
    }

    fn start(&self, name: &MachineName) -> Result<(), TargetError> {
        let host = self.host(name)?;
        match self.own_record(host)? {
            Some(_) => Ok(()),
            None => Err(TargetError::NoSuchMachine { name: name.clone() }),
        }
    }

    fn wait_booted(&self, name: &MachineName, limit: Duration) -> Result<(), TargetError> {
        let host = self.host(name)?;
        let out = self.run_on(
            host,
            &MachineCommand::new(["systemctl", "is-system-running", "--wait"]).timeout(limit),
        )?;
        let state = out.stdout_text().trim().to_string();
        match state.as_str() {
            "running" => {}
            "degraded" => {
                let units = self
                    .run_on(
                        host,
                        &MachineCommand::new(["systemctl", "--failed", "--plain", "--no-legend"])
                            .timeout(Duration::from_secs(30)),
                    )?
                    .stdout_text();
                return Err(TargetError::BootDegraded {
                    name: name.clone(),
                    units: units.trim().to_string(),
                });
            }
            _ => {
                return Err(TargetError::Timeout {
                    name: name.clone(),
                    what: "finish booting",
                    waited: limit,
                    log: format!("systemctl is-system-running: {state}"),
                })
            }
        }
        self.ensure_kprov(host)?;
        Ok(())
    }

    fn run(
        &self,
        name: &MachineName,
        command: &MachineCommand,
    ) -> Result<CommandOutput, TargetError> {
        self.run_on(self.host(name)?, command)
    }

    fn address(&self, name: &MachineName) -> Result<Ipv4Addr, TargetError> {
        Ok(self.host(name)?.address)
    }

    fn logs(&self, name: &MachineName, lines: usize) -> Result<String, TargetError> {
        let host = self.host(name)?;
        Ok(self
            .run_on(
                host,
                &MachineCommand::new([
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "short",
                    "-n",
                    &lines.to_string(),
                ])
                .timeout(Duration::from_secs(30)),
            )?
            .stdout_text())
    }

    fn stop(&self, _name: &MachineName) -> Result<(), TargetError> {
        Err(TargetError::Unsupported {
            target: "ssh",
            what: "stop a host (it only adopts and resets hosts it is given)",
        })
    }

    fn destroy(&self, name: &MachineName) -> Result<(), TargetError> {
        let host = self.host(name)?;
        let Some(record) = self.own_record(host)? else {
            return Err(TargetError::NoSuchMachine { name: name.clone() });
        };
        self.run_ok(
            host,
            "kprov reset",
            &MachineCommand::new([REMOTE_KPROV, "reset", "--force"])
                .timeout(Duration::from_secs(300)),
        )?;
        let mut remove = vec!["rm", "-f", RECORD_PATH];
        if record.kprov_copied {
            remove.push(REMOTE_KPROV);
        }
        self.run_ok(
            host,
            "removing kprov's files",
            &MachineCommand::new(remove).timeout(Duration::from_secs(30)),
        )?;
        Ok(())
    }

    fn list(&self, cluster: &ClusterName) -> Result<Vec<Machine>, TargetError> {
        let mut machines = Vec::new();
        for host in self.hosts.iter().filter(|h| &h.machine.cluster == cluster) {
            // A host recorded as another machine is not one of this
            // cluster's: left out, never touched.
            let record = match self.read_record(host)? {
                Some(r) if r.name == host.machine.to_string() => r,
                _ => continue,
            };
            if record.labels.get(LABEL_CLUSTER).map(String::as_str) != Some(cluster.as_str()) {
                continue;
            }
            machines.push(self.machine(host, &record));
        }
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    fn destroy_network(&self, cluster: &ClusterName) -> Result<(), TargetError> {
        super::host::ensure_no_machines(cluster, &self.list(cluster)?)
    }
}

impl SshTarget {
    fn machine(&self, host: &SshHost, record: &HostRecord) -> Machine {
        Machine {
            name: host.machine.clone(),
            labels: record.labels.clone(),
            address: record.address,
            network: self.network,
            state: MachineState::Running,
        }
    }
}

/// ssh's arguments: host keys checked, never a prompt, bounded connect,
/// a dead connection noticed within 15 s.
pub fn ssh_argv(config: Option<&Path>, destination: &str, remote: &str) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(config) = config {
        argv.push("-F".to_string());
        argv.push(config.display().to_string());
    }
    for option in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
        "ServerAliveInterval=5".to_string(),
        "ServerAliveCountMax=3".to_string(),
    ] {
        argv.push("-o".to_string());
        argv.push(option);
    }
    argv.push("-T".to_string());
    argv.push("--".to_string());
    argv.push(destination.to_string());
    argv.push(remote.to_string());
    argv
}

/// The shell command ssh runs on the host for `command`: its argv quoted,
/// under `env -i` with a standard PATH, behind coreutils' `timeout` when
/// it has one; when it has environment variables, a prelude first reads
/// exactly their [`env_script`] from standard input and exports them.
pub fn remote_command(command: &MachineCommand) -> Result<String, TargetError> {
    if command.argv.is_empty() {
        return Err(TargetError::Unsupported {
            target: "ssh",
            what: "run an empty command",
        });
    }
    let env_len = env_script(&command.env)?.len();
    let mut words: Vec<String> = vec![
        "exec".into(),
        "env".into(),
        "-i".into(),
        format!("PATH={PATH}"),
        "HOME=/root".into(),
        "LC_ALL=C.UTF-8".into(),
    ];
    if env_len > 0 {
        // dd reads byte by byte: not one byte of the command's own input
        // is taken.
        words.extend([
            "sh".into(),
            "-c".into(),
            format!("set -a; eval \"$(dd bs=1 count={env_len} 2>/dev/null)\"; set +a; exec \"$@\""),
            "kprov-run".into(),
        ]);
    }
    if let Some(limit) = command.timeout {
        words.extend([
            "timeout".into(),
            "--kill-after=5".into(),
            limit.as_secs().max(1).to_string(),
        ]);
    }
    words.extend(command.argv.iter().cloned());
    Ok(words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" "))
}

/// `KEY='value'` lines for `env`; keys must be shell names.
pub fn env_script(env: &[(String, String)]) -> Result<String, TargetError> {
    let mut script = String::new();
    for (key, value) in env {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(TargetError::Unsupported {
                target: "ssh",
                what: "pass an environment variable whose name is not a shell name",
            });
        }
        script.push_str(&format!("{key}={}\n", shell_quote(value)));
    }
    Ok(script)
}

/// `word` in single quotes for a POSIX shell (a plain word stays as is).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// ssh's complaint about a host key it does not know or that changed.
pub fn is_host_key_failure(stderr: &str) -> bool {
    stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("No ED25519 host key is known")
        || stderr.contains("host key is known for")
}

/// ssh's complaint about a connection it could not make.
pub fn is_connect_failure(stderr: &str) -> bool {
    [
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Could not resolve hostname",
        "Network is unreachable",
        "Permission denied",
        "Connection closed by",
        "Connection reset by",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

/// Runs `cmd` with `input` on its standard input; killed (it is our own
/// child) after `limit`.
fn run_bounded(
    cmd: &mut Command,
    input: Vec<u8>,
    limit: Duration,
) -> std::io::Result<CommandOutput> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let code = status.code();
    Ok(CommandOutput {
        timed_out,
        code,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_always_checks_host_keys_and_never_prompts() {
        let argv = ssh_argv(Some(Path::new("/t/config")), "root@10.0.0.5", "true");
        let joined = argv.join(" ");
        for want in [
            "-F /t/config",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o ConnectTimeout=10",
            "-T -- root@10.0.0.5 true",
        ] {
            assert!(joined.contains(want), "{want:?} not in {joined}");
        }
        assert!(!ssh_argv(None, "h", "true").contains(&"-F".to_string()));
    }

    /// The remote command run by a real local `sh`, as sshd would run it:
    /// every argument arrives intact, the environment is only what was
    /// given (and never on the command line), and the command still gets
    /// its own input after the variables.
    #[test]
    fn a_remote_command_keeps_its_arguments_environment_and_input() {
        let mut command = MachineCommand::new([
            "sh",
            "-c",
            "printf '%s|' \"$@\"; printf 'T=%s H=%s ' \"$KPROV_TOKEN\" \"${HOSTILE-unset}\"; cat",
            "x",
            "it's",
            "a b",
            "$HOME",
            "",
        ])
        .env("KPROV_TOKEN", "abc.def'; rm -rf /tmp/nothing");
        command.stdin = Some(b"the input".to_vec());
        let remote = remote_command(&command).unwrap();
        assert!(!remote.contains("abc.def"), "{remote}");
        let mut input = env_script(&command.env).unwrap().into_bytes();
        input.extend_from_slice(b"the input");
        let out = run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg(&remote)
                .env("HOSTILE", "leaked"),
            input,
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(out.success(), "{}", out.stderr_text());
        assert_eq!(
            out.stdout_text(),
            "it's|a b|$HOME||T=abc.def'; rm -rf /tmp/nothing H=unset the input"
        );
    }

    #[test]
    fn a_remote_timeout_ends_the_command_and_says_so() {
        let command = MachineCommand::new(["sleep", "30"]).timeout(Duration::from_secs(1));
        let remote = remote_command(&command).unwrap();
        let started = Instant::now();
        let out = run_bounded(
            Command::new("sh").arg("-c").arg(&remote),
            Vec::new(),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.code, Some(124), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn bad_environment_names_are_refused() {
        let err = env_script(&[("A B".into(), "x".into())]).unwrap_err();
        assert!(err.to_string().contains("shell name"), "{err}");
        assert!(remote_command(&MachineCommand::default()).is_err());
    }

    #[test]
    fn ssh_failures_are_told_apart() {
        // What OpenSSH 9.2 prints for a changed key and for an unknown one.
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n";
        let unknown = "No ED25519 host key is known for 10.0.0.5 and you have requested strict checking.\nHost key verification failed.\n";
        assert!(is_host_key_failure(changed) && is_host_key_failure(unknown));
        let refused = "ssh: connect to host 10.0.0.5 port 22: Connection refused\n";
        assert!(!is_host_key_failure(refused) && is_connect_failure(refused));
    }

    #[test]
    fn records_round_trip_and_unknown_keys_are_refused() {
        let record = HostRecord {
            name: "lab-worker-1".into(),
            labels: BTreeMap::from([(LABEL_CLUSTER.to_string(), "lab".to_string())]),
            address: Ipv4Addr::new(10, 0, 0, 5),
            kprov_copied: true,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<HostRecord>(&text).unwrap(), record);
        assert!(serde_json::from_str::<HostRecord>(
            r#"{"name":"x","labels":{},"address":"10.0.0.1","kprov_copied":false,"y":1}"#
        )
        .is_err());
    }
}
