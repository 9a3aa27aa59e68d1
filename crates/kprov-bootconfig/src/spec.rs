//! The boot spec: everything a rendered boot config carries, validated.

use kprov_core::node_config::{Flag, NodeConfigError};
use kprov_core::{Arch, BootstrapToken, CaCertificate, NodeConfig};

use crate::paths::{NodePath, NodePathError};
use crate::source::{ProvisionSource, Sha256Digest};
use crate::{Hostname, SshPublicKey};

/// What a node needs at first boot: its identity, its trust and join
/// material, the kprov binary to fetch and the flags to run it with.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The node's host name (and Kubernetes node name).
    pub hostname: Hostname,
    /// Keys allowed to log in (as the distribution's default user with
    /// cloud-init, as `core` with Ignition).
    pub ssh_authorized_keys: Vec<SshPublicKey>,
    /// Cluster CA, written to [`crate::paths::CA_CERT`].
    pub ca_cert: Option<CaCertificate>,
    /// The cloud provider's config file contents, written 0600 at
    /// `provision.cloud_config`.
    pub cloud_config_content: Option<String>,
    /// Bootstrap token, written 0600 to [`crate::paths::TOKEN_FILE`] and
    /// handed to kprov in its environment, never on a command line.
    pub token: Option<BootstrapToken>,
    /// Where setup.sh fetches kprov from.
    pub provision_source: ProvisionSource,
    /// The sha256 the fetched binary must have before it runs.
    pub provision_sha256: Sha256Digest,
    /// The flags of `kprov provision` on the node. Its paths
    /// (`artifacts_dir`, `bundle`, `cache_dir`, `cloud_config`) are paths
    /// on the node; its `token` and `ca_cert` are not used: the token is
    /// [`BootSpec::token`], and the CA is written from
    /// [`BootSpec::ca_cert`] to [`crate::paths::CA_CERT`].
    pub provision: NodeConfig,
}

/// A boot spec that is inconsistent as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BootSpecError {
    /// What `kprov provision` itself would refuse on the node.
    #[error(transparent)]
    Node(#[from] NodeConfigError),
    /// A path on the node that is not absolute and normalised.
    #[error(transparent)]
    NodePath(#[from] NodePathError),
    /// Cloud config contents without a path to write them to.
    #[error(
        "--cloud-config-file needs --cloud-config (the path on the node) and --cloud-provider"
    )]
    CloudConfigContentWithoutPath,
}

impl BootSpec {
    /// The flags setup.sh runs `kprov provision` with, rendered from
    /// [`BootSpec::provision`] by [`NodeConfig::to_flags`]: never the
    /// token (setup.sh hands it over in `KPROV_TOKEN`), and `--ca-cert`
    /// naming where the boot config writes the CA.
    pub fn provision_flags(&self) -> Vec<Flag> {
        let mut node = self.provision.clone();
        node.token = None;
        node.ca_cert = self.ca_cert.as_ref().map(|_| crate::paths::CA_CERT.into());
        node.to_flags()
    }

