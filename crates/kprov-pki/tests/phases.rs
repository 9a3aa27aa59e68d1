//! The certificate and kubeconfig phases on a scratch root: what is made,
//! what is reused, what is refused, and that a refused or failed run
//! leaves the directory exactly as it was.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kprov_host::Root;
use kprov_pki::cert::Certificate;
use kprov_pki::check::CertState;
use kprov_pki::generate::{generate_certificates, Found};
use kprov_pki::{
    check, write_certificates, write_kubeconfigs, ControlPlaneNode, KeyType, PkiError, PkiSpec,
};
use kprov_plan::Outcome;
use time::{Duration, OffsetDateTime};

const CERT_DIR: &str = "/etc/kubernetes/pki";
const KUBECONFIG_DIR: &str = "/etc/kubernetes";

fn spec(key_type: KeyType, version: &str) -> PkiSpec {
    let mut node = ControlPlaneNode::new(
        "master-1".parse().unwrap(),
        "192.0.2.10".parse().unwrap(),
        version.parse().unwrap(),
    );
    node.key_type = key_type;
    node.control_plane_endpoint = Some("cp.example.test".parse().unwrap());
    let mut spec = PkiSpec::new(node);
    spec.extra_sans = vec!["198.51.100.7".parse().unwrap()];
    spec
}

struct Scratch {
    dir: tempfile::TempDir,
    root: Root,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        Self { dir, root }
    }

    fn host(&self, node_path: &str) -> PathBuf {
        self.dir.path().join(node_path.trim_start_matches('/'))
    }

    fn certs(&self, spec: &PkiSpec) -> Result<kprov_pki::Report, PkiError> {
        write_certificates(
            &self.root,
            Path::new(CERT_DIR),
            spec,
            OffsetDateTime::now_utc(),
            false,
        )
    }

    fn kubeconfigs(&self, spec: &PkiSpec) -> Result<kprov_pki::Report, PkiError> {
        write_kubeconfigs(
            &self.root,
            Path::new(CERT_DIR),
            Path::new(KUBECONFIG_DIR),
            &spec.node,
            OffsetDateTime::now_utc(),
            false,
        )
    }

    /// Every file under the root with its mode and contents.
    fn snapshot(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = path.symlink_metadata().unwrap();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        if meta.is_dir() {
            out.insert(rel, (meta.permissions().mode() & 0o7777, Vec::new()));
            walk(base, &path, out);
        } else {
            out.insert(
                rel,
                (
                    meta.permissions().mode() & 0o7777,
                    std::fs::read(&path).unwrap(),
                ),
            );
        }
    }
}

fn changed(report: &kprov_pki::Report) -> Vec<String> {
    report.changed_files().into_iter().map(|(f, _)| f).collect()
}

fn names(report: &kprov_pki::Report, outcome: Outcome) -> Vec<String> {
    report
        .entries
        .iter()
        .filter(|e| e.outcome == outcome)
        .map(|e| e.name.clone())
        .collect()
}

const ALL_CERTS: &[&str] = &[
    "ca",
    "apiserver",
    "apiserver-kubelet-client",
    "front-proxy-ca",
    "front-proxy-client",
    "etcd-ca",
    "etcd-server",
    "etcd-peer",
    "etcd-healthcheck-client",
    "apiserver-etcd-client",
    "sa",
];

#[test]
fn a_first_run_makes_every_file_with_kubeadms_names_and_modes() {
    let s = Scratch::new();
    let report = s.certs(&spec(KeyType::Rsa, "v1.20.2")).unwrap();
    assert_eq!(names(&report, Outcome::Created), ALL_CERTS);
    let files: BTreeMap<String, u32> = s
        .snapshot()
        .into_iter()
        .filter(|(_, (_, c))| !c.is_empty())
        .map(|(k, (mode, _))| (k, mode))
        .collect();
    let mut want = BTreeMap::new();
    for base in [
        "ca",
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-ca",
        "front-proxy-client",
        "etcd/ca",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
        "apiserver-etcd-client",
    ] {
        want.insert(format!("etc/kubernetes/pki/{base}.crt"), 0o644);
        want.insert(format!("etc/kubernetes/pki/{base}.key"), 0o600);
    }
    want.insert("etc/kubernetes/pki/sa.key".into(), 0o600);
    want.insert("etc/kubernetes/pki/sa.pub".into(), 0o600);
    assert_eq!(files, want);
    let key = std::fs::read_to_string(s.host("/etc/kubernetes/pki/apiserver.key")).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
}

