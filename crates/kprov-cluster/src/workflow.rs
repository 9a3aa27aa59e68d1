//! `kprov cluster up` and `down` as phase tables over a [`Target`].
//!
//! `up` converges: every phase finds what exists first (machines by name
//! and labels, a node's kubelet.conf, the API server's nodes) and only
//! makes what is missing, so a second `up` reports every resource
//! unchanged, and `--workers 3` on a 1+2 cluster adds exactly one. Nothing
//! is written on the host but the admin kubeconfig: there is no inventory.
//!
//! Machines are driven through the commands a user would run on them:
//! `kprov init` on the first master, `kprov provision --phase join
//! --control-plane` on the other masters one at a time (after `kprov init
//! phase upload-certs` with a fresh certificate key), `kprov provision
//! --phase join` on workers (the token and key in the environment, never
//! on a command line), and `kubectl` with the first master's admin.conf.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kprov_plan::workflow::{always, Observed, Observer, Phase, Selection, UnknownPhase};
use kprov_plan::{Outcome, Report, ResourceReport};

use crate::config::{ClusterSpec, WantedMachine};
use crate::name::{ClusterName, MachineName, Role};
use crate::target::{Machine, MachineCommand, MachineSpec, MachineState, Target, TargetError};

/// Why `up` or `down` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target refused or failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A phase name that does not exist.
    #[error(transparent)]
    UnknownPhase(#[from] UnknownPhase),
    /// A machine must be made and no image was given.
    #[error("--image: needed to create {machine} (a root made by `kprov provision --phase base --root DIR`, with --node-in-container for the nspawn target)")]
    NoImage {
        /// The machine.
        machine: MachineName,
    },
    /// The image is not a prebaked node root.
    #[error("--image {path}: {reason}")]
    BadImage {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A command in a machine failed.
    #[error("{machine}: {what} failed (exit {code}):\n{output}")]
    Step {
        /// The machine.
        machine: MachineName,
        /// The step.
        what: String,
        /// Its exit code, or how it ended.
        code: String,
        /// The end of its output, then of the machine's logs.
        output: String,
    },
    /// An exit criterion failed.
    #[error("{phase}: {cause}")]
    Criterion {
        /// The phase.
        phase: &'static str,
        /// The node, object and cause.
        cause: String,
    },
    /// No machine of the cluster on the target.
    #[error("no cluster {cluster} on the {target} target: no machine is named or labelled with it; nothing changed")]
    NoCluster {
        /// The cluster.
        cluster: ClusterName,
        /// The target.
        target: &'static str,
    },
    /// The kubeconfig could not be written or removed.
    #[error("{action} {path}: {reason}")]
    Kubeconfig {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
}

/// What `up` works with.
pub struct Up<'a> {
    /// The cluster.
    pub spec: ClusterSpec,
    /// The node image, needed only to create machines.
    pub image: Option<PathBuf>,
    /// Where machines run.
    pub target: &'a dyn Target,
    /// Who hears about progress.
    pub observer: &'a mut dyn Observer,
    /// How long each long step may take.
    pub timeout: Duration,
    /// The join command of the first master, set by the master phase.
    join: Option<Join>,
    /// When `up` started, and when the last phase ended, for the
    /// progress lines.
    started: Instant,
    last_mark: Instant,
}

#[derive(Clone)]
struct Join {
    api_server: String,
    token: String,
    ca_hash: String,
}

impl Observed for Up<'_> {
    fn observer(&mut self) -> &mut dyn Observer {
        self.observer
    }
}

impl<'a> Up<'a> {
    /// `up` of `spec` on `target`.
    pub fn new(
        spec: ClusterSpec,
        image: Option<PathBuf>,
        target: &'a dyn Target,
        observer: &'a mut dyn Observer,
        timeout: Duration,
    ) -> Self {
        Self {
            spec,
            image,
            target,
            observer,
            timeout,
            join: None,
            started: Instant::now(),
            last_mark: Instant::now(),
        }
    }

