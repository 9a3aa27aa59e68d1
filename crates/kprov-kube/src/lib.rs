//! The thin layer that talks to the API server (kube-rs). Objects and
//! decisions are made by the pure kprov-controlplane; here they are
//! applied and read:
//!
//! - [`apply`]: API plans applied server-side, each object reported with
//!   kprov-plan's `Outcome`; `--dry-run` asks the API server (server-side
//!   dry run) what would change;
//! - tokens ([`create_token`], [`list_tokens`], [`delete_token`],
//!   [`find_token`]) and cluster-info's signatures;
//! - reads for joining nodes that trust nothing yet
//!   ([`discover_cluster_info`], [`probe_token`], [`list_csrs`]);
//! - the control plane's state ([`readyz`], [`mark_control_plane`]) and the
//!   pod network's inputs ([`pod_network`], [`pod_ranges`]);
//! - what a joining master reads ([`get_config_map_with_token`],
//!   [`etcd_client_urls`]) and [`etcd`], stacked etcd's membership;
//! - the API servers that serve ([`kubernetes_endpoints`]), for `kprov lb`.

pub mod apply;
pub mod etcd;
pub mod pod_ranges;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Secret};
use kprov_core::BootstrapToken;
use kprov_plan::{Outcome, ResourceReport};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
pub use kube::Client;
use kube::Config;

use kprov_controlplane::bootstrap::{self, CLUSTER_INFO, CLUSTER_INFO_NAMESPACE, KUBECONFIG_KEY};
use kprov_controlplane::token::{self, TokenInfo, TokenSpec, NAMESPACE};

/// The field manager kprov's server-side applies use.
pub const FIELD_MANAGER: &str = "kprov";

/// Why a call to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What kprov was doing.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A token id already in use.
    #[error(
        "a bootstrap token with id {0} exists already; delete it first or choose another token"
    )]
    TokenExists(String),
    /// cluster-info is missing or broken.
    #[error("{0}")]
    ClusterInfo(String),
    /// No client for a joining node's request (a bad URL or CA, or no
    /// connection).
    #[error("connecting to {server}: {reason}")]
    Connect {
        /// The API server's URL.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

impl ApiError {
    /// The API server could not be reached or is not serving yet (a
    /// transport error or a 5xx answer), as opposed to refusing the
    /// request: worth trying again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ApiError::Request {
                source: kube::Error::Api(status),
                ..
            } => status.code >= 500,
            ApiError::Request { .. } => true,
            _ => false,
        }
    }

    /// The API server refused the client (401 or 403): credentials it does
    /// not accept, or RBAC that does not (yet) allow the request.
    pub fn is_refused(&self) -> bool {
        matches!(self, ApiError::Request { source: kube::Error::Api(status), .. }
            if status.code == 401 || status.code == 403)
    }
}

pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError::Request { what, source }
}

/// A client from a kubeconfig file (its current context).
pub async fn client(kubeconfig: &Path) -> Result<Client, ApiError> {
    let err = |reason: String| ApiError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        reason,
    };
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    connect(config).await.map_err(err)
}

/// A client from the pod's service account (the API server's address
/// from the environment Kubernetes sets in every pod).
pub async fn client_in_cluster() -> Result<Client, ApiError> {
    let err = |reason: String| ApiError::Kubeconfig {
        path: "(in-cluster service account)".into(),
        reason,
    };
    let config = Config::incluster().map_err(|e| err(e.to_string()))?;
    connect(config).await.map_err(err)
}

/// A client for `config`. kube's connector would resolve a host name with
/// getaddrinfo, that is glibc's NSS, which the static kprov binary cannot
/// load: a name is resolved here (kprov-resolve: /etc/hosts, then DNS) and
/// the client connects to the address, verifying TLS against the name.
async fn connect(mut config: Config) -> Result<Client, String> {
    let pinned = kprov_resolve::pin_host(&kprov_resolve::System::default(), &config.cluster_url)
        .await
        .map_err(|e| e.to_string())?;
    if let Some((url, name)) = pinned {
        config.cluster_url = url;
        config.tls_server_name.get_or_insert(name);
    }
    Client::try_from(config).map_err(|e| e.to_string())
}

