//! Path safety for the TFTP and HTTP roots: a requested name becomes a
//! [`RelPath`] (relative, no `..`, no empty or NUL parts) before it is
//! joined to a root, and [`resolve_under`] refuses anything whose real
//! path (symlinks followed) leaves the root.

use std::fmt;
use std::path::{Path, PathBuf};

/// A validated relative path: `/`-separated, without `.`/`..` parts,
/// empty parts, NUL or backslashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `text`; the error says what was expected.
    pub fn new(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected a relative path without '..' components");
        if text.is_empty() || text.starts_with('/') || text.contains(['\0', '\\']) {
            return Err(bad());
        }
        if text
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(bad());
        }
        Ok(Self(text.to_string()))
    }

    /// Validates a name as clients send it: TFTP clients often put a
    /// leading `/` (meaning "the root"), which is stripped first.
    pub fn from_request(text: &str) -> Result<Self, String> {
        Self::new(text.trim_start_matches('/'))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a file was not served.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name itself is not acceptable.
    #[error("refused path {0}")]
    Refused(String),
    /// The file's real path lies outside the root (a symlink out).
    #[error("refused path {0:?}: it leads outside the served root")]
    Escapes(String),
    /// No such file (or not a regular file).
    #[error("no such file {0:?}")]
    NotFound(String),
}

/// Resolves a requested name to a regular file inside `root` (which must
/// already be canonical), following symlinks only while they stay inside.
pub fn resolve_under(root: &Path, requested: &str) -> Result<PathBuf, ResolveError> {
    let rel = RelPath::from_request(requested).map_err(ResolveError::Refused)?;
    let joined = root.join(rel.as_str());
    let real = joined
        .canonicalize()
        .map_err(|_| ResolveError::NotFound(requested.to_string()))?;
    if !real.starts_with(root) {
        return Err(ResolveError::Escapes(requested.to_string()));
    }
    if !real.is_file() {
        return Err(ResolveError::NotFound(requested.to_string()));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relative_paths_are_checked() {
        for ok in ["a", "a/b.txt", "ipxe/undionly.kpxe", "..a", "a.."] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "/a", "../a", "a/../b", "a/..", "./a", "a//b", "a/", "a\\b", "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RelPath::from_request("/pxe/a").unwrap().as_str(), "pxe/a");
    }

    #[test]
    fn resolving_refuses_escapes_and_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("in")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(resolve_under(&root, "sub/f").is_ok());
        assert!(resolve_under(&root, "/sub/f").is_ok());
        assert!(resolve_under(&root, "in").is_ok());
        assert!(matches!(
            resolve_under(&root, "out"),
            Err(ResolveError::Escapes(_))
        ));
        assert!(matches!(
            resolve_under(&root, "../secret"),
            Err(ResolveError::Refused(_))
        ));
        assert!(matches!(
            resolve_under(&root, "sub"),
            Err(ResolveError::NotFound(_))
        ));
        assert!(matches!(
            resolve_under(&root, "nope"),
            Err(ResolveError::NotFound(_))
        ));
    }
}
