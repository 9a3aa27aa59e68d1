//! The thin layer that touches the node: reads the existing files of a
//! phase through [`kprov_host`], hands them to the pure phase in
//! [`crate::generate`], and turns the result into a host plan (one file
//! resource per file, kept files with their current bytes so that only
//! their owner and mode are enforced) that kprov-plan's engine applies.
//! Everything is read and made before the first write, so a phase that
//! fails leaves its directories as they were.

use std::path::{Path, PathBuf};

use kprov_host::fs::{self as hostfs, FileState};
use kprov_host::Root;
use kprov_plan::{ApplyContext, Contents, Outcome, Plan, Resource};
use time::OffsetDateTime;

use crate::check::{self, CertStatus};
use crate::error::PkiError;
use crate::generate::{self, certificate_files, Entry, Found, Generated, KUBECONFIG_FILES};
use crate::spec::{ControlPlaneNode, PkiSpec};
use crate::table::cert_def;

/// A phase's plan and what it holds, certificate by certificate.
#[derive(Debug, Clone)]
pub struct PkiPlan {
    /// The directory (a node path).
    pub dir: PathBuf,
    /// The files, as a host plan.
    pub plan: Plan,
    /// One entry per certificate, key pair or kubeconfig.
    pub entries: Vec<Entry>,
}

/// What a phase did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The directory (a node path).
    pub dir: PathBuf,
    /// One entry per certificate, key pair or kubeconfig, its outcome
    /// that of its files.
    pub entries: Vec<Entry>,
    /// The engine's report, file by file.
    pub files: kprov_plan::Report,
}

impl Report {
    /// True when nothing on disk changed (or, in a dry run, would).
    pub fn unchanged(&self) -> bool {
        !self.files.changed_anything()
    }

    /// The files (relative to `dir`) that were (or would be) written or
    /// had their owner or mode corrected, with why.
    pub fn changed_files(&self) -> Vec<(String, String)> {
        let prefix = format!("file:{}/", self.dir.display());
        self.files
            .resources
            .iter()
            .filter(|r| r.outcome.is_change())
            .filter_map(|r| {
                let rel = r.id.strip_prefix(&prefix)?.to_string();
                Some((rel, r.detail.clone().unwrap_or_default()))
            })
            .collect()
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

/// The plan of what a phase made: new files, and kept files with their
/// current bytes (a kept file that is a symlink, put there on purpose, is
/// left out: it is not ours to chmod).
pub fn plan(
    root: &Root,
    dir: &Path,
    generated: Generated,
    found: &Found,
    headline: &str,
) -> Result<PkiPlan, PkiError> {
    let mut resources = Vec::new();
    for file in generated.files {
        let path = dir.join(&file.rel_path);
        let bytes = match file.contents {
            Some(bytes) => bytes,
            None => {
                let state = hostfs::state(root, &path).map_err(|source| PkiError::Read {
                    path: path.clone(),
                    source,
                })?;
                match (state, found.get(&file.rel_path)) {
                    (FileState::Symlink { .. }, _) | (_, None) => continue,
                    (_, Some(bytes)) => bytes.to_vec(),
                }
            }
        };
        let contents = if file.mode & 0o077 == 0 {
            Contents::Secret(bytes)
        } else {
            Contents::Text(String::from_utf8_lossy(&bytes).into_owned())
        };
        resources.push(Resource::File {
            path: path.display().to_string(),
            mode: file.mode,
            contents,
        });
    }
    Ok(PkiPlan {
        dir: dir.to_path_buf(),
        plan: Plan::new(
            format!("{headline} in {}", dir.display()),
            root.is_live(),
            resources,
        ),
        entries: generated.entries,
    })
}

/// Applies a phase's plan (or with `dry_run` says what it would do); each
/// entry's outcome becomes that of its files.
pub fn apply(
    root: &Root,
    planned: PkiPlan,
    dry_run: bool,
    on_event: &mut dyn FnMut(kprov_plan::Event<'_>),
) -> Result<Report, PkiError> {
    let runner = kprov_host::SystemRunner::new(root.clone());
    let ctx = ApplyContext::files_only(root, &runner, dry_run);
    let files =
        kprov_plan::apply(&planned.plan, &ctx, on_event).map_err(|source| PkiError::Apply {
            dir: planned.dir.clone(),
            source,
        })?;
    let outcome_of = |rel: &str| {
        let id = format!("file:{}", planned.dir.join(rel).display());
        files
            .resources
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.outcome)
            .unwrap_or(Outcome::Unchanged)
    };
    let entries = planned
        .entries
        .into_iter()
        .map(|mut e| {
            e.outcome = Outcome::combine(e.files.iter().map(|f| outcome_of(f)));
            e
        })
        .collect();
    Ok(Report {
        dir: planned.dir,
        entries,
        files,
    })
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
    let planned = plan_certificates(root, cert_dir, spec, now)?;
    apply(root, planned, dry_run, &mut |_| {})
}

/// The certificate phase's plan: what is missing made, what is valid
/// kept, what conflicts refused (before anything is written).
pub fn plan_certificates(
    root: &Root,
    cert_dir: &Path,
    spec: &PkiSpec,
    now: OffsetDateTime,
) -> Result<PkiPlan, PkiError> {
    let found = read_dir_files(root, cert_dir, certificate_files())?;
    let generated = generate::generate_certificates(spec, cert_dir, &found, now)?;
    plan(root, cert_dir, generated, &found, "certificates")
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
    let planned = plan_kubeconfigs(root, cert_dir, kubeconfig_dir, node, now)?;
    apply(root, planned, dry_run, &mut |_| {})
}

/// The kubeconfig phase's plan, signed by the CA in `cert_dir`.
pub fn plan_kubeconfigs(
    root: &Root,
    cert_dir: &Path,
    kubeconfig_dir: &Path,
    node: &ControlPlaneNode,
    now: OffsetDateTime,
) -> Result<PkiPlan, PkiError> {
    let cert_found = read_dir_files(root, cert_dir, ca_files())?;
    let found = read_dir_files(
        root,
        kubeconfig_dir,
        KUBECONFIG_FILES.iter().map(|f| f.to_string()),
    )?;
    let generated =
        generate::generate_kubeconfigs(node, cert_dir, &cert_found, kubeconfig_dir, &found, now)?;
    plan(root, kubeconfig_dir, generated, &found, "kubeconfigs")
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
