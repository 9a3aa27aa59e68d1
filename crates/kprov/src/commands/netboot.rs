//! `kprov netboot serve`: reads and validates the config, then runs the
//! servers of kprov-netboot on a tokio runtime.

use std::process::ExitCode;

use anyhow::Context;
use kprov_netboot::config::Config;

use crate::cli::NetbootCommand;

/// Runs a `kprov netboot` subcommand.
pub fn run(command: NetbootCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetbootCommand::Serve(args) => {
            let text = std::fs::read_to_string(&args.config)
                .with_context(|| format!("--config {}: cannot read", args.config.display()))?;
            let config = Config::parse(&args.config, &text)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(kprov_netboot::server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
