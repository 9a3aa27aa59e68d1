//! Files on a node: reading their state and changing them atomically.
//!
//! Writes go to a new temporary file in the same directory, created with
//! a name no one can guess (`.NAME.PID.RANDOM.kprov-tmp`) and
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, so a file or symlink planted there is never
//! written through; it is fsynced, given its owner and mode, and renamed
//! over the target; then the directory is fsynced. A crash leaves either
//! the old or the new file, and at worst a temporary file, which the next
//! write of the same target removes. [`AtomicFile`] is this write, for node
//! paths under a [`Root`] and for paths on the machine kprov runs on alike.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Remembers that `node_path`, just written, holds contents whose SHA-256
/// is `sum` (see [`crate::hash_cache`]): the next check of a large file
/// then needs no read. A path that is not a regular file is ignored.
pub fn remember_sum(root: &Root, node_path: &Path, sum: [u8; 32]) -> Result<(), HostError> {
    let host = root.resolve(node_path)?;
    let meta = host
        .symlink_metadata()
        .map_err(|e| HostError::io("inspecting", &host, e))?;
    if meta.file_type().is_file() {
        // The cache is loaded before it is added to, so that saving it
        // keeps what earlier runs learned.
        root.hash_cache().ensure_loaded(root.base());
        root.hash_cache().remember(root.base(), &host, &meta, sum);
    }
    Ok(())
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

fn sync_dir(dir: &Path) -> Result<(), HostError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HostError::io("syncing directory", dir, e))
}

fn parent_of(host: &Path) -> &Path {
    match host.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => Path::new("/"),
    }
}

/// The ending of every temporary file kprov writes.
pub const TEMP_SUFFIX: &str = ".kprov-tmp";

/// Longest file name Linux filesystems take.
const NAME_MAX: usize = 255;

/// How many unique names to try before giving up (each collision is a
/// file someone else created at a name nobody should know in advance).
const TEMP_ATTEMPTS: u32 = 64;

/// The prefix of the temporary names for a file called `name`:
/// `.NAME.` (shortened so that a whole temporary name fits in 255 bytes).
fn temp_prefix(name: &OsStr) -> Vec<u8> {
    let bytes = name.as_bytes();
    // ".", NAME, ".", pid (<= 10), ".", 16 hex digits, the suffix.
    let room = NAME_MAX - (1 + 1 + 10 + 1 + 16 + TEMP_SUFFIX.len());
    let mut prefix = vec![b'.'];
    prefix.extend_from_slice(&bytes[..bytes.len().min(room)]);
    prefix.push(b'.');
    prefix
}

/// A number no other writer can guess ahead of time: the clock, a
/// per-process counter and the process id, mixed (splitmix64).
fn unguessable() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Removes temporary files for `name` in `dir` that no running writer
/// owns: those of processes that no longer exist (a run that was killed)
/// and the fixed name older kprov versions used. Removing unlinks a name
/// and never follows a symlink. Best effort: a failure here never stops a
/// write.
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = temp_prefix(name);
    let mut legacy = b".".to_vec();
    legacy.extend_from_slice(name.as_bytes());
    legacy.extend_from_slice(TEMP_SUFFIX.as_bytes());
    let proc_mounted = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let bytes = entry_name.as_bytes();
        let stale = if bytes == legacy.as_slice() {
            true
        } else if let Some(middle) = bytes
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX.as_bytes()))
        {
            let pid = middle.split(|&b| b == b'.').next().unwrap_or_default();
            let pid = std::str::from_utf8(pid)
                .ok()
                .and_then(|p| p.parse::<u32>().ok());
            match pid {
                Some(pid) => {
                    proc_mounted
                        && pid != std::process::id()
                        && !Path::new(&format!("/proc/{pid}")).exists()
                }
                None => false,
            }
        } else {
            false
        };
        if stale {
            let path = dir.join(&entry_name);
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed a stale temporary file"),
                Err(e) => {
                    tracing::debug!(path = %path.display(), "cannot remove a stale temporary file: {e}")
                }
            }
        }
    }
}