    fn report(&self, plan: &str) -> Report {
        Report::new(
            plan,
            format!("cluster {} on {}", self.spec.name, self.target.kind()),
            false,
        )
    }

    /// Says a phase is done, with its time and the time since `up`
    /// started (a phase ends where the next begins).
    fn elapsed_note(&mut self, phase: &str) {
        let now = Instant::now();
        self.observer.note(&format!(
            "phase {phase} done in {:.1} s ({:.1} s since up started)",
            (now - self.last_mark).as_secs_f64(),
            (now - self.started).as_secs_f64()
        ));
        self.last_mark = now;
    }

    fn workers(&self) -> Vec<WantedMachine> {
        self.spec
            .machines
            .iter()
            .filter(|m| m.name.role == Role::Worker)
            .cloned()
            .collect()
    }
}

/// The phases of `kprov cluster up`, in order.
pub fn up_phases<'a>() -> Vec<Phase<Up<'a>, Error>> {
    vec![
        Phase {
            name: "host",
            description: "check this host and set what every machine shares with it",
            run_if: always,
            run: host,
        },
        Phase {
            name: "machines",
            description: "create and start missing machines; every machine booted",
            run_if: always,
            run: machines,
        },
        Phase {
            name: "master",
            description: "kprov init on the first master; the API server answers",
            run_if: always,
            run: master,
        },
        Phase {
            name: "masters",
            description: "join missing masters one at a time (stacked etcd, certificates shared under a fresh key)",
            run_if: always,
            run: masters,
        },
        Phase {
            name: "nodes",
            description: "join missing workers, all at once; every node registered and Ready",
            run_if: always,
            run: nodes,
        },
        Phase {
            name: "kubeconfig",
            description: "write the cluster's admin kubeconfig on this host (0600)",
            run_if: always,
            run: kubeconfig,
        },
    ]
}

/// Runs `up`.
pub fn up(ctx: &mut Up<'_>, selection: &Selection) -> Result<(), Error> {
    ctx.started = Instant::now();
    ctx.last_mark = ctx.started;
    kprov_plan::workflow::run("cluster up", &up_phases(), selection, ctx)
}

fn host(ctx: &mut Up<'_>) -> Result<(), Error> {
    let changes = ctx.target.prepare_host()?;
    let mut report = ctx.report("this host's settings for machines");
    for c in changes {
        report.push(ResourceReport {
            id: c.what.clone(),
            description: format!("{} = {}", c.what, c.to),
            outcome: Outcome::Changed,
            detail: Some(format!("was {}", c.from)),
        });
    }
    ctx.observer.report(&report);
    ctx.elapsed_note("host");
    Ok(())
}

fn machines(ctx: &mut Up<'_>) -> Result<(), Error> {
    let existing = ctx.target.list(&ctx.spec.name)?;
    let mut report = ctx.report("the cluster's machines");
    let mut checked_image = false;
    for wanted in ctx.spec.machines.clone() {
        let found = existing.iter().find(|m| m.name == wanted.name);
        let (outcome, detail) = match found {
            Some(m) if m.state == MachineState::Running => (Outcome::Unchanged, None),
            Some(m) => {
                ctx.observer.item(&m.name.to_string(), "starting");
                ctx.target.start(&m.name)?;
                (Outcome::Changed, Some("was stopped".to_string()))
            }
            None => {
                let image = if ctx.target.needs_image() {
                    let image = ctx.image.clone().ok_or_else(|| Error::NoImage {
                        machine: wanted.name.clone(),
                    })?;
                    if !checked_image {
                        ctx.target
                            .check_image(&image)
                            .map_err(|reason| Error::BadImage {
                                path: image.clone(),
                                reason,
                            })?;
                        checked_image = true;
                    }
                    Some(image)
                } else {
                    None
                };
                ctx.observer
                    .note(&format!("creating {} ({})", wanted.name, wanted.address));
                ctx.observer.item(&wanted.name.to_string(), "creating");
                ctx.target.create(&MachineSpec {
                    name: wanted.name.clone(),
                    image,
                    network: ctx.spec.network,
                    address: wanted.address,
                    labels: Default::default(),
                })?;
                ctx.target.start(&wanted.name)?;
                (Outcome::Created, Some("did not exist".to_string()))
            }
        };
        report.push(ResourceReport {
            id: format!("machine/{}", wanted.name),
            description: format!("machine {} ({}) running", wanted.name, wanted.address),
            outcome,
            detail,
        });
    }
    // Machines of the cluster beyond what was asked for are left alone.
    for extra in existing
        .iter()
        .filter(|m| !ctx.spec.machines.iter().any(|w| w.name == m.name))
    {
        ctx.observer.note(&format!(
            "{} exists beyond --masters/--workers; left as it is (up never removes machines)",
            extra.name
        ));
    }
    for wanted in &ctx.spec.machines {
        ctx.observer.item(&wanted.name.to_string(), "booting");
    }
    for wanted in &ctx.spec.machines {
        ctx.target.wait_booted(&wanted.name, ctx.timeout)?;
        ctx.observer.item(&wanted.name.to_string(), "booted");
    }
    ctx.observer.report(&report);
    ctx.elapsed_note("machines");
    Ok(())
}

