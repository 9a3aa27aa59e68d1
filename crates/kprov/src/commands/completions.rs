//! `kprov completions SHELL`: a completion script for bash, zsh or fish,
//! generated from the clap definitions, so it names every command and
//! flag there is.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionsArgs, ShellArg};

/// Runs `kprov completions`.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kprov", &mut out);
    super::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
