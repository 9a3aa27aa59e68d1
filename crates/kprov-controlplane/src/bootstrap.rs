//! What a cluster needs before nodes can join with a token, as kubeadm's
//! `bootstrap-token` phase makes it: the RBAC that lets token holders ask
//! for a node certificate (and nothing broader), auto-approval of those
//! requests and of certificate renewals, and the `cluster-info`
//! ConfigMap in kube-public that anonymous clients may read, signed per
//! token.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kprov_core::BootstrapToken;
use kprov_pki::kubeconfig::{Cluster, Kubeconfig, NamedCluster, Preferences};

use crate::jws;
use crate::token::DEFAULT_NODE_GROUP;

/// The namespace of cluster-info.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
/// The name of the discovery ConfigMap.
pub const CLUSTER_INFO: &str = "cluster-info";
/// Its key holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// The key of `token_id`'s signature in cluster-info.
pub fn signature_key(token_id: &str) -> String {
    format!("jws-kubeconfig-{token_id}")
}

/// The bootstrap RBAC: cluster roles, cluster role bindings, and the role
/// and binding in kube-public for cluster-info.
#[derive(Debug, Clone)]
pub struct BootstrapRbac {
    /// Cluster roles kprov defines.
    pub cluster_roles: Vec<ClusterRole>,
    /// Cluster-wide bindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Roles in kube-public.
    pub roles: Vec<Role>,
    /// Bindings in kube-public.
    pub role_bindings: Vec<RoleBinding>,
}

pub(crate) fn group(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

fn user(name: &str) -> Subject {
    Subject {
        kind: "User".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

/// A role in `namespace` that may get one ConfigMap, and its binding to
/// `subjects`, both named `role`.
pub(crate) fn config_map_reader(
    role: &str,
    namespace: &str,
    config_map: &str,
    subjects: Vec<Subject>,
) -> (Role, RoleBinding) {
    (
        Role {
            metadata: meta(role, Some(namespace)),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![config_map.into()]),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            }]),
        },
        RoleBinding {
            metadata: meta(role, Some(namespace)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: role.into(),
            },
            subjects: Some(subjects),
        },
    )
}

fn cluster_binding(name: &str, cluster_role: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![subject]),
    }
}

/// The RBAC kubeadm creates for node bootstrap, bound to the default
/// node-token group: create CSRs, have them approved, read nodes (to see
/// whether a node of the same name exists), and for nodes the approval of
/// renewals. Bootstrap tokens get nothing else.
pub fn bootstrap_rbac() -> BootstrapRbac {
    let (cluster_info_role, cluster_info_binding) = config_map_reader(
        "kubeadm:bootstrap-signer-clusterinfo",
        CLUSTER_INFO_NAMESPACE,
        CLUSTER_INFO,
        vec![user("system:anonymous")],
    );
    BootstrapRbac {
        cluster_roles: vec![ClusterRole {
            metadata: meta("kubeadm:get-nodes", None),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["nodes".into()]),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            }]),
            ..ClusterRole::default()
        }],
        cluster_role_bindings: vec![
            cluster_binding(
                "kubeadm:kubelet-bootstrap",
                "system:node-bootstrapper",
                group(DEFAULT_NODE_GROUP),
            ),
            cluster_binding(
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                group(DEFAULT_NODE_GROUP),
            ),
            cluster_binding(
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                group("system:nodes"),
            ),
            cluster_binding(
                "kubeadm:get-nodes",
                "kubeadm:get-nodes",
                group(DEFAULT_NODE_GROUP),
            ),
        ],
        roles: vec![cluster_info_role],
        role_bindings: vec![cluster_info_binding],
    }
}

