//! Packages: installed-state checks and installs per package manager.

use std::collections::BTreeSet;
use std::path::Path;

use kprov_host::{fs, Command, HostError, Runner};

use super::{ApplyContext, Status};
use crate::resource::PackageManager;

/// Names of packages dpkg's status file lists as fully installed.
pub fn dpkg_installed(status_file: &str) -> BTreeSet<String> {
    let mut installed = BTreeSet::new();
    for stanza in status_file.split("\n\n") {
        let mut name = None;
        let mut ok = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                ok = v.trim() == "install ok installed";
            }
        }
        if let (Some(n), true) = (name, ok) {
            installed.insert(n);
        }
    }
    installed
}

fn missing_list(missing: Vec<&String>) -> Status {
    if missing.is_empty() {
        Status::Ok
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        Status::Missing(format!("not installed: {}", names.join(" ")))
    }
}

/// Which of `names` are not installed.
pub fn check(
    manager: PackageManager,
    names: &[String],
    ctx: &ApplyContext<'_>,
) -> Result<Status, HostError> {
    match manager {
        PackageManager::Apt => {
            let status = fs::read(ctx.root, Path::new("/var/lib/dpkg/status"))?.unwrap_or_default();
            let installed = dpkg_installed(&String::from_utf8_lossy(&status));
            Ok(missing_list(
                names.iter().filter(|n| !installed.contains(*n)).collect(),
            ))
        }
        PackageManager::Yum | PackageManager::Dnf => {
            let mut args = vec![
                "-q".to_string(),
                "--qf".to_string(),
                "%{NAME}\\n".to_string(),
            ];
            args.extend(names.iter().cloned());
            let out = ctx.runner.run(&Command::new("rpm", args))?;
            let installed: BTreeSet<&str> = out.stdout.lines().map(str::trim).collect();
            Ok(missing_list(
                names
                    .iter()
                    .filter(|n| !installed.contains(n.as_str()))
                    .collect(),
            ))
        }
    }
}

/// Installs `names`; recovers an interrupted dpkg run first.
pub fn install(
    manager: PackageManager,
    names: &[String],
    ctx: &ApplyContext<'_>,
) -> Result<(), HostError> {
    let runner: &dyn Runner = ctx.runner;
    match manager {
        PackageManager::Apt => {
            let apt = |args: Vec<String>| {
                Command::new("apt-get", args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .env("APT_LISTCHANGES_FRONTEND", "none")
            };
            runner.run_checked(
                &Command::new("dpkg", ["--configure", "-a"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            runner.run_checked(&apt(vec!["update".into(), "-q".into()]))?;
            let mut args: Vec<String> = [
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "Dpkg::Options::=--force-confdef",
            ]
            .into_iter()
            .map(str::to_string)
            .collect();
            args.extend(names.iter().cloned());
            runner.run_checked(&apt(args))?;
        }
        PackageManager::Yum | PackageManager::Dnf => {
            let tool = if manager == PackageManager::Yum {
                "yum"
            } else {
                "dnf"
            };
            let mut args = vec!["install".to_string(), "-y".to_string()];
            args.extend(names.iter().cloned());
            runner.run_checked(&Command::new(tool, args))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fully_installed_packages_count() {
        let status = "Package: socat\nStatus: install ok installed\nVersion: 1\n\nPackage: curl\nStatus: install ok half-configured\n\nPackage: kmod\nStatus: deinstall ok config-files\n";
        let installed = dpkg_installed(status);
        assert_eq!(installed.into_iter().collect::<Vec<_>>(), ["socat"]);
    }
}
