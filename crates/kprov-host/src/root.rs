//! A node's filesystem seen from kprov: paths under a base directory,
//! resolved with chroot semantics so that nothing escapes the base.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Errors of the host layer. Each carries the path or command concerned.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The root directory itself is unusable.
    #[error("target root {path}: {reason}")]
    BadRoot {
        /// The root given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A node path that is not absolute or contains `..`.
    #[error("node path {path:?} is not allowed: {reason}")]
    BadPath {
        /// The path on the node.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing", "reading", ...).
        action: &'static str,
        /// The host path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the node lock and did not let go in time.
    #[error("the node lock {path} is held by another kprov run (waited {} s; KPROV_LOCK_TIMEOUT sets how long)", waited.as_secs())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited: std::time::Duration,
    },
    /// A `KPROV_LOCK_TIMEOUT` that is not a number of seconds.
    #[error("KPROV_LOCK_TIMEOUT {value:?}: expected a whole number of seconds")]
    BadLockTimeout {
        /// The value given.
        value: String,
    },
    /// A command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} exited with {status}{}", tail_suffix(.stderr_tail))]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status (or the signal, described).
        status: String,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl HostError {
    /// Builds an [`HostError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Symlinks followed while resolving one path before giving up, as Linux does.
const MAX_SYMLINKS: usize = 40;

/// The base directory that stands for a node's `/`.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
    /// Sums of large files, shared by the clones of this root.
    hashes: std::sync::Arc<crate::hash_cache::HashCache>,
}

impl PartialEq for Root {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
    }
}

impl Eq for Root {}

impl Root {
    /// Opens the root at `base`, which must be an existing directory.
    pub fn new(base: impl AsRef<Path>) -> Result<Self, HostError> {
        let given = base.as_ref();
        let base = given.canonicalize().map_err(|e| HostError::BadRoot {
            path: given.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !base.is_dir() {
            return Err(HostError::BadRoot {
                path: given.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        Ok(Self {
            base,
            hashes: Default::default(),
        })
    }

    /// The running host's own root, `/`.
    pub fn live() -> Self {
        Self {
            base: PathBuf::from("/"),
            hashes: Default::default(),
        }
    }

    /// The remembered sums of this root's large files.
    pub(crate) fn hash_cache(&self) -> &crate::hash_cache::HashCache {
        &self.hashes
    }

    /// Keeps what was learned about large files' sums for the next run
    /// (see [`crate::hash_cache`]); only where kprov's state directory
    /// exists, and only when something new was learned.
    pub fn save_hash_cache(&self) -> Result<(), HostError> {
        let dir = Path::new(crate::hash_cache::CACHE_PATH)
            .parent()
            .unwrap_or(Path::new("/"));
        if !self.resolve(dir)?.is_dir() {
            return Ok(());
        }
        match self.hashes.take_dirty(&self.base) {
            Some(text) => crate::fs::write_atomic(
                self,
                Path::new(crate::hash_cache::CACHE_PATH),
                text.as_bytes(),
                crate::fs::FileAttrs::root(0o600),
            ),
            None => Ok(()),
        }
    }

    /// True when the root is the running host (`/`): services can be
    /// started and the kernel configured. False when prebaking offline.
    pub fn is_live(&self) -> bool {
        self.base == Path::new("/")
    }

    /// The base directory on the machine kprov runs on.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The host path of node path `node_path`, following symlinks of its
    /// parent directories inside the root (an absolute link target means
    /// the root's `/`, and `..` stops at the root). The last component is
    /// not followed, so that writing replaces a symlink rather than
    /// writing through it.
    pub fn resolve(&self, node_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        self.resolve_inner(node_path.as_ref(), false)
    }

    /// Like [`Root::resolve`], but follows the last component too, for
    /// reading what a path points at.
    pub fn resolve_following(&self, node_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        self.resolve_inner(node_path.as_ref(), true)
    }

    fn resolve_inner(&self, node_path: &Path, follow_last: bool) -> Result<PathBuf, HostError> {
        check_node_path(node_path)?;
        let mut pending: VecDeque<OsString> = node_path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        let mut resolved: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            if name == "." {
                continue;
            }
            let is_last = pending.is_empty();
            resolved.push(name);
            if is_last && !follow_last {
                break;
            }
            let host = self.host_path(&resolved);
            let Ok(meta) = host.symlink_metadata() else {
                continue;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(HostError::BadPath {
                    path: node_path.to_path_buf(),
                    reason: "too many levels of symbolic links",
                });
            }
            let target =
                std::fs::read_link(&host).map_err(|e| HostError::io("reading link", &host, e))?;
            resolved.pop();
            if target.is_absolute() {
                resolved.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push_front(n.to_os_string()),
                    Component::ParentDir => pending.push_front("..".into()),
                    _ => {}
                }
            }
        }
        Ok(self.host_path(&resolved))
    }

    fn host_path(&self, components: &[OsString]) -> PathBuf {
        let mut p = self.base.clone();
        p.extend(components);
        p
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base.display())
    }
}

/// Node paths in plans are absolute and never climb with `..`.
fn check_node_path(path: &Path) -> Result<(), HostError> {
    if !path.is_absolute() {
        return Err(HostError::BadPath {
            path: path.to_path_buf(),
            reason: "not absolute",
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(HostError::BadPath {
            path: path.to_path_buf(),
            reason: "contains '..'",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib/systemd")).unwrap();
        symlink("usr/lib", dir.path().join("lib")).unwrap();
        symlink("/usr/lib", dir.path().join("abs-lib")).unwrap();
        symlink("../../../../etc", dir.path().join("usr/lib/escape")).unwrap();
        (dir, root)
    }

    #[test]
    fn relative_and_absolute_links_resolve_inside_the_root() {
        let (dir, root) = setup();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(
            root.resolve("/lib/systemd/x").unwrap(),
            base.join("usr/lib/systemd/x")
        );
        assert_eq!(
            root.resolve("/abs-lib/systemd/x").unwrap(),
            base.join("usr/lib/systemd/x")
        );
    }

    #[test]
    fn links_climbing_out_stop_at_the_root() {
        let (dir, root) = setup();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(
            root.resolve("/usr/lib/escape/passwd").unwrap(),
            base.join("etc/passwd")
        );
    }

    #[test]
    fn the_last_component_is_followed_only_on_request() {
        let (dir, root) = setup();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(root.resolve("/lib").unwrap(), base.join("lib"));
        assert_eq!(
            root.resolve_following("/lib").unwrap(),
            base.join("usr/lib")
        );
    }

    #[test]
    fn relative_paths_and_dotdot_are_refused() {
        let (_dir, root) = setup();
        for (p, reason) in [
            ("etc/passwd", "not absolute"),
            ("/etc/../../passwd", "contains '..'"),
        ] {
            let err = root.resolve(p).unwrap_err().to_string();
            assert_eq!(err, format!("node path {p:?} is not allowed: {reason}"));
        }
    }

    #[test]
    fn symlink_loops_are_reported() {
        let (dir, root) = setup();
        symlink("loop", dir.path().join("loop")).unwrap();
        assert!(root
            .resolve("/loop/x")
            .unwrap_err()
            .to_string()
            .contains("too many levels"));
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = Root::new("/nonexistent/kprov-root")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("target root /nonexistent/kprov-root: "),
            "{err}"
        );
    }
}
