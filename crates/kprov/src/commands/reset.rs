//! `kprov reset`: undo the join phase, keep the base phase.

use std::process::ExitCode;

use anyhow::Context;
use kprov_host::{Root, SystemRunner};
use kprov_workflow::Target;

use crate::cli::ResetArgs;
use crate::output::Printer;

/// Runs `kprov reset`.
pub fn run(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let rt = super::runtime()?;
    let runner = SystemRunner::new(root.clone());
    let mut printer = Printer::new("reset", args.output, args.dry_run);
    let mut target = Target {
        root,
        runner: &runner,
        rt: rt.handle().clone(),
        dry_run: args.dry_run,
        observer: &mut printer,
    };
    let result = kprov_workflow::reset::run(&mut target);
    printer.finish()?;
    result?;
    Ok(ExitCode::SUCCESS)
}
