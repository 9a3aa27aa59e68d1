//! Shared by the kprov-bootconfig tests: fixtures (tests/fixtures/INDEX)
//! and the table of node specs the golden files are rendered from.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use kprov_bootconfig::{BootSpec, SshPublicKey};
use kprov_core::{BootstrapToken, CaCertificate, NodeConfig, Phase};

/// The token of the cases: fake, but well formed, and not the example
/// token of kprov's error messages, so that a leak shows.
pub const TOKEN: &str = "kp7q2x.s3cr3tv4lu3xyz9w";

/// The secret half of [`TOKEN`].
pub const SECRET: &str = "s3cr3tv4lu3xyz9w";

/// The pinned sha256 of the cases (of nothing in particular).
pub const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// tests/<sub> of this crate.
pub fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir("fixtures").join(name)).unwrap()
}

/// The fixture CA certificate.
pub fn ca() -> CaCertificate {
    CaCertificate::from_pem(fixture("ca.crt").as_bytes()).unwrap()
}

/// The fixture SSH keys (ed25519, rsa, ecdsa).
pub fn keys() -> Vec<SshPublicKey> {
    SshPublicKey::parse_file(&fixture("authorized_keys")).unwrap()
}

/// A spec for `hostname` with only what every spec has: no keys, no CA,
/// no token, phase base, kubelet v1.20.2.
pub fn minimal(hostname: &str, source: &str, sha256: &str) -> BootSpec {
    BootSpec {
        hostname: hostname.parse().unwrap(),
        ssh_authorized_keys: Vec::new(),
        ca_cert: None,
        cloud_config_content: None,
        token: None,
        provision_source: source.parse().unwrap(),
        provision_sha256: sha256.parse().unwrap(),
        provision: NodeConfig {
            phase: Phase::Base,
            kubelet_version: "v1.20.2".parse().unwrap(),
            ..NodeConfig::default()
        },
    }
}

/// A worker that joins: CA, token, one key, phase all.
pub fn worker(hostname: &str, source: &str, sha256: &str) -> BootSpec {
    let mut spec = minimal(hostname, source, sha256);
    spec.ssh_authorized_keys = keys()[..1].to_vec();
    spec.ca_cert = Some(ca());
    spec.token = Some(TOKEN.parse::<BootstrapToken>().unwrap());
    spec.provision.phase = Phase::All;
    spec.provision.api_server = Some("https://10.0.0.1:6443".into());
    spec
}

/// One golden case.
pub struct Case {
    /// File name stem under tests/golden/.
    pub name: &'static str,
    /// The spec.
    pub spec: BootSpec,
    /// Rendered with --gzip.
    pub gzip: bool,
}

const SOURCE: &str = "https://boot.example.com/kprov/v0.1.0/kprov-amd64";

/// The table of node specs with golden files.
pub fn cases() -> Vec<Case> {
    let case = |name, spec| Case {
        name,
        spec,
        gzip: false,
    };
    let with_cloud_config = {
        let mut s = worker("worker-2.cluster.example.com", SOURCE, SHA256);
        s.provision.cloud_provider = Some("openstack".into());
        s.provision.cloud_config = Some("/etc/kubernetes/cloud-config".into());
        s.cloud_config_content = Some(fixture("cloud-config.ini"));
        s.provision.kubelet_version = "v1.30.4".parse().unwrap();
        s
    };
    let several_keys = {
        let mut s = minimal("worker-3", "file:///media/kprov/kprov", SHA256);
        s.ssh_authorized_keys = keys();
        s.provision.artifacts_dir = Some("/opt/kprov/artifacts".into());
        s.provision.sandbox_image = Some("registry.k8s.io/pause:3.2".into());
        s
    };
    let mut hostname_yes = minimal("yes", "http://10.0.0.1:8080/kprov", SHA256);
    hostname_yes.ssh_authorized_keys = keys()[2..].to_vec();
    vec![
        case("worker", worker("worker-1", SOURCE, SHA256)),
        case("worker-cloud-config", with_cloud_config),
        case("several-ssh-keys", several_keys),
        case("hostname-yes", hostname_yes),
        case(
            "hostname-number",
            minimal("0600", "http://10.0.0.1:8080/kprov", SHA256),
        ),
        case(
            "hostname-date",
            minimal("2001-12-14", "http://10.0.0.1:8080/kprov", SHA256),
        ),
        Case {
            gzip: true,
            ..case("worker-gzip", worker("worker-1", SOURCE, SHA256))
        },
    ]
}
