//! Join data netboot makes for a worker Machine that brings no user-data
//! of its own (`role: worker`, no `userData`): a bootstrap token of its
//! own, with a short lifetime that netboot renews while the machine has
//! not joined and deletes once its Node is Ready, and cloud-init
//! user-data rendered with `kprov userdata`'s model ([`BootSpec`]) from
//! the config's `join` section and the cluster's `kube-public/cluster-info`
//! (API server and CA, pinned by its hash).
//!
//! Pure: what the config says ([`JoinConfig`]), which tokens are whose
//! ([`machine_token`], by their description), what to create and delete
//! ([`plan_tokens`]) and the rendering ([`user_data`]); the loop that
//! talks to the API server is [`crate::kube_join`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kprov_bootconfig::{BootSpec, Hostname, ProvisionSource, Sha256Digest, SshPublicKey};
use kprov_core::{BootstrapToken, CaCertificate, NodeConfig, Phase};
use serde::Deserialize;

use crate::machine::{Machine, Registry};

/// How netboot's tokens are told apart from everyone else's: their
/// description names the Machine after this.
pub const DESCRIPTION_PREFIX: &str = "kprov netboot: joins Machine ";

/// The role whose Machines get join data made for them.
pub const WORKER: &str = "worker";

/// The `join` section of the config file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawJoin {
    /// `kprov provision`'s settings on the node, as its config file has
    /// them (kebab-case keys: `kubelet-version`, `mirror`, ...).
    #[serde(default)]
    pub provision: Option<serde_yaml::Value>,
    /// Where setup.sh fetches kprov from.
    #[serde(default)]
    pub provision_source: Option<String>,
    /// The sha256 that kprov must have.
    #[serde(default)]
    pub provision_sha256: Option<String>,
    /// Lifetime of each machine's bootstrap token.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// Keys allowed to log in to the machines.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

fn default_token_ttl() -> u64 {
    3600
}

/// The validated `join` section.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// `kprov provision`'s settings on the node; the join itself (phase,
    /// API server, CA pin, node name and address) is filled in per
    /// machine.
    pub provision: NodeConfig,
    /// Where setup.sh fetches kprov from; None: from this server, which
    /// serves its own binary at `/kprov`.
    pub provision_source: Option<ProvisionSource>,
    /// The sha256 kprov must have; None: that of this server's binary.
    pub provision_sha256: Option<Sha256Digest>,
    /// Lifetime of each token, renewed when half of it is gone.
    pub token_ttl_seconds: u64,
    /// Keys allowed to log in.
    pub ssh_authorized_keys: Vec<SshPublicKey>,
}

impl RawJoin {
    /// Checks the section; errors name the key.
    pub fn validate(self) -> Result<JoinConfig, (String, String)> {
        let provision = match self.provision {
            None => NodeConfig::default(),
            Some(value) => {
                let text = serde_yaml::to_string(&value)
                    .map_err(|e| ("join.provision".to_string(), e.to_string()))?;
                NodeConfig::from_yaml(&text)
                    .map_err(|e| ("join.provision".to_string(), e.to_string()))?
            }
        };
        if provision.control_plane {
            return Err((
                "join.provision.control-plane".into(),
                "netboot makes join data for workers only".into(),
            ));
        }
        if provision.token.is_some() {
            return Err((
                "join.provision.token".into(),
                "netboot makes a token per machine: leave it out".into(),
            ));
        }
        let provision_source = self
            .provision_source
            .map(|s| {
                s.parse::<ProvisionSource>()
                    .map_err(|e| ("join.provisionSource".to_string(), e.to_string()))
            })
            .transpose()?;
        let provision_sha256 = self
            .provision_sha256
            .map(|s| {
                s.parse::<Sha256Digest>()
                    .map_err(|e| ("join.provisionSha256".to_string(), e.to_string()))
            })
            .transpose()?;
        if !(60..=86_400).contains(&self.token_ttl_seconds) {
            return Err((
                "join.tokenTtlSeconds".into(),
                format!(
                    "{} is out of range: expected 60 to 86400",
                    self.token_ttl_seconds
                ),
            ));
        }
        let mut ssh_authorized_keys = Vec::new();
        for (i, key) in self.ssh_authorized_keys.iter().enumerate() {
            ssh_authorized_keys.push(
                key.parse::<SshPublicKey>()
                    .map_err(|e| (format!("join.sshAuthorizedKeys[{i}]"), e.to_string()))?,
            );
        }
        Ok(JoinConfig {
            provision,
            provision_source,
            provision_sha256,
            token_ttl_seconds: self.token_ttl_seconds,
            ssh_authorized_keys,
        })
    }
}

