//! A reader that checks a SHA-256 at end of stream.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Passes bytes through and, at end of stream, fails with
/// `InvalidData` if their SHA-256 is not the expected one. Copying through
/// it into a temporary file and renaming only after a clean EOF means a
/// corrupted artifact is never installed.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: [u8; 32],
    location: String,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which must hash to `expected`; `location` names it in
    /// the error.
    pub fn new(inner: R, expected: [u8; 32], location: String) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            expected,
            location,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        let actual: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if actual != self.expected && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "sha256 mismatch for {}: expected {}, got {}",
                    self.location,
                    hex::encode(self.expected),
                    hex::encode(actual)
                ),
            ));
        }
        self.done = true;
        Ok(0)
    }
}

/// SHA-256 of a file, streamed.
pub fn sha256_of_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn matching_contents_pass_through() {
        let mut r = VerifyingReader::new(&b"kubelet"[..], sum(b"kubelet"), "x".into());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"kubelet");
    }

    #[test]
    fn a_mismatch_fails_at_the_end_naming_both_sums() {
        let mut r = VerifyingReader::new(&b"corrupt"[..], sum(b"kubelet"), "/a/kubelet".into());
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            format!(
                "sha256 mismatch for /a/kubelet: expected {}, got {}",
                hex::encode(sum(b"kubelet")),
                hex::encode(sum(b"corrupt"))
            )
        );
    }
}
