//! `kprov man`: manual pages (roff) from the clap definitions: the main
//! page on stdout, or with `--dir` one page per command.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

/// Runs `kprov man`.
pub fn run(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match &args.dir {
        None => {
            let mut out = Vec::new();
            page(cmd).render(&mut out)?;
            super::write_stdout(&out)?;
        }
        Some(dir) => {
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            let written =
                write_pages(&cmd, dir).with_context(|| format!("--dir {}", dir.display()))?;
            eprintln!("kprov man: {written} pages in {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .source(format!("kprov {}", super::version::VERSION))
        .manual("kprov manual")
}

/// Writes the page of `cmd` and of each of its subcommands with kprov's
/// atomic write (a new file renamed over the old one: a symlink in the way
/// is replaced, never followed). Returns how many were written.
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub, dir)?;
    }
    let man = page(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    kprov_host::fs::write_file_atomic(&path, &roff, 0o644)?;
    Ok(written + 1)
}
