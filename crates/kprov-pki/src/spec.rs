//! The inputs of the PKI, validated: node name, advertise address, service
//! CIDR, cluster domain, control-plane endpoint, extra SANs, key type and
//! Kubernetes version. Each type rejects bad text in its constructor with an
//! error that names the flag, the value and what was expected, so that
//! nothing is generated from a bad value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use kprov_core::KubernetesVersion;

/// The API server's secure port, as kubeadm's default `bindPort`.
pub const DEFAULT_API_SERVER_PORT: u16 = 6443;

/// kubeadm's default `--service-cidr`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// kubeadm's default `--service-dns-domain`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Why an input of the PKI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A node name that is not a DNS-1123 subdomain.
    #[error("node name {value:?} is not valid: {reason}")]
    NodeName {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An advertise address that is not a usable IP address.
    #[error("advertise address {value:?} is not valid: {reason}")]
    AdvertiseAddress {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A service CIDR that does not parse or has no room for the API
    /// server's service IP.
    #[error("service CIDR {value:?} is not valid: {reason}")]
    ServiceCidr {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cluster DNS domain that is not a DNS-1123 subdomain.
    #[error("cluster domain {value:?} is not valid: {reason}")]
    ClusterDomain {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A control-plane endpoint that is not `host` or `host:port`.
    #[error("control-plane endpoint {value:?} is not valid: {reason}")]
    Endpoint {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An extra SAN that is neither an IP address nor a DNS name.
    #[error("subject alternative name {value:?} is not valid: {reason}")]
    San {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key type other than `rsa` or `ecdsa`.
    #[error("key type {value:?} is not valid: expected rsa or ecdsa")]
    KeyType {
        /// The text given.
        value: String,
    },
}

use kprov_core::dns::DNS_SUBDOMAIN_RULE;

/// Checks `s` as a DNS-1123 subdomain (what Kubernetes accepts as a node
/// name and kubeadm as a DNS SAN), with kprov-core's one validator.
fn check_dns_subdomain(s: &str) -> Result<(), &'static str> {
    s.parse::<kprov_core::DnsSubdomain>()
        .map(|_| ())
        .map_err(|_| DNS_SUBDOMAIN_RULE)
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they map, as Go's
/// `net.IP` treats them (and encodes them in 4 bytes in a certificate).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A node name: a DNS-1123 subdomain, as the API server requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName(String);

impl FromStr for NodeName {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_dns_subdomain(value).map_err(|reason| SpecError::NodeName {
            value: value.to_string(),
            reason,
        })?;
        Ok(Self(value.to_string()))
    }
}

impl NodeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The address the API server advertises to the cluster: an IP address
/// that is not unspecified (`0.0.0.0`, `::`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdvertiseAddress(IpAddr);

impl FromStr for AdvertiseAddress {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpecError::AdvertiseAddress {
            value: value.to_string(),
            reason,
        };
        let ip: IpAddr = value
            .parse()
            .map_err(|_| err("expected an IPv4 or IPv6 address, e.g. 192.168.1.10"))?;
        let ip = canonical_ip(ip);
        if ip.is_unspecified() {
            return Err(err(
                "an unspecified address cannot be advertised: give the address other hosts reach this API server on",
            ));
        }
        Ok(Self(ip))
    }
}

impl AdvertiseAddress {
    /// The address.
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for AdvertiseAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The service CIDR (`--service-cidr`), e.g. `10.96.0.0/12`. A
/// comma-separated dual-stack pair is accepted; the first range holds the
/// API server's service IP, as in kubeadm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCidr {
    text: String,
    network: IpAddr,
    prefix: u8,
}

impl FromStr for ServiceCidr {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpecError::ServiceCidr {
            value: value.to_string(),
            reason,
        };
        let mut first = None;
        for part in value.split(',') {
            let (net, prefix) = parse_cidr(part.trim()).map_err(err)?;
            first.get_or_insert((net, prefix));
        }
        let (network, prefix) =
            first.ok_or_else(|| err("expected ADDRESS/PREFIX, e.g. 10.96.0.0/12"))?;
        Ok(Self {
            text: value.to_string(),
            network,
            prefix,
        })
    }
}

/// Parses `ADDRESS/PREFIX` and masks the address to its network, as Go's
/// `net.ParseCIDR` does.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), &'static str> {
    const SHAPE: &str = "expected ADDRESS/PREFIX, e.g. 10.96.0.0/12";
    let (addr, prefix) = text.split_once('/').ok_or(SHAPE)?;
    let addr: IpAddr = addr.parse().map_err(|_| SHAPE)?;
    let digits_ok = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit());
    let prefix: u8 = if digits_ok {
        prefix.parse().map_err(|_| SHAPE)?
    } else {
        return Err(SHAPE);
    };
    match addr {
        IpAddr::V4(v4) => {
            if prefix > 31 {
                return Err("the prefix leaves no room for the API server's service IP: at most /31 for IPv4");
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Ok((IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), prefix))
        }
        IpAddr::V6(v6) => {
            if prefix > 127 {
                return Err("the prefix leaves no room for the API server's service IP: at most /127 for IPv6");
            }
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Ok((IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)), prefix))
        }
    }
}

