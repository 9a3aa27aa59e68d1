//! `kprov reset`: undo the join phase and keep the base phase.
//!
//! [`plan_reset`] lists the steps (pure); [`apply_reset`] carries them out
//! under a root, each one idempotent: a path already gone, a unit already
//! stopped or no container left is reported as such. On a running host
//! the kubelet is stopped first, the volumes it mounted under
//! /var/lib/kubelet are unmounted (so removing the tree cannot reach into
//! them) and the pods' containers are removed with crictl or ctr when one
//! is installed (best effort).

use std::fmt;
use std::path::Path;

use kprov_host::{Command, HostError, Root, Runner};
use serde::Serialize;

use crate::os::OsFacts;
use crate::plan::CA_CERT_PATH;
use crate::pod_routes;
use crate::render::{cni, kubelet};
use crate::tables;

/// The kubelet's state directory.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// CNI plugins' state (IP allocations).
pub const CNI_STATE_DIR: &str = "/var/lib/cni";

/// One step of a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResetStep {
    /// Live only: a unit stopped.
    UnitStopped {
        /// The unit.
        unit: String,
    },
    /// Live only: nothing mounted at or below a directory.
    Unmounted {
        /// Node path.
        dir: String,
    },
    /// Live only: the pods' containers removed (k8s.io namespace).
    ContainersRemoved,
    /// A file or a whole directory tree gone.
    Removed {
        /// Node path.
        path: String,
    },
    /// A directory's entries gone; the directory stays (the base phase
    /// made it).
    Emptied {
        /// Node path.
        dir: String,
    },
    /// Live only: the bridge pod network's routes (protocol 77) and its
    /// bridge gone.
    PodNetworkRemoved,
    /// Live only: systemd has re-read the unit files.
    DaemonReloaded,
}

impl fmt::Display for ResetStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnitStopped { unit } => write!(f, "unit {unit} stopped"),
            Self::Unmounted { dir } => write!(f, "nothing mounted under {dir}"),
            Self::ContainersRemoved => f.write_str("pod containers removed (k8s.io)"),
            Self::Removed { path } => write!(f, "{path} removed"),
            Self::Emptied { dir } => write!(f, "{dir} emptied"),
            Self::PodNetworkRemoved => write!(
                f,
                "pod routes (proto {}) and bridge {} removed",
                cni::ROUTE_PROTOCOL,
                cni::BRIDGE_NAME
            ),
            Self::DaemonReloaded => f.write_str("systemd unit files reloaded"),
        }
    }
}

/// The steps that undo the join phase.
pub fn plan_reset(os: &OsFacts, live: bool) -> Vec<ResetStep> {
    let layout = tables::layout(os.family);
    let mut steps = Vec::new();
    if live {
        steps.push(ResetStep::UnitStopped {
            unit: "kubelet.service".into(),
        });
        steps.push(ResetStep::ContainersRemoved);
        steps.push(ResetStep::Unmounted {
            dir: KUBELET_DIR.into(),
        });
    }
    for path in [
        kubelet::KUBECONFIG_PATH,
        kubelet::BOOTSTRAP_KUBECONFIG_PATH,
        kubelet::DROPIN_PATH,
        CA_CERT_PATH,
        KUBELET_DIR,
        CNI_STATE_DIR,
    ] {
        steps.push(ResetStep::Removed { path: path.into() });
    }
    // A count of the old kubelet's failed health checks must not count
    // against the next join's kubelet.
    steps.push(ResetStep::Removed {
        path: crate::health::counter_path("kubelet.service"),
    });
    steps.push(ResetStep::Emptied {
        dir: layout.cni_conf_dir.into(),
    });
    if live {
        steps.push(ResetStep::PodNetworkRemoved);
        steps.push(ResetStep::DaemonReloaded);
    }
    steps
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: String,
    /// done, unchanged (already so), or would change (dry run).
    pub outcome: &'static str,
    /// Details (what was removed, a best-effort failure).
    pub detail: Option<String>,
}

