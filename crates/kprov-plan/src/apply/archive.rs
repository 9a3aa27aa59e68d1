//! Tarball artifacts extracted into a directory (CNI plugins, containerd).
//!
//! After a complete extraction kprov records what it wrote in a stamp file
//! under /var/lib/kprov/archives; a later check compares the installed files
//! with the stamp instead of decompressing the tarball again. A run killed
//! mid-extraction leaves no stamp, so the next run extracts again.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use kprov_artifacts::{ArtifactId, FetchedArtifact};
use kprov_host::fs::{self, FileAttrs, FileState};
use kprov_host::HostError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ApplyContext, ApplyError, Status};
use crate::resource::Resource;
use crate::STATE_DIR;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    archive_sha256: String,
    dir: String,
    /// File name -> (mode, sha256 hex).
    files: BTreeMap<String, (u32, String)>,
}

fn stamp_path(artifact: &ArtifactId, dir: &str) -> String {
    let dir_key = dir.trim_matches('/').replace('/', "-");
    format!("{STATE_DIR}/archives/{}@{dir_key}.json", artifact.name)
}

fn fetch(
    resource: &Resource,
    artifact: &ArtifactId,
    ctx: &ApplyContext<'_>,
) -> Result<FetchedArtifact, ApplyError> {
    ctx.artifacts
        .fetch(artifact)
        .map_err(|source| ApplyError::artifact(resource.id(), source))
}

fn host(resource: &Resource) -> impl FnOnce(HostError) -> ApplyError + '_ {
    move |source| ApplyError::Host {
        resource: resource.id(),
        source,
    }
}

pub(super) fn check(
    resource: &Resource,
    dir: &str,
    artifact: &ArtifactId,
    ctx: &ApplyContext<'_>,
) -> Result<Status, ApplyError> {
    let expected = ctx
        .artifacts
        .checksum(artifact)
        .map_err(|source| ApplyError::artifact(resource.id(), source))?;
    let Some(bytes) =
        fs::read(ctx.root, Path::new(&stamp_path(artifact, dir))).map_err(host(resource))?
    else {
        return Ok(Status::Missing("not extracted yet".into()));
    };
    let Ok(stamp) = serde_json::from_slice::<Stamp>(&bytes) else {
        return Ok(Status::Differs("extraction record unreadable".into()));
    };
    if stamp.archive_sha256 != hex::encode(expected) || stamp.dir != dir {
        return Ok(Status::Differs("extracted from another archive".into()));
    }
    for (name, (mode, sum)) in &stamp.files {
        let path = Path::new(dir).join(name);
        match fs::state(ctx.root, &path).map_err(host(resource))? {
            FileState::File { attrs, sha256 }
                if attrs == FileAttrs::root(*mode) && hex::encode(sha256) == *sum => {}
            _ => {
                return Ok(Status::Differs(format!(
                    "{} differs from the archive",
                    path.display()
                )))
            }
        }
    }
    Ok(Status::Ok)
}

/// A member name as installed, or `None` for members to skip.
fn member_name(raw: &str, strip_prefix: Option<&str>) -> Option<String> {
    let name = raw.trim_start_matches("./");
    let name = match strip_prefix {
        Some(p) => name.strip_prefix(p)?,
        None => name,
    };
    // Only plain files directly in the directory: no nesting, no climbing.
    if name.is_empty() || name.contains('/') || name == ".." || name == "." {
        return None;
    }
    Some(name.to_string())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(super) fn extract(
    resource: &Resource,
    dir: &str,
    artifact: &ArtifactId,
    strip_prefix: Option<&str>,
    ctx: &ApplyContext<'_>,
) -> Result<(), ApplyError> {
    let fetched = fetch(resource, artifact, ctx)?;
    // Verify the whole tarball first (tar stops reading at its end marker,
    // so a streaming check could miss trailing corruption), then extract
    // from the same handle: a file swapped in after the check is never
    // read.
    let file = fetched
        .open_checked(artifact)
        .map_err(|source| ApplyError::artifact(resource.id(), source))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar
        .entries()
        .map_err(|e| host(resource)(HostError::io("reading archive", &fetched.path, e)))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| host(resource)(HostError::io("reading archive", &fetched.path, e)))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(name) = member_name(&raw, strip_prefix) else {
            continue;
        };
        let mode = entry.header().mode().unwrap_or(0o755) & 0o755;
        let mut reader = HashingReader {
            inner: entry,
            hasher: Sha256::new(),
        };
        let path = Path::new(dir).join(&name);
        fs::write_atomic_from(ctx.root, &path, &mut reader, FileAttrs::root(mode))
            .map_err(host(resource))?;
        let sum: [u8; 32] = reader.hasher.finalize().into();
        fs::remember_sum(ctx.root, &path, sum).map_err(host(resource))?;
        files.insert(name, (mode, hex::encode(sum)));
    }
    if files.is_empty() {
        return Err(ApplyError::Other {
            resource: resource.id(),
            message: format!("{} contains no files to install", fetched.path.display()),
        });
    }
    let stamp = Stamp {
        archive_sha256: hex::encode(fetched.sha256),
        dir: dir.to_string(),
        files,
    };
    let text = serde_json::to_vec_pretty(&stamp).map_err(|e| ApplyError::Other {
        resource: resource.id(),
        message: format!("encoding extraction record: {e}"),
    })?;
    fs::write_atomic(
        ctx.root,
        Path::new(&stamp_path(artifact, dir)),
        &text,
        FileAttrs::root(0o644),
    )
    .map_err(host(resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_flattened_and_never_climb() {
        assert_eq!(member_name("./bridge", None).as_deref(), Some("bridge"));
        assert_eq!(
            member_name("bin/containerd", Some("bin/")).as_deref(),
            Some("containerd")
        );
        assert_eq!(member_name("README.md", Some("bin/")), None);
        assert_eq!(member_name("../etc/passwd", None), None);
        assert_eq!(member_name("a/b", None), None);
        assert_eq!(member_name("./", None), None);
    }
}
