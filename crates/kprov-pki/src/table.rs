//! The declarative tables of the PKI: which certificates exist, who signs
//! them, their subjects, usages and SANs, and which kubeconfigs are made
//! with which identities, as kubeadm builds them (see kubeadm's
//! `phases/certs/certlist.go` and `phases/kubeconfig/kubeconfig.go`).
//!
//! To add a certificate, add a row to [`CERTIFICATES`]; everything else
//! (generation, reuse checks, `kprov pki check`) follows from the row.
//! [`plan_certificates`] and [`plan_kubeconfigs`] turn the rows and a spec
//! into concrete requests, with no side effects.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kprov_core::KubernetesVersion;

use crate::spec::{ControlPlaneNode, Host, PkiSpec};

/// Days a leaf certificate is valid (kubeadm's `CertificateValidity`).
pub const LEAF_VALIDITY_DAYS: i64 = 365;

/// Days a CA is valid (ten of kubeadm's 365-day years).
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// The group bound to cluster-admin by the API server itself.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The group kubeadm binds to cluster-admin from v1.29, for admin.conf.
pub const KUBEADM_CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";

/// The group of node identities.
pub const SYSTEM_NODES: &str = "system:nodes";

/// The cluster name in kubeconfigs (kubeadm's default `clusterName`).
pub const CLUSTER_NAME: &str = "kubernetes";

/// An extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ExtKeyUsage {
    /// TLS server authentication.
    ServerAuth,
    /// TLS client authentication.
    ClientAuth,
}

impl std::fmt::Display for ExtKeyUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExtKeyUsage::ServerAuth => "serverAuth",
            ExtKeyUsage::ClientAuth => "clientAuth",
        })
    }
}

/// How a row's common name is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonName {
    /// A fixed name.
    Fixed(&'static str),
    /// The node's name (etcd's serving and peer certificates).
    NodeName,
}

/// Which SANs a row's certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanRule {
    /// None (clients and CAs).
    None,
    /// The API server's: node name, the `kubernetes.default...` names, the
    /// first service IP, the advertise address, the control-plane
    /// endpoint and the extra SANs.
    ApiServer,
    /// etcd's serving and peer certificates: node name, `localhost`, the
    /// advertise address and the loopback addresses.
    Etcd,
}

/// One certificate of the PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertDef {
    /// kubeadm's name for it (`etcd-server`), shown by `kprov pki check`.
    pub name: &'static str,
    /// The file name without extension, relative to the cert dir
    /// (`etcd/server` for `etcd/server.crt` and `etcd/server.key`).
    pub base_name: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// The `name` of the CA that signs it; `None` for a CA.
    pub ca: Option<&'static str>,
    /// Its subject's common name.
    pub common_name: CommonName,
    /// Its subject's organisations (groups, for client certificates).
    pub organizations: &'static [&'static str],
    /// Its extended key usages (empty for a CA).
    pub ext_key_usages: &'static [ExtKeyUsage],
    /// Its SANs.
    pub sans: SanRule,
}

impl CertDef {
    /// True for a certificate authority.
    pub fn is_ca(&self) -> bool {
        self.ca.is_none()
    }

    /// The certificate's path relative to the cert dir.
    pub fn cert_file(&self) -> String {
        format!("{}.crt", self.base_name)
    }

    /// The key's path relative to the cert dir.
    pub fn key_file(&self) -> String {
        format!("{}.key", self.base_name)
    }
}

const SERVER: &[ExtKeyUsage] = &[ExtKeyUsage::ServerAuth];
const CLIENT: &[ExtKeyUsage] = &[ExtKeyUsage::ClientAuth];
const SERVER_AND_CLIENT: &[ExtKeyUsage] = &[ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth];