impl ServiceCidr {
    /// The network address of the first range.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length of the first range.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first address after the network address: the `kubernetes`
    /// Service's cluster IP, which the API server's certificate must name.
    pub fn first_service_ip(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) + 1)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) + 1)),
        }
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The cluster's DNS domain (`--cluster-domain`), e.g. `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDomain(String);

impl FromStr for ClusterDomain {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_dns_subdomain(value).map_err(|reason| SpecError::ClusterDomain {
            value: value.to_string(),
            reason,
        })?;
        Ok(Self(value.to_string()))
    }
}

impl ClusterDomain {
    /// The domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name.
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

impl Host {
    /// The host as it appears in a URL: IPv6 addresses in brackets.
    pub fn url_host(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        }
    }
}

/// The stable address of the control plane (`--control-plane-endpoint`):
/// `host` or `host:port`, the host an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneEndpoint {
    host: Host,
    port: Option<u16>,
}

impl FromStr for ControlPlaneEndpoint {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpecError::Endpoint {
            value: value.to_string(),
            reason,
        };
        if value.contains("://") {
            return Err(err("expected HOST or HOST:PORT, without a scheme"));
        }
        // "[v6]:port", "[v6]", a bare IPv6 address, "host:port", "host".
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or(err("an IPv6 address in brackets lacks its ']'"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(err("expected [IPv6]:PORT")),
                },
            }
        } else if value.matches(':').count() > 1 {
            (value, None)
        } else {
            match value.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (value, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(err("the port must be a number from 1 to 65535")),
            },
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(canonical_ip(ip)),
            Err(_) => {
                check_dns_subdomain(host).map_err(|_| {
                    err("expected HOST or HOST:PORT, HOST an IP address or a DNS-1123 subdomain")
                })?;
                Host::Dns(host.to_string())
            }
        };
        Ok(Self { host, port })
    }
}

impl ControlPlaneEndpoint {
    /// The host, which the API server's certificate names.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// An extra subject alternative name for the API server's certificate
/// (`--san`): an IP address, a DNS-1123 subdomain or a wildcard name
/// (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraSan(Host);

impl FromStr for ExtraSan {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(Self(Host::Ip(canonical_ip(ip))));
        }
        let name = value.strip_prefix("*.").unwrap_or(value);
        check_dns_subdomain(name).map_err(|_| SpecError::San {
            value: value.to_string(),
            reason: "expected an IP address, a DNS-1123 subdomain or a wildcard name such as *.example.com",
        })?;
        Ok(Self(Host::Dns(value.to_string())))
    }
}

impl ExtraSan {
    /// The name or address.
    pub fn host(&self) -> &Host {
        &self.0
    }
}

/// The type of every key kprov generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA with a 2048-bit modulus (kubeadm's default).
    #[default]
    Rsa,
    /// ECDSA on NIST P-256 (kubeadm's `PublicKeysECDSA` feature gate).
    Ecdsa,
}

impl FromStr for KeyType {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "rsa" => Ok(Self::Rsa),
            "ecdsa" => Ok(Self::Ecdsa),
            _ => Err(SpecError::KeyType {
                value: value.to_string(),
            }),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA 2048",
            KeyType::Ecdsa => "ECDSA P-256",
        })
    }
}

/// The control-plane node whose identities the PKI and kubeconfigs hold:
/// what both the certificate and the kubeconfig phases need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneNode {
    /// The node's name (certificate subjects and SANs, kubelet.conf).
    pub node_name: NodeName,
    /// The address the API server advertises.
    pub advertise_address: AdvertiseAddress,
    /// The API server's port on this node.
    pub bind_port: u16,
    /// The stable control-plane address, when there is one (several
    /// masters behind a load balancer).
    pub control_plane_endpoint: Option<ControlPlaneEndpoint>,
    /// The Kubernetes release the control plane runs; subjects and files
    /// follow what kubeadm of that release makes.
    pub kubernetes_version: KubernetesVersion,
    /// The type of the keys generated.
    pub key_type: KeyType,
}