#[test]
fn a_second_run_changes_nothing() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    s.kubeconfigs(&spec).unwrap();
    let before = s.snapshot();
    let certs = s.certs(&spec).unwrap();
    let kubeconfigs = s.kubeconfigs(&spec).unwrap();
    assert!(certs.unchanged() && kubeconfigs.unchanged());
    assert_eq!(names(&certs, Outcome::Unchanged), ALL_CERTS);
    assert_eq!(
        names(&kubeconfigs, Outcome::Unchanged),
        [
            "admin.conf",
            "kubelet.conf",
            "controller-manager.conf",
            "scheduler.conf"
        ]
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_symlinked_certificate_is_reused_without_touching_its_target() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    // front-proxy-client.crt moved elsewhere (mode 0640) and linked back.
    let elsewhere = s.host("/srv/front-proxy-client.crt");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    let link = s.host("/etc/kubernetes/pki/front-proxy-client.crt");
    std::fs::rename(&link, &elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/srv/front-proxy-client.crt", &link).unwrap();
    let report = s.certs(&spec).unwrap();
    assert!(report.unchanged(), "{report:?}");
    assert_eq!(
        elsewhere.metadata().unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn a_dry_run_reports_what_it_would_write_and_writes_nothing() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    let report = write_certificates(
        &s.root,
        Path::new(CERT_DIR),
        &spec,
        OffsetDateTime::now_utc(),
        true,
    )
    .unwrap();
    assert!(report.files.dry_run);
    assert_eq!(changed(&report).len(), 22);
    assert_eq!(names(&report, Outcome::Created), ALL_CERTS);
    assert!(s.snapshot().is_empty());
    s.certs(&spec).unwrap();
    std::fs::set_permissions(
        s.host("/etc/kubernetes/pki/ca.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let before = s.snapshot();
    let report = write_certificates(
        &s.root,
        Path::new(CERT_DIR),
        &spec,
        OffsetDateTime::now_utc(),
        true,
    )
    .unwrap();
    assert_eq!(
        report.changed_files(),
        [("ca.key".to_string(), "mode 0640 owner 0:0".to_string())]
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_key_made_readable_by_others_is_made_private_again() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    let key = s.host("/etc/kubernetes/pki/etcd/peer.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = s.certs(&spec).unwrap();
    assert_eq!(
        report.changed_files(),
        [(
            "etcd/peer.key".to_string(),
            "mode 0644 owner 0:0".to_string()
        )]
    );
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
}

/// Runs the phase on a tree that must be refused, and checks that the
/// error says `message` and nothing changed.
fn assert_refused(s: &Scratch, spec: &PkiSpec, message: &str) {
    let before = s.snapshot();
    let err = s.certs(spec).unwrap_err().to_string();
    assert!(
        err.contains(message),
        "error {err:?} does not contain {message:?}"
    );
    assert_eq!(s.snapshot(), before, "a refused run changed files");
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_nothing_is_written() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    // A whole other PKI for the same inputs: its apiserver pair is valid
    // in every way except its signer.
    let other = Scratch::new();
    other.certs(&spec).unwrap();
    for f in ["apiserver.crt", "apiserver.key"] {
        std::fs::copy(
            other.host(&format!("{CERT_DIR}/{f}")),
            s.host(&format!("{CERT_DIR}/{f}")),
        )
        .unwrap();
    }
    // And the sa key pair is missing: nothing may be written for it either.
    std::fs::remove_file(s.host("/etc/kubernetes/pki/sa.pub")).unwrap();
    assert_refused(
        &s,
        &spec,
        "existing certificate /etc/kubernetes/pki/apiserver.crt cannot be reused: \
         it is not signed by the current CA /etc/kubernetes/pki/ca.crt (its issuer is CN=kubernetes). \
         kprov never replaces an existing certificate: \
         remove apiserver.crt and apiserver.key to have them made again",
    );
}

#[test]
fn a_certificate_lacking_a_new_san_is_refused_with_the_difference() {
    let s = Scratch::new();
    let mut spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    spec.extra_sans = vec!["new.example.test".parse().unwrap()];
    assert_refused(
        &s,
        &spec,
        "existing certificate /etc/kubernetes/pki/apiserver.crt cannot be reused: \
         its SANs lack DNS:new.example.test; \
         its SANs include IP:198.51.100.7, which were not asked for.",
    );
}

#[test]
fn a_certificate_with_another_subject_is_refused() {
    let s = Scratch::new();
    let mut spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    spec.node.node_name = "master-2".parse().unwrap();
    // The apiserver certificate is checked first and differs in SANs; the
    // etcd ones would differ in subject too.
    std::fs::remove_file(s.host("/etc/kubernetes/pki/apiserver.crt")).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/apiserver.key")).unwrap();
    assert_refused(
        &s,
        &spec,
        "existing certificate /etc/kubernetes/pki/etcd/server.crt cannot be reused: \
         its subject is \"CN = master-1\", expected \"CN = master-2\"; \
         its SANs lack DNS:master-2; its SANs include DNS:master-1, which were not asked for.",
    );
}

#[test]
fn a_tampered_certificate_is_refused() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    // Flip a byte inside the signed part of the DER: the signature no
    // longer verifies.
    let path = s.host("/etc/kubernetes/pki/front-proxy-client.crt");
    let cert = Certificate::from_pem(&std::fs::read(&path).unwrap()).unwrap();
    let mut der = cert.der().to_vec();
    let at = der.len() / 2;
    der[at] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&der)
    );
    std::fs::write(&path, pem).unwrap();
    let before = s.snapshot();
    let err = s.certs(&spec).unwrap_err().to_string();
    assert!(
        err.starts_with("existing certificate /etc/kubernetes/pki/front-proxy-client.crt"),
        "{err}"
    );
    assert_eq!(s.snapshot(), before);
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_corrupt_ca_aborts_before_anything_is_written() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.host(CERT_DIR)).unwrap();
    std::fs::write(s.host("/etc/kubernetes/pki/ca.crt"), "not a certificate\n").unwrap();
    std::fs::write(s.host("/etc/kubernetes/pki/ca.key"), "not a key\n").unwrap();
    assert_refused(
        &s,
        &spec(KeyType::Ecdsa, "v1.20.2"),
        "existing certificate /etc/kubernetes/pki/ca.crt: not a PEM-encoded certificate",
    );
}

#[test]
fn an_unreadable_ca_aborts_before_anything_is_written() {
    let s = Scratch::new();
    // A directory where the CA certificate should be: reading fails with
    // an error other than "not found".
    std::fs::create_dir_all(s.host("/etc/kubernetes/pki/ca.crt")).unwrap();
    assert_refused(
        &s,
        &spec(KeyType::Ecdsa, "v1.20.2"),
        "reading /etc/kubernetes/pki/ca.crt: reading ",
    );
}

#[test]
fn a_key_left_by_an_interrupted_run_gets_its_certificate() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    let key_before = std::fs::read(s.host("/etc/kubernetes/pki/etcd/server.key")).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/etcd/server.crt")).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/sa.pub")).unwrap();
    let report = s.certs(&spec).unwrap();
    assert_eq!(names(&report, Outcome::Changed), ["etcd-server", "sa"]);
    assert_eq!(changed(&report), ["etcd/server.crt", "sa.pub"]);
    assert_eq!(
        std::fs::read(s.host("/etc/kubernetes/pki/etcd/server.key")).unwrap(),
        key_before
    );
    assert!(s.certs(&spec).unwrap().unchanged());
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/apiserver-kubelet-client.key")).unwrap();
    assert_refused(
        &s,
        &spec,
        "/etc/kubernetes/pki/apiserver-kubelet-client.crt exists but \
         /etc/kubernetes/pki/apiserver-kubelet-client.key does not",
    );
}