/// Every certificate of a control plane with stacked etcd, CAs before the
/// certificates they sign, in kubeadm's order.
pub const CERTIFICATES: &[CertDef] = &[
    CertDef {
        name: "ca",
        base_name: "ca",
        purpose:
            "self-signed Kubernetes CA to provision identities for other Kubernetes components",
        ca: None,
        common_name: CommonName::Fixed("kubernetes"),
        organizations: &[],
        ext_key_usages: &[],
        sans: SanRule::None,
    },
    CertDef {
        name: "apiserver",
        base_name: "apiserver",
        purpose: "certificate for serving the Kubernetes API",
        ca: Some("ca"),
        common_name: CommonName::Fixed("kube-apiserver"),
        organizations: &[],
        ext_key_usages: SERVER,
        sans: SanRule::ApiServer,
    },
    CertDef {
        name: "apiserver-kubelet-client",
        base_name: "apiserver-kubelet-client",
        purpose: "certificate for the API server to connect to kubelet",
        ca: Some("ca"),
        common_name: CommonName::Fixed("kube-apiserver-kubelet-client"),
        organizations: &[SYSTEM_MASTERS],
        ext_key_usages: CLIENT,
        sans: SanRule::None,
    },
    CertDef {
        name: "front-proxy-ca",
        base_name: "front-proxy-ca",
        purpose: "self-signed CA to provision identities for front proxy",
        ca: None,
        common_name: CommonName::Fixed("front-proxy-ca"),
        organizations: &[],
        ext_key_usages: &[],
        sans: SanRule::None,
    },
    CertDef {
        name: "front-proxy-client",
        base_name: "front-proxy-client",
        purpose: "certificate for the front proxy client",
        ca: Some("front-proxy-ca"),
        common_name: CommonName::Fixed("front-proxy-client"),
        organizations: &[],
        ext_key_usages: CLIENT,
        sans: SanRule::None,
    },
    CertDef {
        name: "etcd-ca",
        base_name: "etcd/ca",
        purpose: "self-signed CA to provision identities for etcd",
        ca: None,
        common_name: CommonName::Fixed("etcd-ca"),
        organizations: &[],
        ext_key_usages: &[],
        sans: SanRule::None,
    },
    CertDef {
        name: "etcd-server",
        base_name: "etcd/server",
        purpose: "certificate for serving etcd",
        ca: Some("etcd-ca"),
        common_name: CommonName::NodeName,
        organizations: &[],
        // etcd also uses its serving certificate as a client (kubeadm
        // keeps clientAuth on it for that reason).
        ext_key_usages: SERVER_AND_CLIENT,
        sans: SanRule::Etcd,
    },
    CertDef {
        name: "etcd-peer",
        base_name: "etcd/peer",
        purpose: "certificate for etcd nodes to communicate with each other",
        ca: Some("etcd-ca"),
        common_name: CommonName::NodeName,
        organizations: &[],
        ext_key_usages: SERVER_AND_CLIENT,
        sans: SanRule::Etcd,
    },
    CertDef {
        name: "etcd-healthcheck-client",
        base_name: "etcd/healthcheck-client",
        purpose: "certificate for liveness probes to healthcheck etcd",
        ca: Some("etcd-ca"),
        common_name: CommonName::Fixed("kube-etcd-healthcheck-client"),
        organizations: &[SYSTEM_MASTERS],
        ext_key_usages: CLIENT,
        sans: SanRule::None,
    },
    CertDef {
        name: "apiserver-etcd-client",
        base_name: "apiserver-etcd-client",
        purpose: "certificate the apiserver uses to access etcd",
        ca: Some("etcd-ca"),
        common_name: CommonName::Fixed("kube-apiserver-etcd-client"),
        organizations: &[SYSTEM_MASTERS],
        ext_key_usages: CLIENT,
        sans: SanRule::None,
    },
];

/// The base name of the service-account signing key pair (`sa.key`,
/// `sa.pub`), which has no certificate.
pub const SERVICE_ACCOUNT_KEY_BASE_NAME: &str = "sa";

/// The table row of the certificate kubeadm calls `name`.
pub fn cert_def(name: &str) -> Option<&'static CertDef> {
    CERTIFICATES.iter().find(|d| d.name == name)
}

