//! The certificate and kubeconfig phases as pure functions: from a spec,
//! the files already there (as bytes) and the time, compute every file to
//! write, in memory. Nothing here touches the filesystem; [`crate::store`]
//! reads the existing files first and writes the result only when all of
//! it was made without error, so bad input or a conflicting file leaves
//! the directory as it was.
//!
//! Reuse rules (stricter than kubeadm's, which warns and carries on):
//!
//! - a certificate and key that both exist are reused when the certificate
//!   parses, matches its key, is signed by the current CA, has not expired
//!   and has the subject, SANs and extended key usages the table asks
//!   for; otherwise the phase fails and says what differs;
//! - a key without its certificate (what an interrupted run leaves, since
//!   keys are written first) gets a certificate issued for it;
//! - a certificate without its key is refused, except a CA certificate
//!   without its key ("external CA"), which is fine as long as nothing
//!   needs signing;
//! - a kubeconfig is reused when it embeds the current CA, points at the
//!   expected server and holds a valid client certificate of the expected
//!   subject with its key.

use kprov_plan::Outcome;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cert::{issue_ca, Certificate, Signer};
use crate::error::PkiError;
use crate::keys::{PrivateKey, PublicKey};
use crate::kubeconfig::Kubeconfig;
use crate::spec::{ControlPlaneNode, KeyType, PkiSpec};
use crate::table::{
    cert_def, plan_certificates, plan_kubeconfigs, AltNames, CertDef, ExtKeyUsage, ServerChoice,
    Subject, SERVICE_ACCOUNT_KEY_BASE_NAME,
};

/// Mode of private keys (and `sa.pub`, as kubeadm writes it).
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificates.
pub const CERT_MODE: u32 = 0o644;
/// Mode of kubeconfigs (they hold a private key).
pub const KUBECONFIG_MODE: u32 = 0o600;

/// The files found in a directory, by path relative to it.
#[derive(Default, Clone)]
pub struct Found {
    files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.files.keys()).finish()
    }
}

impl Found {
    /// Records the contents of `rel_path`.
    pub fn insert(&mut self, rel_path: impl Into<String>, contents: Vec<u8>) {
        self.files.insert(rel_path.into(), contents);
    }

    /// The contents of `rel_path`, if it exists.
    pub fn get(&self, rel_path: &str) -> Option<&[u8]> {
        self.files.get(rel_path).map(Vec::as_slice)
    }
}

/// A file of the result.
#[derive(Clone)]
pub struct FileOut {
    /// The path relative to its directory.
    pub rel_path: String,
    /// The mode it must have (owned by root).
    pub mode: u32,
    /// New contents, or `None` to keep the existing file (whose owner and
    /// mode are still enforced).
    pub contents: Option<Vec<u8>>,
}

impl std::fmt::Debug for FileOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOut")
            .field("rel_path", &self.rel_path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("new", &self.contents.is_some())
            .finish()
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// kubeadm's name for it (`apiserver`, `sa`, `admin.conf`).
    pub name: String,
    /// What happened (or would, in a dry run): created, unchanged
    /// (reused), or changed (a kept key completed with its certificate, or
    /// a kept file's mode corrected).
    pub outcome: Outcome,
    /// Its files, relative to their directory.
    pub files: Vec<String>,
    /// The certificate's subject (empty for `sa`).
    pub subject: String,
    /// The certificate's SANs.
    pub alt_names: AltNames,
    /// When the certificate expires (RFC 3339; empty for `sa`).
    pub not_after: String,
}

/// Every file of a phase, made in memory.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The files, in the order to write them: CAs before what they sign,
    /// each key before its certificate.
    pub files: Vec<FileOut>,
    /// What happened to each item.
    pub entries: Vec<Entry>,
}

/// Formats a time as RFC 3339.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Keys made ahead of need, in parallel: RSA generation dominates.
struct KeyPool {
    key_type: KeyType,
    keys: Vec<PrivateKey>,
}

