//! Files on a node: reading their state and changing them atomically.
//!
//! Writes go to a temporary file in the same directory (a fixed name per
//! target, so an interrupted write is simply redone), which is fsynced,
//! given its owner and mode, and renamed over the target; then the
//! directory is fsynced. A crash leaves either the old or the new file.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::failpoint;
use crate::root::{HostError, Root};

/// Owner and mode of a file kprov manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl FileAttrs {
    /// Owned by root with `mode`.
    pub const fn root(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// What is at a node path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Nothing.
    Missing,
    /// A regular file.
    File {
        /// Its attributes.
        attrs: FileAttrs,
        /// SHA-256 of its contents.
        sha256: [u8; 32],
    },
    /// A symbolic link.
    Symlink {
        /// Where it points, as stored.
        target: PathBuf,
    },
    /// A directory.
    Dir {
        /// Its attributes.
        attrs: FileAttrs,
    },
    /// A device, socket or fifo.
    Other,
}

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of a file on the machine kprov runs on, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], HostError> {
    let mut file = File::open(path).map_err(|e| HostError::io("opening", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| HostError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn attrs_of(meta: &fs::Metadata) -> FileAttrs {
    FileAttrs {
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// The state of `node_path` under `root`, without following a final symlink.
pub fn state(root: &Root, node_path: &Path) -> Result<FileState, HostError> {
    let host = root.resolve(node_path)?;
    let meta = match host.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Missing),
        // A parent that is a file: nothing can be at this path.
        Err(e) if e.raw_os_error() == Some(20) => return Ok(FileState::Missing),
        Err(e) => return Err(HostError::io("inspecting", host, e)),
    };
    let kind = meta.file_type();
    Ok(if kind.is_symlink() {
        FileState::Symlink {
            target: fs::read_link(&host).map_err(|e| HostError::io("reading link", &host, e))?,
        }
    } else if kind.is_file() {
        FileState::File {
            attrs: attrs_of(&meta),
            sha256: root
                .hash_cache()
                .sum(root.base(), &host, &meta, || sha256_file(&host))?,
        }
    } else if kind.is_dir() {
        FileState::Dir {
            attrs: attrs_of(&meta),
        }
    } else {
        FileState::Other
    })
}

/// Reads a node file, following symlinks; `None` when it does not exist.
pub fn read(root: &Root, node_path: &Path) -> Result<Option<Vec<u8>>, HostError> {
    let host = root.resolve_following(node_path)?;
    match fs::read(&host) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::io("reading", host, e)),
    }
}

/// Creates the directory `node_path` and its missing parents (mode 0755,
/// owned by root), as `mkdir -p` does.
pub fn create_dir_all(root: &Root, node_path: &Path) -> Result<(), HostError> {
    let host = root.resolve_following(node_path)?;
    if host.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&host)
        .map_err(|e| HostError::io("creating directory", &host, e))
}

fn temp_path_for(host: &Path) -> PathBuf {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    host.with_file_name(format!(".{name}.kprov-tmp"))
}

fn sync_dir(dir: &Path) -> Result<(), HostError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HostError::io("syncing directory", dir, e))
}

fn parent_of(host: &Path) -> &Path {
    host.parent().unwrap_or(Path::new("/"))
}

/// Writes `contents` to `node_path` atomically with `attrs`.
pub fn write_atomic(
    root: &Root,
    node_path: &Path,
    contents: &[u8],
    attrs: FileAttrs,
) -> Result<(), HostError> {
    write_atomic_from(root, node_path, &mut &contents[..], attrs)
}

/// Streams `reader` into `node_path` atomically with `attrs` (for large
/// binaries that should not be held in memory).
pub fn write_atomic_from(
    root: &Root,
    node_path: &Path,
    reader: &mut dyn Read,
    attrs: FileAttrs,
) -> Result<(), HostError> {
    if let Some(parent) = node_path.parent() {
        create_dir_all(root, parent)?;
    }
    let host = root.resolve(node_path)?;
    let temp = temp_path_for(&host);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Secrets must never be readable, even for a moment: start private.
        .mode(0o600)
        .open(&temp)
        .map_err(|e| HostError::io("creating", &temp, e))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| HostError::io("setting mode of", &temp, e))?;
    std::io::copy(reader, &mut file).map_err(|e| HostError::io("writing", &temp, e))?;
    file.sync_all()
        .map_err(|e| HostError::io("syncing", &temp, e))?;
    std::os::unix::fs::fchown(&file, Some(attrs.uid), Some(attrs.gid))
        .map_err(|e| HostError::io("setting owner of", &temp, e))?;
    file.set_permissions(fs::Permissions::from_mode(attrs.mode))
        .map_err(|e| HostError::io("setting mode of", &temp, e))?;
    drop(file);
    failpoint::hit("write.before-rename");
    fs::rename(&temp, &host).map_err(|e| HostError::io("renaming into place", &host, e))?;
    sync_dir(parent_of(&host))
}