/// What a joining node needs of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The API server, as cluster-info names it.
    pub api_server: String,
    /// The cluster CA (PEM).
    pub ca_pem: Vec<u8>,
    /// Its public-key hash, `sha256:...`.
    pub ca_hash: String,
}

/// The cluster as `kube-public/cluster-info`'s data describe it.
pub fn cluster_from_info(data: &BTreeMap<String, String>) -> Result<Cluster, String> {
    use base64::Engine;
    let text = data
        .get("kubeconfig")
        .ok_or("cluster-info has no kubeconfig")?;
    let config = kube::config::Kubeconfig::from_yaml(text)
        .map_err(|e| format!("cluster-info's kubeconfig: {e}"))?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or("cluster-info's kubeconfig has no cluster")?;
    let api_server = cluster
        .server
        .clone()
        .ok_or("cluster-info's kubeconfig names no server")?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(
            cluster
                .certificate_authority_data
                .as_deref()
                .ok_or("cluster-info's kubeconfig has no CA")?
                .trim(),
        )
        .map_err(|_| "cluster-info's CA is not base64")?;
    let ca_hash =
        kprov_pki::hash::ca_cert_hash(&ca_pem).map_err(|e| format!("cluster-info's CA: {e}"))?;
    Ok(Cluster {
        api_server,
        ca_pem,
        ca_hash,
    })
}

/// One of netboot's tokens.
#[derive(Debug, Clone)]
pub struct MachineToken {
    /// The token (its secret part: never logged).
    pub token: BootstrapToken,
    /// The Machine it joins.
    pub machine: String,
    /// When it expires (seconds since the epoch).
    pub expires: u64,
}

/// A bootstrap token Secret netboot made, read back; None for any other
/// Secret (or one without a readable expiry).
pub fn machine_token(secret: &Secret) -> Option<MachineToken> {
    let data = secret.data.as_ref()?;
    let field = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let machine = field("description")?
        .strip_prefix(DESCRIPTION_PREFIX)?
        .to_string();
    let token = format!("{}.{}", field("token-id")?, field("token-secret")?)
        .parse()
        .ok()?;
    let expires = time::OffsetDateTime::parse(
        &field("expiration")?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?
    .unix_timestamp();
    Some(MachineToken {
        token,
        machine,
        expires: u64::try_from(expires).ok()?,
    })
}

/// Whether netboot makes `m`'s user-data: a worker without user-data of
/// its own that has not joined.
pub fn wants_join_data(m: &Machine) -> bool {
    m.profile.role.as_deref() == Some(WORKER)
        && m.profile.user_data.is_none()
        && !m.served_as_installed()
}

/// A change to netboot's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAction {
    /// A new token for the Machine.
    Create {
        /// The Machine.
        machine: String,
    },
    /// A token to delete.
    Delete {
        /// Its public id.
        id: String,
        /// The Machine it was for.
        machine: String,
        /// Why.
        why: &'static str,
    },
}

/// The newest of `machine`'s tokens still valid at `now`.
pub fn newest<'a>(tokens: &'a [MachineToken], machine: &str, now: u64) -> Option<&'a MachineToken> {
    tokens
        .iter()
        .filter(|t| t.machine == machine && t.expires > now)
        .max_by_key(|t| t.expires)
}

/// What to do with the tokens: a Machine that wants join data gets a new
/// token when it has none with more than half of `ttl` left (the older
/// one stays until it expires: a machine may be joining with it); a
/// token goes when its Node is Ready, its Machine is gone or it expired.
pub fn plan_tokens(
    machines: &Registry,
    tokens: &[MachineToken],
    now: u64,
    ttl: u64,
) -> Vec<TokenAction> {
    let mut actions = Vec::new();
    for t in tokens {
        let why = match machines.by_name(&t.machine) {
            None => Some("its Machine is gone"),
            Some(m) if m.node == Some(true) => Some("its Node is Ready"),
            Some(_) if t.expires <= now => Some("it expired"),
            Some(_) => None,
        };
        if let Some(why) = why {
            actions.push(TokenAction::Delete {
                id: t.token.id().to_string(),
                machine: t.machine.clone(),
                why,
            });
        }
    }
    for m in machines.iter().filter(|m| wants_join_data(m)) {
        let fresh = newest(tokens, &m.name, now).is_some_and(|t| t.expires > now + ttl / 2);
        if !fresh {
            actions.push(TokenAction::Create {
                machine: m.name.clone(),
            });
        }
    }
    actions
}

