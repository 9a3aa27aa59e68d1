//! The inputs of `kprov init`, validated: the control-plane node (shared
//! with the PKI), the cluster's address ranges and DNS domain, where images
//! come from, and the pod network.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use kprov_pki::spec::{parse_cidr, ClusterDomain, ServiceCidr};
use kprov_pki::{ControlPlaneNode, PkiSpec};

/// kubeadm's (and flannel's) default pod network.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
/// kubeadm's default service range, here for the code that checks
/// addresses against it.
pub use kprov_pki::spec::DEFAULT_SERVICE_CIDR;
/// The size of each node's pod range, as the controller manager allocates
/// it (its default).
pub const NODE_CIDR_MASK_V4: u8 = 24;

/// An address range, `ADDRESS/PREFIX`, masked to its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (network, prefix) = parse_cidr(s.trim()).map_err(|e| format!("{s}: {e}"))?;
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, network: IpAddr, prefix: u8) -> bool {
        let common = self.prefix.min(prefix);
        match (self.network, network) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(common)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(common)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// How pods on different nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetwork {
    /// flannel with its VXLAN backend (a DaemonSet), for any topology.
    Flannel,
    /// The bridge and host-local CNI plugins with a route per node to its
    /// pod range: no overlay, for nodes on one L2 segment.
    Bridge,
}

impl PodNetwork {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            PodNetwork::Flannel => "flannel",
            PodNetwork::Bridge => "bridge",
        }
    }
}

/// Why a cluster spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSpecError {
    /// Pod and service ranges overlap.
    #[error("--pod-cidr {pod} overlaps --service-cidr {service}: pod and Service addresses would be ambiguous; choose disjoint ranges (kubeadm's defaults are 10.244.0.0/16 and 10.96.0.0/12)")]
    Overlap {
        /// The pod range.
        pod: String,
        /// The service range.
        service: String,
    },
    /// A pod range too small to give each node its own range.
    #[error("--pod-cidr {pod}: too small to give each node a /{mask}; expected a prefix shorter than /{mask}, e.g. /16")]
    PodCidrTooSmall {
        /// The pod range.
        pod: String,
        /// The per-node range size.
        mask: u8,
    },
    /// The advertise address lies in the pod or service range.
    #[error("--advertise-address {address} lies in {flag} {range}: the node's own address must be outside the cluster's virtual ranges")]
    AddressInRange {
        /// The address.
        address: String,
        /// Which flag's range.
        flag: &'static str,
        /// The range.
        range: String,
    },
}

/// Everything `kprov init` needs.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The certificates' inputs: the node, the service range, the domain,
    /// extra SANs.
    pub pki: PkiSpec,
    /// The pod network's range, split into per-node ranges.
    pub pod_cidr: Cidr,
    /// How pods reach each other.
    pub pod_network: PodNetwork,
    /// The registry (and path) images are named under, e.g. `k8s.gcr.io`.
    pub image_registry: String,
    /// The certificates' directory on the node.
    pub cert_dir: PathBuf,
    /// Where kubeconfigs and the manifests directory are on the node.
    pub kubernetes_dir: PathBuf,
    /// etcd's data directory on the node.
    pub etcd_data_dir: PathBuf,
    /// The nodes are containers sharing their host's kernel, swap and
    /// disk (`--node-in-container`): this master's kubelet is set up for
    /// that, and kube-proxy leaves the host's conntrack table size alone.
    pub nodes_in_containers: bool,
}

/// Where every node of a kprov cluster reaches the API on port 6443: a
/// master its own API server, a worker its node-local balancer (`kprov
/// lb`). With it in the API servers' certificates, neither needs to check
/// them against another name.
pub const NODE_LOCAL_API_ADDRESS: &str = "127.0.0.1";
/// The port there: the API servers' and `kprov lb`'s.
pub const NODE_LOCAL_API_PORT: u16 = 6443;

impl ClusterSpec {
    /// A spec with kubeadm's paths and default pod range, flannel, and the
    /// release's default registry.
    pub fn new(pki: PkiSpec) -> Self {
        let image_registry =
            kprov_artifacts::catalog::default_registry(&pki.node.kubernetes_version).to_string();
        Self {
            pki,
            pod_cidr: DEFAULT_POD_CIDR
                .parse()
                .unwrap_or_else(|_| unreachable!("the default pod CIDR parses")),
            pod_network: PodNetwork::Flannel,
            image_registry,
            cert_dir: "/etc/kubernetes/pki".into(),
            kubernetes_dir: "/etc/kubernetes".into(),
            etcd_data_dir: "/var/lib/etcd".into(),
            nodes_in_containers: false,
        }
    }

    /// Names [`NODE_LOCAL_API_ADDRESS`] in the API server's certificate
    /// (and so in kubeadm-config's certSANs, which masters joining later
    /// read), unless it is there already.
    pub fn name_node_local_address(&mut self) {
        let san: kprov_pki::spec::ExtraSan = NODE_LOCAL_API_ADDRESS
            .parse()
            .unwrap_or_else(|_| unreachable!("a loopback address is a valid SAN"));
        if !self.pki.extra_sans.contains(&san) {
            self.pki.extra_sans.push(san);
        }
    }

