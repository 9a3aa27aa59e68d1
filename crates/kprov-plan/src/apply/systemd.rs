//! systemd state: enabled units (symlinks), masks, reloads, active units.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kprov_host::fs::{self, FileState};
use kprov_host::{Command, HostError};

use super::{ApplyContext, Status};
use crate::UNIT_SEARCH_PATH;

/// The node path of `unit`'s file, searched as systemd does.
fn find_unit(unit: &str, ctx: &ApplyContext<'_>) -> Result<Option<PathBuf>, HostError> {
    for dir in UNIT_SEARCH_PATH {
        let candidate = Path::new(dir).join(unit);
        let host = ctx.root.resolve_following(&candidate)?;
        // A unit in /etc that is a link to /dev/null is masked, not found.
        if host.is_file() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn wants_link(unit: &str, target: &str) -> PathBuf {
    Path::new("/etc/systemd/system")
        .join(format!("{target}.wants"))
        .join(unit)
}

pub(super) fn check_enabled(
    unit: &str,
    wanted_by: &str,
    ctx: &ApplyContext<'_>,
) -> Result<Status, HostError> {
    let Some(unit_path) = find_unit(unit, ctx)? else {
        return Ok(Status::Missing(format!(
            "unit file of {unit} not installed yet"
        )));
    };
    let unit_host = ctx.root.resolve_following(&unit_path)?;
    for target in wanted_by.split_whitespace() {
        let link = wants_link(unit, target);
        match fs::state(ctx.root, &link)? {
            FileState::Missing => {
                return Ok(Status::Missing(format!("{} missing", link.display())))
            }
            FileState::Symlink { .. } if ctx.root.resolve_following(&link)? == unit_host => {}
            _ => {
                return Ok(Status::Differs(format!(
                    "{} does not point at {}",
                    link.display(),
                    unit_path.display()
                )))
            }
        }
    }
    Ok(Status::Ok)
}

pub(super) fn enable(unit: &str, wanted_by: &str, ctx: &ApplyContext<'_>) -> Result<(), HostError> {
    let unit_path = find_unit(unit, ctx)?.ok_or_else(|| HostError::BadPath {
        path: PathBuf::from(unit),
        reason: "unit file not found in /etc/systemd/system, /lib/systemd/system or /usr/lib/systemd/system",
    })?;
    for target in wanted_by.split_whitespace() {
        fs::symlink_atomic(ctx.root, &wants_link(unit, target), &unit_path)?;
    }
    Ok(())
}

/// Units that must be masked: swap.target and vendor `.swap` units. Swap
/// units an administrator wrote under /etc are theirs to remove; their fstab
/// source is commented out anyway.
fn swap_units(ctx: &ApplyContext<'_>) -> Result<Vec<String>, HostError> {
    let mut units = vec!["swap.target".to_string()];
    for dir in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        for name in fs::list_dir(ctx.root, Path::new(dir))? {
            if name.ends_with(".swap") && !units.contains(&name) {
                units.push(name);
            }
        }
    }
    Ok(units)
}

const DEV_NULL: &str = "/dev/null";

pub(super) fn check_swap_masked(ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    let mut unmasked = Vec::new();
    for unit in swap_units(ctx)? {
        let link = Path::new("/etc/systemd/system").join(&unit);
        match fs::state(ctx.root, &link)? {
            FileState::Symlink { target } if target == Path::new(DEV_NULL) => {}
            _ => unmasked.push(unit),
        }
    }
    Ok(if unmasked.is_empty() {
        Status::Ok
    } else {
        Status::Missing(format!("not masked: {}", unmasked.join(" ")))
    })
}

pub(super) fn mask_swap(ctx: &ApplyContext<'_>) -> Result<(), HostError> {
    for unit in swap_units(ctx)? {
        let link = Path::new("/etc/systemd/system").join(&unit);
        if let FileState::File { .. } = fs::state(ctx.root, &link)? {
            // An administrator's own unit: leave it (see swap_units).
            continue;
        }
        fs::symlink_atomic(ctx.root, &link, Path::new(DEV_NULL))?;
    }
    Ok(())
}

/// Parses `systemctl show` output (`Key=value` lines) for one key.
fn show_value<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

pub(super) fn check_reloaded(
    units: &[String],
    ctx: &ApplyContext<'_>,
) -> Result<Status, HostError> {
    for unit in units {
        let out = ctx.runner.run_checked(&Command::new(
            "systemctl",
            [
                "show",
                "-p",
                "NeedDaemonReload",
                "-p",
                "LoadState",
                "-p",
                "DropInPaths",
                unit.as_str(),
            ],
        ))?;
        if show_value(&out.stdout, "NeedDaemonReload") == Some("yes") {
            return Ok(Status::Differs(format!("{unit} changed on disk")));
        }
        if show_value(&out.stdout, "LoadState") == Some("not-found") {
            return Ok(Status::Missing(format!("{unit} not loaded")));
        }
        // systemd's NeedDaemonReload misses a drop-in in a directory that
        // did not exist when the unit was loaded: compare the files.
        let loaded = show_value(&out.stdout, "DropInPaths").unwrap_or_default();
        if let Some(missing) = unloaded_dropin(ctx, unit, loaded)? {
            return Ok(Status::Differs(format!(
                "drop-in {missing} not loaded for {unit}"
            )));
        }
    }
    Ok(Status::Ok)
}

/// A drop-in of `unit` under /etc/systemd/system that is not among the
/// `loaded` ones (space-separated paths), if any.
fn unloaded_dropin(
    ctx: &ApplyContext<'_>,
    unit: &str,
    loaded: &str,
) -> Result<Option<String>, HostError> {
    let dir = PathBuf::from(format!("/etc/systemd/system/{unit}.d"));
    if fs::state(ctx.root, &dir)? == FileState::Missing {
        return Ok(None);
    }
    let loaded: Vec<&str> = loaded.split_whitespace().collect();
    Ok(fs::list_dir(ctx.root, &dir)?
        .into_iter()
        .filter(|name| name.ends_with(".conf"))
        .map(|name| dir.join(name).display().to_string())
        .find(|path| !loaded.contains(&path.as_str())))
}

fn boot_time_secs(ctx: &ApplyContext<'_>) -> Result<f64, HostError> {
    let uptime = fs::read(ctx.root, Path::new("/proc/uptime"))?.unwrap_or_default();
    let up: f64 = String::from_utf8_lossy(&uptime)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Ok(now - up)
}

pub(super) fn check_stopped(unit: &str, ctx: &ApplyContext<'_>) -> Result<Status, HostError> {
    let out = ctx
        .runner
        .run(&Command::new("systemctl", ["is-active", unit]))?;
    Ok(if out.success {
        Status::Present(format!("{unit} is {}", out.stdout.trim()))
    } else {
        Status::Ok
    })
}

pub(super) fn check_active(
    unit: &str,
    config: &[String],
    ctx: &ApplyContext<'_>,
) -> Result<Status, HostError> {
    let out = ctx.runner.run_checked(&Command::new(
        "systemctl",
        [
            "show",
            "-p",
            "ActiveState",
            "-p",
            "ActiveEnterTimestampMonotonic",
            unit,
        ],
    ))?;
    if show_value(&out.stdout, "ActiveState") != Some("active") {
        return Ok(Status::Missing(format!(
            "{unit} is {}",
            show_value(&out.stdout, "ActiveState").unwrap_or("unknown")
        )));
    }
    let started_mono: f64 = show_value(&out.stdout, "ActiveEnterTimestampMonotonic")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let started = boot_time_secs(ctx)? + started_mono / 1e6;
    for path in config {
        let host = ctx.root.resolve_following(path)?;
        let Ok(meta) = host.metadata() else { continue };
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if modified > started {
            return Ok(Status::Differs(format!(
                "{path} changed after {unit} started"
            )));
        }
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_values_are_found_by_exact_key() {
        let out = "ActiveState=active\nActiveEnterTimestampMonotonic=123\n";
        assert_eq!(show_value(out, "ActiveState"), Some("active"));
        assert_eq!(
            show_value(out, "ActiveEnterTimestampMonotonic"),
            Some("123")
        );
        assert_eq!(show_value(out, "Active"), None);
    }
}