/// Subject alternative names, split as in a certificate: DNS names sorted
/// and without duplicates, IP addresses in order without duplicates (as
/// kubeadm's `RemoveDuplicateAltNames` leaves them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AltNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl AltNames {
    fn from_hosts(dns: Vec<String>, ips: Vec<IpAddr>) -> Self {
        let dns: BTreeSet<String> = dns.into_iter().collect();
        let mut unique_ips = Vec::new();
        for ip in ips {
            if !unique_ips.contains(&ip) {
                unique_ips.push(ip);
            }
        }
        Self {
            dns: dns.into_iter().collect(),
            ips: unique_ips,
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

impl std::fmt::Display for AltNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ips.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// A certificate's subject: common name and organisations.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subject {
    /// The common name.
    pub common_name: String,
    /// The organisations, in order.
    pub organizations: Vec<String>,
}

impl std::fmt::Display for Subject {
    /// As openssl prints it: `O = system:masters, CN = kubernetes-admin`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for o in &self.organizations {
            write!(f, "O = {o}, ")?;
        }
        write!(f, "CN = {}", self.common_name)
    }
}

/// A certificate to have, computed from a table row and a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// The table row.
    pub def: &'static CertDef,
    /// The subject.
    pub subject: Subject,
    /// The SANs.
    pub alt_names: AltNames,
}

/// The SANs of the API server's serving certificate.
pub fn api_server_alt_names(spec: &PkiSpec) -> AltNames {
    let node = &spec.node;
    let mut dns = vec![
        node.node_name.as_str().to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", spec.cluster_domain.as_str()),
    ];
    let mut ips = vec![
        spec.service_cidr.first_service_ip(),
        node.advertise_address.ip(),
    ];
    let extra = node
        .control_plane_endpoint
        .iter()
        .map(|ep| ep.host())
        .chain(spec.extra_sans.iter().map(|s| s.host()));
    for host in extra {
        match host {
            Host::Ip(ip) => ips.push(*ip),
            Host::Dns(name) => dns.push(name.clone()),
        }
    }
    AltNames::from_hosts(dns, ips)
}

/// The SANs of etcd's serving and peer certificates.
pub fn etcd_alt_names(node: &ControlPlaneNode) -> AltNames {
    AltNames::from_hosts(
        vec![node.node_name.as_str().to_string(), "localhost".to_string()],
        vec![
            node.advertise_address.ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    )
}

/// Every certificate of the PKI for `spec`, CAs first.
pub fn plan_certificates(spec: &PkiSpec) -> Vec<CertRequest> {
    CERTIFICATES
        .iter()
        .map(|def| CertRequest {
            def,
            subject: Subject {
                common_name: match def.common_name {
                    CommonName::Fixed(cn) => cn.to_string(),
                    CommonName::NodeName => spec.node.node_name.as_str().to_string(),
                },
                organizations: def.organizations.iter().map(|o| o.to_string()).collect(),
            },
            alt_names: match def.sans {
                SanRule::None => AltNames::default(),
                SanRule::ApiServer => api_server_alt_names(spec),
                SanRule::Etcd => etcd_alt_names(&spec.node),
            },
        })
        .collect()
}

/// Which API server URL a kubeconfig points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChoice {
    /// The control-plane endpoint (or the advertise address without one).
    ControlPlane,
    /// This node's own API server.
    Local,
}

/// A kubeconfig to have: a file with a client identity signed by the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigRequest {
    /// The file name in the kubeconfig dir, e.g. `admin.conf`.
    pub file: &'static str,
    /// The client certificate's subject; its common name is also the
    /// kubeconfig's user name.
    pub subject: Subject,
    /// The API server it talks to.
    pub server: ServerChoice,
}

