//! Embeds the git commit kprov is built from, for `kprov version`.
//!
//! KPROV_GIT_COMMIT, when set, wins (builds from a source tarball can name
//! their commit). Otherwise `git rev-parse HEAD` in the checkout, with
//! `-dirty` appended when tracked files differ from that commit; without
//! git or outside a checkout, "unknown". A build never fails for lack of
//! git.

// Cargo reads a build script's instructions from its stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KPROV_GIT_COMMIT");
    let commit = match std::env::var("KPROV_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=KPROV_GIT_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn from_git() -> Option<String> {
    let commit = git(&["rev-parse", "HEAD"])?;
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Run again when HEAD moves (a commit, a checkout) or the tree changes.
    // Paths come from git, so worktrees (whose refs live in the common
    // directory) are watched too; only existing paths are named, since
    // cargo re-runs a script whose watched path is missing on every build.
    for name in ["HEAD", "index", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", name]));
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &head_ref]));
    }
    if let Some(top) = git(&["rev-parse", "--show-toplevel"]) {
        for tracked in ["crates", "Cargo.toml", "Cargo.lock", "tools", ".cargo"] {
            watch(Some(format!("{top}/{tracked}")));
        }
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

fn watch(path: Option<String>) {
    if let Some(path) = path {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
