//! Node images cached by content: a directory made once per key (a
//! digest of everything that goes into it) and never changed after, so
//! that machines can share it read-only as the lower layer of their
//! roots.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a cached image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation on the cache failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Making the image failed.
    #[error("making the node image {path}: {reason}")]
    Make {
        /// Where it was being made.
        path: PathBuf,
        /// What the maker said.
        reason: String,
    },
}

/// The key of an image made from `parts` (names and digests of its
/// inputs, in a fixed order): the hex sha256 of their lengths and bytes.
pub fn content_key<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut hasher = Sha256::new();
    for part in parts {
        let part = part.as_ref();
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The image `cache/KEY`, made by `make` (given an empty directory to fill)
/// when it is not there yet. `make` works in a temporary directory next to
/// it, renamed into place when it succeeds, so a failed or killed run
/// leaves no image behind, and of two processes making the same key one
/// keeps its result.
pub fn cached<F>(cache: &Path, key: &str, make: F) -> Result<PathBuf, ImageError>
where
    F: FnOnce(&Path) -> Result<(), String>,
{
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    };
    let target = cache.join(key);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache).map_err(io("creating", cache))?;
    let temp = cache.join(format!(".{key}.{}.tmp", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io("removing", &temp))?;
    }
    std::fs::create_dir(&temp).map_err(io("creating", &temp))?;
    if let Err(reason) = make(&temp) {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(ImageError::Make { path: temp, reason });
    }
    match std::fs::rename(&temp, &target) {
        Ok(()) => Ok(target),
        // Another process made it first: keep theirs.
        Err(_) if target.is_dir() => {
            std::fs::remove_dir_all(&temp).map_err(io("removing", &temp))?;
            Ok(target)
        }
        Err(e) => Err(io("renaming into place", &target)(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_change_with_any_part_and_with_how_parts_are_split() {
        let k = content_key(["ab", "c"]);
        assert_eq!(k, content_key(["ab", "c"]));
        assert_ne!(k, content_key(["a", "bc"]));
        assert_ne!(k, content_key(["ab", "d"]));
        assert_eq!(k.len(), 64);
    }

    #[test]
    fn an_image_is_made_once_and_a_failed_make_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut made = 0;
        let first = cached(dir.path(), "k1", |d| {
            made += 1;
            std::fs::write(d.join("f"), "x").map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(first.join("f")).unwrap(), "x");
        let again = cached(dir.path(), "k1", |_| Err("must not run".into())).unwrap();
        assert_eq!(again, first);
        assert_eq!(made, 1);

        let err = cached(dir.path(), "k2", |d| {
            std::fs::write(d.join("half"), "x").unwrap();
            Err("the prebake failed".into())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("the prebake failed"), "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["k1"]);
    }
}
