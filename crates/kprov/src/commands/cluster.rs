//! `kprov cluster up|down|status|kubeconfig|check`: flags → cluster spec
//! → kprov-cluster's workflows on the chosen target → printed reports.

use std::time::{Duration, Instant};

use anyhow::Context;
use kprov_cluster::config::ClusterConfig;
use kprov_cluster::config::TargetKind;
use kprov_cluster::inspect;
use kprov_cluster::target::host::BridgeNetns;
use kprov_cluster::target::qemu::QemuTarget;
use kprov_cluster::target::ssh::{SshHost, SshTarget};
use kprov_cluster::workflow::{self, Up};
use kprov_cluster::{MachineCommand, MachineState, NspawnTarget, Role, Target};
use kprov_plan::workflow::Selection;

use crate::cli::{ClusterArgsOnly, ClusterCommand, ClusterReadArgs, ClusterUpArgs, OutputArg};
use crate::output::Printer;

/// Runs a `kprov cluster` subcommand.
pub fn run(command: ClusterCommand) -> anyhow::Result<std::process::ExitCode> {
    let done = match command {
        ClusterCommand::Up(args) => up(args),
        ClusterCommand::Down(args) => down(args),
        ClusterCommand::Status(args) => status(args),
        ClusterCommand::Kubeconfig(args) => kubeconfig(args),
        ClusterCommand::Check(args) => check(args),
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}

/// The target the config names.
fn target(config: &ClusterConfig) -> anyhow::Result<Box<dyn Target>> {
    match config.target {
        TargetKind::Nspawn => Ok(Box::new(nspawn_target(config)?)),
        TargetKind::Ssh => {
            let spec = config.check()?;
            let hosts = spec
                .machines
                .iter()
                .map(|m| SshHost {
                    machine: m.name.clone(),
                    destination: spec.ssh_hosts[&m.name].clone(),
                    address: m.address,
                })
                .collect();
            let kprov =
                std::env::current_exe().context("finding kprov itself, to copy it to the hosts")?;
            Ok(Box::new(SshTarget::new(
                hosts,
                spec.network,
                config.ssh_config.clone(),
                kprov,
            )))
        }
        TargetKind::Qemu => {
            config.check()?;
            let kprov =
                std::env::current_exe().context("finding kprov itself, which the VMs must run")?;
            let target = QemuTarget::new(
                &config.machines_dir,
                BridgeNetns {
                    path: netns_path(config)?,
                },
                config.qemu_accel,
                config.qemu_cpus,
                config.qemu_memory,
                kprov,
            )
            .with_context(|| format!("--machines-dir {}", config.machines_dir.display()))?;
            Ok(Box::new(target))
        }
    }
}

/// The network namespace `--netns` names, which must exist.
fn netns_path(config: &ClusterConfig) -> anyhow::Result<Option<std::path::PathBuf>> {
    let Some(ns) = &config.netns else {
        return Ok(None);
    };
    let path = std::path::Path::new("/run/netns").join(ns);
    anyhow::ensure!(
        path.exists(),
        "--netns {ns}: no network namespace {} (make it with `ip netns add {ns}`)",
        path.display()
    );
    Ok(Some(path))
}

fn nspawn_target(config: &ClusterConfig) -> anyhow::Result<NspawnTarget> {
    let mut target = NspawnTarget::new(&config.machines_dir)
        .with_context(|| format!("--machines-dir {}", config.machines_dir.display()))?;
    if let Some(path) = netns_path(config)? {
        target = target.with_netns(path);
    }
    Ok(target)
}

fn up(args: ClusterUpArgs) -> anyhow::Result<()> {
    let spec = args.cluster.check()?;
    let target = target(&args.cluster)?;
    let limit = Duration::from_secs(args.cluster.timeout);
    let started = Instant::now();
    let mut printer = Printer::new("cluster up", args.output, false);
    {
        let mut ctx = Up::new(
            spec.clone(),
            args.cluster.image.clone(),
            target.as_ref(),
            &mut printer,
            limit,
        );
        workflow::up(&mut ctx, &Selection::All { skip: Vec::new() })?;
    }
    printer.end_items();
    let ready = started.elapsed();
    eprintln!(
        "kprov: cluster {} is up: {} machines, every node Ready after {:.1} s; kubeconfig {}",
        spec.name,
        spec.machines.len(),
        ready.as_secs_f64(),
        spec.kubeconfig.display()
    );
    let check = (!args.skip_check).then(|| {
        let check = inspect::check(target.as_ref(), &spec, limit);
        eprint!("{}", check.render_text());
        eprintln!(
            "kprov: every criterion checked after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        check
    });
    if check.is_none() {
        eprintln!(
            "kprov: exit criteria not checked (--skip-check); `kprov cluster check --name {}` checks them",
            spec.name
        );
    }
    printer.output("kubeconfig", spec.kubeconfig.display().to_string());
    printer.finish()?;
    if let Some(check) = check {
        anyhow::ensure!(
            check.passed(),
            "cluster {}: an exit criterion failed (see the table above)",
            spec.name
        );
    }
    Ok(())
}

/// Refuses a cluster whose target has never held a machine here,
/// before anything is made on the host.
fn existing(config: &ClusterConfig) -> anyhow::Result<kprov_cluster::ClusterName> {
    let name = config.cluster_name()?;
    let kind = match config.target {
        TargetKind::Nspawn => "nspawn",
        TargetKind::Qemu => "qemu",
        TargetKind::Ssh => return Ok(name),
    };
    if !config.machines_dir.exists() {
        anyhow::bail!(
            "no cluster {name} on the {kind} target: --machines-dir {} does not exist; nothing changed",
            config.machines_dir.display()
        );
    }
    Ok(name)
}

fn down(args: ClusterArgsOnly) -> anyhow::Result<()> {
    let name = existing(&args.cluster)?;
    let target = target(&args.cluster)?;
    let started = Instant::now();
    let mut printer = Printer::new("cluster down", OutputArg::Text, false);
    let report = workflow::down(
        target.as_ref(),
        &name,
        &args.cluster.kubeconfig_path(&name),
        &mut printer,
    )?;
    eprintln!(
        "kprov: cluster {name} removed ({}) in {:.1} s",
        report.summary_line(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(args: ClusterReadArgs) -> anyhow::Result<()> {
    let name = existing(&args.cluster)?;
    let target = target(&args.cluster)?;
    let status = inspect::status(target.as_ref(), &name)?;
    let text = match args.output {
        OutputArg::Text => status.render_text(),
        OutputArg::Json => serde_json::to_string_pretty(&status)? + "\n",
    };
    super::write_stdout(text.as_bytes())
}

fn kubeconfig(args: ClusterArgsOnly) -> anyhow::Result<()> {
    let name = existing(&args.cluster)?;
    let target = target(&args.cluster)?;
    let machines = target.list(&name)?;
    let master = machines
        .iter()
        .find(|m| m.name.role == Role::Master && m.state == MachineState::Running)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cluster {name}: no running master on the {} target",
                target.kind()
            )
        })?;
    let out = target.run(
        &master.name,
        &MachineCommand::new(["cat", "/etc/kubernetes/admin.conf"])
            .timeout(Duration::from_secs(30)),
    )?;
    anyhow::ensure!(
        out.success(),
        "{}: no /etc/kubernetes/admin.conf ({})",
        master.name,
        out.stderr_text().trim()
    );
    super::write_stdout(&out.stdout)
}

fn check(args: ClusterReadArgs) -> anyhow::Result<()> {
    let name = existing(&args.cluster)?;
    let target = target(&args.cluster)?;
    let machines = target.list(&name)?;
    if machines.is_empty() {
        anyhow::bail!(
            "no cluster {name} on the {} target: no machine is named or labelled with it",
            target.kind()
        );
    }
    // The cluster as it is: its masters and workers counted on the target.
    let count = |role| machines.iter().filter(|m| m.name.role == role).count() as u16;
    let mut config = args.cluster.clone();
    config.masters = count(Role::Master);
    config.workers = count(Role::Worker);
    config.addresses = machines
        .iter()
        .map(|m| format!("{}={}", m.name, m.address))
        .collect();
    config.network = machines[0].network.to_string();
    config.ssh_hosts.retain(|e| {
        machines
            .iter()
            .any(|m| e.starts_with(&format!("{}=", m.name)))
    });
    let spec = config.check()?;
    let check = inspect::check(
        target.as_ref(),
        &spec,
        Duration::from_secs(args.cluster.timeout),
    );
    match args.output {
        OutputArg::Text => super::write_stdout(check.render_text().as_bytes())?,
        OutputArg::Json => {
            super::write_stdout((serde_json::to_string_pretty(&check)? + "\n").as_bytes())?
        }
    }
    anyhow::ensure!(check.passed(), "cluster {name}: an exit criterion failed");
    Ok(())
}
