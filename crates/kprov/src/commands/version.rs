//! `kprov version`: kprov's version, the git commit it was built from
//! (embedded by build.rs) and the Kubernetes releases it supports.

use std::process::ExitCode;

use kprov_core::version::{MINIMUM_SUPPORTED, NEWEST_KNOWN};
use serde::Serialize;

use crate::cli::{OutputArg, VersionArgs};

/// kprov's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit kprov was built from, `-dirty` when the tree had changes,
/// or "unknown" (build.rs).
pub const GIT_COMMIT: &str = env!("KPROV_GIT_COMMIT");

/// What `kprov --version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("KPROV_GIT_COMMIT"),
    ")"
);

/// What `kprov version --output json` prints.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    /// kprov's version.
    pub version: &'static str,
    /// The git commit, with `-dirty` for a modified tree, or "unknown".
    pub git_commit: &'static str,
    /// Whether the tree had changes from that commit.
    pub git_tree_dirty: bool,
    /// The Kubernetes minor releases kprov provisions.
    pub kubernetes: KubernetesRange,
}

/// The supported Kubernetes releases, oldest and newest minor.
#[derive(Debug, Serialize)]
pub struct KubernetesRange {
    /// e.g. "v1.20".
    pub oldest: String,
    /// e.g. "v1.37".
    pub newest: String,
}

/// This build's version information.
pub fn info() -> VersionInfo {
    let minor = |v: &kprov_core::KubernetesVersion| format!("v{}.{}", v.major(), v.minor());
    VersionInfo {
        version: VERSION,
        git_commit: GIT_COMMIT,
        git_tree_dirty: GIT_COMMIT.ends_with("-dirty"),
        kubernetes: KubernetesRange {
            oldest: minor(&MINIMUM_SUPPORTED),
            newest: minor(&NEWEST_KNOWN),
        },
    }
}

/// Runs `kprov version`.
pub fn run(args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let info = info();
    #[allow(clippy::print_stdout)]
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        OutputArg::Text => {
            println!("kprov {}", info.version);
            println!("git commit: {}", info.git_commit);
            println!(
                "Kubernetes: {} to {}",
                info.kubernetes.oldest, info.kubernetes.newest
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kprov_core::KubernetesVersion;

    /// The range `kprov version` reports is the one the catalog can
    /// provision: its ends are in the catalog, the minors just outside are
    /// not.
    #[test]
    fn the_reported_kubernetes_range_is_the_catalogs() {
        let catalog = |major, minor| {
            kprov_artifacts::catalog::companions(&KubernetesVersion::new(major, minor, 0)).is_ok()
        };
        let range = info().kubernetes;
        let (oldest, newest) = (MINIMUM_SUPPORTED.minor(), NEWEST_KNOWN.minor());
        assert_eq!(range.oldest, format!("v1.{oldest}"));
        assert_eq!(range.newest, format!("v1.{newest}"));
        assert!(catalog(1, oldest) && catalog(1, newest));
        assert!(!catalog(1, oldest - 1) && !catalog(1, newest + 1));
    }

    #[test]
    fn the_commit_is_a_sha1_or_unknown() {
        let hex = GIT_COMMIT.trim_end_matches("-dirty");
        assert!(
            GIT_COMMIT == "unknown"
                || (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())),
            "{GIT_COMMIT}"
        );
    }
}