/// Carries out `steps` under `root` (or, with `dry_run`, says what they
/// would do).
pub fn apply_reset(
    root: &Root,
    runner: &dyn Runner,
    steps: &[ResetStep],
    dry_run: bool,
) -> Result<Vec<StepReport>, HostError> {
    steps
        .iter()
        .map(|step| {
            let (needed, detail) = needed(root, runner, step)?;
            let outcome = match (needed, dry_run) {
                (false, _) => "unchanged",
                (true, true) => "would change",
                (true, false) => {
                    return Ok(StepReport {
                        step: step.to_string(),
                        outcome: "done",
                        detail: carry_out(root, runner, step)?.or(detail),
                    })
                }
            };
            Ok(StepReport {
                step: step.to_string(),
                outcome,
                detail,
            })
        })
        .collect()
}

/// Mount points at or below `dir` (host paths), deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes spaces as \040.
        .map(|p| p.replace("\\040", " "))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.len()));
    found
}

fn which(runner: &dyn Runner, program: &str) -> bool {
    runner
        .run(&Command::new(
            "sh",
            ["-c", &format!("command -v {program}")],
        ))
        .is_ok_and(|o| o.success)
}

/// Whether the step has anything to do, and what.
fn needed(
    root: &Root,
    runner: &dyn Runner,
    step: &ResetStep,
) -> Result<(bool, Option<String>), HostError> {
    Ok(match step {
        ResetStep::UnitStopped { unit } => (
            runner
                .run(&Command::new("systemctl", ["is-active", "--quiet", unit]))
                .is_ok_and(|o| o.success),
            None,
        ),
        ResetStep::Unmounted { dir } => {
            let mounts = mounts_under(&root.resolve(dir)?);
            (
                !mounts.is_empty(),
                Some(mounts.join(" ")).filter(|s| !s.is_empty()),
            )
        }
        ResetStep::ContainersRemoved => {
            if !which(runner, "ctr") {
                (false, Some("ctr is not installed".into()))
            } else {
                let ids = list_containers(runner);
                (!ids.is_empty(), Some(format!("{} container(s)", ids.len())))
            }
        }
        ResetStep::Removed { path } => (
            kprov_host::fs::state(root, Path::new(path))? != kprov_host::fs::FileState::Missing,
            None,
        ),
        ResetStep::Emptied { dir } => {
            let entries = kprov_host::fs::list_dir(root, Path::new(dir))?;
            (
                !entries.is_empty(),
                Some(entries.join(" ")).filter(|s| !s.is_empty()),
            )
        }
        ResetStep::PodNetworkRemoved => {
            let routes: Vec<String> = pod_routes::current(runner)
                .map(|r| r.into_keys().collect())
                .unwrap_or_default();
            let bridge = pod_routes::bridge_exists(runner);
            let mut what = Vec::new();
            if !routes.is_empty() {
                what.push(format!("routes to {}", routes.join(" ")));
            }
            if bridge {
                what.push(format!("bridge {}", cni::BRIDGE_NAME));
            }
            (
                !what.is_empty(),
                Some(what.join("; ")).filter(|s| !s.is_empty()),
            )
        }
        ResetStep::DaemonReloaded => (true, None),
    })
}