#[test]
fn a_service_account_public_key_of_another_key_is_refused() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    let other = Scratch::new();
    other.certs(&spec).unwrap();
    std::fs::copy(
        other.host("/etc/kubernetes/pki/sa.pub"),
        s.host("/etc/kubernetes/pki/sa.pub"),
    )
    .unwrap();
    assert_refused(
        &s,
        &spec,
        "existing key pair /etc/kubernetes/pki/sa.pub cannot be reused: it is not the public half of sa.key",
    );
}

#[test]
fn an_external_ca_without_its_key_is_fine_until_something_needs_signing() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    s.kubeconfigs(&spec).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/ca.key")).unwrap();
    assert!(s.certs(&spec).unwrap().unchanged());
    assert!(s.kubeconfigs(&spec).unwrap().unchanged());
    std::fs::remove_file(s.host("/etc/kubernetes/pki/apiserver.crt")).unwrap();
    std::fs::remove_file(s.host("/etc/kubernetes/pki/apiserver.key")).unwrap();
    assert_refused(
        &s,
        &spec,
        "/etc/kubernetes/pki/ca.key does not exist, so /etc/kubernetes/pki/apiserver.crt cannot be signed",
    );
}

#[test]
fn expired_certificates_are_refused_not_renewed_silently() {
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    let now = OffsetDateTime::now_utc();
    let dir = Path::new(CERT_DIR);
    let first = generate_certificates(&spec, dir, &Found::default(), now).unwrap();
    let mut found = Found::default();
    for f in &first.files {
        found.insert(f.rel_path.clone(), f.contents.clone().unwrap());
    }
    // The same files, seen 400 days later: every leaf has expired.
    let err = generate_certificates(&spec, dir, &found, now + Duration::days(400))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("existing certificate /etc/kubernetes/pki/apiserver.crt cannot be reused: it expired at "),
        "{err}"
    );
}