/// The node a kubelet's kubeconfig authenticates as: the
/// `system:node:NAME` common name of its client certificate (embedded, or
/// the file it points at, as after TLS bootstrap).
pub fn kubelet_node_name(kubeconfig: &Path) -> Result<String, ApiError> {
    use base64::Engine;
    let err = |reason: String| ApiError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        reason,
    };
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let user = config
        .current_context
        .as_ref()
        .and_then(|c| config.contexts.iter().find(|n| &n.name == c))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .ok_or_else(|| err("no current context with a user".into()))?;
    let auth = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .ok_or_else(|| err(format!("no user {user:?}")))?;
    let pem = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| err(format!("client-certificate-data is not base64: {e}")))?,
        (None, Some(file)) => std::fs::read(file)
            .map_err(|e| err(format!("reading client-certificate {file}: {e}")))?,
        (None, None) => return Err(err("the user has no client certificate".into())),
    };
    let cert = kprov_pki::cert::Certificate::from_pem(&pem)
        .map_err(|e| err(format!("client certificate: {e}")))?;
    let name = &cert.info().subject.common_name;
    name.strip_prefix("system:node:")
        .map(str::to_string)
        .ok_or_else(|| {
            err(format!(
                "the client certificate is for {name:?}, not a node (system:node:NAME)"
            ))
        })
}

/// The pod network the cluster's kprov-pod-network ConfigMap names, and
/// the cluster's pod range it gives (its `network` and `podCIDR`), or None
/// when there is no such ConfigMap (the cluster runs a network that needs
/// nothing from kprov on the nodes).
pub async fn pod_network(client: &Client) -> Result<Option<(String, Option<String>)>, ApiError> {
    let name = kprov_controlplane::addons::POD_NETWORK_CONFIG_MAP;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let map = maps
        .get_opt(name)
        .await
        .map_err(request(format!("reading ConfigMap kube-system/{name}")))?;
    Ok(map.map(|m| {
        let data = m.data.unwrap_or_default();
        (
            data.get("network").cloned().unwrap_or_default(),
            data.get("podCIDR").cloned(),
        )
    }))
}

/// Creates a token's Secret and, for a signing token, adds its signature
/// to cluster-info right away (the controller manager's bootstrapsigner
/// would add the same one, later). Returns the Secret as stored (with its
/// uid, which owner references name).
pub async fn create_token(
    client: &Client,
    spec: &TokenSpec,
    now: time::OffsetDateTime,
) -> Result<Secret, ApiError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let name = token::secret_name(spec.token.id());
    let exists = secrets
        .get_opt(&name)
        .await
        .map_err(request(format!("reading Secret {NAMESPACE}/{name}")))?;
    if exists.is_some() {
        return Err(ApiError::TokenExists(spec.token.id().into()));
    }
    let created = secrets
        .create(&PostParams::default(), &token::secret(spec, now))
        .await
        .map_err(request(format!("creating Secret {NAMESPACE}/{name}")))?;
    if spec.signs() {
        sign_cluster_info(client, &spec.token).await?;
    }
    Ok(created)
}

/// A Secret, or None when there is none of that name. Its data are
/// secrets: callers never log them.
pub async fn get_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, ApiError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets
        .get_opt(name)
        .await
        .map_err(request(format!("reading Secret {namespace}/{name}")))
}

/// Stores `secret` whole: created, or replaced (data, type and owner
/// references as given, nothing kept from the old one). Returns whether it
/// existed before.
pub async fn put_secret(client: &Client, secret: &Secret) -> Result<bool, ApiError> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or("default");
    let name = secret.metadata.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("Secret {namespace}/{name}");
    let current = secrets
        .get_opt(&name)
        .await
        .map_err(request(format!("reading {what}")))?;
    match current {
        None => {
            secrets
                .create(&PostParams::default(), secret)
                .await
                .map_err(request(format!("creating {what}")))?;
            Ok(false)
        }
        Some(current) => {
            let mut replacement = secret.clone();
            replacement.metadata.resource_version = current.metadata.resource_version;
            secrets
                .replace(&name, &PostParams::default(), &replacement)
                .await
                .map_err(request(format!("replacing {what}")))?;
            Ok(true)
        }
    }
}

/// A client as a joining node has one: a bootstrap `token`, trusting
/// only `ca_pem`.
async fn token_client(
    server: &str,
    ca_pem: &[u8],
    token: &BootstrapToken,
) -> Result<Client, ApiError> {
    use kprov_controlplane::discovery::Probe;
    join_client(server, Some((ca_pem, &token.expose_secret())))
        .await
        .map_err(|p| ApiError::Connect {
            server: server.to_string(),
            reason: match p {
                Probe::Unreachable(r) | Probe::Untrusted(r) | Probe::Unauthorized(r) => r,
                Probe::Ok | Probe::Skipped => "no client".into(),
            },
        })
}

