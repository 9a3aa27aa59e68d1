//! Stacked etcd's membership over its JSON gateway (`/v3/cluster/member/*`,
//! `/v3/maintenance/status`), with a client certificate signed by etcd's
//! CA. The decisions are kprov-controlplane's `etcd` module; this sends
//! the requests, trying each endpoint in turn until one answers.

use std::time::Duration;

use kprov_controlplane::etcd::{AddRequest, IdRequest, Member, MembersResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one request may take: membership changes wait for the raft
/// log to commit, which needs a quorum.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client could not be made (bad certificates).
    #[error("etcd client: {0}")]
    Client(String),
    /// No endpoint answered.
    #[error("{what}: no etcd endpoint answered ({})", .tried.join("; "))]
    Unreachable {
        /// What kprov was doing.
        what: String,
        /// Each endpoint and its error.
        tried: Vec<String>,
    },
    /// An endpoint answered with an error.
    #[error("{what}: etcd at {endpoint} answered: {message}")]
    Refused {
        /// What kprov was doing.
        what: String,
        /// The endpoint.
        endpoint: String,
        /// etcd's message.
        message: String,
    },
}

impl EtcdError {
    /// etcd refused a membership change for now: a member has not been
    /// connected long enough (it came back moments ago), or no endpoint
    /// answered. Worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            EtcdError::Unreachable { .. } => true,
            EtcdError::Refused { message, .. } => {
                message.contains("unhealthy cluster") || message.contains("too many requests")
            }
            EtcdError::Client(_) => false,
        }
    }

    /// etcd refused to promote a learner that has not caught up yet.
    pub fn learner_not_ready(&self) -> bool {
        matches!(self, EtcdError::Refused { message, .. } if message.contains("in sync with leader"))
    }
}

/// A client of one etcd cluster.
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

#[derive(serde::Deserialize)]
struct GatewayError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

impl EtcdClient {
    /// A client of `endpoints` (`https://HOST:2379`), trusting `ca_pem`
    /// and authenticating with `cert_pem` and `key_pem`.
    pub fn new(
        endpoints: Vec<String>,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, EtcdError> {
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| EtcdError::Client(format!("etcd's CA: {e}")))?;
        let mut identity_pem = cert_pem.to_vec();
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(key_pem);
        let identity = reqwest::Identity::from_pem(&identity_pem)
            .map_err(|e| EtcdError::Client(format!("the client certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .connect_timeout(Duration::from_secs(3))
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| EtcdError::Client(e.to_string()))?;
        Ok(Self { http, endpoints })
    }

    /// The same client, for other endpoints.
    pub fn with_endpoints(&self, endpoints: Vec<String>) -> Self {
        Self {
            http: self.http.clone(),
            endpoints,
        }
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &B,
    ) -> Result<R, EtcdError> {
        let body = serde_json::to_vec(body).map_err(|e| EtcdError::Client(e.to_string()))?;
        let mut tried = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{}{path}", endpoint.trim_end_matches('/'));
            let request = self
                .http
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    tried.push(format!("{endpoint}: {}", error_chain(&e)));
                    continue;
                }
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    tried.push(format!("{endpoint}: {}", error_chain(&e)));
                    continue;
                }
            };
            if !status.is_success() {
                let message = serde_json::from_str::<GatewayError>(&text)
                    .map(|g| {
                        if g.message.is_empty() {
                            g.error
                        } else {
                            g.message
                        }
                    })
                    .unwrap_or_else(|_| format!("HTTP {status}: {}", text.trim()));
                return Err(EtcdError::Refused {
                    what: what.to_string(),
                    endpoint: endpoint.clone(),
                    message,
                });
            }
            return serde_json::from_str(&text).map_err(|e| EtcdError::Refused {
                what: what.to_string(),
                endpoint: endpoint.clone(),
                message: format!("an answer that does not parse: {e}"),
            });
        }
        Err(EtcdError::Unreachable {
            what: what.to_string(),
            tried,
        })
    }

    /// Every member.
    pub async fn members(&self) -> Result<Vec<Member>, EtcdError> {
        let r: MembersResponse = self
            .call(
                "listing etcd's members",
                "/v3/cluster/member/list",
                &serde_json::json!({}),
            )
            .await?;
        Ok(r.members)
    }

    /// Adds a member reached at `peer_url`, as a learner when asked;
    /// returns it and every member after the change.
    pub async fn add(
        &self,
        peer_url: &str,
        learner: bool,
    ) -> Result<(Member, Vec<Member>), EtcdError> {
        let what = format!("adding etcd member {peer_url}");
        let r: MembersResponse = self
            .call(
                &what,
                "/v3/cluster/member/add",
                &AddRequest {
                    peer_urls: vec![peer_url.to_string()],
                    is_learner: learner,
                },
            )
            .await?;
        let added = r.member.ok_or_else(|| EtcdError::Refused {
            what,
            endpoint: self.endpoints.join(","),
            message: "no member in the answer".into(),
        })?;
        Ok((added, r.members))
    }

    /// Promotes a learner to a voting member.
    pub async fn promote(&self, id: u64) -> Result<(), EtcdError> {
        let _: MembersResponse = self
            .call(
                &format!("promoting etcd learner {id:x}"),
                "/v3/cluster/member/promote",
                &IdRequest { id },
            )
            .await?;
        Ok(())
    }

    /// Removes a member.
    pub async fn remove(&self, id: u64) -> Result<(), EtcdError> {
        let _: MembersResponse = self
            .call(
                &format!("removing etcd member {id:x}"),
                "/v3/cluster/member/remove",
                &IdRequest { id },
            )
            .await?;
        Ok(())
    }

    /// Whether the member at `client_url` answers a status request, and
    /// its ID when it does.
    pub async fn status_of(&self, client_url: &str) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct Header {
            #[serde(default)]
            member_id: String,
        }
        #[derive(serde::Deserialize)]
        struct Status {
            header: Header,
        }
        let one = self.with_endpoints(vec![client_url.to_string()]);
        let status: Status = one
            .call(
                "etcd status",
                "/v3/maintenance/status",
                &serde_json::json!({}),
            )
            .await
            .ok()?;
        status.header.member_id.parse().ok()
    }
}

/// An error with its causes, which reqwest keeps in its source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
