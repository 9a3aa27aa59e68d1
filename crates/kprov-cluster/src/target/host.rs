//! What the targets that run machines on this host share: the commands
//! they run here (with a fixed `PATH` and nothing else of the caller's
//! environment), the cluster bridge in the network namespace they put it
//! in, and the text of logs they hand back.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Machine, TargetError};
use crate::name::{ClusterName, MachineName};
use crate::network::{bridge_name, ClusterNetwork};

/// PATH of the commands kprov runs on the host and in machines.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `program` with only [`PATH`] in its environment.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", PATH);
    c
}

/// The network namespace the cluster bridges live in: this process's, or
/// the one at a path such as `/run/netns/NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeNetns {
    /// The namespace's path; `None` for this process's own.
    pub path: Option<PathBuf>,
}

impl BridgeNetns {
    /// `program ARGS` run in the namespace (through `nsenter` when it is
    /// not this process's).
    pub fn command(&self, program: &str) -> Command {
        match &self.path {
            Some(path) => {
                let mut c = command("nsenter");
                c.arg(format!("--net={}", path.display())).arg(program);
                c
            }
            None => command(program),
        }
    }

    /// `ip ARGS` in the namespace.
    pub fn ip(&self, args: &[&str]) -> Command {
        let mut c = self.command("ip");
        c.args(args);
        c
    }

    /// Makes the cluster's bridge, or checks the one there; `target`
    /// names the target in an error.
    pub fn ensure_bridge(
        &self,
        target: &'static str,
        cluster: &ClusterName,
        network: &ClusterNetwork,
    ) -> Result<(), TargetError> {
        let bridge = bridge_name(cluster);
        let want = format!("{}/{}", network.gateway(), network.prefix_len());
        match self.addresses(&bridge)? {
            Some(addresses) if addresses.contains(&want) => return Ok(()),
            Some(addresses) => {
                return Err(TargetError::HostUnsuitable {
                    target,
                    reason: format!(
                        "the bridge {bridge} of cluster {cluster} has the addresses [{}], not {want}: another network of the same cluster, or a stale bridge (remove it with `ip link del {bridge}`)",
                        addresses.join(", ")
                    ),
                })
            }
            None => {}
        }
        let alias = format!("kprov cluster {cluster}");
        run_checked(&mut self.ip(&["link", "add", &bridge, "type", "bridge"]))?;
        run_checked(&mut self.ip(&["link", "set", &bridge, "alias", &alias]))?;
        run_checked(&mut self.ip(&["addr", "add", &want, "dev", &bridge]))?;
        run_checked(&mut self.ip(&["link", "set", &bridge, "up"]))?;
        Ok(())
    }

    /// Removes the cluster's bridge when it is there.
    pub fn remove_bridge(&self, cluster: &ClusterName) -> Result<(), TargetError> {
        let bridge = bridge_name(cluster);
        if self.addresses(&bridge)?.is_some() {
            run_checked(&mut self.ip(&["link", "del", &bridge]))?;
        }
        Ok(())
    }