impl ControlPlaneNode {
    /// A node with the default port, no control-plane endpoint, and RSA
    /// keys.
    pub fn new(
        node_name: NodeName,
        advertise_address: AdvertiseAddress,
        kubernetes_version: KubernetesVersion,
    ) -> Self {
        Self {
            node_name,
            advertise_address,
            bind_port: DEFAULT_API_SERVER_PORT,
            control_plane_endpoint: None,
            kubernetes_version,
            key_type: KeyType::Rsa,
        }
    }

    /// The URL clients outside the control plane use: the control-plane
    /// endpoint (with its port, or the API server's) or else the advertise
    /// address, as kubeadm writes into admin.conf and kubelet.conf.
    pub fn control_plane_url(&self) -> String {
        match &self.control_plane_endpoint {
            Some(ep) => format!(
                "https://{}:{}",
                ep.host().url_host(),
                ep.port().unwrap_or(self.bind_port)
            ),
            None => self.local_url(),
        }
    }

    /// The URL of this node's own API server, which the controller manager
    /// and scheduler use.
    pub fn local_url(&self) -> String {
        format!(
            "https://{}:{}",
            Host::Ip(self.advertise_address.ip()).url_host(),
            self.bind_port
        )
    }
}

/// Everything the certificate phase needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiSpec {
    /// The node and cluster-wide facts shared with the kubeconfig phase.
    pub node: ControlPlaneNode,
    /// The service CIDR; its first address is a SAN of the API server.
    pub service_cidr: ServiceCidr,
    /// The cluster DNS domain; `kubernetes.default.svc.<domain>` is a SAN.
    pub cluster_domain: ClusterDomain,
    /// Extra SANs for the API server's certificate.
    pub extra_sans: Vec<ExtraSan>,
}

