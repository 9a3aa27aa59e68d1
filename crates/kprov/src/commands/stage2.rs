//! `kprov stage2`: flags into kprov-stage2's install (after DHCP on
//! `--dhcp`'s interface), with progress lines on the console.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::Stage2Args;

/// Runs `kprov stage2`.
pub fn run(args: &Stage2Args) -> anyhow::Result<ExitCode> {
    if let Some(interface) = &args.dhcp {
        let lease = kprov_stage2::net::configure(interface, Duration::from_secs(60))
            .map_err(anyhow::Error::msg)
            .context("configuring the network")?;
        eprintln!(
            "kprov: stage2: {}",
            kprov_stage2::net::describe(interface, &lease)
        );
    }
    let request = kprov_stage2::install::Install {
        manifest_url: args.manifest.clone(),
        disk: args.disk.clone(),
        attempts: args.attempts,
        backoff: args.retry_delay,
        seed: args.seed.clone(),
    };
    let runtime = super::runtime()?;
    let mut lines = kprov_stage2::install::console_lines();
    let installed = runtime
        .block_on(kprov_stage2::install::install(&request, &mut lines))
        .with_context(|| format!("installing onto {}", args.disk.display()))?;
    eprintln!(
        "{}",
        kprov_stage2::install::installed_line(&args.disk, &installed)
    );
    Ok(ExitCode::SUCCESS)
}
