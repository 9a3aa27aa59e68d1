//! The thin layer that touches the node: reads the existing files of a
//! phase through [`kprov_host`], hands them to the pure phase in
//! [`crate::generate`], and writes the result atomically with its owner
//! and mode. Everything is read and made before the first write, so a
//! phase that fails leaves its directories as they were.

use std::path::{Path, PathBuf};

use kprov_host::fs::{self as hostfs, FileAttrs, FileState};
use kprov_host::Root;
use time::OffsetDateTime;

use crate::check::{self, CertStatus};
use crate::error::PkiError;
use crate::generate::{self, certificate_files, Entry, Found, Generated, KUBECONFIG_FILES};
use crate::spec::{ControlPlaneNode, PkiSpec};
use crate::table::cert_def;

/// What a phase did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The directory (a node path).
    pub dir: PathBuf,
    /// One entry per certificate, key pair or kubeconfig.
    pub entries: Vec<Entry>,
    /// Files written (relative to `dir`).
    pub written: Vec<String>,
    /// Existing files whose owner or mode was corrected.
    pub attrs_fixed: Vec<String>,
    /// True when nothing was written: `written` and `attrs_fixed` say
    /// what would have been.
    pub dry_run: bool,
}

impl Report {
    /// True when nothing on disk changed.
    pub fn unchanged(&self) -> bool {
        self.written.is_empty() && self.attrs_fixed.is_empty()
    }
}

/// Reads `rel_paths` under `dir`; missing files are left out.
pub fn read_dir_files(
    root: &Root,
    dir: &Path,
    rel_paths: impl IntoIterator<Item = String>,
) -> Result<Found, PkiError> {
    let mut found = Found::default();
    for rel in rel_paths {
        let path = dir.join(&rel);
        match hostfs::read(root, &path) {
            Ok(Some(bytes)) => found.insert(rel, bytes),
            Ok(None) => {}
            Err(source) => return Err(PkiError::Read { path, source }),
        }
    }
    Ok(found)
}

/// Writes what a phase made: new files atomically, and the owner and mode
/// of kept files. With `dry_run`, only reports what it would do.
pub fn write(
    root: &Root,
    dir: &Path,
    generated: Generated,
    dry_run: bool,
) -> Result<Report, PkiError> {
    let mut report = Report {
        dir: dir.to_path_buf(),
        entries: generated.entries,
        dry_run,
        ..Report::default()
    };
    for file in generated.files {
        let path = dir.join(&file.rel_path);
        let attrs = FileAttrs::root(file.mode);
        match file.contents {
            Some(_) if dry_run => report.written.push(file.rel_path),
            Some(contents) => {
                hostfs::write_atomic(root, &path, &contents, attrs).map_err(|source| {
                    PkiError::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                report.written.push(file.rel_path);
            }
            None => {
                let state = hostfs::state(root, &path).map_err(|source| PkiError::Read {
                    path: path.clone(),
                    source,
                })?;
                let current = match state {
                    FileState::File { attrs, .. } => Some(attrs),
                    // A link put there on purpose (say, to a file another
                    // tool manages) is not ours to chmod.
                    FileState::Symlink { .. } => continue,
                    _ => None,
                };
                if current != Some(attrs) && dry_run {
                    report.attrs_fixed.push(file.rel_path);
                } else if current != Some(attrs) {
                    hostfs::set_attrs(root, &path, attrs).map_err(|source| PkiError::Write {
                        path: path.clone(),
                        source,
                    })?;
                    report.attrs_fixed.push(file.rel_path);
                }
            }
        }
    }
    Ok(report)
}

/// The certificate phase on a node: makes what is missing under
/// `cert_dir`, reuses what is valid, and refuses what conflicts. With
/// `dry_run`, reports what it would do and writes nothing.
pub fn write_certificates(
    root: &Root,
    cert_dir: &Path,
    spec: &PkiSpec,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Report, PkiError> {
    let found = read_dir_files(root, cert_dir, certificate_files())?;
    let generated = generate::generate_certificates(spec, cert_dir, &found, now)?;
    write(root, cert_dir, generated, dry_run)
}

/// The files of the cluster CA in the cert dir.
fn ca_files() -> Vec<String> {
    cert_def("ca")
        .map(|d| vec![d.cert_file(), d.key_file()])
        .unwrap_or_default()
}

/// The kubeconfig phase on a node: the kubeconfigs of `node` under
/// `kubeconfig_dir`, signed by the CA in `cert_dir`. With `dry_run`,
/// reports what it would do and writes nothing.
pub fn write_kubeconfigs(
    root: &Root,
    cert_dir: &Path,
    kubeconfig_dir: &Path,
    node: &ControlPlaneNode,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Report, PkiError> {
    let cert_found = read_dir_files(root, cert_dir, ca_files())?;
    let found = read_dir_files(
        root,
        kubeconfig_dir,
        KUBECONFIG_FILES.iter().map(|f| f.to_string()),
    )?;
    let generated =
        generate::generate_kubeconfigs(node, cert_dir, &cert_found, kubeconfig_dir, &found, now)?;
    write(root, kubeconfig_dir, generated, dry_run)
}

/// Every certificate under `cert_dir` (and in the kubeconfigs under
/// `kubeconfig_dir`, when given) with its expiry.
pub fn check(
    root: &Root,
    cert_dir: &Path,
    kubeconfig_dir: Option<&Path>,
    now: OffsetDateTime,
) -> Result<Vec<CertStatus>, PkiError> {
    let certs = read_dir_files(root, cert_dir, certificate_files())?;
    let kubeconfigs = match kubeconfig_dir {
        Some(dir) => Some(read_dir_files(
            root,
            dir,
            KUBECONFIG_FILES.iter().map(|f| f.to_string()),
        )?),
        None => None,
    };
    Ok(check::check(&certs, kubeconfigs.as_ref(), now))
}

/// The discovery hash of the cluster CA under `cert_dir`.
pub fn ca_hash(root: &Root, cert_dir: &Path) -> Result<String, PkiError> {
    let rel = cert_def("ca")
        .map(|d| d.cert_file())
        .unwrap_or_else(|| "ca.crt".into());
    let path = cert_dir.join(&rel);
    let bytes = hostfs::read(root, &path)
        .map_err(|source| PkiError::Read {
            path: path.clone(),
            source,
        })?
        .ok_or_else(|| PkiError::NoCa { path: path.clone() })?;
    crate::hash::ca_cert_hash(&bytes).map_err(|source| PkiError::BadCert { path, source })
}
