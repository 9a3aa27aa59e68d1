//! containerd's `k8s.io` namespace through `ctr`: images imported from
//! staged archives, pod containers removed.

use kprov_host::{Command, HostError};

use super::{ApplyContext, Status};
use crate::resource::ImageImport;

/// The images `ctr -n k8s.io images ls -q` does not list.
pub(super) fn missing_images<'a>(
    ctr: &str,
    images: &'a [ImageImport],
    ctx: &ApplyContext<'_>,
) -> Result<Vec<&'a ImageImport>, HostError> {
    let out = ctx
        .runner
        .run_checked(&Command::new(ctr, ["-n", "k8s.io", "images", "ls", "-q"]))?;
    let present: std::collections::BTreeSet<&str> = out.stdout.lines().map(str::trim).collect();
    Ok(images
        .iter()
        .filter(|i| !present.contains(i.reference.as_str()))
        .collect())
}

fn which(ctx: &ApplyContext<'_>, program: &str) -> bool {
    ctx.runner
        .run(&Command::new(
            "sh",
            ["-c", &format!("command -v {program} >/dev/null")],
        ))
        .is_ok_and(|o| o.success)
}

fn list_containers(ctr: &str, ctx: &ApplyContext<'_>) -> Vec<String> {
    ctx.runner
        .run(&Command::new(
            ctr,
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

pub(super) fn check_removed(ctr: &str, ctx: &ApplyContext<'_>) -> Status {
    if !which(ctx, ctr) {
        // No runtime tools, no containers of theirs to remove.
        return Status::Ok;
    }
    let ids = list_containers(ctr, ctx);
    if ids.is_empty() {
        Status::Ok
    } else {
        Status::Present(format!("{} container(s)", ids.len()))
    }
}

/// Kills and removes every container; best effort: one that will not go
/// is logged and the plan goes on (a reset must not stop halfway because
/// of one stuck container).
pub(super) fn remove_all(ctr: &str, ctx: &ApplyContext<'_>) {
    let ids = list_containers(ctr, ctx);
    let mut left = Vec::new();
    for id in &ids {
        let ctr_run = |args: &[&str]| {
            let mut all = vec!["-n", "k8s.io"];
            all.extend_from_slice(args);
            ctx.runner.run(&Command::new(ctr, all))
        };
        let _ = ctr_run(&["tasks", "kill", "-s", "SIGKILL", id]);
        let _ = ctr_run(&["tasks", "rm", "-f", id]);
        if !ctr_run(&["containers", "rm", id]).is_ok_and(|o| o.success) {
            left.push(id.clone());
        }
    }
    if !left.is_empty() {
        tracing::warn!(
            "removed {} of {} container(s) with {ctr}; left: {}",
            ids.len() - left.len(),
            ids.len(),
            left.join(" ")
        );
    }
}
