//! Sums of large files, remembered between runs.
//!
//! A no-op re-run checks every installed binary; hashing them all again
//! (kubelet, kubectl, kprov, the CNI plugins: a few hundred MiB) was most
//! of its time. A file's sum is remembered with its fingerprint: device,
//! inode, size, modification and change times (to the nanosecond). Any
//! write, rename over it or chmod changes the inode or the change time,
//! which no unprivileged process can set back, so a matching fingerprint
//! means the same contents; anything else is hashed again. The cache is
//! kept on the node (`/var/lib/kprov/file-sums`, 0600) and written only by
//! runs that change something (never by a dry run), and only where
//! kprov's state directory exists already.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files smaller than this are hashed every time: cheap, and the cache
/// stays small.
const MIN_SIZE: u64 = 1 << 20;

/// Where the cache lives on the node.
pub const CACHE_PATH: &str = "/var/lib/kprov/file-sums";

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    loaded: bool,
    dirty: bool,
    files: BTreeMap<PathBuf, (Fingerprint, [u8; 32])>,
}

/// The remembered sums of one root.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: Mutex<Entries>,
}

impl HashCache {
    /// The sum of `host` (a host path under `base`), from the cache when
    /// its fingerprint matches, else computed by `hash` and remembered.
    pub(crate) fn sum(
        &self,
        base: &Path,
        host: &Path,
        meta: &std::fs::Metadata,
        hash: impl FnOnce() -> Result<[u8; 32], crate::HostError>,
    ) -> Result<[u8; 32], crate::HostError> {
        if meta.size() < MIN_SIZE {
            return hash();
        }
        let print = Fingerprint::of(meta);
        self.ensure_loaded(base);
        let key = node_key(base, host);
        {
            let entries = self.lock();
            if let Some((known, sum)) = entries.files.get(&key) {
                if *known == print {
                    return Ok(*sum);
                }
            }
        }
        let sum = hash()?;
        let mut entries = self.lock();
        entries.files.insert(key, (print, sum));
        entries.dirty = true;
        Ok(sum)
    }

    /// Reads the node's cache file once.
    pub(crate) fn ensure_loaded(&self, base: &Path) {
        let mut entries = self.lock();
        if !entries.loaded {
            entries.loaded = true;
            let mut known = load(&base.join(CACHE_PATH.trim_start_matches('/')));
            // What this run learned before loading wins.
            known.append(&mut entries.files);
            entries.files = known;
        }
    }

    /// Remembers `sum` for `host`, just written by kprov with contents of
    /// that sum (so the next run need not read it).
    pub(crate) fn remember(
        &self,
        base: &Path,
        host: &Path,
        meta: &std::fs::Metadata,
        sum: [u8; 32],
    ) {
        if meta.size() < MIN_SIZE {
            return;
        }
        let mut entries = self.lock();
        entries
            .files
            .insert(node_key(base, host), (Fingerprint::of(meta), sum));
        entries.dirty = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves plain data behind.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache's text, if it learned something since it was loaded.
    pub(crate) fn take_dirty(&self, base: &Path) -> Option<String> {
        let mut entries = self.lock();
        if !entries.dirty {
            return None;
        }
        entries.dirty = false;
        let mut text = String::new();
        for (path, (p, sum)) in &entries.files {
            // Files gone since are dropped.
            if std::fs::symlink_metadata(base.join(path)).is_err() {
                continue;
            }
            text.push_str(&format!(
                "{} {} {} {} {} {} {}\n",
                hex::encode(sum),
                p.dev,
                p.ino,
                p.size,
                p.mtime_ns,
                p.ctime_ns,
                path.display()
            ));
        }
        Some(text)
    }
}

/// The key of a host path: its path on the node, without the leading
/// `/` (so that it joins onto the root's base), the same wherever the
/// root is mounted.
fn node_key(base: &Path, host: &Path) -> PathBuf {
    host.strip_prefix(base).unwrap_or(host).to_path_buf()
}

/// Reads a cache file; anything unreadable is ignored (the files are
/// hashed again).
fn load(path: &Path) -> BTreeMap<PathBuf, (Fingerprint, [u8; 32])> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(7, ' ');
            let sum: [u8; 32] = hex::decode(f.next()?).ok()?.try_into().ok()?;
            let print = Fingerprint {
                dev: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
                size: f.next()?.parse().ok()?,
                mtime_ns: f.next()?.parse().ok()?,
                ctime_ns: f.next()?.parse().ok()?,
            };
            Some((PathBuf::from(f.next()?), (print, sum)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{state, FileState};
    use crate::Root;

    fn sum_of(root: &Root, path: &str) -> [u8; 32] {
        match state(root, Path::new(path)).unwrap() {
            FileState::File { sha256, .. } => sha256,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_big_file_changed_in_place_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/kprov")).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![1u8; 2 << 20]).unwrap();
        let root = Root::new(dir.path()).unwrap();
        let first = sum_of(&root, "/big");
        root.save_hash_cache().unwrap();
        let saved = std::fs::read_to_string(dir.path().join("var/lib/kprov/file-sums")).unwrap();
        assert_eq!(saved.lines().count(), 1, "{saved}");

        // A new process reads the cache; the same file gives the same sum.
        let again = Root::new(dir.path()).unwrap();
        assert_eq!(sum_of(&again, "/big"), first);
        // Rewritten in place, same size: the change time moves, the sum
        // is computed again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&big, vec![2u8; 2 << 20]).unwrap();
        let changed = Root::new(dir.path()).unwrap();
        assert_ne!(sum_of(&changed, "/big"), first);
        assert_eq!(
            sum_of(&changed, "/big"),
            crate::fs::sha256(&vec![2u8; 2 << 20])
        );
    }

    #[test]
    fn a_forged_cache_entry_for_another_inode_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/kprov")).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![3u8; 2 << 20]).unwrap();
        std::fs::write(
            dir.path().join("var/lib/kprov/file-sums"),
            format!("{} 1 2 3 4 5 big\n", "00".repeat(32)),
        )
        .unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(
            sum_of(&root, "/big"),
            crate::fs::sha256(&vec![3u8; 2 << 20])
        );
    }

    #[test]
    fn nothing_is_saved_without_kprovs_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![1u8; 2 << 20]).unwrap();
        let root = Root::new(dir.path()).unwrap();
        sum_of(&root, "/big");
        root.save_hash_cache().unwrap();
        assert!(!dir.path().join("var").exists());
    }
}
