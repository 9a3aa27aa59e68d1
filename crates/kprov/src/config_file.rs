//! `--config FILE` of `kprov provision` and `kprov userdata`: a YAML file
//! whose keys are the command's long flag names without `--`.
//!
//! The merge of file and command line is clap's, as in coreos-installer's
//! `install --config-file`: the file is read into the command's structs
//! (the node's keys into `NodeConfig`, userdata's own into
//! `UserdataArgs`), paths of local files in it are made relative to the
//! file, and the result is turned back into flags
//! (`kprov_core::node_config::to_flags`). The command's own clap parser
//! then parses those flags followed by the ones given on the command line
//! (and `KPROV_TOKEN`, which counts as given): a value given on the
//! command line wins, lists from both are joined, and a flag on the
//! command line drops the file's flags it conflicts with (`--mirror` over
//! the file's `bundle`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use kprov_core::node_config::{self, Flag, NodeConfigError};
use kprov_core::NodeConfig;

use crate::cli::{Cli, Command, ProvisionArgs, UserdataArgs};

/// Which values of a command came from its --config file.
#[derive(Debug, Clone, Default)]
pub struct FromConfig {
    /// The file, when --config was given.
    pub path: Option<PathBuf>,
    /// The keys (long flag names) whose values come from the file alone.
    pub keys: Vec<String>,
}

impl FromConfig {
    /// `err`, naming the file when the value it refuses came from there.
    pub fn blame(&self, err: NodeConfigError) -> anyhow::Error {
        match (&self.path, err.key()) {
            (Some(path), Some(key)) if self.keys.iter().any(|k| k == key) => {
                anyhow::Error::new(err).context(format!("--config {}", path.display()))
            }
            _ => err.into(),
        }
    }
}

/// Parses the command line (clap's errors end the process, as usual);
/// with --config, parses it again after the file's flags.
pub fn parse() -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    // Built, so that its subcommands have the settings they inherit
    // (later flags override earlier ones).
    command.build();
    let matches = command.clone().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Some((name, given)) = matches.subcommand() else {
        return Ok(cli);
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Ok(cli);
    };
    match &mut cli.command {
        Command::Provision(args) => {
            let Some(path) = args.config.clone() else {
                return Ok(cli);
            };
            let mut node = NodeConfig::from_yaml(&read(&path)?)
                .with_context(|| format!("--config {}", path.display()))?;
            // What kprov provision reads on this machine.
            for p in [&mut node.ca_cert, &mut node.artifacts_dir, &mut node.bundle]
                .into_iter()
                .flatten()
            {
                rebase(&path, p);
            }
            rebase(&path, &mut node.cache_dir);
            let (matches, from) = merge(sub, given, &path, node.to_flags())?;
            let mut merged = ProvisionArgs::from_arg_matches(&matches)?;
            merged.from_config = from;
            **args = merged;
        }
        Command::Userdata(args) => {
            let Some(path) = args.config.clone() else {
                return Ok(cli);
            };
            let (mut own, mut node) = node_config::from_yaml::<UserdataArgs>(&read(&path)?)
                .with_context(|| format!("--config {}", path.display()))?;
            // What kprov userdata reads on this machine; the node's other
            // paths are paths on the node.
            for p in [
                &mut own.ssh_authorized_keys_file,
                &mut own.cloud_config_file,
                &mut own.provision_binary,
                &mut node.ca_cert,
            ]
            .into_iter()
            .flatten()
            {
                rebase(&path, p);
            }
            let mut flags = node_config::to_flags(&own)
                .with_context(|| format!("--config {}", path.display()))?;
            flags.extend(node.to_flags());
            let (matches, from) = merge(sub, given, &path, flags)?;
            let mut merged = UserdataArgs::from_arg_matches(&matches)?;
            merged.from_config = from;
            **args = merged;
        }
        Command::Cluster(command) => {
            let Some((name, given)) = given.subcommand() else {
                return Ok(cli);
            };
            let Some(sub) = sub.find_subcommand(name) else {
                return Ok(cli);
            };
            use crate::cli::ClusterCommand as C;
            let config = match command {
                C::Up(a) => &mut a.config,
                C::Down(a) | C::Kubeconfig(a) => &mut a.config,
                C::Status(a) | C::Check(a) => &mut a.config,
            };
            let Some(path) = config.clone() else {
                return Ok(cli);
            };
            let mut file: kprov_cluster::config::ClusterConfig =
                serde_yaml::from_str(&read(&path)?)
                    .with_context(|| format!("--config {}", path.display()))?;
            for p in [&mut file.image, &mut file.kubeconfig]
                .into_iter()
                .flatten()
            {
                rebase(&path, p);
            }
            rebase(&path, &mut file.machines_dir);
            let flags = node_config::to_flags(&file)
                .with_context(|| format!("--config {}", path.display()))?;
            let (matches, _) = merge(sub, given, &path, flags)?;
            match command {
                C::Up(a) => *a = crate::cli::ClusterUpArgs::from_arg_matches(&matches)?,
                C::Down(a) | C::Kubeconfig(a) => {
                    *a = crate::cli::ClusterArgsOnly::from_arg_matches(&matches)?
                }
                C::Status(a) | C::Check(a) => {
                    *a = crate::cli::ClusterReadArgs::from_arg_matches(&matches)?
                }
            }
        }
        _ => {}
    }
    Ok(cli)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))
}

/// A relative path in the file at `config` is relative to that file.
fn rebase(config: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = config.parent().unwrap_or(Path::new(".")).join(&*path);
    }
}

/// Parses the file's flags, then those `given` on the command line (or in
/// the environment), with `sub`, the subcommand's parser.
fn merge(
    sub: &clap::Command,
    given: &ArgMatches,
    path: &Path,
    file: Vec<Flag>,
) -> anyhow::Result<(ArgMatches, FromConfig)> {
    let in_file = |e: &dyn std::fmt::Display| anyhow!("--config {}: {e}", path.display());
    let explicit: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|a| {
            matches!(
                given.value_source(a.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .collect();
    let mut argv: Vec<OsString> = vec![sub.get_name().into()];
    let mut from = FromConfig {
        path: Some(path.to_path_buf()),
        keys: Vec::new(),
    };
    for flag in file {
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.name.as_str()))
            .ok_or_else(|| in_file(&format!("`{}` is not a flag of this command", flag.name)))?;
        let overruled = explicit.iter().any(|given| {
            sub.get_arg_conflicts_with(arg)
                .iter()
                .any(|c| c.get_id() == given.get_id())
                || sub
                    .get_arg_conflicts_with(given)
                    .iter()
                    .any(|c| c.get_id() == arg.get_id())
        });
        if overruled {
            continue;
        }
        if !explicit.iter().any(|g| g.get_id() == arg.get_id()) && !from.keys.contains(&flag.name) {
            from.keys.push(flag.name.clone());
        }
        argv.extend(flag.words().into_iter().map(OsString::from));
    }
    for arg in explicit {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            argv.push(format!("--{long}").into());
            continue;
        }
        for value in given.get_raw(arg.get_id().as_str()).into_iter().flatten() {
            let mut word = OsString::from(format!("--{long}="));
            word.push(value);
            argv.push(word);
        }
    }
    let matches = sub.clone().try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        in_file(&first.trim_start_matches("error: "))
    })?;
    Ok((matches, from))
}