/// Runs `command` in `machine`; its stdout, or an error with the end of
/// its output and the machine's last log lines.
fn run_step(
    target: &dyn Target,
    machine: &MachineName,
    what: &str,
    command: &MachineCommand,
) -> Result<String, Error> {
    let out = target.run(machine, command)?;
    if out.success() {
        return Ok(out.stdout_text());
    }
    let code = match (out.code, out.timed_out) {
        (_, true) => "timed out".to_string(),
        (Some(c), _) => c.to_string(),
        (None, _) => "killed by a signal".to_string(),
    };
    let logs = target.logs(machine, 15).unwrap_or_default();
    Err(Error::Step {
        machine: machine.clone(),
        what: what.to_string(),
        code,
        output: format!(
            "{}\n-- last lines of {machine}'s log:\n{}",
            last_lines(&out.stderr_text(), 20),
            logs.trim_end()
        ),
    })
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `kprov init` (or one phase of it) on the first master, with the
/// cluster's flags.
fn init_command(ctx: &Up<'_>, phase: Option<&str>) -> Result<MachineCommand, Error> {
    let m = ctx.spec.first_master();
    let mut argv: Vec<String> = vec!["kprov".into(), "init".into()];
    if let Some(phase) = phase {
        argv.extend(["phase".into(), phase.into()]);
    }
    let flags = [
        ("--node-name", m.name.to_string()),
        ("--advertise-address", m.address.to_string()),
        (
            "--kubernetes-version",
            ctx.spec.kubernetes_version.to_string(),
        ),
        ("--pod-network", "bridge".into()),
        ("--timeout", ctx.timeout.as_secs().to_string()),
        ("--output", "json".into()),
    ];
    for (flag, value) in flags {
        argv.extend([flag.to_string(), value]);
    }
    if ctx.target.in_container(&m.name)? {
        argv.push("--node-in-container".into());
    }
    Ok(MachineCommand::new(argv).timeout(ctx.timeout + Duration::from_secs(60)))
}

fn master(ctx: &mut Up<'_>) -> Result<(), Error> {
    let m = ctx.spec.first_master().clone();
    let node_name = m.name.to_string();
    let command = init_command(ctx, None)?;
    ctx.observer.item(&node_name, "kprov init");
    let out = run_step(ctx.target, &m.name, "kprov init", &command)?;
    ctx.observer.item(&node_name, "control plane up");
    let run: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Step {
        machine: m.name.clone(),
        what: "reading kprov init's JSON report".into(),
        code: "0".into(),
        output: e.to_string(),
    })?;
    let changed = run["reports"].as_array().is_some_and(|reports| {
        reports.iter().any(|r| {
            ["created", "changed", "removed"]
                .iter()
                .any(|k| r["summary"][*k].as_u64().unwrap_or(0) > 0)
        })
    });
    let line = run["outputs"]["join_command"].as_str().unwrap_or_default();
    ctx.join = Some(parse_join(line).ok_or_else(|| Error::Step {
        machine: m.name.clone(),
        what: "kprov init".into(),
        code: "0".into(),
        output: "its report has no join command".into(),
    })?);
    let mut report = ctx.report("the first master");
    report.push(ResourceReport {
        id: format!("control-plane/{}", m.name),
        description: format!("control plane on {} (kprov init)", m.name),
        outcome: if changed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        },
        detail: None,
    });
    ctx.observer.report(&report);
    ctx.elapsed_note("master");
    Ok(())
}