/// The kubeconfigs of a control-plane node running `version`, as kubeadm
/// of that version writes them: admin.conf's group is system:masters
/// before v1.29; from v1.29 it is kubeadm:cluster-admins (bound to
/// cluster-admin by RBAC), and super-admin.conf holds system:masters.
pub fn plan_kubeconfigs(node: &ControlPlaneNode) -> Vec<KubeconfigRequest> {
    let subject = |cn: String, orgs: &[&str]| Subject {
        common_name: cn,
        organizations: orgs.iter().map(|o| o.to_string()).collect(),
    };
    let separate_super_admin = has_super_admin(&node.kubernetes_version);
    let admin_group = if separate_super_admin {
        KUBEADM_CLUSTER_ADMINS
    } else {
        SYSTEM_MASTERS
    };
    let mut out = vec![KubeconfigRequest {
        file: "admin.conf",
        subject: subject("kubernetes-admin".into(), &[admin_group]),
        server: ServerChoice::ControlPlane,
    }];
    if separate_super_admin {
        out.push(KubeconfigRequest {
            file: "super-admin.conf",
            subject: subject("kubernetes-super-admin".into(), &[SYSTEM_MASTERS]),
            server: ServerChoice::ControlPlane,
        });
    }
    out.extend([
        KubeconfigRequest {
            file: "kubelet.conf",
            subject: subject(format!("system:node:{}", node.node_name), &[SYSTEM_NODES]),
            server: ServerChoice::ControlPlane,
        },
        KubeconfigRequest {
            file: "controller-manager.conf",
            subject: subject("system:kube-controller-manager".into(), &[]),
            server: ServerChoice::Local,
        },
        KubeconfigRequest {
            file: "scheduler.conf",
            subject: subject("system:kube-scheduler".into(), &[]),
            server: ServerChoice::Local,
        },
    ]);
    out
}