/// A Secret read as a joining node reads it: with a bootstrap `token`,
/// trusting only `ca_pem`. None when there is none of that name.
pub async fn get_secret_with_token(
    server: &str,
    ca_pem: &[u8],
    token: &BootstrapToken,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, ApiError> {
    let client = token_client(server, ca_pem, token).await?;
    get_secret(&client, namespace, name).await
}

/// A ConfigMap read with a bootstrap `token`, trusting only `ca_pem`
/// (kubeadm-config, for a joining master). None when there is none.
pub async fn get_config_map_with_token(
    server: &str,
    ca_pem: &[u8],
    token: &BootstrapToken,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>, ApiError> {
    let client = token_client(server, ca_pem, token).await?;
    get_config_map(&client, namespace, name).await
}

/// A ConfigMap; None when there is none of that name.
pub async fn get_config_map(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>, ApiError> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(request(format!("reading ConfigMap {namespace}/{name}")))
}

/// A client with the credentials of `kubeconfig` but for `server` (a
/// master that joins has an admin kubeconfig for its own API server,
/// which is not running yet).
pub async fn client_at(kubeconfig: &Path, server: &str) -> Result<Client, ApiError> {
    let err = |reason: String| ApiError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        reason,
    };
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    config.cluster_url = server
        .parse()
        .map_err(|e: http::uri::InvalidUri| err(format!("server {server}: {e}")))?;
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(10));
    connect(config).await.map_err(err)
}

/// The client URLs of the cluster's etcd members: from the annotation
/// on their static pods (kubeadm's way since v1.22, and kprov's), and
/// each API server's address on etcd's client port, as stacked etcd runs
/// beside every API server (a master's mirror pod may not show yet).
pub async fn etcd_client_urls(client: &Client) -> Result<Vec<String>, ApiError> {
    use k8s_openapi::api::core::v1::Pod;
    use kprov_controlplane::etcd::{client_url, CLIENT_URLS_ANNOTATION};
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("component=etcd,tier=control-plane"))
        .await
        .map_err(request("listing etcd's static pods"))?;
    let mut urls: Vec<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.annotations.as_ref())
        .filter_map(|a| a.get(CLIENT_URLS_ANNOTATION))
        .flat_map(|v| v.split(',').map(|u| u.trim().to_string()))
        .filter(|u| !u.is_empty())
        .collect();
    // A kubelet makes its mirror pods late (v1.20: up to a minute after
    // the static pod runs), so some masters may have none yet: the API
    // servers' addresses (stacked etcd beside each) are added always.
    let endpoints = kubernetes_endpoints(client).await?;
    urls.extend(
        endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.ip.parse().ok())
            .map(client_url),
    );
    urls.sort();
    urls.dedup();
    Ok(urls)
}

async fn sign_cluster_info(client: &Client, token: &BootstrapToken) -> Result<(), ApiError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), CLUSTER_INFO_NAMESPACE);
    let what = format!("{CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO}");
    let current = maps
        .get_opt(CLUSTER_INFO)
        .await
        .map_err(request(format!("reading ConfigMap {what}")))?
        .ok_or_else(|| {
            ApiError::ClusterInfo(format!(
                "ConfigMap {what} does not exist: run `kprov init phase bootstrap-token` first"
            ))
        })?;
    let kubeconfig = current
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .ok_or_else(|| ApiError::ClusterInfo(format!("ConfigMap {what} has no kubeconfig")))?;
    let signature = kprov_controlplane::jws::sign_detached(kubeconfig, token);
    let patch = serde_json::json!({
        "data": { bootstrap::signature_key(token.id()): signature }
    });
    maps.patch(CLUSTER_INFO, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(request(format!("signing ConfigMap {what}")))?;
    Ok(())
}

/// Every bootstrap token's Secret. Their data are secrets: callers never
/// log them.
pub async fn token_secrets(client: &Client) -> Result<kube::api::ObjectList<Secret>, ApiError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let params = ListParams::default().fields(&format!("type={}", token::SECRET_TYPE));
    secrets
        .list(&params)
        .await
        .map_err(request(format!("listing token Secrets in {NAMESPACE}")))
}

/// Every bootstrap token's public facts.
pub async fn list_tokens(client: &Client) -> Result<Vec<TokenInfo>, ApiError> {
    let list = token_secrets(client).await?;
    let mut tokens: Vec<TokenInfo> = list.items.iter().filter_map(token::token_info).collect();
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tokens)
}

