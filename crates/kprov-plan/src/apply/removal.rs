//! Absence: paths removed, directories emptied, mounts gone.

use std::path::Path;

use kprov_host::fs::{self, FileState};
use kprov_host::{Command, HostError, Root};

use super::{ApplyContext, Status};

/// What is at `path`, for a plan that wants nothing there.
pub(super) fn check_absent(path: &str, ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    Ok(match fs::state(ctx.root, Path::new(path))? {
        FileState::Missing => Status::Ok,
        FileState::Dir { .. } => Status::Present("a directory tree".into()),
        FileState::Symlink { target } => {
            Status::Present(format!("a symlink to {}", target.display()))
        }
        _ => Status::Present("a file".into()),
    })
}

/// Removes a file, symlink or directory tree (symlinks are not followed).
pub(super) fn remove_tree(root: &Root, node_path: &Path) -> Result<(), HostError> {
    let host = root.resolve(node_path)?;
    let result = match std::fs::symlink_metadata(&host) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&host),
        Ok(_) => std::fs::remove_file(&host),
    };
    result.map_err(|e| HostError::io("removing", host, e))
}

pub(super) fn check_empty(dir: &str, ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    let entries = fs::list_dir(ctx.root, Path::new(dir))?;
    Ok(if entries.is_empty() {
        Status::Ok
    } else {
        Status::Present(entries.join(" "))
    })
}

pub(super) fn empty(dir: &str, ctx: &ApplyContext<'_>) -> Result<(), HostError> {
    for entry in fs::list_dir(ctx.root, Path::new(dir))? {
        remove_tree(ctx.root, &Path::new(dir).join(entry))?;
    }
    Ok(())
}

/// Mount points at or below `dir` (host paths), deepest first, from the
/// node's /proc/self/mounts.
fn mounts_under(dir: &str, ctx: &ApplyContext<'_>) -> Result<Vec<String>, HostError> {
    let host_dir = ctx.root.resolve(dir)?;
    let text = fs::read(ctx.root, Path::new("/proc/self/mounts"))?.unwrap_or_default();
    let prefix = host_dir.display().to_string();
    let mut found: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes spaces as \040.
        .map(|p| p.replace("\\040", " "))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.len()));
    Ok(found)
}

pub(super) fn check_unmounted(dir: &str, ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    let mounts = mounts_under(dir, ctx)?;
    Ok(if mounts.is_empty() {
        Status::Ok
    } else {
        Status::Present(mounts.join(" "))
    })
}

pub(super) fn unmount(dir: &str, ctx: &ApplyContext<'_>) -> Result<(), HostError> {
    for mount in mounts_under(dir, ctx)? {
        ctx.runner
            .run_checked(&Command::new("umount", ["-l", mount.as_str()]))?;
    }
    Ok(())
}