    /// Where kube-proxy on every node reaches the API:
    /// `https://127.0.0.1:6443` when the certificates name it and no
    /// control-plane endpoint stands in front of the masters (a master's
    /// own API server there, a worker's `kprov lb`), else the control
    /// plane's URL.
    pub fn node_api_url(&self) -> String {
        let node = self.node();
        let named = self
            .pki
            .extra_sans
            .iter()
            .any(|s| s.host().to_string() == NODE_LOCAL_API_ADDRESS);
        if named && node.control_plane_endpoint.is_none() && node.bind_port == NODE_LOCAL_API_PORT {
            format!("https://{NODE_LOCAL_API_ADDRESS}:{NODE_LOCAL_API_PORT}")
        } else {
            node.control_plane_url()
        }
    }

    /// The node.
    pub fn node(&self) -> &ControlPlaneNode {
        &self.pki.node
    }

    /// The service range.
    pub fn service_cidr(&self) -> &ServiceCidr {
        &self.pki.service_cidr
    }

    /// The DNS domain.
    pub fn cluster_domain(&self) -> &ClusterDomain {
        &self.pki.cluster_domain
    }

    /// Checks what flags cannot check alone.
    pub fn validate(&self) -> Result<(), ClusterSpecError> {
        let service = self.service_cidr();
        if self.pod_cidr.overlaps(service.network(), service.prefix()) {
            return Err(ClusterSpecError::Overlap {
                pod: self.pod_cidr.to_string(),
                service: service.to_string(),
            });
        }
        if self.pod_cidr.network().is_ipv4() && self.pod_cidr.prefix() >= NODE_CIDR_MASK_V4 {
            return Err(ClusterSpecError::PodCidrTooSmall {
                pod: self.pod_cidr.to_string(),
                mask: NODE_CIDR_MASK_V4,
            });
        }
        let address = self.node().advertise_address.ip();
        let single = if address.is_ipv4() { 32 } else { 128 };
        for (flag, network, prefix, text) in [
            (
                "--pod-cidr",
                self.pod_cidr.network(),
                self.pod_cidr.prefix(),
                self.pod_cidr.to_string(),
            ),
            (
                "--service-cidr",
                service.network(),
                service.prefix(),
                service.to_string(),
            ),
        ] {
            let range = Cidr { network, prefix };
            if range.overlaps(address, single) {
                return Err(ClusterSpecError::AddressInRange {
                    address: address.to_string(),
                    flag,
                    range: text,
                });
            }
        }
        Ok(())
    }

    /// An image of this release's control plane, e.g. `kube-apiserver`.
    pub fn component_image(&self, component: &str) -> String {
        format!(
            "{}/{component}:{}",
            self.image_registry,
            self.node().kubernetes_version
        )
    }

    /// etcd's image, with the tag kubeadm of this release pins.
    pub fn etcd_image(&self) -> String {
        let tag = kprov_artifacts::catalog::companions(&self.node().kubernetes_version)
            .map(|c| c.etcd)
            .unwrap_or("3.5.16-0");
        format!("{}/etcd:{tag}", self.image_registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_pki::ControlPlaneNode;

    fn spec(pod: &str, service: &str, address: &str) -> ClusterSpec {
        let node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            address.parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        let mut pki = PkiSpec::new(node);
        pki.service_cidr = service.parse().unwrap();
        let mut s = ClusterSpec::new(pki);
        s.pod_cidr = pod.parse().unwrap();
        s
    }

    #[test]
    fn defaults_validate() {
        let s = spec("10.244.0.0/16", "10.96.0.0/12", "192.168.1.10");
        s.validate().unwrap();
        assert_eq!(
            s.component_image("kube-apiserver"),
            "k8s.gcr.io/kube-apiserver:v1.20.2"
        );
        assert_eq!(s.etcd_image(), "k8s.gcr.io/etcd:3.4.13-0");
    }

    #[test]
    fn overlapping_ranges_are_refused_naming_both() {
        let e = spec("10.96.0.0/16", "10.96.0.0/12", "192.168.1.10")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--pod-cidr 10.96.0.0/16 overlaps --service-cidr 10.96.0.0/12"),
            "{e}"
        );
        let e = spec("10.0.0.0/8", "10.96.0.0/12", "192.168.1.10")
            .validate()
            .unwrap_err();
        assert!(matches!(e, ClusterSpecError::Overlap { .. }));
        assert!(spec("10.97.0.0/16", "10.96.0.0/16", "192.168.1.10")
            .validate()
            .is_ok());
    }

    #[test]
    fn too_small_pod_range_and_address_inside_a_range_are_refused() {
        assert!(matches!(
            spec("10.244.0.0/24", "10.96.0.0/12", "192.168.1.10").validate(),
            Err(ClusterSpecError::PodCidrTooSmall { .. })
        ));
        assert!(matches!(
            spec("10.244.0.0/16", "10.96.0.0/12", "10.244.3.4").validate(),
            Err(ClusterSpecError::AddressInRange {
                flag: "--pod-cidr",
                ..
            })
        ));
    }
}
