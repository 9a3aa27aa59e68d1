//! `kprov os`: show the detected operating system.

use std::process::ExitCode;

use anyhow::Context;
use kprov_host::Root;

use crate::cli::{OsArgs, OutputArg};

/// Runs `kprov os`.
pub fn run(args: OsArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(&args.root)?;
    let facts = kprov_provision::facts::detect_os(&root)
        .with_context(|| format!("detecting the OS in {root}"))?;
    #[allow(clippy::print_stdout)]
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&facts)?),
        OutputArg::Text => println!(
            "{} (ID {:?}, VERSION_ID {}, family {})",
            facts.pretty_name, facts.distro, facts.version_id, facts.family
        ),
    }
    Ok(ExitCode::SUCCESS)
}
