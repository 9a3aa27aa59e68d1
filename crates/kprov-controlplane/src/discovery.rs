//! Joining a cluster: which CA to trust, and why a join failed.
//!
//! Trust comes from `--ca-cert` (checked against the pinned hashes when
//! both are given) or from token discovery: the anonymous, unverified
//! read of kube-public/cluster-info is signed with the token (checked in
//! [`crate::bootstrap::verify_cluster_info`]) and its CA is accepted only
//! when its public-key hash is pinned, as kubeadm does. The failure
//! diagnosis turns facts probed from the node and the API server into one
//! named cause. Everything here is pure; the probing is in
//! [`crate::api`] and the CLI.

use std::fmt;

use kprov_core::CaCertHash;
use kprov_pki::kubeconfig::Kubeconfig;

use crate::bootstrap::DiscoveryError;

/// How a CA is to be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pins<'a> {
    /// Only a CA whose hash is one of these.
    Hashes(&'a [CaCertHash]),
    /// Any CA (`--discovery-token-unsafe-skip-ca-verification`).
    Unsafe,
}

/// Accepts `ca_pem` if its public-key hash is pinned.
pub fn check_pinned(ca_pem: &[u8], pins: &Pins<'_>) -> Result<(), JoinCause> {
    let hashes = match pins {
        Pins::Unsafe => return Ok(()),
        Pins::Hashes(h) => h,
    };
    let found = kprov_pki::ca_cert_hash(ca_pem).map_err(|e| JoinCause::CaMismatch {
        detail: format!("the CA certificate does not parse: {e}"),
    })?;
    if hashes.iter().any(|h| h.as_str() == found) {
        return Ok(());
    }
    if hashes.is_empty() {
        return Err(JoinCause::CaMismatch {
            detail: format!(
                "no --discovery-token-ca-cert-hash pins the cluster's CA (its hash is {found}); pass it, or --discovery-token-unsafe-skip-ca-verification to trust it unchecked"
            ),
        });
    }
    Err(JoinCause::CaMismatch {
        detail: format!(
            "the cluster's CA has public-key hash {found}, which is not among --discovery-token-ca-cert-hash {}",
            hashes
                .iter()
                .map(CaCertHash::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The CA of a cluster-info kubeconfig whose signature has been verified,
/// if it is pinned.
pub fn trusted_ca(verified_kubeconfig: &str, pins: &Pins<'_>) -> Result<Vec<u8>, JoinCause> {
    use base64::Engine;
    let broken = |detail: String| JoinCause::CaMismatch {
        detail: format!("cluster-info's kubeconfig {detail}"),
    };
    let config =
        Kubeconfig::from_yaml(verified_kubeconfig.as_bytes()).map_err(|e| broken(e.to_string()))?;
    // cluster-info has no context: its only cluster is the one.
    let cluster = config
        .clusters
        .first()
        .ok_or_else(|| broken("has no cluster".into()))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(cluster.cluster.certificate_authority_data.trim())
        .map_err(|_| broken("has a CA that is not base64".into()))?;
    check_pinned(&ca_pem, pins)?;
    Ok(ca_pem)
}

/// A join's failure, by cause. The message starts with the cause's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinCause {
    /// No connection to the API server.
    Unreachable {
        /// The API server.
        server: String,
        /// The last error.
        detail: String,
    },
    /// The API server's CA is not the one trusted.
    CaMismatch {
        /// What differs.
        detail: String,
    },
    /// The token is unknown, deleted, expired or has the wrong secret.
    TokenInvalid {
        /// The token's public id.
        token_id: String,
        /// What said so.
        detail: String,
    },
    /// The kubelet asked for a certificate; nobody approved it.
    CsrNotApproved {
        /// The pending requests for this node.
        csrs: Vec<String>,
        /// Why the API server did not answer at the last probe, when it
        /// answered earlier in the wait (it was restarting, say): the
        /// stalled request is still the cause to report.
        unreachable_at_end: Option<String>,
    },
    /// The kubelet is not running, or runs without getting anywhere.
    KubeletFailing {
        /// Whether systemd says it is active.
        active: bool,
        /// The last journal lines.
        journal_tail: String,
    },
}

impl JoinCause {
    /// The cause of a cluster-info signature failure.
    pub fn from_discovery(e: &DiscoveryError, token_id: &str) -> Self {
        match e {
            DiscoveryError::NoKubeconfig => Self::CaMismatch {
                detail: e.to_string(),
            },
            DiscoveryError::NoSignature(_) | DiscoveryError::BadSignature(_) => {
                Self::TokenInvalid {
                    token_id: token_id.to_string(),
                    detail: e.to_string(),
                }
            }
        }
    }
}

impl fmt::Display for JoinCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { server, detail } => write!(
                f,
                "API server unreachable: {server} did not answer ({detail}); check --api-server, the network and that the control plane runs"
            ),
            Self::CaMismatch { detail } => write!(
                f,
                "CA mismatch: {detail}; check --discovery-token-ca-cert-hash or --ca-cert against `kprov pki ca-hash` on the control plane"
            ),
            Self::TokenInvalid { token_id, detail } => write!(
                f,
                "token invalid or expired: bootstrap token {token_id}: {detail}; make a new one with `kprov token create --print-join-command`"
            ),
            Self::CsrNotApproved {
                csrs,
                unreachable_at_end,
            } => {
                write!(
                    f,
                    "CSR not approved: the kubelet's certificate request {} is pending; approve it (`kubectl certificate approve NAME`) or check that the controller manager runs with the csrapproving controller and the bootstrap RBAC (`kprov init phase bootstrap-token`)",
                    csrs.join(", ")
                )?;
                if let Some(detail) = unreachable_at_end {
                    write!(
                        f,
                        "; the API server answered during the wait but not at the last probe ({detail}): check that the control plane's static pods are not restarting (`kubectl -n kube-system get pods` on a master)"
                    )?;
                }
                Ok(())
            }
            Self::KubeletFailing {
                active,
                journal_tail,
            } => {
                let state = if *active {
                    "runs but does not finish TLS bootstrap"
                } else {
                    "is not running"
                };
                write!(
                    f,
                    "kubelet failing: kubelet.service {state}. Its journal ends with:\n{}",
                    journal_tail
                        .lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            }
        }
    }
}

/// What an API probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Answered, and the answer was accepted.
    Ok,
    /// No connection (refused, no route, timed out).
    Unreachable(String),
    /// TLS failed: the server's certificate is not signed by the CA.
    Untrusted(String),
    /// 401: the credentials were refused.
    Unauthorized(String),
    /// Not probed (no credentials to probe with yet).
    Skipped,
}

/// What the node and the API server say after a join timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFacts {
    /// The API server.
    pub server: String,
    /// The token's public id.
    pub token_id: String,
    /// A request to the API server with the token and the trusted CA.
    pub token_probe: Probe,
    /// `systemctl is-active kubelet` said active.
    pub kubelet_active: bool,
    /// The kubelet's last journal lines.
    pub journal_tail: String,
    /// Pending certificate requests from this node: at the end, or, when
    /// the API server no longer answers then, the last ones seen during
    /// the wait.
    pub pending_csrs: Vec<String>,
}