fn list_containers(runner: &dyn Runner) -> Vec<String> {
    runner
        .run(&Command::new(
            "ctr",
            ["-n", "k8s.io", "containers", "ls", "-q"],
        ))
        .map(|o| {
            o.stdout
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn carry_out(
    root: &Root,
    runner: &dyn Runner,
    step: &ResetStep,
) -> Result<Option<String>, HostError> {
    match step {
        ResetStep::PodNetworkRemoved => pod_routes::remove_all(runner)?,
        ResetStep::UnitStopped { unit } => {
            runner.run_checked(&Command::new("systemctl", ["stop", unit]))?;
        }
        ResetStep::Unmounted { dir } => {
            for mount in mounts_under(&root.resolve(dir)?) {
                runner.run_checked(&Command::new("umount", ["-l", mount.as_str()]))?;
            }
        }
        ResetStep::ContainersRemoved => {
            // Best effort: a container that will not go is reported, and
            // the reset goes on.
            let mut failed = Vec::new();
            let ids = list_containers(runner);
            for id in &ids {
                let _ = runner.run(&Command::new(
                    "ctr",
                    ["-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id],
                ));
                let _ = runner.run(&Command::new(
                    "ctr",
                    ["-n", "k8s.io", "tasks", "rm", "-f", id],
                ));
                let removed = runner
                    .run(&Command::new(
                        "ctr",
                        ["-n", "k8s.io", "containers", "rm", id],
                    ))
                    .is_ok_and(|o| o.success);
                if !removed {
                    failed.push(id.clone());
                }
            }
            return Ok(Some(if failed.is_empty() {
                format!("removed {} container(s) with ctr", ids.len())
            } else {
                format!(
                    "removed {} of {} container(s) with ctr; left: {}",
                    ids.len() - failed.len(),
                    ids.len(),
                    failed.join(" ")
                )
            }));
        }
        ResetStep::Removed { path } => remove_tree(root, Path::new(path))?,
        ResetStep::Emptied { dir } => {
            for entry in kprov_host::fs::list_dir(root, Path::new(dir))? {
                remove_tree(root, &Path::new(dir).join(entry))?;
            }
        }
        ResetStep::DaemonReloaded => {
            runner.run_checked(&Command::new("systemctl", ["daemon-reload"]))?;
        }
    }
    Ok(None)
}

/// Removes a file, symlink or directory tree (symlinks are not followed).
fn remove_tree(root: &Root, node_path: &Path) -> Result<(), HostError> {
    let host = root.resolve(node_path)?;
    let result = match std::fs::symlink_metadata(&host) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&host),
        Ok(_) => std::fs::remove_file(&host),
    };
    result.map_err(|e| HostError::io("removing", host, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> OsFacts {
        crate::os::detect(
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn an_offline_reset_only_removes_files_and_keeps_the_base_phase() {
        let steps = plan_reset(&debian(), false);
        assert!(steps
            .iter()
            .all(|s| matches!(s, ResetStep::Removed { .. } | ResetStep::Emptied { .. })));
        let removed: Vec<String> = steps.iter().map(ToString::to_string).collect();
        for want in [
            "/etc/kubernetes/kubelet.conf removed",
            "/etc/kubernetes/bootstrap-kubelet.conf removed",
            "/etc/systemd/system/kubelet.service.d/10-kprov.conf removed",
            "/etc/kubernetes/pki/ca.crt removed",
            "/var/lib/kubelet removed",
            "/var/lib/cni removed",
            "/etc/cni/net.d emptied",
        ] {
            assert!(removed.contains(&want.to_string()), "{removed:?}");
        }
        assert!(
            !removed.iter().any(|r| r.contains("kubelet.service removed")
                || r.contains("/usr/local/bin")
                || r.contains("containerd"))
        );
    }

    #[test]
    fn a_live_reset_stops_the_kubelet_before_removing_its_files() {
        let steps = plan_reset(&debian(), true);
        assert_eq!(
            steps[0],
            ResetStep::UnitStopped {
                unit: "kubelet.service".into()
            }
        );
        let unmount = steps
            .iter()
            .position(|s| matches!(s, ResetStep::Unmounted { .. }))
            .unwrap();
        let remove = steps
            .iter()
            .position(|s| {
                *s == ResetStep::Removed {
                    path: KUBELET_DIR.into(),
                }
            })
            .unwrap();
        assert!(unmount < remove);
        assert_eq!(steps.last(), Some(&ResetStep::DaemonReloaded));
    }
}