/// The kubeconfig cluster-info publishes: the API server's URL and the CA,
/// no credentials (kubeadm leaves the cluster's name empty).
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &[u8]) -> String {
    use base64::Engine;
    let config = Kubeconfig {
        api_version: "v1".into(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: base64::engine::general_purpose::STANDARD
                    .encode(ca_pem),
                server: server.into(),
                tls_server_name: String::new(),
            },
            name: String::new(),
        }],
        contexts: Vec::new(),
        current_context: String::new(),
        kind: "Config".into(),
        preferences: Preferences {},
        users: Vec::new(),
    };
    config
        .to_yaml()
        .unwrap_or_else(|_| unreachable!("a kubeconfig of strings always renders"))
}

/// The cluster-info ConfigMap with `kubeconfig` signed by each of
/// `tokens`.
pub fn cluster_info(kubeconfig: &str, tokens: &[BootstrapToken]) -> ConfigMap {
    let mut data = BTreeMap::new();
    data.insert(KUBECONFIG_KEY.to_string(), kubeconfig.to_string());
    for token in tokens {
        data.insert(
            signature_key(token.id()),
            jws::sign_detached(kubeconfig, token),
        );
    }
    ConfigMap {
        metadata: meta(CLUSTER_INFO, Some(CLUSTER_INFO_NAMESPACE)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Why a cluster-info document was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No `kubeconfig` key.
    #[error("cluster-info has no kubeconfig")]
    NoKubeconfig,
    /// No signature for the token's id: the token is unknown to the
    /// cluster, expired, or not for signing.
    #[error("cluster-info has no signature for token id {0}: the token is unknown, expired or not usable for signing")]
    NoSignature(String),
    /// A signature that does not verify with the token.
    #[error("cluster-info's signature for token id {0} does not verify with the token: wrong token secret, or the document was altered")]
    BadSignature(String),
}

/// The kubeconfig of a cluster-info ConfigMap, if its signature for
/// `token` verifies.
pub fn verify_cluster_info<'a>(
    data: &'a BTreeMap<String, String>,
    token: &BootstrapToken,
) -> Result<&'a str, DiscoveryError> {
    let kubeconfig = data
        .get(KUBECONFIG_KEY)
        .ok_or(DiscoveryError::NoKubeconfig)?;
    let signature = data
        .get(&signature_key(token.id()))
        .ok_or_else(|| DiscoveryError::NoSignature(token.id().to_string()))?;
    if jws::verify_detached(signature, kubeconfig, token) {
        Ok(kubeconfig)
    } else {
        Err(DiscoveryError::BadSignature(token.id().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_binding_reaches_cluster_admin_or_masters() {
        let rbac = bootstrap_rbac();
        for b in &rbac.cluster_role_bindings {
            assert_ne!(b.role_ref.name, "cluster-admin", "{:?}", b.metadata.name);
            for s in b.subjects.iter().flatten() {
                assert_ne!(s.name, "system:masters");
            }
        }
        let names: Vec<_> = rbac
            .cluster_role_bindings
            .iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect();
        assert!(names.contains(&"kubeadm:kubelet-bootstrap".to_string()));
        assert!(names.contains(&"kubeadm:node-autoapprove-bootstrap".to_string()));
        assert!(names.contains(&"kubeadm:node-autoapprove-certificate-rotation".to_string()));
    }

    #[test]
    fn cluster_info_verifies_per_token() {
        let good: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let other: BootstrapToken = "ghijkl.0123456789abcdef".parse().unwrap();
        let wrong_secret: BootstrapToken = "abcdef.aaaaaaaaaaaaaaaa".parse().unwrap();
        let kc = cluster_info_kubeconfig("https://10.0.0.1:6443", b"-----BEGIN CERTIFICATE-----\n");
        assert!(kc.contains("server: https://10.0.0.1:6443"));
        let cm = cluster_info(&kc, std::slice::from_ref(&good));
        let data = cm.data.unwrap();
        assert_eq!(verify_cluster_info(&data, &good).unwrap(), kc);
        assert_eq!(
            verify_cluster_info(&data, &other).unwrap_err(),
            DiscoveryError::NoSignature("ghijkl".into())
        );
        assert_eq!(
            verify_cluster_info(&data, &wrong_secret).unwrap_err(),
            DiscoveryError::BadSignature("abcdef".into())
        );
    }
}
