//! Kubeconfig files as typed structs (client-go's `clientcmd/api/v1`
//! `Config`, the fields kubeadm sets), rendered to YAML and read back.
//!
//! kubeadm writes one cluster (`kubernetes`), one user named after the
//! client certificate's common name, and one context `<user>@kubernetes`
//! that is current; the CA certificate and the client certificate and key
//! are embedded as base64 PEM.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::table::CLUSTER_NAME;

/// A kubeconfig file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// The contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The name of the context in use.
    #[serde(default)]
    pub current_context: String,
    /// Always `Config`.
    pub kind: String,
    /// Client preferences; kubeadm writes an empty map.
    #[serde(default)]
    pub preferences: Preferences,
    /// The users (credentials).
    #[serde(default)]
    pub users: Vec<NamedUser>,
}

/// Client preferences (none set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {}

/// A cluster with its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its name.
    pub name: String,
}

/// How to reach and trust an API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Base64 of the PEM CA certificate(s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_authority_data: String,
    /// The API server URL.
    pub server: String,
    /// The name the server's certificate is checked against instead of
    /// the URL's host (a node-local balancer on 127.0.0.1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_server_name: String,
}

/// A context with its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context.
    pub context: Context,
    /// Its name.
    pub name: String,
}

/// A cluster and a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The cluster's name.
    pub cluster: String,
    /// The user's name.
    pub user: String,
}

/// A user with its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    pub user: User,
}

/// Credentials: a client certificate (embedded, or files as the kubelet
/// writes them after TLS bootstrap), or a bearer token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Base64 of the PEM client certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_data: String,
    /// Base64 of the PEM client key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_data: String,
    /// Path of the PEM client certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// Path of the PEM client key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key: String,
    /// A bearer token (a bootstrap token in bootstrap-kubelet.conf).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("client_certificate_data", &self.client_certificate_data)
            .field("client_key_data", &"<redacted>")
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a kubeconfig could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// Not YAML of a kubeconfig.
    #[error("does not parse as a kubeconfig: {reason}")]
    Parse {
        /// What the parser said.
        reason: String,
    },
    /// The current context, its cluster or its user is missing.
    #[error("{what} {name:?} is not defined in it")]
    Missing {
        /// "current context", "cluster" or "user".
        what: &'static str,
        /// The name looked for.
        name: String,
    },
    /// Embedded data that is not base64.
    #[error("{field} is not base64")]
    Base64 {
        /// The field.
        field: &'static str,
    },
    /// Rendering failed (not expected to happen).
    #[error("rendering YAML: {reason}")]
    Render {
        /// What the serialiser said.
        reason: String,
    },
}

/// What a kubeconfig says through its current context, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The API server URL.
    pub server: String,
    /// The PEM CA data.
    pub ca_pem: Vec<u8>,
    /// The PEM client certificate.
    pub client_cert_pem: Vec<u8>,
    /// The PEM client key.
    pub client_key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Kubeconfig {
    /// A kubeconfig as kubeadm writes it for a client certificate whose
    /// common name is `user`.
    pub fn with_client_certificate(
        server: &str,
        user: &str,
        ca_pem: &[u8],
        client_cert_pem: &[u8],
        client_key_pem: &[u8],
    ) -> Self {
        let context = format!("{user}@{CLUSTER_NAME}");
        Self {
            api_version: "v1".into(),
            clusters: vec![NamedCluster {
                cluster: Cluster {
                    certificate_authority_data: BASE64.encode(ca_pem),
                    server: server.into(),
                    tls_server_name: String::new(),
                },
                name: CLUSTER_NAME.into(),
            }],
            contexts: vec![NamedContext {
                context: Context {
                    cluster: CLUSTER_NAME.into(),
                    user: user.into(),
                },
                name: context.clone(),
            }],
            current_context: context,
            kind: "Config".into(),
            preferences: Preferences {},
            users: vec![NamedUser {
                name: user.into(),
                user: User {
                    client_certificate_data: BASE64.encode(client_cert_pem),
                    client_key_data: BASE64.encode(client_key_pem),
                    ..User::default()
                },
            }],
        }
    }

    /// A kubeconfig that authenticates with a bearer token, as kubeadm
    /// writes bootstrap-kubelet.conf (user `tls-bootstrap-token-user`).
    pub fn with_token(server: &str, user: &str, ca_pem: &[u8], token: &str) -> Self {
        let mut config = Self::with_client_certificate(server, user, ca_pem, b"", b"");
        config.users[0].user = User {
            token: token.to_string(),
            ..User::default()
        };
        config
    }

    /// The same kubeconfig, checking the server's certificate against
    /// `name` (every cluster).
    pub fn with_tls_server_name(mut self, name: &str) -> Self {
        for c in &mut self.clusters {
            c.cluster.tls_server_name = name.to_string();
        }
        self
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        serde_yaml::to_string(self).map_err(|e| KubeconfigError::Render {
            reason: e.to_string(),
        })
    }

    /// Reads a kubeconfig's YAML.
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, KubeconfigError> {
        serde_yaml::from_slice(bytes).map_err(|e| KubeconfigError::Parse {
            reason: e.to_string(),
        })
    }

    /// The current context's cluster and user names.
    fn current_context(&self) -> Result<&Context, KubeconfigError> {
        self.contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .map(|c| &c.context)
            .ok_or_else(|| KubeconfigError::Missing {
                what: "current context",
                name: self.current_context.clone(),
            })
    }

    /// The server, CA and client credentials of the current context.
    pub fn current_credentials(&self) -> Result<Credentials, KubeconfigError> {
        let (server, ca_pem) = self.current_cluster()?;
        let context = self.current_context()?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == context.user)
            .ok_or_else(|| KubeconfigError::Missing {
                what: "user",
                name: context.user.clone(),
            })?;
        Ok(Credentials {
            server,
            ca_pem,
            client_cert_pem: decode(
                "client-certificate-data",
                &user.user.client_certificate_data,
            )?,
            client_key_pem: decode("client-key-data", &user.user.client_key_data)?,
        })
    }

    /// The server and CA of the current context, without credentials.
    pub fn current_cluster(&self) -> Result<(String, Vec<u8>), KubeconfigError> {
        let context = self.current_context()?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .ok_or_else(|| KubeconfigError::Missing {
                what: "cluster",
                name: context.cluster.clone(),
            })?;
        Ok((
            cluster.cluster.server.clone(),
            decode(
                "certificate-authority-data",
                &cluster.cluster.certificate_authority_data,
            )?,
        ))
    }
}

