//! Token epochs: `stateDir/epochs/<mac>` holds a machine's epoch (a
//! decimal number; missing means 0). `kprov netboot rotate-token MAC`
//! raises it by one ([`rotate`]); the server reads the directory when it
//! changes ([`read_all`], polled with the machines directory) and from
//! then on refuses every token of an earlier epoch. Files are written
//! atomically (0600, `kprov_host::fs::write_file_atomic`), under an
//! exclusive lock on the directory so that two rotations at once both
//! count.
//!
//! Side effects: this module reads and writes files; [`parse_epoch`] and
//! [`file_name`] are pure.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::machine::MacAddr;

/// The directory of epoch files under the state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("epochs")
}

/// The file name of a MAC's epoch (`aa-bb-cc-dd-ee-ff`).
pub fn file_name(mac: &MacAddr) -> String {
    mac.dashed()
}

/// An epoch file's text: a decimal number (whitespace around it allowed).
pub fn parse_epoch(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// Every epoch file of `state_dir` (files that are not a MAC or do not
/// hold a number are skipped and reported).
pub fn read_all(state_dir: &Path) -> (BTreeMap<MacAddr, u32>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return (out, problems);
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(mac) = name.parse::<MacAddr>() else {
            problems.push(format!("{name:?}: not a MAC address"));
            continue;
        };
        match std::fs::read_to_string(entry.path())
            .ok()
            .as_deref()
            .and_then(parse_epoch)
        {
            Some(epoch) => {
                out.insert(mac, epoch);
            }
            None => problems.push(format!("{name:?}: expected a decimal epoch")),
        }
    }
    (out, problems)
}

/// A fingerprint of the epochs directory (names, sizes, mtimes), to see
/// when it changes.
pub fn fingerprint(state_dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir(state_dir))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let m = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        m.as_ref().map(|m| m.len()).unwrap_or(0),
                        m.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Raises `mac`'s epoch by one and returns the new epoch.
pub fn rotate(state_dir: &Path, mac: &MacAddr) -> std::io::Result<u32> {
    let dir = dir(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let lock = std::fs::File::open(&dir)?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let path = dir.join(file_name(mac));
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => parse_epoch(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: expected a decimal epoch", path.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = current.checked_add(1).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: the epoch cannot go past {}", path.display(), u32::MAX),
        )
    })?;
    write_private(&path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// Writes a private state file (0600) with kprov-host's atomic write.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kprov_host::fs::write_file_atomic(path, bytes, 0o600)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rotating_raises_the_epoch_and_the_server_reads_it_back() {
        let state = tempfile::tempdir().unwrap();
        let a: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let b: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        assert!(read_all(state.path()).0.is_empty());
        assert_eq!(rotate(state.path(), &a).unwrap(), 1);
        assert_eq!(rotate(state.path(), &a).unwrap(), 2);
        assert_eq!(rotate(state.path(), &b).unwrap(), 1);
        let file = dir(state.path()).join("52-54-00-00-00-01");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "2\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir(state.path()).join("junk"), "1").unwrap();
        std::fs::write(dir(state.path()).join("52-54-00-00-00-03"), "x").unwrap();
        let (epochs, problems) = read_all(state.path());
        assert_eq!(epochs, BTreeMap::from([(a, 2), (b, 1)]));
        assert_eq!(
            problems,
            [
                "\"52-54-00-00-00-03\": expected a decimal epoch",
                "\"junk\": not a MAC address"
            ]
        );
        std::fs::write(&file, "nope").unwrap();
        let err = rotate(state.path(), &a).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("52-54-00-00-00-01: expected a decimal epoch"),
            "{err}"
        );
    }
}
