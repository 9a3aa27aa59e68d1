//! `kprov reset`: undo the join phase, keep the base phase.

use std::process::ExitCode;

use anyhow::Context;
use kprov_host::{Root, SystemRunner};
use kprov_provision::reset::{apply_reset, plan_reset};

use crate::cli::ResetArgs;

/// Runs `kprov reset`.
pub fn run(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let os = kprov_provision::facts::detect_os(&root)?;
    let steps = plan_reset(&os, root.is_live());
    let runner = SystemRunner::new(root.clone());
    // No health-check round runs during the reset (it could start the
    // kubelet again); the next one sees the join undone.
    let _lock = match args.dry_run {
        true => None,
        false => Some(super::lock_node(&root)?),
    };
    let report = apply_reset(&root, &runner, &steps, args.dry_run)
        .with_context(|| format!("resetting {root}"))?;
    #[allow(clippy::print_stdout)]
    for r in &report {
        match &r.detail {
            Some(d) => println!("{:<12} {} ({d})", r.outcome, r.step),
            None => println!("{:<12} {}", r.outcome, r.step),
        }
    }
    let changed = report.iter().filter(|r| r.outcome != "unchanged").count();
    if changed == 0 || (root.is_live() && changed == 1) && !args.dry_run {
        // A live reset always reloads systemd; that alone is no change.
        eprintln!("kprov: nothing to reset on {root}; nothing changed");
    } else if args.dry_run {
        eprintln!("kprov: dry run: {changed} step(s) would change {root}; nothing changed");
    } else {
        eprintln!("kprov: reset {root}: the join phase is undone, the base phase is kept");
    }
    Ok(ExitCode::SUCCESS)
}
