//! The boot spec: everything a rendered boot config carries, validated.

use kprov_core::{
    ApiServerUrl, Arch, BootstrapToken, CaCertHash, CaCertificate, ContainerRuntime,
    KubernetesVersion, NodeSpec, Phase, ProxyMode, SpecError,
};

use crate::paths::NodePath;
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
    /// The flags of `kprov provision` on the node.
    pub provision: ProvisionFlags,
}

/// The `kprov provision` flags setup.sh runs with.
#[derive(Debug, Clone)]
pub struct ProvisionFlags {
    /// Which phase to run.
    pub phase: Phase,
    /// Release of the kubelet and kubectl.
    pub kubelet_version: KubernetesVersion,
    /// Container runtime.
    pub container_runtime: ContainerRuntime,
    /// kube-proxy mode.
    pub proxy_mode: ProxyMode,
    /// Sandbox (pause) image override.
    pub sandbox_image: Option<String>,
    /// In-tree cloud provider name.
    pub cloud_provider: Option<String>,
    /// Path on the node of the cloud provider's config.
    pub cloud_config: Option<NodePath>,
    /// Artifact directory on the node (baked into the image or mounted).
    pub artifacts_dir: Option<NodePath>,
    /// Offline bundle on the node.
    pub bundle: Option<NodePath>,
    /// Mirror (upstream layout) the node downloads from.
    pub mirror: Option<String>,
    /// The API server to join.
    pub api_server: Option<ApiServerUrl>,
    /// Pinned CA public-key hashes (not secret: they go on the command
    /// line).
    pub ca_cert_hashes: Vec<CaCertHash>,
}

/// A boot spec that is inconsistent as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootSpecError {
    /// What `kprov provision` itself would refuse on the node.
    #[error(transparent)]
    Node(#[from] SpecError),
    /// Cloud config contents without a path to write them to.
    #[error(
        "--cloud-config-file needs --cloud-config (the path on the node) and --cloud-provider"
    )]
    CloudConfigContentWithoutPath,
}

impl ProvisionFlags {
    /// Flags with kprov's defaults for `phase` and `kubelet_version`.
    pub fn new(phase: Phase, kubelet_version: KubernetesVersion) -> Self {
        Self {
            phase,
            kubelet_version,
            container_runtime: ContainerRuntime::Containerd,
            proxy_mode: ProxyMode::Iptables,
            sandbox_image: None,
            cloud_provider: None,
            cloud_config: None,
            artifacts_dir: None,
            bundle: None,
            mirror: None,
            api_server: None,
            ca_cert_hashes: Vec::new(),
        }
    }

    /// The command-line arguments after `kprov provision`, in a fixed
    /// order. They never include the token.
    pub fn args(&self, with_ca_cert: bool) -> Vec<String> {
        let mut args = vec![
            "--phase".to_string(),
            self.phase.to_string(),
            "--kubelet-version".to_string(),
            self.kubelet_version.to_string(),
            "--container-runtime".to_string(),
            self.container_runtime.to_string(),
            "--proxy-mode".to_string(),
            match self.proxy_mode {
                ProxyMode::Iptables => "iptables",
                ProxyMode::Ipvs => "ipvs",
            }
            .to_string(),
        ];
        let mut opt = |flag: &str, value: Option<&str>| {
            if let Some(v) = value {
                args.push(flag.to_string());
                args.push(v.to_string());
            }
        };
        opt("--sandbox-image", self.sandbox_image.as_deref());
        opt(
            "--artifacts-dir",
            self.artifacts_dir.as_ref().map(NodePath::as_str),
        );
        opt("--bundle", self.bundle.as_ref().map(NodePath::as_str));
        opt("--mirror", self.mirror.as_deref());
        opt("--cloud-provider", self.cloud_provider.as_deref());
        opt(
            "--cloud-config",
            self.cloud_config.as_ref().map(NodePath::as_str),
        );
        opt("--ca-cert", with_ca_cert.then_some(crate::paths::CA_CERT));
        let server = self.api_server.as_ref().map(ToString::to_string);
        opt("--api-server", server.as_deref());
        for hash in &self.ca_cert_hashes {
            opt("--discovery-token-ca-cert-hash", Some(hash.as_str()));
        }
        args
    }
}

impl BootSpec {
    /// Checks the spec as a whole, with the same rules `kprov provision`
    /// applies on the node, so that a bad spec fails here rather than at
    /// first boot.
    pub fn validate(&self) -> Result<(), BootSpecError> {
        let p = &self.provision;
        // The architecture takes no part in these checks; the node's kprov
        // detects its own.
        let node = NodeSpec {
            container_runtime: p.container_runtime,
            proxy_mode: p.proxy_mode,
            cloud_provider: p.cloud_provider.clone(),
            cloud_config: p.cloud_config.as_ref().map(|c| c.as_str().into()),
            token: self.token.clone(),
            ca_cert: self.ca_cert.clone(),
            sandbox_image: p.sandbox_image.clone(),
            api_server: p.api_server.clone(),
            ca_cert_hashes: p.ca_cert_hashes.clone(),
            ..NodeSpec::new(p.kubelet_version.clone(), Arch::Amd64)
        };
        node.validate(p.phase)?;
        if self.cloud_config_content.is_some() && p.cloud_config.is_none() {
            return Err(BootSpecError::CloudConfigContentWithoutPath);
        }
        Ok(())
    }
}

#[cfg(test)]
mod source_flag_tests {
    use super::*;

    #[test]
    fn the_artifact_source_reaches_kprov_provision() {
        let mut flags = ProvisionFlags::new(Phase::Base, "v1.20.2".parse().unwrap());
        flags.mirror = Some("http://10.0.0.1:8080/mirror".into());
        let args = flags.args(false);
        let at = args.iter().position(|a| a == "--mirror").unwrap();
        assert_eq!(args[at + 1], "http://10.0.0.1:8080/mirror");
        assert!(!args.iter().any(|a| a == "--bundle" || a == "--ca-cert"));
    }

    #[test]
    fn the_join_target_and_pins_reach_kprov_provision() {
        let mut flags = ProvisionFlags::new(Phase::All, "v1.20.2".parse().unwrap());
        flags.api_server = Some("https://10.0.0.1:6443".parse().unwrap());
        let hash = format!("sha256:{}", "ab".repeat(32));
        flags.ca_cert_hashes = vec![hash.parse().unwrap()];
        let args = flags.args(false).join(" ");
        assert!(
            args.ends_with(&format!(
                "--api-server https://10.0.0.1:6443 --discovery-token-ca-cert-hash {hash}"
            )),
            "{args}"
        );
    }
}
