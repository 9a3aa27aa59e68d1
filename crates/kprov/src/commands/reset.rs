//! `kprov reset`: undo the join phase, keep the base phase.

use std::process::ExitCode;

use anyhow::Context;
use kprov_host::Root;

use crate::cli::ResetArgs;
use crate::output::Printer;

/// Runs `kprov reset`.
pub fn run(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let session = super::Session::new(root)?;
    let mut printer = Printer::new("reset", args.output, args.dry_run);
    let result =
        kprov_workflow::reset::run(&mut session.target(args.dry_run, &mut printer), args.force);
    printer.finish()?;
    result?;
    Ok(ExitCode::SUCCESS)
}