/// Makes `node_path` a symlink to `target` atomically (replacing a file or
/// another link; never a directory).
pub fn symlink_atomic(root: &Root, node_path: &Path, target: &Path) -> Result<(), HostError> {
    if let Some(parent) = node_path.parent() {
        create_dir_all(root, parent)?;
    }
    let host = root.resolve(node_path)?;
    let temp = temp_path_for(&host);
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(HostError::io("removing stale", &temp, e)),
    }
    std::os::unix::fs::symlink(target, &temp)
        .map_err(|e| HostError::io("creating symlink", &temp, e))?;
    failpoint::hit("write.before-rename");
    fs::rename(&temp, &host).map_err(|e| HostError::io("renaming into place", &host, e))?;
    sync_dir(parent_of(&host))
}

/// Removes a file or symlink at `node_path`; a missing one is fine.
pub fn remove_file(root: &Root, node_path: &Path) -> Result<(), HostError> {
    let host = root.resolve(node_path)?;
    match fs::remove_file(&host) {
        Ok(()) => sync_dir(parent_of(&host)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::io("removing", host, e)),
    }
}

/// Sets owner and mode of an existing node path (not following a final
/// symlink's target for ownership).
pub fn set_attrs(root: &Root, node_path: &Path, attrs: FileAttrs) -> Result<(), HostError> {
    let host = root.resolve(node_path)?;
    std::os::unix::fs::lchown(&host, Some(attrs.uid), Some(attrs.gid))
        .map_err(|e| HostError::io("setting owner of", &host, e))?;
    fs::set_permissions(&host, fs::Permissions::from_mode(attrs.mode))
        .map_err(|e| HostError::io("setting mode of", &host, e))
}

/// Names of the entries of a node directory, sorted; empty if missing.
pub fn list_dir(root: &Root, node_path: &Path) -> Result<Vec<String>, HostError> {
    let host = root.resolve_following(node_path)?;
    let entries = match fs::read_dir(&host) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::io("listing", host, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HostError::io("listing", &host, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_get_contents_mode_and_no_leftover_temp() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let p = Path::new("/etc/kubernetes/secret.conf");
        write_atomic(&root, p, b"token", FileAttrs::root(0o600)).unwrap();
        let host = dir.path().join("etc/kubernetes/secret.conf");
        assert_eq!(fs::read(&host).unwrap(), b"token");
        assert_eq!(host.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            list_dir(&root, Path::new("/etc/kubernetes")).unwrap(),
            vec!["secret.conf"]
        );
        match state(&root, p).unwrap() {
            FileState::File { attrs, sha256: sum } => {
                assert_eq!(attrs.mode, 0o600);
                assert_eq!(sum, sha256(b"token"));
            }
            other => panic!("unexpected state {other:?}"),
        }
    }

    #[test]
    fn a_write_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        fs::write(dir.path().join("target"), b"old").unwrap();
        std::os::unix::fs::symlink("/target", dir.path().join("link")).unwrap();
        write_atomic(&root, Path::new("/link"), b"new", FileAttrs::root(0o644)).unwrap();
        assert_eq!(fs::read(dir.path().join("target")).unwrap(), b"old");
        assert_eq!(fs::read(dir.path().join("link")).unwrap(), b"new");
    }

    #[test]
    fn symlinks_are_created_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let p = Path::new("/etc/systemd/system/swap.target");
        symlink_atomic(&root, p, Path::new("/dev/null")).unwrap();
        symlink_atomic(&root, p, Path::new("/dev/null")).unwrap();
        assert_eq!(
            state(&root, p).unwrap(),
            FileState::Symlink {
                target: "/dev/null".into()
            }
        );
    }

    #[test]
    fn missing_paths_read_as_none_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(read(&root, Path::new("/etc/os-release")).unwrap(), None);
        assert_eq!(
            state(&root, Path::new("/etc/os-release")).unwrap(),
            FileState::Missing
        );
        remove_file(&root, Path::new("/etc/os-release")).unwrap();
    }
}