    /// Checks the spec as a whole, with the same rules `kprov provision`
    /// applies on the node, so that a bad spec fails here rather than at
    /// first boot.
    pub fn validate(&self) -> Result<(), BootSpecError> {
        let p = &self.provision;
        for (flag, path, example) in [
            (
                "--cloud-config",
                &p.cloud_config,
                crate::paths::DEFAULT_CLOUD_CONFIG,
            ),
            ("--artifacts-dir", &p.artifacts_dir, "/opt/kprov/artifacts"),
            ("--bundle", &p.bundle, "/opt/kprov/node.tar.zst"),
        ] {
            if let Some(path) = path {
                NodePath::parse(flag, &path.to_string_lossy(), example)?;
            }
        }
        NodePath::parse(
            "--cache-dir",
            &p.cache_dir.to_string_lossy(),
            "/var/cache/kprov",
        )?;
        // The node's kprov reads the token from its environment.
        let mut node = p.clone();
        node.token = self
            .token
            .as_ref()
            .map(|t| t.expose_secret().as_str().into());
        // The architecture takes no part in these checks; the node's kprov
        // detects its own.
        node.node_spec(self.ca_cert.clone(), p.arch.unwrap_or(Arch::Amd64))?;
        if self.cloud_config_content.is_some() && p.cloud_config.is_none() {
            return Err(BootSpecError::CloudConfigContentWithoutPath);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kprov_core::Phase;

    use super::*;
    use crate::paths::CA_CERT;

    fn spec(phase: Phase) -> BootSpec {
        BootSpec {
            hostname: "worker-1".parse().unwrap(),
            ssh_authorized_keys: Vec::new(),
            ca_cert: None,
            cloud_config_content: None,
            token: None,
            provision_source: "https://h/kprov".parse().unwrap(),
            provision_sha256: "ab".repeat(32).parse().unwrap(),
            provision: NodeConfig {
                phase,
                kubelet_version: "v1.20.2".parse().unwrap(),
                ..NodeConfig::default()
            },
        }
    }

    fn args(spec: &BootSpec) -> String {
        spec.provision_flags()
            .iter()
            .flat_map(Flag::words)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_artifact_source_reaches_kprov_provision() {
        let mut s = spec(Phase::Base);
        s.provision.mirror = Some("http://10.0.0.1:8080/mirror".into());
        let args = args(&s);
        assert!(
            args.contains("--mirror http://10.0.0.1:8080/mirror"),
            "{args}"
        );
        assert!(
            !args.contains("--bundle") && !args.contains("--ca-cert"),
            "{args}"
        );
    }

    #[test]
    fn the_join_target_and_pins_reach_kprov_provision() {
        let mut s = spec(Phase::All);
        s.provision.api_server = Some("https://10.0.0.1:6443".into());
        let hash = format!("sha256:{}", "ab".repeat(32));
        s.provision.discovery_token_ca_cert_hash = vec![hash.clone()];
        let args = args(&s);
        assert!(
            args.contains(&format!(
                "--api-server https://10.0.0.1:6443 --discovery-token-ca-cert-hash {hash}"
            )),
            "{args}"
        );
    }

    #[test]
    fn the_token_never_reaches_the_flags_and_the_ca_is_the_node_s_copy() {
        let mut s = spec(Phase::All);
        let token = "kp7q2x.s3cr3tv4lu3xyz9w";
        s.token = Some(token.parse().unwrap());
        s.provision.token = Some(token.into());
        s.provision.ca_cert = Some("local/ca.crt".into());
        assert!(!args(&s).contains("s3cr3t"), "{}", args(&s));
        assert!(!args(&s).contains("--ca-cert"), "{}", args(&s));
        s.ca_cert = Some(
            CaCertificate::from_pem(
                std::fs::read(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/ca.crt"
                ))
                .unwrap()
                .as_slice(),
            )
            .unwrap(),
        );
        assert!(
            args(&s).contains(&format!("--ca-cert {CA_CERT}")),
            "{}",
            args(&s)
        );
        assert!(!args(&s).contains("local/ca.crt"));
    }

    #[test]
    fn paths_on_the_node_must_be_absolute() {
        type Edit = fn(&mut NodeConfig);
        let cases: [(Edit, &str); 4] = [
            (
                |n| n.artifacts_dir = Some("artifacts".into()),
                "invalid --artifacts-dir \"artifacts\": it is not absolute",
            ),
            (
                |n| n.bundle = Some("/opt/../node.tar.zst".into()),
                "invalid --bundle \"/opt/../node.tar.zst\": it has '.' or '..' components",
            ),
            (
                |n| n.cache_dir = "cache".into(),
                "invalid --cache-dir \"cache\": it is not absolute",
            ),
            (
                |n| {
                    n.cloud_provider = Some("openstack".into());
                    n.cloud_config = Some("cloud.conf".into());
                },
                "invalid --cloud-config \"cloud.conf\": it is not absolute",
            ),
        ];
        for (edit, want) in cases {
            let mut s = spec(Phase::Base);
            edit(&mut s.provision);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        assert!(spec(Phase::Base).validate().is_ok());
    }
}