/// Deletes a token and its cluster-info signature; false if there was no
/// such token.
pub async fn delete_token(client: &Client, token_id: &str) -> Result<bool, ApiError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let name = token::secret_name(token_id);
    let found = match secrets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(e) => return Err(request(format!("deleting Secret {NAMESPACE}/{name}"))(e)),
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), CLUSTER_INFO_NAMESPACE);
    let patch = serde_json::json!({ "data": { bootstrap::signature_key(token_id): null } });
    match maps
        .patch(CLUSTER_INFO, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            return Err(request(format!(
                "removing token {token_id}'s signature from {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO}"
            ))(e))
        }
    }
    Ok(found)
}

/// cluster-info's data, read as an anonymous client would (the caller
/// supplies the client).
pub async fn cluster_info_data(client: &Client) -> Result<BTreeMap<String, String>, ApiError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), CLUSTER_INFO_NAMESPACE);
    let cm = maps.get(CLUSTER_INFO).await.map_err(request(format!(
        "reading {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO}"
    )))?;
    Ok(cm.data.unwrap_or_default())
}

/// The `default/kubernetes` Endpoints: every API server that serves.
pub async fn kubernetes_endpoints(client: &Client) -> Result<Endpoints, ApiError> {
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .map_err(request("reading the Endpoints default/kubernetes"))
}

/// Whether the API server answers `/readyz` with ok; the error says what
/// it answered instead.
pub async fn readyz(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => Ok(()),
        Ok(text) => Err(kprov_controlplane::diagnose::readyz_summary(&text)),
        Err(e) => Err(kprov_controlplane::diagnose::readyz_summary(&e.to_string())),
    }
}