impl KeyPool {
    fn new(key_type: KeyType, count: usize) -> Result<Self, PkiError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(count.max(1));
        let results: Vec<Result<Vec<PrivateKey>, crate::keys::KeyError>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|i| {
                        let share = count / threads + usize::from(i < count % threads);
                        s.spawn(move || {
                            (0..share)
                                .map(|_| PrivateKey::generate(key_type))
                                .collect::<Result<Vec<_>, _>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(crate::keys::KeyError::Crypto {
                                action: "generating keys",
                                reason: "a generator thread panicked".into(),
                            })
                        })
                    })
                    .collect()
            });
        let mut keys = Vec::with_capacity(count);
        for r in results {
            keys.extend(r.map_err(PkiError::Generate)?);
        }
        Ok(Self { key_type, keys })
    }

    fn take(&mut self) -> Result<PrivateKey, PkiError> {
        match self.keys.pop() {
            Some(k) => Ok(k),
            None => PrivateKey::generate(self.key_type).map_err(PkiError::Generate),
        }
    }
}

/// A CA as the phases use it.
enum Ca {
    /// Certificate and key: can sign.
    Signer(Box<Signer>),
    /// Certificate only (external CA): can only verify.
    CertOnly {
        cert: Box<Certificate>,
        key_path: PathBuf,
    },
}

impl Ca {
    fn cert(&self) -> &Certificate {
        match self {
            Ca::Signer(s) => s.cert(),
            Ca::CertOnly { cert, .. } => cert,
        }
    }
}

/// The directory and inputs one phase works on.
struct Dir<'a> {
    path: &'a Path,
    found: &'a Found,
}

impl Dir<'_> {
    fn node_path(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn cert(&self, rel: &str, bytes: &[u8]) -> Result<Certificate, PkiError> {
        Certificate::from_pem(bytes).map_err(|source| PkiError::BadCert {
            path: self.node_path(rel),
            source,
        })
    }

    fn key(&self, rel: &str, bytes: &[u8]) -> Result<PrivateKey, PkiError> {
        PrivateKey::from_pem(bytes).map_err(|source| PkiError::BadKey {
            path: self.node_path(rel),
            source,
        })
    }
}

fn key_pem(key: &PrivateKey, path: PathBuf) -> Result<Vec<u8>, PkiError> {
    key.to_pem()
        .map(String::into_bytes)
        .map_err(|e| PkiError::Encode {
            what: path,
            reason: e.to_string(),
        })
}

fn problems_of_ca(
    cert: &Certificate,
    key: Option<(&PrivateKey, &Path)>,
    now: OffsetDateTime,
) -> Vec<String> {
    let info = cert.info();
    let mut problems = Vec::new();
    if !info.is_ca {
        problems.push("it is not a CA (no basicConstraints CA:TRUE)".to_string());
    }
    if !info.can_sign_certificates {
        problems.push("its key usage does not allow signing certificates".to_string());
    }
    if info.not_after <= now {
        problems.push(format!("it expired at {}", rfc3339(info.not_after)));
    }
    if let Some((key, key_path)) = key {
        if !cert.matches_key(key) {
            problems.push(format!("it does not match its key {}", key_path.display()));
        }
    }
    problems
}

/// What a leaf certificate must be.
struct Want<'a> {
    subject: &'a Subject,
    alt_names: &'a AltNames,
    ext_key_usages: &'a [ExtKeyUsage],
}