/// True when kubeadm of `version` writes super-admin.conf (v1.29 on).
pub fn has_super_admin(version: &KubernetesVersion) -> bool {
    version.at_least(1, 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PkiSpec;

    fn spec() -> PkiSpec {
        let mut node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        node.control_plane_endpoint = Some("cp.example.test:6443".parse().unwrap());
        let mut spec = PkiSpec::new(node);
        spec.extra_sans = vec![
            "extra.example.test".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
            // Duplicates of names already present are dropped.
            "kubernetes".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ];
        spec
    }

    #[test]
    fn every_signer_is_a_ca_listed_before_what_it_signs() {
        for (i, def) in CERTIFICATES.iter().enumerate() {
            if let Some(ca) = def.ca {
                let pos = CERTIFICATES.iter().position(|d| d.name == ca).unwrap();
                assert!(pos < i, "{} is signed by {ca}, listed later", def.name);
                assert!(CERTIFICATES[pos].is_ca());
                assert!(!def.ext_key_usages.is_empty(), "{}", def.name);
            } else {
                assert!(def.ext_key_usages.is_empty(), "{}", def.name);
            }
        }
    }

    #[test]
    fn the_table_holds_kubeadms_files_subjects_and_usages() {
        let rows: Vec<(&str, &str, String, String)> = plan_certificates(&spec())
            .iter()
            .map(|r| {
                (
                    r.def.name,
                    r.def.base_name,
                    r.subject.to_string(),
                    r.def
                        .ext_key_usages
                        .iter()
                        .map(|u| u.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            })
            .collect();
        let want = [
            ("ca", "ca", "CN = kubernetes", ""),
            (
                "apiserver",
                "apiserver",
                "CN = kube-apiserver",
                "serverAuth",
            ),
            (
                "apiserver-kubelet-client",
                "apiserver-kubelet-client",
                "O = system:masters, CN = kube-apiserver-kubelet-client",
                "clientAuth",
            ),
            (
                "front-proxy-ca",
                "front-proxy-ca",
                "CN = front-proxy-ca",
                "",
            ),
            (
                "front-proxy-client",
                "front-proxy-client",
                "CN = front-proxy-client",
                "clientAuth",
            ),
            ("etcd-ca", "etcd/ca", "CN = etcd-ca", ""),
            (
                "etcd-server",
                "etcd/server",
                "CN = master-1",
                "serverAuth,clientAuth",
            ),
            (
                "etcd-peer",
                "etcd/peer",
                "CN = master-1",
                "serverAuth,clientAuth",
            ),
            (
                "etcd-healthcheck-client",
                "etcd/healthcheck-client",
                "O = system:masters, CN = kube-etcd-healthcheck-client",
                "clientAuth",
            ),
            (
                "apiserver-etcd-client",
                "apiserver-etcd-client",
                "O = system:masters, CN = kube-apiserver-etcd-client",
                "clientAuth",
            ),
        ];
        let want: Vec<(&str, &str, String, String)> = want
            .iter()
            .map(|(a, b, c, d)| (*a, *b, c.to_string(), d.to_string()))
            .collect();
        assert_eq!(rows, want);
    }

    #[test]
    fn the_api_server_names_the_service_ip_endpoint_and_extra_sans_once_each() {
        assert_eq!(
            api_server_alt_names(&spec()).to_string(),
            "DNS:cp.example.test, DNS:extra.example.test, DNS:kubernetes, \
             DNS:kubernetes.default, DNS:kubernetes.default.svc, \
             DNS:kubernetes.default.svc.cluster.local, DNS:master-1, \
             IP:10.96.0.1, IP:192.0.2.10, IP:198.51.100.7"
        );
    }

    #[test]
    fn the_api_server_sans_follow_the_service_cidr_domain_and_an_ip_endpoint() {
        let mut spec = spec();
        spec.extra_sans.clear();
        spec.service_cidr = "172.20.0.0/16".parse().unwrap();
        spec.cluster_domain = "corp.internal".parse().unwrap();
        spec.node.control_plane_endpoint = Some("203.0.113.5".parse().unwrap());
        assert_eq!(
            api_server_alt_names(&spec).to_string(),
            "DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, \
             DNS:kubernetes.default.svc.corp.internal, DNS:master-1, \
             IP:172.20.0.1, IP:192.0.2.10, IP:203.0.113.5"
        );
    }

    #[test]
    fn etcd_names_the_node_and_loopback() {
        assert_eq!(
            etcd_alt_names(&spec().node).to_string(),
            "DNS:localhost, DNS:master-1, IP:192.0.2.10, IP:127.0.0.1, IP:::1"
        );
    }

    #[test]
    fn admin_conf_changes_group_at_v1_29_and_super_admin_appears() {
        for (version, files) in [
            (
                "v1.20.2",
                vec![
                    ("admin.conf", "O = system:masters, CN = kubernetes-admin"),
                    (
                        "kubelet.conf",
                        "O = system:nodes, CN = system:node:master-1",
                    ),
                    (
                        "controller-manager.conf",
                        "CN = system:kube-controller-manager",
                    ),
                    ("scheduler.conf", "CN = system:kube-scheduler"),
                ],
            ),
            (
                "v1.28.9",
                vec![
                    ("admin.conf", "O = system:masters, CN = kubernetes-admin"),
                    (
                        "kubelet.conf",
                        "O = system:nodes, CN = system:node:master-1",
                    ),
                    (
                        "controller-manager.conf",
                        "CN = system:kube-controller-manager",
                    ),
                    ("scheduler.conf", "CN = system:kube-scheduler"),
                ],
            ),
            (
                "v1.29.0",
                vec![
                    (
                        "admin.conf",
                        "O = kubeadm:cluster-admins, CN = kubernetes-admin",
                    ),
                    (
                        "super-admin.conf",
                        "O = system:masters, CN = kubernetes-super-admin",
                    ),
                    (
                        "kubelet.conf",
                        "O = system:nodes, CN = system:node:master-1",
                    ),
                    (
                        "controller-manager.conf",
                        "CN = system:kube-controller-manager",
                    ),
                    ("scheduler.conf", "CN = system:kube-scheduler"),
                ],
            ),
        ] {
            let mut node = spec().node;
            node.kubernetes_version = version.parse().unwrap();
            let got: Vec<(&str, String)> = plan_kubeconfigs(&node)
                .iter()
                .map(|k| (k.file, k.subject.to_string()))
                .collect();
            let want: Vec<(&str, String)> =
                files.iter().map(|(f, s)| (*f, s.to_string())).collect();
            assert_eq!(got, want, "{version}");
        }
    }

    #[test]
    fn only_controller_manager_and_scheduler_use_the_local_api_server() {
        for k in plan_kubeconfigs(&spec().node) {
            let local = matches!(k.file, "controller-manager.conf" | "scheduler.conf");
            assert_eq!(k.server == ServerChoice::Local, local, "{}", k.file);
        }
    }
}
