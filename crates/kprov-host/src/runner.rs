//! Commands run on a node: directly on a live host, through `chroot` when
//! the root is a directory being prebaked.

use std::fmt;
use std::process::Stdio;

use crate::root::{HostError, Root};

/// A command to run on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program, looked up in the node's `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Command {
    /// A command with arguments.
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// True when it exited with status 0.
    pub success: bool,
    /// Its exit status, described (`exit status 1`, `signal 9`).
    pub status: String,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs commands on a node. The engine uses this trait so that tests and
/// dry runs can see commands without running them.
pub trait Runner {
    /// Runs `cmd` and returns its output, whatever its exit status.
    fn run(&self, cmd: &Command) -> Result<CommandOutput, HostError>;

    /// Runs `cmd` and turns a non-zero exit into an error carrying the
    /// last lines of its standard error.
    fn run_checked(&self, cmd: &Command) -> Result<CommandOutput, HostError> {
        let out = self.run(cmd)?;
        if out.success {
            return Ok(out);
        }
        let source = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        Err(HostError::CommandFailed {
            command: cmd.to_string(),
            status: out.status.clone(),
            stderr_tail: last_lines(source, 5),
        })
    }
}

/// The last `n` non-empty lines of `text`, joined with " | ".
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The real runner: processes on this machine, chrooted into the root when
/// it is not `/`.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    root: Root,
}

/// Variables of kprov's own environment that hold secrets (the bootstrap
/// token, the registry password). No child process gets them: apt,
/// maintainer scripts, ctr and systemctl have no use for them, and a
/// child's environment can end up in logs or crash reports.
pub const SECRET_ENV_VARS: &[&str] = &["KPROV_TOKEN", "KPROV_REGISTRY_PASSWORD"];

/// Removes [`SECRET_ENV_VARS`] from what `command` passes to its child.
/// Every process kprov starts goes through [`SystemRunner`] or this.
pub fn without_secrets(command: &mut std::process::Command) -> &mut std::process::Command {
    for var in SECRET_ENV_VARS {
        command.env_remove(var);
    }
    command
}

/// A `PATH` that finds the usual tools on every supported distro.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin";

impl SystemRunner {
    /// A runner for commands on the node at `root`.
    pub fn new(root: Root) -> Self {
        Self { root }
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Command) -> Result<CommandOutput, HostError> {
        let mut process = if self.root.is_live() {
            std::process::Command::new(&cmd.program)
        } else {
            let mut c = std::process::Command::new("chroot");
            c.arg(self.root.base()).arg(&cmd.program);
            c
        };
        without_secrets(&mut process)
            .args(&cmd.args)
            .env("PATH", NODE_PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &cmd.env {
            process.env(k, v);
        }
        let shown = if self.root.is_live() {
            cmd.to_string()
        } else {
            format!("chroot {} {cmd}", self.root)
        };
        tracing::debug!(command = %shown, "running");
        let out = process.output().map_err(|source| HostError::Spawn {
            command: shown.clone(),
            source,
        })?;
        let status = match out.status.code() {
            Some(code) => format!("exit status {code}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!("signal {}", out.status.signal().unwrap_or(0))
            }
        };
        Ok(CommandOutput {
            success: out.status.success(),
            status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_the_command_status_and_stderr_tail() {
        let runner = SystemRunner::new(Root::live());
        let err = runner
            .run_checked(&Command::new(
                "sh",
                ["-c", "echo one >&2; echo two >&2; exit 3"],
            ))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo one >&2; echo two >&2; exit 3 exited with exit status 3: one | two"
        );
    }

    #[test]
    fn children_do_not_inherit_kprov_s_secrets() {
        // This test process stands for kprov with the secrets in its
        // environment; no other test here reads them.
        std::env::set_var("KPROV_TOKEN", "abcdef.0123456789abcdef");
        std::env::set_var("KPROV_REGISTRY_PASSWORD", "hunter2");
        std::env::set_var("KPROV_TEST_INHERITED", "yes");
        let runner = SystemRunner::new(Root::live());
        let out = runner
            .run_checked(&Command::new("env", Vec::<String>::new()))
            .unwrap();
        assert!(
            out.stdout.contains("KPROV_TEST_INHERITED=yes"),
            "{}",
            out.stdout
        );
        for secret in [
            "KPROV_TOKEN",
            "KPROV_REGISTRY_PASSWORD",
            "0123456789abcdef",
            "hunter2",
        ] {
            assert!(
                !out.stdout.contains(secret),
                "{secret} reached the child:\n{}",
                out.stdout
            );
        }
        assert_eq!(
            std::env::var("KPROV_TOKEN").unwrap(),
            "abcdef.0123456789abcdef"
        );
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "");
    }
}
