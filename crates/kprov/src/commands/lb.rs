//! `kprov lb run` and `kprov lb status`: flags into kprov-lb's config, and
//! the status report.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{LbCommand, LbRunArgs, LbStatusArgs, OutputArg};

/// Runs `kprov lb SUBCOMMAND`.
pub fn run(command: LbCommand) -> anyhow::Result<ExitCode> {
    match command {
        LbCommand::Run(args) => serve(args),
        LbCommand::Status(args) => status(&args),
    }
}

fn serve(args: LbRunArgs) -> anyhow::Result<ExitCode> {
    if args.tls_server_name.trim().is_empty() {
        anyhow::bail!("--tls-server-name: expected a DNS name of the API servers' certificates, got an empty string");
    }
    let config = kprov_lb::serve::Config {
        listen: args.listen,
        ca_file: args.ca_file,
        kubeconfig: args.kubeconfig,
        endpoints_file: args.endpoints_file,
        seeds: args.seed,
        check_interval: args.check_interval,
        check_timeout: args.check_timeout,
        connect_timeout: args.check_timeout,
        discovery_interval: args.discovery_interval,
        tls_server_name: args.tls_server_name,
        metrics_address: args.metrics_address,
        thresholds: kprov_lb::Thresholds::default(),
    };
    let runtime = super::runtime()?;
    runtime
        .block_on(kprov_lb::serve::run(config))
        .context("kprov lb run")?;
    Ok(ExitCode::SUCCESS)
}

fn status(args: &LbStatusArgs) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    let snapshot = runtime.block_on(kprov_lb::status::fetch(args.metrics_address))?;
    let text = match args.output {
        OutputArg::Text => snapshot.table(),
        OutputArg::Json => serde_json::to_string_pretty(&snapshot)? + "\n",
    };
    super::write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