/// The most likely cause, in the order a join depends on things: the
/// network, the CA, the token, the kubelet, the approval.
pub fn diagnose_join(facts: &JoinFacts) -> JoinCause {
    match &facts.token_probe {
        // It answered before: the request it left pending is the cause.
        Probe::Unreachable(detail) if facts.kubelet_active && !facts.pending_csrs.is_empty() => {
            return JoinCause::CsrNotApproved {
                csrs: facts.pending_csrs.clone(),
                unreachable_at_end: Some(detail.clone()),
            }
        }
        Probe::Unreachable(detail) => {
            return JoinCause::Unreachable {
                server: facts.server.clone(),
                detail: detail.clone(),
            }
        }
        Probe::Untrusted(detail) => {
            return JoinCause::CaMismatch {
                detail: format!(
                    "the API server's certificate does not verify with the trusted CA: {detail}"
                ),
            }
        }
        Probe::Unauthorized(detail) => {
            return JoinCause::TokenInvalid {
                token_id: facts.token_id.clone(),
                detail: format!("the API server refused it: {detail}"),
            }
        }
        Probe::Ok | Probe::Skipped => {}
    }
    if facts.kubelet_active && !facts.pending_csrs.is_empty() {
        return JoinCause::CsrNotApproved {
            csrs: facts.pending_csrs.clone(),
            unreachable_at_end: None,
        };
    }
    JoinCause::KubeletFailing {
        active: facts.kubelet_active,
        journal_tail: facts.journal_tail.clone(),
    }
}

