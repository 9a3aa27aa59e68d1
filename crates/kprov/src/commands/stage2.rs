//! `kprov stage2`: flags into kprov-stage2's install, with progress lines
//! on the console.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::Stage2Args;

/// Runs `kprov stage2`.
pub fn run(args: &Stage2Args) -> anyhow::Result<ExitCode> {
    let request = kprov_stage2::install::Install {
        manifest_url: args.manifest.clone(),
        disk: args.disk.clone(),
        attempts: args.attempts,
        backoff: args.retry_delay,
    };
    let runtime = super::runtime()?;
    // A line per tenth, and at least every 10 s: a console, not a terminal.
    let mut next_tenth = 1u64;
    let mut last_line = Duration::ZERO;
    let installed = runtime
        .block_on(kprov_stage2::install::install(&request, &mut |p| {
            let tenth = p.received * 10 / p.total.max(1);
            if tenth >= next_tenth || p.elapsed >= last_line + Duration::from_secs(10) {
                next_tenth = tenth + 1;
                last_line = p.elapsed;
                eprintln!(
                    "kprov: stage2: {}% ({} of {} MiB received, {} MiB written, {:.0} s)",
                    p.received * 100 / p.total.max(1),
                    p.received >> 20,
                    p.total >> 20,
                    p.written >> 20,
                    p.elapsed.as_secs_f64()
                );
            }
        }))
        .with_context(|| format!("installing onto {}", args.disk.display()))?;
    let raw = installed.manifest.raw.size;
    let seconds = installed.elapsed.as_secs_f64().max(0.001);
    eprintln!(
        "kprov: stage2: {} installed: {} MiB verified (sha256 {}), {} request(s), {:.1} s, {:.0} MiB/s",
        args.disk.display(),
        raw >> 20,
        installed.manifest.raw.sha256,
        installed.requests,
        seconds,
        raw as f64 / f64::from(1u32 << 20) / seconds
    );
    Ok(ExitCode::SUCCESS)
}