fn decode(field: &'static str, data: &str) -> Result<Vec<u8>, KubeconfigError> {
    BASE64
        .decode(data.trim())
        .map_err(|_| KubeconfigError::Base64 { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_renders_in_kubeadms_shape_and_reads_back() {
        let kc = Kubeconfig::with_client_certificate(
            "https://cp.example.test:6443",
            "kubernetes-admin",
            b"CA",
            b"CERT",
            b"KEY",
        );
        let yaml = kc.to_yaml().unwrap();
        assert_eq!(
            yaml,
            "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://cp.example.test:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"
        );
        let back = Kubeconfig::from_yaml(yaml.as_bytes()).unwrap();
        assert_eq!(back, kc);
        let creds = back.current_credentials().unwrap();
        assert_eq!(creds.server, "https://cp.example.test:6443");
        assert_eq!(
            (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem),
            (b"CA".to_vec(), b"CERT".to_vec(), b"KEY".to_vec())
        );
    }

    #[test]
    fn broken_kubeconfigs_say_what_is_missing() {
        let mut kc = Kubeconfig::with_client_certificate("https://x:6443", "u", b"CA", b"C", b"K");
        kc.current_context = "other".into();
        assert_eq!(
            kc.current_credentials().unwrap_err().to_string(),
            "current context \"other\" is not defined in it"
        );
        let mut kc = Kubeconfig::with_client_certificate("https://x:6443", "u", b"CA", b"C", b"K");
        kc.users.clear();
        assert_eq!(
            kc.current_credentials().unwrap_err().to_string(),
            "user \"u\" is not defined in it"
        );
        let mut kc = Kubeconfig::with_client_certificate("https://x:6443", "u", b"CA", b"C", b"K");
        kc.clusters[0].cluster.certificate_authority_data = "!!".into();
        assert_eq!(
            kc.current_credentials().unwrap_err().to_string(),
            "certificate-authority-data is not base64"
        );
        let err = Kubeconfig::from_yaml(b"- a list").unwrap_err().to_string();
        assert!(err.starts_with("does not parse as a kubeconfig: "), "{err}");
    }

    #[test]
    fn a_token_kubeconfig_carries_the_token_and_no_certificate() {
        let kc = Kubeconfig::with_token(
            "https://10.0.0.1:6443",
            "tls-bootstrap-token-user",
            b"CA",
            "abcdef.0123456789abcdef",
        );
        let yaml = kc.to_yaml().unwrap();
        assert!(
            yaml.contains("    token: abcdef.0123456789abcdef\n"),
            "{yaml}"
        );
        assert!(!yaml.contains("client-certificate"), "{yaml}");
        assert!(!format!("{kc:?}").contains("0123456789abcdef"));
        assert_eq!(
            Kubeconfig::from_yaml(yaml.as_bytes())
                .unwrap()
                .current_cluster()
                .unwrap(),
            ("https://10.0.0.1:6443".to_string(), b"CA".to_vec())
        );
    }

    #[test]
    fn debug_output_redacts_the_client_key() {
        let kc = Kubeconfig::with_client_certificate("https://x:6443", "u", b"CA", b"C", b"SECRET");
        let shown = format!("{kc:?}");
        assert!(!shown.contains(&BASE64.encode(b"SECRET")), "{shown}");
    }
}