#[test]
fn kubeconfigs_need_the_ca_first() {
    let s = Scratch::new();
    let err = s
        .kubeconfigs(&spec(KeyType::Ecdsa, "v1.20.2"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "/etc/kubernetes/pki/ca.crt does not exist: run `kprov pki` first to make the cluster CA"
    );
    assert_eq!(s.snapshot().len(), 0);
}

#[test]
fn kubeconfigs_follow_the_version_and_point_at_the_right_servers() {
    for (version, files) in [
        (
            "v1.20.2",
            &[
                "admin.conf",
                "kubelet.conf",
                "controller-manager.conf",
                "scheduler.conf",
            ][..],
        ),
        (
            "v1.29.0",
            &[
                "admin.conf",
                "super-admin.conf",
                "kubelet.conf",
                "controller-manager.conf",
                "scheduler.conf",
            ][..],
        ),
    ] {
        let s = Scratch::new();
        let spec = spec(KeyType::Ecdsa, version);
        s.certs(&spec).unwrap();
        let report = s.kubeconfigs(&spec).unwrap();
        assert_eq!(names(&report, Outcome::Created), files, "{version}");
        for file in files {
            let path = s.host(&format!("{KUBECONFIG_DIR}/{file}"));
            assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o600);
            let kc = kprov_pki::kubeconfig::Kubeconfig::from_yaml(&std::fs::read(&path).unwrap())
                .unwrap();
            let creds = kc.current_credentials().unwrap();
            let want = if matches!(*file, "controller-manager.conf" | "scheduler.conf") {
                "https://192.0.2.10:6443"
            } else {
                "https://cp.example.test:6443"
            };
            assert_eq!(creds.server, want, "{file}");
            assert_eq!(
                creds.ca_pem,
                std::fs::read(s.host("/etc/kubernetes/pki/ca.crt")).unwrap()
            );
        }
    }
}