    /// The IPv4 addresses (`A.B.C.D/LEN`) of the interface `link`, or
    /// `None` when it does not exist.
    pub fn addresses(&self, link: &str) -> Result<Option<Vec<String>>, TargetError> {
        let mut cmd = self.ip(&["-j", "-4", "addr", "show", "dev", link]);
        let out = cmd.output().map_err(|e| TargetError::Spawn {
            command: describe(&cmd),
            source: e,
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("does not exist") {
                return Ok(None);
            }
            return Err(TargetError::Command {
                command: describe(&cmd),
                status: out.status.to_string(),
                stderr: err.into_owned(),
            });
        }
        parse_ip_addresses(&out.stdout)
            .map(Some)
            .map_err(|reason| TargetError::Command {
                command: describe(&cmd),
                status: "unreadable output".into(),
                stderr: reason,
            })
    }
}

/// The machines of `cluster` that have a directory under `base_dir`
/// (named after the machine), sorted; whether each is one of the target's
/// is for its record to say.
pub fn machine_dirs(
    base_dir: &std::path::Path,
    cluster: &ClusterName,
) -> Result<Vec<MachineName>, TargetError> {
    let listing = |e| TargetError::io("listing", base_dir, e);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base_dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<MachineName>().ok())
        {
            if &name.cluster == cluster {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Refuses to remove what a cluster's machines share while `left` (its
/// machines) is not empty.
pub fn ensure_no_machines(cluster: &ClusterName, left: &[Machine]) -> Result<(), TargetError> {
    if left.is_empty() {
        return Ok(());
    }
    Err(TargetError::ClusterInUse {
        cluster: cluster.clone(),
        machines: left.iter().map(|m| m.name.to_string()).collect(),
    })
}

/// Runs a command on the host; an error names it and carries the end of
/// its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<std::process::Output, TargetError> {
    let out = cmd.output().map_err(|e| TargetError::Spawn {
        command: describe(cmd),
        source: e,
    })?;
    if !out.status.success() {
        return Err(TargetError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: last_lines(&String::from_utf8_lossy(&out.stderr), 10),
        });
    }
    Ok(out)
}

/// A command's program and arguments, as one line.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// The IPv4 addresses (`A.B.C.D/LEN`) in `ip -j addr show`'s output.
pub fn parse_ip_addresses(json: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("ip -j printed no JSON: {e}"))?;
    let mut out = Vec::new();
    for link in value.as_array().into_iter().flatten() {
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(local), Some(len)) = (addr["local"].as_str(), addr["prefixlen"].as_u64()) {
                out.push(format!("{local}/{len}"));
            }
        }
    }
    Ok(out)
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `text` without ANSI escape sequences (a console's colours) and
/// carriage returns.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters and intermediates, up to the final byte.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `lines` lines of the file at `path` (a console log), without
/// colours; empty when it cannot be read.
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    std::fs::read(path)
        .map(|bytes| last_lines(&strip_ansi(&String::from_utf8_lossy(&bytes)), lines))
        .unwrap_or_default()
}

/// Sets `path`'s mode.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), TargetError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| TargetError::io("setting the mode of", path, e))
}

/// Writes `path` with `mode` from the start (secrets are never readable
/// by others), through a temporary file renamed into place.
pub(crate) fn write_file_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), TargetError> {
    Ok(kprov_host::fs::write_file_atomic(path, contents, mode)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bridge_addresses_are_read_from_ips_json() {
        let json = br#"[{"ifindex":2,"ifname":"kpbr","addr_info":[{"family":"inet","local":"10.80.0.1","prefixlen":24}]}]"#;
        assert_eq!(parse_ip_addresses(json).unwrap(), ["10.80.0.1/24"]);
        assert_eq!(parse_ip_addresses(b"[]").unwrap(), Vec::<String>::new());
        assert!(parse_ip_addresses(b"nope").is_err());
    }

    #[test]
    fn console_text_loses_its_colours_and_keeps_its_last_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[0;32m  OK  \u{1b}[0m] Started x\r\n"),
            "  OK  ] Started x\n"
        );
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn machine_directories_of_other_clusters_and_other_names_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "a-worker-2",
            "a-master-1",
            "b-master-1",
            ".qemu-a",
            "a-master-x",
        ] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let a: ClusterName = "a".parse().unwrap();
        let names: Vec<String> = machine_dirs(dir.path(), &a)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["a-master-1", "a-worker-2"]);
    }

    #[test]
    fn commands_in_another_namespace_go_through_nsenter() {
        let ns = BridgeNetns {
            path: Some("/run/netns/t".into()),
        };
        assert_eq!(
            describe(&ns.ip(&["link"])),
            "nsenter --net=/run/netns/t ip link"
        );
        assert_eq!(describe(&BridgeNetns::default().ip(&["link"])), "ip link");
    }
}