/// Creates a new temporary file next to `target`, mode 0600, with a name
/// no one could have prepared: `O_CREAT|O_EXCL|O_NOFOLLOW`, so a file or
/// symlink someone planted is never opened, truncated or followed.
fn create_temp(target: &Path) -> Result<(File, PathBuf), HostError> {
    let dir = parent_of(target);
    let name = target.file_name().ok_or_else(|| HostError::BadPath {
        path: target.to_path_buf(),
        reason: "has no file name",
    })?;
    unique_temp(
        dir,
        name,
        target,
        ("creating", "creating a temporary file for"),
        |temp| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                // Secrets must never be readable, even for a moment: start private.
                .mode(0o600)
                .open(temp)
        },
    )
}

/// Makes something new under a fresh temporary name next to `target`
/// (`dir`/`name`): stale temporaries of earlier runs are removed first,
/// then `create` is tried with unguessable names until one does not exist
/// yet. `actions` name the failure of one try and of them all.
fn unique_temp<T>(
    dir: &Path,
    name: &OsStr,
    target: &Path,
    actions: (&'static str, &'static str),
    mut create: impl FnMut(&Path) -> std::io::Result<T>,
) -> Result<(T, PathBuf), HostError> {
    remove_stale_temps(dir, name);
    let prefix = temp_prefix(name);
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut temp_name = prefix.clone();
        temp_name.extend_from_slice(
            format!("{}.{:016x}{TEMP_SUFFIX}", std::process::id(), unguessable()).as_bytes(),
        );
        let temp = dir.join(OsStr::from_bytes(&temp_name));
        match create(&temp) {
            Ok(made) => return Ok((made, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(HostError::io(actions.0, temp, e)),
        }
    }
    Err(HostError::io(
        actions.1,
        target,
        last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
    ))
}

/// A file being written atomically: the contents go to a fresh temporary
/// file in the target's directory (see [`create_temp`]); [`commit`] fsyncs
/// it, sets owner and mode, renames it over the target and fsyncs the
/// directory. Dropped without a commit (an error on the way), the
/// temporary file is removed; a process killed midway leaves one that the
/// next write of the same target removes.
///
/// This is the one atomic write of kprov: [`write_atomic`] uses it for
/// node paths under a [`Root`], [`write_file_atomic`] for paths on the
/// machine kprov runs on (an `--output` file, a cache, a state directory).
///
/// [`commit`]: AtomicFile::commit
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target` (a path on the machine kprov runs on),
    /// whose directory must exist. The target is not touched until
    /// [`AtomicFile::commit`].
    pub fn create(target: &Path) -> Result<Self, HostError> {
        let (file, temp) = create_temp(target)?;
        Ok(Self {
            file,
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The temporary file, for writers that need a [`File`].
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temporary file's path (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Copies `reader` to the end of the file.
    pub fn copy_from(&mut self, reader: &mut dyn Read) -> Result<u64, HostError> {
        let temp = self.temp.clone();
        std::io::copy(reader, &mut self.file).map_err(|e| HostError::io("writing", temp, e))
    }

    /// Puts the file in place with `mode`, owned by whoever runs kprov.
    pub fn commit(self, mode: u32) -> Result<(), HostError> {
        self.finish(mode, None)
    }

    /// Puts the file in place with owner and mode `attrs`.
    pub fn commit_with(self, attrs: FileAttrs) -> Result<(), HostError> {
        self.finish(attrs.mode, Some((attrs.uid, attrs.gid)))
    }

    fn finish(mut self, mode: u32, owner: Option<(u32, u32)>) -> Result<(), HostError> {
        self.file
            .flush()
            .map_err(|e| HostError::io("writing", &self.temp, e))?;
        let file = &self.file;
        let temp = self.temp.clone();
        file.sync_all()
            .map_err(|e| HostError::io("syncing", &temp, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                .map_err(|e| HostError::io("setting owner of", &temp, e))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io("setting mode of", &temp, e))?;
        failpoint::hit("write.before-rename");
        fs::rename(&temp, &self.target)
            .map_err(|e| HostError::io("renaming into place", &self.target, e))?;
        // Renamed: nothing left to clean up.
        self.temp = PathBuf::new();
        sync_dir(parent_of(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `contents` to `path` on the machine kprov runs on, atomically,
/// with `mode` (see [`AtomicFile`]). The directory must exist.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), HostError> {
    let mut file = AtomicFile::create(path)?;
    file.copy_from(&mut &contents[..])?;
    file.commit(mode)
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
    let mut file = AtomicFile::create(&host)?;
    file.copy_from(reader)?;
    file.commit_with(attrs)
}

/// Makes `node_path` a symlink to `target` atomically (replacing a file or
/// another link; never a directory). The link is made at a fresh
/// temporary name (`symlink(2)` never follows or replaces what is there)
/// and renamed into place.
pub fn symlink_atomic(root: &Root, node_path: &Path, target: &Path) -> Result<(), HostError> {
    if let Some(parent) = node_path.parent() {
        create_dir_all(root, parent)?;
    }
    let host = root.resolve(node_path)?;
    let dir = parent_of(&host);
    let name = host.file_name().ok_or_else(|| HostError::BadPath {
        path: node_path.to_path_buf(),
        reason: "has no file name",
    })?;
    let ((), temp) = unique_temp(
        dir,
        name,
        &host,
        ("creating symlink", "creating a temporary symlink for"),
        |temp| std::os::unix::fs::symlink(target, temp),
    )?;
    failpoint::hit("write.before-rename");
    if let Err(e) = fs::rename(&temp, &host) {
        let _ = fs::remove_file(&temp);
        return Err(HostError::io("renaming into place", &host, e));
    }
    sync_dir(dir)
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
    fn a_symlink_planted_at_a_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        let root = Root::new(dir.path().join("root")).unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let kubernetes = dir.path().join("root/etc/kubernetes");
        fs::create_dir_all(&kubernetes).unwrap();
        std::os::unix::fs::symlink(
            &outside,
            kubernetes.join(".bootstrap-kubelet.conf.kprov-tmp"),
        )
        .unwrap();
        let p = Path::new("/etc/kubernetes/bootstrap-kubelet.conf");
        write_atomic(&root, p, b"token", FileAttrs::root(0o600)).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        let written = kubernetes.join("bootstrap-kubelet.conf");
        assert!(written.symlink_metadata().unwrap().file_type().is_file());
        assert_eq!(fs::read(&written).unwrap(), b"token");
        symlink_atomic(&root, p, Path::new("/dev/null")).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_files_of_killed_runs_are_removed_and_live_writers_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let own = format!(".conf.{}.00000000000000ab{TEMP_SUFFIX}", std::process::id());
        for name in [
            // A killed run (no such process), and the fixed name of old versions.
            ".conf.999999999.0123456789abcdef.kprov-tmp",
            ".conf.kprov-tmp",
            // This process is alive: its temporary files are not stale.
            own.as_str(),
            // Other files' temporary files, and unrelated names.
            ".other.999999999.0123456789abcdef.kprov-tmp",
            ".conf.backup",
        ] {
            fs::write(d.join(name), b"x").unwrap();
        }
        write_file_atomic(&d.join("conf"), b"new", 0o640).unwrap();
        assert_eq!(
            names_in(d),
            vec![
                own.clone(),
                ".conf.backup".to_string(),
                ".other.999999999.0123456789abcdef.kprov-tmp".to_string(),
                "conf".to_string(),
            ]
        );
        assert_eq!(fs::read(d.join("conf")).unwrap(), b"new");
        assert_eq!(
            d.join("conf").metadata().unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary_file() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        fs::write(dir.path().join("kept"), b"old").unwrap();
        let err = write_atomic_from(
            &root,
            Path::new("/kept"),
            &mut Broken,
            FileAttrs::root(0o644),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("writing "), "{err}");
        assert!(err.ends_with(".kprov-tmp: disk on fire"), "{err}");
        assert_eq!(names_in(dir.path()), vec!["kept"]);
        assert_eq!(fs::read(dir.path().join("kept")).unwrap(), b"old");
    }

    #[test]
    fn long_file_names_get_temporary_names_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(255);
        let mut file = AtomicFile::create(&dir.path().join(&name)).unwrap();
        let temp = file.temp_path().file_name().unwrap().len();
        assert!(temp <= 255, "{temp}");
        file.write_all(b"x").unwrap();
        file.commit(0o600).unwrap();
        assert_eq!(names_in(dir.path()), vec![name]);
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