/// Reads `KPROV_TOKEN=T kprov provision ... --api-server URL
/// --discovery-token-ca-cert-hash HASH`.
fn parse_join(line: &str) -> Option<Join> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        let at = words.iter().position(|w| *w == flag)?;
        words.get(at + 1).map(|w| w.to_string())
    };
    Some(Join {
        token: words.first()?.strip_prefix("KPROV_TOKEN=")?.to_string(),
        api_server: after("--api-server")?,
        ca_hash: after("--discovery-token-ca-cert-hash")?,
    })
}

/// `kubectl` in the first master with its admin kubeconfig.
pub fn kubectl(args: &[&str]) -> MachineCommand {
    let mut argv = vec!["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"];
    argv.extend_from_slice(args);
    MachineCommand::new(argv).timeout(Duration::from_secs(60))
}

/// Each node's name and whether it is Ready, from the API server.
pub fn node_readiness(
    target: &dyn Target,
    master: &MachineName,
) -> Result<Vec<(String, bool, String)>, Error> {
    let out = run_step(
        target,
        master,
        "kubectl get nodes",
        &kubectl(&["get", "nodes", "-o", "json"]),
    )?;
    let doc: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Step {
        machine: master.clone(),
        what: "reading kubectl get nodes".into(),
        code: "0".into(),
        output: e.to_string(),
    })?;
    let mut nodes = Vec::new();
    for item in doc["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ready = item["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        let is_ready = ready.is_some_and(|c| c["status"] == "True");
        let why = ready
            .map(|c| {
                format!(
                    "Ready={} ({})",
                    c["status"].as_str().unwrap_or("?"),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "no Ready condition".into());
        nodes.push((name, is_ready, why));
    }
    Ok(nodes)
}

/// Whether `machine` has joined (or made) the cluster: it has the file a
/// join or init leaves, `/etc/kubernetes/admin.conf` on masters and
/// kubelet.conf on workers.
fn has_joined(ctx: &Up<'_>, machine: &MachineName, file: &str) -> Result<bool, Error> {
    Ok(ctx
        .target
        .run(machine, &MachineCommand::new(["test", "-e", file]))?
        .success())
}

fn masters(ctx: &mut Up<'_>) -> Result<(), Error> {
    let others: Vec<WantedMachine> = ctx
        .spec
        .machines
        .iter()
        .filter(|m| m.name.role == Role::Master)
        .skip(1)
        .cloned()
        .collect();
    let mut report = ctx.report("the cluster's other masters");
    let mut missing = Vec::new();
    for m in others {
        if has_joined(ctx, &m.name, "/etc/kubernetes/admin.conf")? {
            report.push(ResourceReport {
                id: format!("control-plane/{}", m.name),
                description: format!("control plane on {}", m.name),
                outcome: Outcome::Unchanged,
                detail: None,
            });
        } else {
            missing.push(m);
        }
    }
    if !missing.is_empty() {
        // A fresh key each time: it lives only in this run's memory and
        // the machines' environments.
        let key = kprov_controlplane::copy_certs::CertificateKey::generate().expose_hex();
        let first = ctx.spec.first_master().name.clone();
        ctx.observer
            .item(&first.to_string(), "sharing certificates");
        let upload = init_command(ctx, Some("upload-certs"))?.env("KPROV_CERTIFICATE_KEY", &key);
        run_step(ctx.target, &first, "kprov init phase upload-certs", &upload)?;
        ctx.observer.item(&first.to_string(), "control plane up");
        let join = ctx.join.as_ref().ok_or_else(|| Error::Criterion {
            phase: "masters",
            cause: "no join command: the master phase did not run".into(),
        })?;
        let join = join.clone();
        for m in missing {
            let in_container = ctx.target.in_container(&m.name)?;
            let command = join_command(&ctx.spec, &m, &join, in_container, ctx.timeout)
                .env("KPROV_CERTIFICATE_KEY", &key);
            ctx.observer.note(&format!("joining master {}", m.name));
            ctx.observer
                .item(&m.name.to_string(), "joining as a master");
            run_step(
                ctx.target,
                &m.name,
                "kprov provision --phase join --control-plane",
                &command,
            )?;
            ctx.observer.item(&m.name.to_string(), "control plane up");
            report.push(ResourceReport {
                id: format!("control-plane/{}", m.name),
                description: format!("control plane on {}", m.name),
                outcome: Outcome::Created,
                detail: Some("had no admin.conf".into()),
            });
        }
    }
    ctx.observer.report(&report);
    ctx.elapsed_note("masters");
    Ok(())
}

fn nodes(ctx: &mut Up<'_>) -> Result<(), Error> {
    let mut report = ctx.report("the cluster's workers");
    let mut joins = Vec::new();
    for w in ctx.workers() {
        if has_joined(ctx, &w.name, "/etc/kubernetes/kubelet.conf")? {
            report.push(ResourceReport {
                id: format!("node/{}", w.name),
                description: format!("{} joined", w.name),
                outcome: Outcome::Unchanged,
                detail: None,
            });
            continue;
        }
        let join = ctx.join.as_ref().ok_or_else(|| Error::Criterion {
            phase: "nodes",
            cause: "no join command: the master phase did not run".into(),
        })?;
        let in_container = ctx.target.in_container(&w.name)?;
        let command = join_command(&ctx.spec, &w, join, in_container, ctx.timeout);
        ctx.observer.note(&format!("joining {}", w.name));
        ctx.observer.item(&w.name.to_string(), "joining");
        joins.push((w, command));
    }
    // Workers join at once: each waits mostly on its own TLS bootstrap.
    let target = ctx.target;
    let results: Vec<Result<String, Error>> = std::thread::scope(|scope| {
        let running: Vec<_> = joins
            .iter()
            .map(|(w, command)| {
                scope.spawn(move || {
                    run_step(target, &w.name, "kprov provision --phase join", command)
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Criterion {
                        phase: "nodes",
                        cause: "a join's thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    for ((w, _), result) in joins.iter().zip(results) {
        result?;
        report.push(ResourceReport {
            id: format!("node/{}", w.name),
            description: format!("{} joined", w.name),
            outcome: Outcome::Created,
            detail: Some("had no kubelet.conf".into()),
        });
    }
    ctx.observer.report(&report);
    wait_ready(ctx.target, &ctx.spec, ctx.timeout, ctx.observer)?;
    ctx.elapsed_note("nodes");
    Ok(())
}

/// `kprov provision --phase join` for machine `w` (with --control-plane
/// for a master): its flags from the one node config (as setup.sh's
/// are), the token in the environment.
fn join_command(
    spec: &ClusterSpec,
    w: &WantedMachine,
    join: &Join,
    in_container: bool,
    timeout: Duration,
) -> MachineCommand {
    let node = kprov_core::NodeConfig {
        phase: kprov_core::Phase::Join,
        kubelet_version: spec.kubernetes_version.clone(),
        api_server: Some(join.api_server.clone()),
        discovery_token_ca_cert_hash: vec![join.ca_hash.clone()],
        node_name: Some(w.name.to_string()),
        node_ip: Some(w.address.to_string()),
        node_in_container: in_container,
        control_plane: w.name.role == Role::Master,
        ..kprov_core::NodeConfig::default()
    };
    MachineCommand::new(
        ["kprov".to_string(), "provision".to_string()]
            .into_iter()
            .chain(node.to_args()),
    )
    .env("KPROV_TOKEN", &join.token)
    .timeout(timeout + Duration::from_secs(60))
}

/// The machines of `spec` that are not Ready nodes among `nodes` (from
/// [`node_readiness`]), each with why.
pub fn not_ready(
    spec: &ClusterSpec,
    nodes: &[(String, bool, String)],
) -> Vec<(MachineName, String)> {
    spec.machines
        .iter()
        .filter_map(|m| {
            let name = m.name.to_string();
            match nodes.iter().find(|(n, _, _)| *n == name) {
                Some((_, true, _)) => None,
                Some((_, false, why)) => Some((m.name.clone(), why.clone())),
                None => Some((m.name.clone(), "not registered".into())),
            }
        })
        .collect()
}

/// Waits until every machine of `spec` is a Ready node; fails naming the
/// nodes that are not, with their condition and kubelet's last lines.
pub fn wait_ready(
    target: &dyn Target,
    spec: &ClusterSpec,
    limit: Duration,
    observer: &mut dyn Observer,
) -> Result<(), Error> {
    let master = &spec.first_master().name;
    let deadline = Instant::now() + limit;
    let mut last_note = Instant::now();
    loop {
        let not_ready = not_ready(spec, &node_readiness(target, master)?);
        for m in &spec.machines {
            let state = match not_ready.iter().find(|(n, _)| *n == m.name) {
                Some((_, why)) => format!("waiting for Ready: {why}"),
                None => "Ready".to_string(),
            };
            observer.item(&m.name.to_string(), &state);
        }
        if not_ready.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut cause = String::new();
            for (name, why) in &not_ready {
                let kubelet = target
                    .run(
                        name,
                        &MachineCommand::new([
                            "journalctl",
                            "--no-pager",
                            "-o",
                            "cat",
                            "-n",
                            "10",
                            "-u",
                            "kubelet",
                        ])
                        .timeout(Duration::from_secs(20)),
                    )
                    .map(|o| o.stdout_text())
                    .unwrap_or_else(|e| e.to_string());
                cause.push_str(&format!(
                    "node {name} is not Ready after {} s: {why}\n-- kubelet's last lines on {name}:\n{}\n",
                    limit.as_secs(),
                    kubelet.trim_end()
                ));
            }
            return Err(Error::Criterion {
                phase: "nodes",
                cause: cause.trim_end().to_string(),
            });
        }
        if last_note.elapsed() >= Duration::from_secs(10) {
            let names: Vec<String> = not_ready.iter().map(|(n, _)| n.to_string()).collect();
            observer.note(&format!("waiting for {} to be Ready", names.join(", ")));
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn kubeconfig(ctx: &mut Up<'_>) -> Result<(), Error> {
    let master = ctx.spec.first_master().name.clone();
    let conf = run_step(
        ctx.target,
        &master,
        "reading admin.conf",
        &MachineCommand::new(["cat", "/etc/kubernetes/admin.conf"]),
    )?;
    let path = ctx.spec.kubeconfig.clone();
    let before = std::fs::read(&path).ok();
    let outcome = match &before {
        Some(b) if *b == conf.as_bytes() => Outcome::Unchanged,
        Some(_) => Outcome::Changed,
        None => Outcome::Created,
    };
    if outcome != Outcome::Unchanged {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Kubeconfig {
                action: "creating the directory of",
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        kprov_host::fs::write_file_atomic(&path, conf.as_bytes(), 0o600).map_err(|e| {
            Error::Kubeconfig {
                action: "writing",
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    let mut report = ctx.report("the admin kubeconfig");
    report.push(ResourceReport {
        id: format!("file:{}", path.display()),
        description: format!("kubeconfig {} (0600)", path.display()),
        outcome,
        detail: None,
    });
    ctx.observer.report(&report);
    ctx.elapsed_note("kubeconfig");
    Ok(())
}

/// Removes every machine of `cluster` (workers first), its network, and
/// the kubeconfig `up` wrote at `kubeconfig`. A cluster with nothing left
/// on the target is an error that says so (and changes nothing).
pub fn down(
    target: &dyn Target,
    cluster: &ClusterName,
    kubeconfig: &Path,
    observer: &mut dyn Observer,
) -> Result<Report, Error> {
    let mut machines: Vec<Machine> = target.list(cluster)?;
    let has_kubeconfig = std::fs::symlink_metadata(kubeconfig).is_ok();
    if machines.is_empty() && !has_kubeconfig {
        // Whatever a half-finished down left of the network still goes.
        target.destroy_network(cluster)?;
        return Err(Error::NoCluster {
            cluster: cluster.clone(),
            target: target.kind(),
        });
    }
    machines.sort_by(|a, b| {
        b.name
            .role
            .cmp(&a.name.role)
            .then(b.name.index.cmp(&a.name.index))
    });
    let mut report = Report::new(
        format!("cluster {cluster} removed"),
        format!("cluster {cluster} on {}", target.kind()),
        false,
    );
    for m in machines {
        observer.note(&format!("destroying {}", m.name));
        target.destroy(&m.name)?;
        report.push(ResourceReport {
            id: format!("machine/{}", m.name),
            description: format!("machine {} ({})", m.name, m.address),
            outcome: Outcome::Removed,
            detail: None,
        });
    }
    target.destroy_network(cluster)?;
    if has_kubeconfig {
        std::fs::remove_file(kubeconfig).map_err(|e| Error::Kubeconfig {
            action: "removing",
            path: kubeconfig.to_path_buf(),
            reason: e.to_string(),
        })?;
        report.push(ResourceReport {
            id: format!("file:{}", kubeconfig.display()),
            description: format!("kubeconfig {}", kubeconfig.display()),
            outcome: Outcome::Removed,
            detail: None,
        });
    }
    observer.report(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_line_is_read_and_a_line_without_token_is_not() {
        let j = parse_join("KPROV_TOKEN=abcdef.0123456789abcdef kprov provision --phase all --api-server https://10.84.0.11:6443 --discovery-token-ca-cert-hash sha256:00").unwrap();
        assert_eq!(j.token, "abcdef.0123456789abcdef");
        assert_eq!(j.api_server, "https://10.84.0.11:6443");
        assert_eq!(j.ca_hash, "sha256:00");
        assert!(
            parse_join("kprov provision --api-server x --discovery-token-ca-cert-hash y").is_none()
        );
    }

    #[test]
    fn a_worker_joins_with_the_node_configs_flags_and_the_token_in_its_environment() {
        let spec = crate::config::ClusterConfig {
            name: Some("lab".into()),
            ..Default::default()
        }
        .check()
        .unwrap();
        let join = parse_join("KPROV_TOKEN=abcdef.0123456789abcdef kprov provision --phase all --api-server https://10.84.0.11:6443 --discovery-token-ca-cert-hash sha256:00").unwrap();
        let c = join_command(
            &spec,
            &spec.machines[1],
            &join,
            true,
            Duration::from_secs(5),
        );
        let argv = c.argv.join(" ");
        for want in [
            "kprov provision ",
            " --phase join ",
            " --kubelet-version v1.20.2 ",
            " --api-server https://10.84.0.11:6443 ",
            " --discovery-token-ca-cert-hash sha256:00 ",
            " --node-name lab-worker-1 ",
            " --node-ip 10.84.0.101 ",
            " --node-in-container",
        ] {
            assert!(format!("{argv} ").contains(want), "{want:?} not in {argv}");
        }
        assert!(!argv.contains("abcdef.0123456789abcdef"), "{argv}");
        assert_eq!(c.env, [("KPROV_TOKEN".to_string(), join.token.clone())]);
    }

    #[test]
    fn the_up_phases_are_in_order() {
        let names: Vec<&str> = up_phases().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "host",
                "machines",
                "master",
                "masters",
                "nodes",
                "kubeconfig"
            ]
        );
    }
}
