//! The node lock: one `flock(2)` on `/var/lib/kprov/node.lock` under the
//! target root, held by every kprov command while it changes the node
//! (provision, init, reset, pod-network sync, a health-check round), so
//! that two of them never interleave their changes. Prebaking a root
//! locks that root, not the machine kprov runs on.
//!
//! The lock is released when its guard is dropped, or by the kernel when
//! the process dies, so a killed run never leaves it held. Taking it again
//! on the same thread while it is held (a command whose steps each take
//! it) gives a guard that does nothing.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use crate::fs::create_dir_all;
use crate::root::{HostError, Root};

/// Where the lock lives on a node.
pub const NODE_LOCK_PATH: &str = "/var/lib/kprov/node.lock";

/// How long a command waits for the lock unless [`TIMEOUT_ENV`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The environment variable that sets the wait, in seconds.
pub const TIMEOUT_ENV: &str = "KPROV_LOCK_TIMEOUT";

/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(100);

thread_local! {
    /// The host paths of the locks this thread holds.
    static HELD: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// A held node lock; dropping it releases the lock.
#[derive(Debug)]
pub struct NodeLock {
    /// The open lock file, or `None` for a guard nested in one this
    /// thread holds already.
    file: Option<File>,
    path: PathBuf,
}

impl NodeLock {
    /// Takes the node lock of `root`. When another process holds it,
    /// calls `on_wait` once with the lock's host path and waits, for at
    /// most `timeout` (`Duration::MAX`: as long as it takes), then fails
    /// with [`HostError::Locked`].
    pub fn acquire(
        root: &Root,
        timeout: Duration,
        on_wait: &mut dyn FnMut(&Path),
    ) -> Result<Self, HostError> {
        let node_path = Path::new(NODE_LOCK_PATH);
        if let Some(dir) = node_path.parent() {
            create_dir_all(root, dir)?;
        }
        let path = root.resolve(node_path)?;
        if HELD.with(|held| held.borrow().contains(&path)) {
            return Ok(Self { file: None, path });
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HostError::io("opening", &path, e))?;
        let started = Instant::now();
        let deadline = started.checked_add(timeout);
        let mut waiting = false;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
                Err(e) => return Err(HostError::io("locking", &path, e.into())),
            }
            if !waiting {
                waiting = true;
                on_wait(&path);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(HostError::Locked {
                    path,
                    waited: now - started,
                });
            }
            let pause = deadline.map_or(POLL, |d| POLL.min(d - now));
            std::thread::sleep(pause);
        }
        HELD.with(|held| held.borrow_mut().push(path.clone()));
        Ok(Self {
            file: Some(file),
            path,
        })
    }

    /// Takes the node lock as commands do: when another process holds it,
    /// tells `on_wait` (a sentence naming the lock) and waits for at most
    /// [`TIMEOUT_ENV`] seconds ([`DEFAULT_TIMEOUT`] when unset).
    pub fn acquire_for_command(
        root: &Root,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Self, HostError> {
        let timeout = match std::env::var(TIMEOUT_ENV) {
            Err(_) => DEFAULT_TIMEOUT,
            Ok(v) => v
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| HostError::BadLockTimeout { value: v })?,
        };
        Self::acquire(root, timeout, &mut |path| {
            on_wait(&format!(
                "waiting for the node lock {} (another kprov run holds it)",
                path.display()
            ));
        })
    }

    /// The lock file's path on the machine kprov runs on.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            HELD.with(|held| held.borrow_mut().retain(|p| p != &self.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_lock_is_held_by_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let held = NodeLock::acquire(&root, Duration::ZERO, &mut |_| {}).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = root.clone();
        let waiter = std::thread::spawn(move || {
            let mut waited = false;
            let _lock = NodeLock::acquire(&other, Duration::MAX, &mut |_| waited = true).unwrap();
            tx.send(waited).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a second holder got the lock while it was held"
        );
        drop(held);
        let waited = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the lock was not handed on when dropped");
        assert!(waited, "the waiter was not told it waits");
        waiter.join().unwrap();
    }

    #[test]
    fn a_held_lock_times_out_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let _held = NodeLock::acquire(&root, Duration::ZERO, &mut |_| {}).unwrap();
        let other = root.clone();
        let err = std::thread::spawn(move || {
            NodeLock::acquire(&other, Duration::from_millis(200), &mut |_| {}).unwrap_err()
        })
        .join()
        .unwrap();
        let path = dir
            .path()
            .canonicalize()
            .unwrap()
            .join("var/lib/kprov/node.lock");
        match err {
            HostError::Locked { path: p, waited } => {
                assert_eq!(p, path);
                assert!(waited >= Duration::from_millis(200), "{waited:?}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn taking_the_lock_again_on_the_same_thread_nests() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let outer = NodeLock::acquire(&root, Duration::ZERO, &mut |_| {}).unwrap();
        let inner = NodeLock::acquire(&root, Duration::ZERO, &mut |_| {}).unwrap();
        drop(inner);
        // Still held by the outer guard.
        let other = root.clone();
        let busy = std::thread::spawn(move || {
            NodeLock::acquire(&other, Duration::ZERO, &mut |_| {}).is_err()
        })
        .join()
        .unwrap();
        assert!(busy);
        drop(outer);
        let other = root.clone();
        let free = std::thread::spawn(move || {
            NodeLock::acquire(&other, Duration::ZERO, &mut |_| {}).is_ok()
        })
        .join()
        .unwrap();
        assert!(free);
    }
}