/// Labels and taints a registered Node as a control-plane node, the way
/// kubeadm of `version` does; None while the Node is not registered yet.
pub async fn mark_control_plane(
    client: &Client,
    node_name: &str,
    version: &kprov_core::KubernetesVersion,
    dry_run: bool,
) -> Result<Option<ResourceReport>, ApiError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let what = format!("Node/{node_name}");
    let Some(node) = nodes
        .get_opt(node_name)
        .await
        .map_err(request(format!("reading {what}")))?
    else {
        return Ok(None);
    };
    // The master label and taint gave way to control-plane ones in v1.24.
    let (labels, taint_key): (&[&str], &str) = if version.at_least(1, 24) {
        (
            &["node-role.kubernetes.io/control-plane"],
            "node-role.kubernetes.io/control-plane",
        )
    } else {
        (
            &[
                "node-role.kubernetes.io/master",
                "node-role.kubernetes.io/control-plane",
            ],
            "node-role.kubernetes.io/master",
        )
    };
    let has_labels = labels.iter().all(|l| {
        node.metadata
            .labels
            .as_ref()
            .is_some_and(|m| m.contains_key(*l))
    });
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let has_taint = taints
        .iter()
        .any(|t| t.key == taint_key && t.effect == "NoSchedule");
    let description = format!("{what} labelled and tainted as a control-plane node");
    if has_labels && has_taint {
        return Ok(Some(ResourceReport {
            id: what,
            description,
            outcome: Outcome::Unchanged,
            detail: None,
        }));
    }
    let detail = Some(
        match (has_labels, has_taint) {
            (false, false) => "labels and taint missing",
            (false, true) => "labels missing",
            _ => "taint missing",
        }
        .to_string(),
    );
    if dry_run {
        return Ok(Some(ResourceReport {
            id: what,
            description,
            outcome: Outcome::Changed,
            detail,
        }));
    }
    if !has_taint {
        taints.push(k8s_openapi::api::core::v1::Taint {
            key: taint_key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    let label_map: BTreeMap<&str, &str> = labels.iter().map(|l| (*l, "")).collect();
    let patch = serde_json::json!({
        "metadata": { "labels": label_map },
        "spec": { "taints": taints },
    });
    nodes
        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(request(format!("labelling and tainting {what}")))?;
    Ok(Some(ResourceReport {
        id: what,
        description,
        outcome: Outcome::Changed,
        detail,
    }))
}

/// A token `kprov init` made earlier that is still valid, with its secret,
/// so that a re-run prints the same join command instead of making another.
pub async fn find_token(
    client: &Client,
    description: &str,
    now: time::OffsetDateTime,
) -> Result<Option<BootstrapToken>, ApiError> {
    let list = token_secrets(client).await?;
    for secret in &list.items {
        let Some(info) = token::token_info(secret) else {
            continue;
        };
        let valid = info.expires.as_deref().is_some_and(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| t > now + std::time::Duration::from_secs(600))
        });
        if info.description != description || !valid {
            continue;
        }
        let secret_part = secret
            .data
            .as_ref()
            .and_then(|d| d.get("token-secret"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        if let Some(Ok(t)) = secret_part.map(|s| format!("{}.{s}", info.id).parse()) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// A client for `server` with no credentials and no server verification,
/// for the one read whose answer is verified by its signature instead
/// (cluster-info), or with `ca_pem` trusted and `token` as credentials.
async fn join_client(
    server: &str,
    trust: Option<(&[u8], &str)>,
) -> Result<Client, kprov_controlplane::discovery::Probe> {
    use kprov_controlplane::discovery::Probe;
    let uri: http::Uri = server
        .parse()
        .map_err(|e: http::uri::InvalidUri| Probe::Unreachable(e.to_string()))?;
    let mut config = Config::new(uri);
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(10));
    match trust {
        None => config.accept_invalid_certs = true,
        Some((ca_pem, token)) => {
            let ders = pem_certificates(ca_pem);
            if ders.is_empty() {
                return Err(Probe::Untrusted("the CA has no PEM certificate".into()));
            }
            config.root_cert = Some(ders);
            config.auth_info.token = Some(token.to_string().into());
        }
    }
    connect(config).await.map_err(Probe::Unreachable)
}

/// The DER bodies of the PEM certificates in `pem`.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b) = body.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b) {
                    out.push(der);
                }
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// A failed request as a probe result: 401, a TLS failure, or no answer.
fn classify(e: &kube::Error) -> kprov_controlplane::discovery::Probe {
    use kprov_controlplane::discovery::Probe;
    if let kube::Error::Api(status) = e {
        if status.code == 401 {
            return Probe::Unauthorized(format!("401 {}", status.message));
        }
        return Probe::Ok;
    }
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("invalid peer certificate")
        || lower.contains("unknownissuer")
        || lower.contains("certificate verify")
    {
        Probe::Untrusted(chain)
    } else {
        Probe::Unreachable(chain)
    }
}

/// Reads cluster-info anonymously, without verifying the server (its data
/// are verified by the token's signature afterwards).
pub async fn discover_cluster_info(
    server: &str,
) -> Result<BTreeMap<String, String>, kprov_controlplane::discovery::Probe> {
    let client = join_client(server, None).await?;
    let maps: Api<ConfigMap> = Api::namespaced(client, CLUSTER_INFO_NAMESPACE);
    match maps.get(CLUSTER_INFO).await {
        Ok(cm) => Ok(cm.data.unwrap_or_default()),
        Err(kube::Error::Api(status)) => {
            Err(kprov_controlplane::discovery::Probe::Unreachable(format!(
                "reading {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO}: {} {}",
                status.code, status.message
            )))
        }
        Err(e) => Err(classify(&e)),
    }
}

/// Asks the API server for `/version` with `token`, trusting only
/// `ca_pem`: Ok when the token authenticates, else why not.
pub async fn probe_token(
    server: &str,
    ca_pem: &[u8],
    token: &str,
) -> kprov_controlplane::discovery::Probe {
    let client = match join_client(server, Some((ca_pem, token))).await {
        Ok(c) => c,
        Err(p) => return p,
    };
    match client.apiserver_version().await {
        Ok(_) => kprov_controlplane::discovery::Probe::Ok,
        Err(e) => classify(&e),
    }
}

/// The node-client certificate requests the cluster holds, as (name,
/// requestor, decided), read with a bootstrap token (which may list
/// them).
pub async fn list_csrs(
    server: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<Vec<(String, String, bool)>, kprov_controlplane::discovery::Probe> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let client = join_client(server, Some((ca_pem, token))).await?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| classify(&e))?;
    Ok(list
        .items
        .into_iter()
        .map(|csr| {
            let decided = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| !c.is_empty());
            (
                csr.metadata.name.unwrap_or_default(),
                csr.spec.username.unwrap_or_default(),
                decided,
            )
        })
        .collect())
}

/// The machine ID the Node `name` was last registered from (empty when
/// it has none yet); None when there is no such Node. Asked with the
/// kubelet's own credentials (`kubeconfig`).
pub async fn node_machine_id(kubeconfig: &Path, name: &str) -> Result<Option<String>, ApiError> {
    let client = client(kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client);
    Ok(nodes
        .get_opt(name)
        .await
        .map_err(request(format!("reading Node/{name}")))?
        .map(|n| {
            n.status
                .and_then(|s| s.node_info)
                .map(|i| i.machine_id)
                .unwrap_or_default()
        }))
}