impl PkiSpec {
    /// A spec with kubeadm's default service CIDR and cluster domain and
    /// no extra SANs.
    pub fn new(node: ControlPlaneNode) -> Self {
        Self {
            node,
            service_cidr: ServiceCidr::from_str(DEFAULT_SERVICE_CIDR)
                .unwrap_or_else(|_| unreachable!("the default service CIDR parses")),
            cluster_domain: ClusterDomain(DEFAULT_CLUSTER_DOMAIN.to_string()),
            extra_sans: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_service_ip_follows_the_network_address() {
        for (cidr, first) in [
            ("10.96.0.0/12", "10.96.0.1"),
            ("10.96.0.5/12", "10.96.0.1"),
            ("172.16.4.0/24", "172.16.4.1"),
            ("192.168.0.0/31", "192.168.0.1"),
            ("fd00:10:96::/112", "fd00:10:96::1"),
            ("10.96.0.0/12,fd00::/108", "10.96.0.1"),
            ("fd00::/108, 10.96.0.0/12", "fd00::1"),
        ] {
            let c: ServiceCidr = cidr.parse().unwrap();
            assert_eq!(c.first_service_ip().to_string(), first, "{cidr}");
        }
    }

    #[test]
    fn bad_service_cidrs_are_refused_with_the_reason() {
        let shape = "expected ADDRESS/PREFIX, e.g. 10.96.0.0/12";
        for (cidr, reason) in [
            ("10.96.0.0", shape),
            ("10.96.0.0/", shape),
            ("10.96.0.0/+1", shape),
            (
                "10.96.0.0/33",
                "the prefix leaves no room for the API server's service IP: at most /31 for IPv4",
            ),
            (
                "10.96.0.1/32",
                "the prefix leaves no room for the API server's service IP: at most /31 for IPv4",
            ),
            (
                "fd00::/128",
                "the prefix leaves no room for the API server's service IP: at most /127 for IPv6",
            ),
            ("10.96.0.0/12,nope", shape),
            ("", shape),
        ] {
            let err = cidr.parse::<ServiceCidr>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("service CIDR {cidr:?} is not valid: {reason}")
            );
        }
    }

    #[test]
    fn advertise_addresses_must_be_specified_ips() {
        assert_eq!(
            "192.0.2.10"
                .parse::<AdvertiseAddress>()
                .unwrap()
                .to_string(),
            "192.0.2.10"
        );
        assert_eq!(
            "::ffff:192.0.2.10"
                .parse::<AdvertiseAddress>()
                .unwrap()
                .to_string(),
            "192.0.2.10"
        );
        for (value, reason) in [
            ("master-1", "expected an IPv4 or IPv6 address, e.g. 192.168.1.10"),
            ("192.0.2.300", "expected an IPv4 or IPv6 address, e.g. 192.168.1.10"),
            ("", "expected an IPv4 or IPv6 address, e.g. 192.168.1.10"),
            ("0.0.0.0", "an unspecified address cannot be advertised: give the address other hosts reach this API server on"),
            ("::", "an unspecified address cannot be advertised: give the address other hosts reach this API server on"),
        ] {
            let err = value.parse::<AdvertiseAddress>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("advertise address {value:?} is not valid: {reason}")
            );
        }
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        for ok in ["master-1", "a", "node.example.com", "0node"] {
            assert!(ok.parse::<NodeName>().is_ok(), "{ok}");
        }
        for bad in [
            "Master",
            "node_1",
            "-node",
            "node-",
            "a..b",
            "",
            &"a".repeat(64),
        ] {
            let err = bad.parse::<NodeName>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("node name {bad:?} is not valid: {DNS_SUBDOMAIN_RULE}")
            );
        }
    }

    #[test]
    fn endpoints_split_host_and_port() {
        for (text, host, port) in [
            ("cp.example.test", Host::Dns("cp.example.test".into()), None),
            (
                "cp.example.test:8443",
                Host::Dns("cp.example.test".into()),
                Some(8443),
            ),
            ("192.0.2.1", Host::Ip("192.0.2.1".parse().unwrap()), None),
            (
                "192.0.2.1:443",
                Host::Ip("192.0.2.1".parse().unwrap()),
                Some(443),
            ),
            ("fd00::1", Host::Ip("fd00::1".parse().unwrap()), None),
            ("[fd00::1]", Host::Ip("fd00::1".parse().unwrap()), None),
            (
                "[fd00::1]:6443",
                Host::Ip("fd00::1".parse().unwrap()),
                Some(6443),
            ),
        ] {
            let ep: ControlPlaneEndpoint = text.parse().unwrap();
            assert_eq!((ep.host(), ep.port()), (&host, port), "{text}");
        }
        for (text, reason) in [
            ("cp:0", "the port must be a number from 1 to 65535"),
            ("cp:70000", "the port must be a number from 1 to 65535"),
            ("cp:+1", "the port must be a number from 1 to 65535"),
            ("[fd00::1", "an IPv6 address in brackets lacks its ']'"),
            ("[fd00::1]x", "expected [IPv6]:PORT"),
            (
                "Bad_Host",
                "expected HOST or HOST:PORT, HOST an IP address or a DNS-1123 subdomain",
            ),
            ("https://cp", "expected HOST or HOST:PORT, without a scheme"),
            (
                "cp.example.test:",
                "the port must be a number from 1 to 65535",
            ),
        ] {
            let err = text.parse::<ControlPlaneEndpoint>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("control-plane endpoint {text:?} is not valid: {reason}")
            );
        }
    }

    #[test]
    fn urls_use_the_endpoint_or_the_advertise_address() {
        let mut node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        assert_eq!(node.control_plane_url(), "https://192.0.2.10:6443");
        for (endpoint, url) in [
            ("cp.example.test", "https://cp.example.test:6443"),
            ("cp.example.test:8443", "https://cp.example.test:8443"),
            ("fd00::1", "https://[fd00::1]:6443"),
        ] {
            node.control_plane_endpoint = Some(endpoint.parse().unwrap());
            assert_eq!(node.control_plane_url(), url);
            assert_eq!(node.local_url(), "https://192.0.2.10:6443");
        }
        node.advertise_address = "fd00::10".parse().unwrap();
        assert_eq!(node.local_url(), "https://[fd00::10]:6443");
    }

    #[test]
    fn extra_sans_are_ips_dns_names_or_wildcards() {
        for (text, host) in [
            ("198.51.100.7", Host::Ip("198.51.100.7".parse().unwrap())),
            ("extra.example.test", Host::Dns("extra.example.test".into())),
            ("*.example.test", Host::Dns("*.example.test".into())),
        ] {
            assert_eq!(text.parse::<ExtraSan>().unwrap().host(), &host);
        }
        for bad in ["Upper.example", "a b", "*", "*.", "x.*.example"] {
            let err = bad.parse::<ExtraSan>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("subject alternative name {bad:?} is not valid: expected an IP address, a DNS-1123 subdomain or a wildcard name such as *.example.com")
            );
        }
    }

    #[test]
    fn key_types_parse_from_their_flag_names() {
        assert_eq!("rsa".parse::<KeyType>().unwrap(), KeyType::Rsa);
        assert_eq!("ecdsa".parse::<KeyType>().unwrap(), KeyType::Ecdsa);
        assert_eq!(
            "dsa".parse::<KeyType>().unwrap_err().to_string(),
            "key type \"dsa\" is not valid: expected rsa or ecdsa"
        );
    }
}