/// The pending node-client CSRs of a node: those whose requestor is a
/// bootstrap token or the node itself, that have no condition yet.
/// `csrs` holds (name, username of the requestor, has conditions).
pub fn pending_node_csrs(csrs: &[(String, String, bool)], token_id: &str) -> Vec<String> {
    let bootstrapper = format!("system:bootstrap:{token_id}");
    csrs.iter()
        .filter(|(_, user, decided)| !decided && *user == bootstrapper)
        .map(|(name, _, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::cluster_info_kubeconfig;

    fn ca() -> (String, String) {
        let key = kprov_pki::keys::PrivateKey::generate(kprov_pki::spec::KeyType::Ecdsa).unwrap();
        let subject = kprov_pki::table::Subject {
            common_name: "kubernetes".into(),
            organizations: vec![],
        };
        let cert =
            kprov_pki::cert::issue_ca(&subject, &key, time::OffsetDateTime::now_utc()).unwrap();
        let pem = cert.pem().to_string();
        let hash = kprov_pki::ca_cert_hash(pem.as_bytes()).unwrap();
        (pem, hash)
    }

    #[test]
    fn a_pinned_ca_is_trusted_and_another_is_a_ca_mismatch() {
        let (pem, hash) = ca();
        let (_, other_hash) = ca();
        let kc = cluster_info_kubeconfig("https://10.0.0.1:6443", pem.as_bytes());
        let pinned: Vec<CaCertHash> = vec![other_hash.parse().unwrap(), hash.parse().unwrap()];
        assert_eq!(
            trusted_ca(&kc, &Pins::Hashes(&pinned)).unwrap(),
            pem.as_bytes()
        );
        let wrong: Vec<CaCertHash> = vec![other_hash.parse().unwrap()];
        let err = trusted_ca(&kc, &Pins::Hashes(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "CA mismatch: the cluster's CA has public-key hash {hash}, which is not among --discovery-token-ca-cert-hash {other_hash}"
            )),
            "{err}"
        );
        let err = trusted_ca(&kc, &Pins::Hashes(&[])).unwrap_err().to_string();
        assert!(
            err.contains("no --discovery-token-ca-cert-hash pins"),
            "{err}"
        );
        assert_eq!(trusted_ca(&kc, &Pins::Unsafe).unwrap(), pem.as_bytes());
    }

    #[test]
    fn signature_failures_mean_the_token_is_invalid() {
        for e in [
            DiscoveryError::NoSignature("abcdef".into()),
            DiscoveryError::BadSignature("abcdef".into()),
        ] {
            let cause = JoinCause::from_discovery(&e, "abcdef").to_string();
            assert!(
                cause.starts_with("token invalid or expired: bootstrap token abcdef"),
                "{cause}"
            );
        }
    }

    fn facts(probe: Probe, active: bool, csrs: &[&str]) -> JoinFacts {
        JoinFacts {
            server: "https://10.0.0.1:6443".into(),
            token_id: "abcdef".into(),
            token_probe: probe,
            kubelet_active: active,
            journal_tail: "E0101 kubelet: failed to run Kubelet: bad flag".into(),
            pending_csrs: csrs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_stalled_csr_is_named_even_when_the_api_server_is_down_at_the_deadline() {
        let got = diagnose_join(&facts(
            Probe::Unreachable("connection refused".into()),
            true,
            &["csr-7"],
        ))
        .to_string();
        assert!(
            got.starts_with("CSR not approved: the kubelet's certificate request csr-7 is pending"),
            "{got}"
        );
        assert!(
            got.ends_with("the API server answered during the wait but not at the last probe (connection refused): check that the control plane's static pods are not restarting (`kubectl -n kube-system get pods` on a master)"),
            "{got}"
        );
    }

    #[test]
    fn the_diagnosis_names_the_first_broken_dependency() {
        for (f, want) in [
            (
                facts(Probe::Unreachable("connection refused".into()), false, &[]),
                "API server unreachable: https://10.0.0.1:6443 did not answer (connection refused)",
            ),
            (
                facts(Probe::Untrusted("UnknownIssuer".into()), true, &["csr-1"]),
                "CA mismatch: the API server's certificate does not verify",
            ),
            (
                facts(Probe::Unauthorized("401".into()), true, &[]),
                "token invalid or expired: bootstrap token abcdef: the API server refused it",
            ),
            (
                facts(Probe::Ok, true, &["csr-1"]),
                "CSR not approved: the kubelet's certificate request csr-1 is pending",
            ),
            // The API server restarting at the deadline does not hide the
            // request it left pending (a worker's join on a loaded host).
            (
                facts(Probe::Unreachable("connection refused".into()), true, &["csr-7"]),
                "CSR not approved: the kubelet's certificate request csr-7 is pending; approve it",
            ),
            (
                facts(Probe::Ok, false, &["csr-1"]),
                "kubelet failing: kubelet.service is not running. Its journal ends with:\n    E0101",
            ),
            (
                facts(Probe::Skipped, true, &[]),
                "kubelet failing: kubelet.service runs but does not finish TLS bootstrap",
            ),
        ] {
            let got = diagnose_join(&f).to_string();
            assert!(got.starts_with(want), "{got}\nwanted: {want}");
        }
    }

    #[test]
    fn only_undecided_csrs_of_this_token_are_pending() {
        let csrs = vec![
            ("csr-a".into(), "system:bootstrap:abcdef".into(), false),
            ("csr-b".into(), "system:bootstrap:abcdef".into(), true),
            ("csr-c".into(), "system:bootstrap:zzzzzz".into(), false),
        ];
        assert_eq!(pending_node_csrs(&csrs, "abcdef"), vec!["csr-a"]);
    }
}