fn problems_of_leaf(
    cert: &Certificate,
    key: &PrivateKey,
    key_path: &Path,
    want: &Want<'_>,
    ca: &Certificate,
    ca_path: &Path,
    now: OffsetDateTime,
) -> Vec<String> {
    let info = cert.info();
    let mut problems = Vec::new();
    if !cert.matches_key(key) {
        problems.push(format!("it does not match its key {}", key_path.display()));
    }
    if !cert.is_signed_by(ca) {
        problems.push(format!(
            "it is not signed by the current CA {} (its issuer is {})",
            ca_path.display(),
            info.issuer_text
        ));
    }
    if info.not_after <= now {
        problems.push(format!("it expired at {}", rfc3339(info.not_after)));
    }
    if info.is_ca {
        problems.push("it is a CA".to_string());
    }
    if &info.subject != want.subject {
        problems.push(format!(
            "its subject is \"{}\", expected \"{}\"",
            info.subject, want.subject
        ));
    }
    let names = |a: &AltNames| -> Vec<String> {
        let mut v: Vec<String> = a
            .dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(a.ips.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (have, need) = (names(&info.alt_names), names(want.alt_names));
    let lacking: Vec<&str> = need
        .iter()
        .filter(|n| !have.contains(n))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = have
        .iter()
        .filter(|n| !need.contains(n))
        .map(String::as_str)
        .collect();
    if !lacking.is_empty() {
        problems.push(format!("its SANs lack {}", lacking.join(", ")));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "its SANs include {}, which were not asked for",
            extra.join(", ")
        ));
    }
    let mut have_eku = info.ext_key_usages.clone();
    let mut need_eku = want.ext_key_usages.to_vec();
    have_eku.sort();
    need_eku.sort();
    if have_eku != need_eku || info.other_ext_key_usages {
        let show = |v: &[ExtKeyUsage]| {
            v.iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        problems.push(format!(
            "its extended key usages are [{}]{}, expected [{}]",
            show(&info.ext_key_usages),
            if info.other_ext_key_usages {
                " and others"
            } else {
                ""
            },
            show(want.ext_key_usages)
        ));
    }
    problems
}

fn entry(name: &str, outcome: Outcome, files: &[String], cert: &Certificate) -> Entry {
    Entry {
        name: name.to_string(),
        outcome,
        files: files.to_vec(),
        subject: cert.info().subject.to_string(),
        alt_names: cert.info().alt_names.clone(),
        not_after: rfc3339(cert.info().not_after),
    }
}

fn remove_advice(files: &[&str]) -> String {
    format!(
        "remove {} to have {} made again",
        files.join(" and "),
        if files.len() > 1 { "them" } else { "it" }
    )
}

/// Loads, checks or creates the CA of `def`.
fn ca_of(
    def: &CertDef,
    subject: &Subject,
    dir: &Dir<'_>,
    pool: &mut KeyPool,
    now: OffsetDateTime,
    out: &mut Generated,
) -> Result<Ca, PkiError> {
    let (cert_rel, key_rel) = (def.cert_file(), def.key_file());
    let (cert_path, key_path) = (dir.node_path(&cert_rel), dir.node_path(&key_rel));
    let issue = |key: &PrivateKey| {
        issue_ca(subject, key, now).map_err(|source| PkiError::Issue {
            what: cert_path.clone(),
            source,
        })
    };
    let conflict = |problems| PkiError::Conflict {
        what: "CA certificate",
        path: cert_path.clone(),
        problems,
        advice: format!(
            "remove {} and {} (and every certificate it signed) to have a new CA made",
            cert_rel, key_rel
        ),
    };
    let signer = |cert: Certificate, key: PrivateKey| {
        Signer::new(cert, key)
            .map(|s| Ca::Signer(Box::new(s)))
            .map_err(|source| PkiError::Issue {
                what: cert_path.clone(),
                source,
            })
    };
    let files = [cert_rel.clone(), key_rel.clone()];
    match (dir.found.get(&cert_rel), dir.found.get(&key_rel)) {
        (None, None) => {
            let key = pool.take()?;
            let cert = issue(&key)?;
            out.files.push(FileOut {
                rel_path: key_rel.clone(),
                mode: KEY_MODE,
                contents: Some(key_pem(&key, key_path.clone())?),
            });
            out.files.push(FileOut {
                rel_path: cert_rel.clone(),
                mode: CERT_MODE,
                contents: Some(cert.pem().as_bytes().to_vec()),
            });
            out.entries
                .push(entry(def.name, Outcome::Created, &files, &cert));
            signer(cert, key)
        }
        (None, Some(key_bytes)) => {
            let key = dir.key(&key_rel, key_bytes)?;
            let cert = issue(&key)?;
            out.files.push(FileOut {
                rel_path: key_rel.clone(),
                mode: KEY_MODE,
                contents: None,
            });
            out.files.push(FileOut {
                rel_path: cert_rel.clone(),
                mode: CERT_MODE,
                contents: Some(cert.pem().as_bytes().to_vec()),
            });
            out.entries
                .push(entry(def.name, Outcome::Changed, &files, &cert));
            signer(cert, key)
        }
        (Some(cert_bytes), None) => {
            let cert = dir.cert(&cert_rel, cert_bytes)?;
            let problems = problems_of_ca(&cert, None, now);
            if !problems.is_empty() {
                return Err(conflict(problems));
            }
            out.files.push(FileOut {
                rel_path: cert_rel.clone(),
                mode: CERT_MODE,
                contents: None,
            });
            out.entries.push(entry(
                def.name,
                Outcome::Unchanged,
                std::slice::from_ref(&cert_rel),
                &cert,
            ));
            Ok(Ca::CertOnly {
                cert: Box::new(cert),
                key_path,
            })
        }
        (Some(cert_bytes), Some(key_bytes)) => {
            let cert = dir.cert(&cert_rel, cert_bytes)?;
            let key = dir.key(&key_rel, key_bytes)?;
            let problems = problems_of_ca(&cert, Some((&key, &key_path)), now);
            if !problems.is_empty() {
                return Err(conflict(problems));
            }
            for (rel, mode) in [(&key_rel, KEY_MODE), (&cert_rel, CERT_MODE)] {
                out.files.push(FileOut {
                    rel_path: rel.clone(),
                    mode,
                    contents: None,
                });
            }
            out.entries
                .push(entry(def.name, Outcome::Unchanged, &files, &cert));
            signer(cert, key)
        }
    }
}

/// Issues a leaf with `ca`, or says why it cannot.
fn sign(
    ca: &Ca,
    ca_path: &Path,
    what: PathBuf,
    want: &Want<'_>,
    key: &PrivateKey,
    now: OffsetDateTime,
) -> Result<Certificate, PkiError> {
    match ca {
        Ca::Signer(s) => s
            .issue(want.subject, want.alt_names, want.ext_key_usages, key, now)
            .map_err(|source| PkiError::Issue { what, source }),
        Ca::CertOnly { key_path, .. } => Err(PkiError::CaKeyMissing {
            ca_key: key_path.clone(),
            ca_cert: ca_path.to_path_buf(),
            what,
        }),
    }
}

/// Loads, checks or issues one leaf certificate and key.
#[allow(clippy::too_many_arguments)]
fn leaf(
    def: &CertDef,
    want: &Want<'_>,
    ca: &Ca,
    ca_path: &Path,
    dir: &Dir<'_>,
    pool: &mut KeyPool,
    now: OffsetDateTime,
    out: &mut Generated,
) -> Result<(), PkiError> {
    let (cert_rel, key_rel) = (def.cert_file(), def.key_file());
    let (cert_path, key_path) = (dir.node_path(&cert_rel), dir.node_path(&key_rel));
    let files = [cert_rel.clone(), key_rel.clone()];
    match (dir.found.get(&cert_rel), dir.found.get(&key_rel)) {
        (None, key_bytes) => {
            let (key, outcome, contents) = match key_bytes {
                None => {
                    let key = pool.take()?;
                    let pem = key_pem(&key, key_path.clone())?;
                    (key, Outcome::Created, Some(pem))
                }
                Some(bytes) => (dir.key(&key_rel, bytes)?, Outcome::Changed, None),
            };
            let cert = sign(ca, ca_path, cert_path, want, &key, now)?;
            out.files.push(FileOut {
                rel_path: key_rel,
                mode: KEY_MODE,
                contents,
            });
            out.files.push(FileOut {
                rel_path: cert_rel,
                mode: CERT_MODE,
                contents: Some(cert.pem().as_bytes().to_vec()),
            });
            out.entries.push(entry(def.name, outcome, &files, &cert));
            Ok(())
        }
        (Some(_), None) => Err(PkiError::Orphan {
            path: cert_path,
            missing: key_path,
            advice: "a certificate is of no use without its key, and kprov does not replace it: restore the key, or remove the certificate to have both issued",
        }),
        (Some(cert_bytes), Some(key_bytes)) => {
            let cert = dir.cert(&cert_rel, cert_bytes)?;
            let key = dir.key(&key_rel, key_bytes)?;
            let problems = problems_of_leaf(&cert, &key, &key_path, want, ca.cert(), ca_path, now);
            if !problems.is_empty() {
                return Err(PkiError::Conflict {
                    what: "certificate",
                    path: cert_path,
                    problems,
                    advice: remove_advice(&[&cert_rel, &key_rel]),
                });
            }
            out.files.push(FileOut {
                rel_path: key_rel,
                mode: KEY_MODE,
                contents: None,
            });
            out.files.push(FileOut {
                rel_path: cert_rel,
                mode: CERT_MODE,
                contents: None,
            });
            out.entries
                .push(entry(def.name, Outcome::Unchanged, &files, &cert));
            Ok(())
        }
    }
}

/// The service-account signing key pair.
fn service_account(dir: &Dir<'_>, pool: &mut KeyPool, out: &mut Generated) -> Result<(), PkiError> {
    let key_rel = format!("{SERVICE_ACCOUNT_KEY_BASE_NAME}.key");
    let pub_rel = format!("{SERVICE_ACCOUNT_KEY_BASE_NAME}.pub");
    let (key_path, pub_path) = (dir.node_path(&key_rel), dir.node_path(&pub_rel));
    let public_pem = |key: &PrivateKey| {
        key.public_key()
            .to_pem()
            .map(String::into_bytes)
            .map_err(|e| PkiError::Encode {
                what: pub_path.clone(),
                reason: e.to_string(),
            })
    };
    let (outcome, key_contents, pub_contents) = match (
        dir.found.get(&key_rel),
        dir.found.get(&pub_rel),
    ) {
        (None, None) => {
            let key = pool.take()?;
            let pem = key_pem(&key, key_path.clone())?;
            (Outcome::Created, Some(pem), Some(public_pem(&key)?))
        }
        (Some(key_bytes), None) => {
            let key = dir.key(&key_rel, key_bytes)?;
            (Outcome::Changed, None, Some(public_pem(&key)?))
        }
        (None, Some(_)) => {
            return Err(PkiError::Orphan {
                    path: pub_path,
                    missing: key_path,
                    advice: "the API server signs service-account tokens with the private key: restore it, or remove the public key to have both made",
                });
        }
        (Some(key_bytes), Some(pub_bytes)) => {
            let key = dir.key(&key_rel, key_bytes)?;
            let public = PublicKey::from_pem(pub_bytes).map_err(|source| PkiError::BadKey {
                path: pub_path.clone(),
                source,
            })?;
            if public != key.public_key() {
                return Err(PkiError::Conflict {
                    what: "key pair",
                    path: pub_path,
                    problems: vec![format!("it is not the public half of {key_rel}")],
                    advice: remove_advice(&[&key_rel, &pub_rel]),
                });
            }
            (Outcome::Unchanged, None, None)
        }
    };
    out.files.push(FileOut {
        rel_path: key_rel.clone(),
        mode: KEY_MODE,
        contents: key_contents,
    });
    out.files.push(FileOut {
        rel_path: pub_rel.clone(),
        mode: KEY_MODE,
        contents: pub_contents,
    });
    out.entries.push(Entry {
        name: SERVICE_ACCOUNT_KEY_BASE_NAME.to_string(),
        outcome,
        files: vec![key_rel, pub_rel],
        subject: String::new(),
        alt_names: AltNames::default(),
        not_after: String::new(),
    });
    Ok(())
}

/// Every relative path the certificate phase reads and writes.
pub fn certificate_files() -> Vec<String> {
    crate::table::CERTIFICATES
        .iter()
        .flat_map(|d| [d.cert_file(), d.key_file()])
        .chain([
            format!("{SERVICE_ACCOUNT_KEY_BASE_NAME}.key"),
            format!("{SERVICE_ACCOUNT_KEY_BASE_NAME}.pub"),
        ])
        .collect()
}

/// The certificate phase: every certificate of the table and the
/// service-account key pair, for `spec`, given what `found` holds of the
/// cert dir `cert_dir` (a node path, used in messages).
pub fn generate_certificates(
    spec: &PkiSpec,
    cert_dir: &Path,
    found: &Found,
    now: OffsetDateTime,
) -> Result<Generated, PkiError> {
    let requests = plan_certificates(spec);
    let dir = Dir {
        path: cert_dir,
        found,
    };
    let missing_keys = requests
        .iter()
        .filter(|r| found.get(&r.def.key_file()).is_none())
        .count()
        + usize::from(found.get("sa.key").is_none());
    let mut pool = KeyPool::new(spec.node.key_type, missing_keys)?;
    let mut cas: BTreeMap<&str, Ca> = BTreeMap::new();
    let mut out = Generated::default();
    for req in &requests {
        match req.def.ca {
            None => {
                let ca = ca_of(req.def, &req.subject, &dir, &mut pool, now, &mut out)?;
                cas.insert(req.def.name, ca);
            }
            Some(ca_name) => {
                let (Some(ca), Some(ca_def)) = (cas.get(ca_name), cert_def(ca_name)) else {
                    unreachable!("the table lists every CA before what it signs")
                };
                let want = Want {
                    subject: &req.subject,
                    alt_names: &req.alt_names,
                    ext_key_usages: req.def.ext_key_usages,
                };
                let ca_path = dir.node_path(&ca_def.cert_file());
                leaf(req.def, &want, ca, &ca_path, &dir, &mut pool, now, &mut out)?;
            }
        }
    }
    service_account(&dir, &mut pool, &mut out)?;
    Ok(out)
}

/// Every file name the kubeconfig phase may read or write.
pub const KUBECONFIG_FILES: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "kubelet.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// The kubeconfig phase: the kubeconfigs of `node`, signed by the CA in
/// `cert_found` (the cert dir `cert_dir`), given what `found` holds of the
/// kubeconfig dir `kubeconfig_dir`.
pub fn generate_kubeconfigs(
    node: &ControlPlaneNode,
    cert_dir: &Path,
    cert_found: &Found,
    kubeconfig_dir: &Path,
    found: &Found,
    now: OffsetDateTime,
) -> Result<Generated, PkiError> {
    let ca_def = cert_def("ca").unwrap_or_else(|| unreachable!("the table has a ca"));
    let pki = Dir {
        path: cert_dir,
        found: cert_found,
    };
    let dir = Dir {
        path: kubeconfig_dir,
        found,
    };
    let (ca_rel, ca_key_rel) = (ca_def.cert_file(), ca_def.key_file());
    let ca_path = pki.node_path(&ca_rel);
    let ca_bytes = cert_found.get(&ca_rel).ok_or_else(|| PkiError::NoCa {
        path: ca_path.clone(),
    })?;
    let ca_cert = pki.cert(&ca_rel, ca_bytes)?;
    let ca_key = match cert_found.get(&ca_key_rel) {
        Some(bytes) => Some(pki.key(&ca_key_rel, bytes)?),
        None => None,
    };
    let ca_key_path = pki.node_path(&ca_key_rel);
    let problems = problems_of_ca(
        &ca_cert,
        ca_key.as_ref().map(|k| (k, ca_key_path.as_path())),
        now,
    );
    if !problems.is_empty() {
        return Err(PkiError::Conflict {
            what: "CA certificate",
            path: ca_path,
            problems,
            advice: "fix the CA first (see `kprov pki check`)".to_string(),
        });
    }
    let ca = match ca_key {
        Some(key) => Ca::Signer(Box::new(Signer::new(ca_cert, key).map_err(|source| {
            PkiError::Issue {
                what: ca_path.clone(),
                source,
            }
        })?)),
        None => Ca::CertOnly {
            cert: Box::new(ca_cert),
            key_path: ca_key_path,
        },
    };

    let requests = plan_kubeconfigs(node);
    let missing = requests
        .iter()
        .filter(|r| found.get(r.file).is_none())
        .count();
    let mut pool = KeyPool::new(node.key_type, missing)?;
    let mut out = Generated::default();
    let no_sans = AltNames::default();
    for req in &requests {
        let server = match req.server {
            ServerChoice::ControlPlane => node.control_plane_url(),
            ServerChoice::Local => node.local_url(),
        };
        let want = Want {
            subject: &req.subject,
            alt_names: &no_sans,
            ext_key_usages: &[ExtKeyUsage::ClientAuth],
        };
        let path = dir.node_path(req.file);
        let (cert, outcome, contents) = match found.get(req.file) {
            None => {
                let key = pool.take()?;
                let cert = sign(&ca, &ca_path, path.clone(), &want, &key, now)?;
                let key_pem = key_pem(&key, path.clone())?;
                let yaml = Kubeconfig::with_client_certificate(
                    &server,
                    &req.subject.common_name,
                    ca.cert().pem().as_bytes(),
                    cert.pem().as_bytes(),
                    &key_pem,
                )
                .to_yaml()
                .map_err(|e| PkiError::Encode {
                    what: path.clone(),
                    reason: e.to_string(),
                })?;
                (cert, Outcome::Created, Some(yaml.into_bytes()))
            }
            Some(bytes) => {
                let cert = reusable_kubeconfig(bytes, &path, &server, &want, &ca, &ca_path, now)?;
                (cert, Outcome::Unchanged, None)
            }
        };
        out.files.push(FileOut {
            rel_path: req.file.to_string(),
            mode: KUBECONFIG_MODE,
            contents,
        });
        out.entries
            .push(entry(req.file, outcome, &[req.file.to_string()], &cert));
    }
    Ok(out)
}

/// Checks an existing kubeconfig; returns its client certificate.
fn reusable_kubeconfig(
    bytes: &[u8],
    path: &Path,
    server: &str,
    want: &Want<'_>,
    ca: &Ca,
    ca_path: &Path,
    now: OffsetDateTime,
) -> Result<Certificate, PkiError> {
    let bad = |source| PkiError::BadKubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let creds = Kubeconfig::from_yaml(bytes)
        .and_then(|k| k.current_credentials())
        .map_err(bad)?;
    let mut problems = Vec::new();
    match Certificate::from_pem(&creds.ca_pem) {
        Ok(c) if c.der() == ca.cert().der() => {}
        _ => problems.push(format!("it embeds a CA other than {}", ca_path.display())),
    }
    if creds.server != server {
        problems.push(format!("its server is {}, expected {server}", creds.server));
    }
    let cert = Certificate::from_pem(&creds.client_cert_pem);
    let key = PrivateKey::from_pem(&creds.client_key_pem);
    match (&cert, &key) {
        (Ok(cert), Ok(key)) => problems.extend(problems_of_leaf(
            cert,
            key,
            Path::new("(client-key-data)"),
            want,
            ca.cert(),
            ca_path,
            now,
        )),
        (Err(e), _) => problems.push(format!("its client certificate: {e}")),
        (_, Err(e)) => problems.push(format!("its client key: {e}")),
    }
    match cert {
        Ok(cert) if problems.is_empty() => Ok(cert),
        _ => Err(PkiError::Conflict {
            what: "kubeconfig",
            path: path.to_path_buf(),
            problems,
            advice: format!(
                "remove {} to have it made again",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        }),
    }
}