/// `m`'s cloud-init user-data: `kprov provision --phase join` with the
/// config's settings, the cluster's API server and CA (written to the
/// node and pinned by hash), `m`'s node name and fixed address, and
/// `token` (in a 0600 file on the node, never on a command line).
pub fn user_data(
    m: &Machine,
    cluster: &Cluster,
    join: &JoinConfig,
    token: &BootstrapToken,
    provision_source: &ProvisionSource,
    provision_sha256: &Sha256Digest,
) -> Result<String, String> {
    let name = m.node_name();
    let hostname: Hostname = name
        .parse()
        .map_err(|e| format!("Machine {}: node name {name:?}: {e}", m.name))?;
    let ca_cert =
        CaCertificate::from_pem(&cluster.ca_pem).map_err(|e| format!("cluster-info's CA: {e}"))?;
    let provision = NodeConfig {
        phase: Phase::Join,
        api_server: Some(cluster.api_server.clone()),
        discovery_token_ca_cert_hash: vec![cluster.ca_hash.clone()],
        node_name: Some(name.to_string()),
        node_ip: m.ip.map(|ip| ip.to_string()),
        ..join.provision.clone()
    };
    let spec = BootSpec {
        hostname,
        ssh_authorized_keys: join.ssh_authorized_keys.clone(),
        ca_cert: Some(ca_cert),
        cloud_config_content: None,
        token: Some(token.clone()),
        provision_source: provision_source.clone(),
        provision_sha256: provision_sha256.clone(),
        provision,
    };
    spec.validate()
        .map_err(|e| format!("Machine {}: {e}", m.name))?;
    let bytes = kprov_bootconfig::render(&spec, kprov_bootconfig::Format::CloudInit, false)
        .map_err(|e| format!("Machine {}: rendering its user-data: {e}", m.name))?;
    String::from_utf8(bytes).map_err(|_| format!("Machine {}: user-data is not UTF-8", m.name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::{BootSpec as BootSpecYaml, MachineSpec, ProfileSpec};
    use k8s_openapi::ByteString;

    fn machine(name: &str, mac: &str, role: Option<&str>, node: Option<bool>) -> Machine {
        let spec = MachineSpec {
            mac_address: mac.into(),
            uuid: None,
            ip_address: Some(format!(
                "10.77.0.{}",
                30 + u8::from_str_radix(&mac[15..], 16).unwrap()
            )),
            hostname: None,
            profile: ProfileSpec {
                role: role.map(str::to_string),
                boot: BootSpecYaml {
                    image: Some("node.img.zst".into()),
                    ..BootSpecYaml::default()
                },
                user_data: None,
                installed: false,
            },
        };
        let mut m =
            crate::machine::validate_spec(std::path::Path::new("machine"), name.into(), spec, None)
                .unwrap();
        m.node = node;
        m
    }

    fn token(machine: &str, id: &str, expires: u64) -> MachineToken {
        MachineToken {
            token: format!("{id}.0123456789abcdef").parse().unwrap(),
            machine: machine.into(),
            expires,
        }
    }

    #[test]
    fn tokens_are_made_for_waiting_workers_renewed_at_half_life_and_deleted_once_their_node_is_ready(
    ) {
        let (registry, _) = Registry::build(vec![
            machine("w1", "52:54:00:00:00:01", Some("worker"), None),
            machine("w2", "52:54:00:00:00:02", Some("worker"), None),
            machine("w3", "52:54:00:00:00:03", Some("worker"), Some(true)),
            machine("w4", "52:54:00:00:00:04", Some("worker"), Some(false)),
            machine("m1", "52:54:00:00:00:05", Some("master"), None),
        ]);
        let now = 10_000;
        let tokens = [
            // w1: fresh; w2: past half its life, so a new one, the old kept.
            token("w1", "aaaaa1", now + 3000),
            token("w2", "aaaaa2", now + 1000),
            // Ready, expired, gone.
            token("w3", "aaaaa3", now + 3000),
            token("w4", "aaaaa4", now),
            token("gone", "aaaaa5", now + 3000),
        ];
        let actions = plan_tokens(&registry, &tokens, now, 3600);
        let delete = |id: &str, machine: &str, why| TokenAction::Delete {
            id: id.into(),
            machine: machine.into(),
            why,
        };
        assert_eq!(
            actions,
            [
                delete("aaaaa3", "w3", "its Node is Ready"),
                delete("aaaaa4", "w4", "it expired"),
                delete("aaaaa5", "gone", "its Machine is gone"),
                TokenAction::Create {
                    machine: "w2".into()
                },
            ]
        );
        // No token at all: one is made; a joined (w4) or master (m1)
        // Machine gets none.
        let actions = plan_tokens(&registry, &[], now, 3600);
        let made: Vec<_> = actions
            .iter()
            .map(|a| match a {
                TokenAction::Create { machine } => machine.as_str(),
                TokenAction::Delete { .. } => "delete",
            })
            .collect();
        assert_eq!(made, ["w1", "w2"]);
        assert_eq!(newest(&tokens, "w2", now).unwrap().token.id(), "aaaaa2");
        assert!(newest(&tokens, "w4", now).is_none());
    }

    #[test]
    fn only_tokens_described_as_netboots_are_read_back_with_their_expiry() {
        let secret = |description: &str| Secret {
            data: Some(
                [
                    ("token-id", "abcdef"),
                    ("token-secret", "0123456789abcdef"),
                    ("description", description),
                    ("expiration", "2026-12-03T07:00:00Z"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
            ),
            ..Secret::default()
        };
        let t = machine_token(&secret("kprov netboot: joins Machine metal1")).unwrap();
        assert_eq!(
            (t.token.id(), t.machine.as_str(), t.expires),
            ("abcdef", "metal1", 1_796_281_200)
        );
        assert!(machine_token(&secret("made by kprov for joining nodes")).is_none());
    }

    fn ca_pem() -> String {
        let key = kprov_pki::keys::PrivateKey::generate(kprov_pki::KeyType::Ecdsa).unwrap();
        let subject = kprov_pki::table::Subject {
            common_name: "kubernetes".into(),
            organizations: vec![],
        };
        kprov_pki::cert::issue_ca(&subject, &key, time::OffsetDateTime::now_utc())
            .unwrap()
            .pem()
            .to_string()
    }

    #[test]
    fn user_data_joins_the_cluster_cluster_info_names_with_the_machines_token_and_name() {
        use base64::Engine;
        let ca = ca_pem();
        let info = kprov_controlplane::bootstrap::cluster_info_kubeconfig(
            "https://10.77.0.1:6443",
            ca.as_bytes(),
        );
        let cluster = cluster_from_info(&BTreeMap::from([("kubeconfig".into(), info)])).unwrap();
        assert_eq!(cluster.api_server, "https://10.77.0.1:6443");
        assert_eq!(
            cluster.ca_hash,
            kprov_pki::ca_cert_hash(ca.as_bytes()).unwrap()
        );
        let raw: RawJoin = serde_yaml::from_str(
            "provision: {kubelet-version: v1.20.2}\nprovisionSource: file:///usr/local/bin/kprov\nprovisionSha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
        )
        .unwrap();
        let join = raw.validate().unwrap();
        let m = machine("metal1", "52:54:00:00:00:01", Some("worker"), None);
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let data = user_data(
            &m,
            &cluster,
            &join,
            &t,
            join.provision_source.as_ref().unwrap(),
            join.provision_sha256.as_ref().unwrap(),
        )
        .unwrap();
        assert!(data.starts_with("#cloud-config"), "{data}");
        let doc: serde_yaml::Value = serde_yaml::from_str(&data).unwrap();
        let files = doc["write_files"].as_sequence().unwrap();
        let file = |path: &str| {
            let f = files.iter().find(|f| f["path"] == path).unwrap();
            let content = f["content"].as_str().unwrap();
            match f["encoding"].as_str() {
                Some("b64") => String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .unwrap(),
                )
                .unwrap(),
                _ => content.to_string(),
            }
        };
        assert_eq!(file(kprov_bootconfig::paths::CA_CERT).trim(), ca.trim());
        assert_eq!(
            file(kprov_bootconfig::paths::TOKEN_FILE).trim(),
            "abcdef.0123456789abcdef"
        );
        let setup = files
            .iter()
            .map(|f| f["content"].as_str().unwrap_or_default())
            .find(|c| c.contains("--phase"))
            .unwrap_or_default()
            .to_string();
        for (flag, value) in [
            ("--phase", "join"),
            ("--kubelet-version", "v1.20.2"),
            ("--api-server", "https://10.77.0.1:6443"),
            ("--discovery-token-ca-cert-hash", cluster.ca_hash.as_str()),
            ("--node-name", "metal1"),
            ("--node-ip", "10.77.0.31"),
        ] {
            let line = format!("'{flag}' '{value}'");
            assert!(setup.contains(&line), "{line} in {setup}");
        }
        assert!(!setup.contains("0123456789abcdef"), "{setup}");
    }

    #[test]
    fn a_bad_join_section_names_its_key() {
        for (text, key) in [
            ("provision: {kubelet-versoin: v1.20.2}", "join.provision"),
            (
                "provision: {control-plane: true}",
                "join.provision.control-plane",
            ),
            ("provisionSource: ftp://x/kprov", "join.provisionSource"),
            ("provisionSha256: abc", "join.provisionSha256"),
            ("tokenTtlSeconds: 5", "join.tokenTtlSeconds"),
            ("sshAuthorizedKeys: [nope]", "join.sshAuthorizedKeys[0]"),
        ] {
            let raw: RawJoin = serde_yaml::from_str(text).unwrap();
            assert_eq!(raw.validate().unwrap_err().0, key, "{text}");
        }
    }
}
