//! `kprov health-check`: one round of node health checks.

use std::process::ExitCode;

use kprov_host::{Root, SystemRunner};

use crate::cli::HealthCheckArgs;

/// Runs `kprov health-check`; logs each probe to stderr (the journal).
pub fn run(args: HealthCheckArgs) -> anyhow::Result<ExitCode> {
    let root = Root::live();
    let runner = SystemRunner::new(root.clone());
    let results = kprov_provision::health::run_once(&root, &runner, args.runtime)?;
    for r in &results {
        match (&r.probe, &r.restarted) {
            (Ok(()), _) => eprintln!("health: {} ok", r.unit),
            (Err(reason), Some(_)) => eprintln!(
                "health: {} unhealthy: {reason}; restarted it after {} consecutive failed checks",
                r.unit,
                kprov_provision::health::FAILURE_THRESHOLD
            ),
            (Err(reason), None) => eprintln!(
                "health: {} unhealthy ({} of {} failed checks before a restart): {reason}",
                r.unit,
                r.failures,
                kprov_provision::health::FAILURE_THRESHOLD
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