#[test]
fn a_kubeconfig_for_another_endpoint_is_refused() {
    let s = Scratch::new();
    let mut spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    s.kubeconfigs(&spec).unwrap();
    spec.node.control_plane_endpoint = Some("lb.example.test:8443".parse().unwrap());
    let before = s.snapshot();
    let err = s.kubeconfigs(&spec).unwrap_err().to_string();
    assert_eq!(
        err,
        "existing kubeconfig /etc/kubernetes/admin.conf cannot be reused: \
         its server is https://cp.example.test:6443, expected https://lb.example.test:8443. \
         kprov never replaces an existing kubeconfig: remove admin.conf to have it made again"
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn the_check_lists_every_certificate_and_flags_expired_ones() {
    let s = Scratch::new();
    let spec = spec(KeyType::Ecdsa, "v1.20.2");
    s.certs(&spec).unwrap();
    s.kubeconfigs(&spec).unwrap();
    let now = OffsetDateTime::now_utc();
    let rows = check(
        &s.root,
        Path::new(CERT_DIR),
        Some(Path::new(KUBECONFIG_DIR)),
        now,
    )
    .unwrap();
    let listed: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        listed,
        [
            "ca",
            "apiserver",
            "apiserver-kubelet-client",
            "front-proxy-ca",
            "front-proxy-client",
            "etcd-ca",
            "etcd-server",
            "etcd-peer",
            "etcd-healthcheck-client",
            "apiserver-etcd-client",
            "admin.conf",
            "kubelet.conf",
            "controller-manager.conf",
            "scheduler.conf",
        ]
    );
    assert!(rows.iter().all(|r| !r.is_bad()));
    let later = check(
        &s.root,
        Path::new(CERT_DIR),
        Some(Path::new(KUBECONFIG_DIR)),
        now + Duration::days(400),
    )
    .unwrap();
    let expired: Vec<&str> = later
        .iter()
        .filter(|r| r.is_bad())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(expired.len(), 11, "{expired:?}");
    assert!(!expired.contains(&"ca"));
    // A leaf from another CA is flagged too.
    let other = Scratch::new();
    other.certs(&spec).unwrap();
    std::fs::copy(
        other.host("/etc/kubernetes/pki/etcd/peer.crt"),
        s.host("/etc/kubernetes/pki/etcd/peer.crt"),
    )
    .unwrap();
    let rows = check(&s.root, Path::new(CERT_DIR), None, now).unwrap();
    let peer = rows.iter().find(|r| r.name == "etcd-peer").unwrap();
    assert_eq!(
        peer.state,
        CertState::Invalid {
            reason: "not signed by etcd-ca (CN=etcd-ca)".into()
        }
    );
}

#[test]
fn openssl_verifies_every_leaf_against_its_ca() {
    let s = Scratch::new();
    s.certs(&spec(KeyType::Rsa, "v1.20.2")).unwrap();
    let pki = s.host(CERT_DIR);
    for (ca, leaf) in [
        ("ca", "apiserver"),
        ("ca", "apiserver-kubelet-client"),
        ("front-proxy-ca", "front-proxy-client"),
        ("etcd/ca", "etcd/server"),
        ("etcd/ca", "etcd/peer"),
        ("etcd/ca", "etcd/healthcheck-client"),
        ("etcd/ca", "apiserver-etcd-client"),
    ] {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(pki.join(format!("{ca}.crt")))
            .arg(pki.join(format!("{leaf}.crt")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify {leaf}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
