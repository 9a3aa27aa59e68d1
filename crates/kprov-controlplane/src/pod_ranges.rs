//! Pod ranges for kprov's `bridge` network, allocated by kprov instead of
//! the controller manager's nodeipam controller. That controller waits a
//! fixed 10 s before its first look at the Nodes (v1.20) and holds up
//! every controller started after it meanwhile, the CSR signer among them,
//! which put 10 s on every new cluster. The allocation itself is the
//! same: each Node without `spec.podCIDR` gets the lowest free range of
//! the cluster's pod range, the oldest Node first.

use std::net::IpAddr;

use crate::spec::{Cidr, NODE_CIDR_MASK_V4};

/// The size of each node's IPv6 pod range (the controller manager's
/// default).
pub const NODE_CIDR_MASK_V6: u8 = 64;

/// One Node as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRange {
    /// The Node's name.
    pub name: String,
    /// Its `spec.podCIDR`, if it has one.
    pub pod_cidr: Option<String>,
    /// When it was created (RFC 3339, which sorts by time).
    pub created: String,
}

/// Why no range could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// The cluster's pod range cannot hold one node range.
    #[error("the pod range {cluster} is too small for node ranges of /{node_prefix}")]
    TooSmall {
        /// The cluster's pod range.
        cluster: String,
        /// The node range's prefix.
        node_prefix: u8,
    },
    /// Every node range is taken.
    #[error("every /{node_prefix} range of {cluster} is taken; node {node} gets none")]
    Full {
        /// The cluster's pod range.
        cluster: String,
        /// The node range's prefix.
        node_prefix: u8,
        /// The first node left without one.
        node: String,
    },
}

/// The prefix of each node's range within `cluster`.
pub fn node_prefix(cluster: &Cidr) -> u8 {
    if cluster.network().is_ipv4() {
        NODE_CIDR_MASK_V4
    } else {
        NODE_CIDR_MASK_V6
    }
}

/// The ranges to give: `(node, range)` for every node of `nodes` without
/// one, oldest first (then by name), each the lowest range of `cluster`
/// that no node has. Ranges outside `cluster` that nodes already have are
/// left alone.
pub fn allocate(
    cluster: &Cidr,
    nodes: &[NodeRange],
) -> Result<Vec<(String, String)>, AllocateError> {
    let node_prefix = node_prefix(cluster);
    let width: u32 = if cluster.network().is_ipv4() { 32 } else { 128 };
    if cluster.prefix() > node_prefix || u32::from(node_prefix) > width {
        return Err(AllocateError::TooSmall {
            cluster: cluster.to_string(),
            node_prefix,
        });
    }
    let base = bits(cluster.network());
    let step = 1u128 << (width - u32::from(node_prefix));
    // How many node ranges the cluster range holds, capped: no cluster
    // has more nodes than this.
    let count = 1u128
        .checked_shl(u32::from(node_prefix - cluster.prefix()))
        .unwrap_or(u128::MAX)
        .min(1 << 20);
    let taken: Vec<u128> = nodes
        .iter()
        .filter_map(|n| n.pod_cidr.as_deref()?.parse::<Cidr>().ok())
        .filter(|c| c.prefix() >= cluster.prefix() && cluster.overlaps(c.network(), c.prefix()))
        .filter_map(|c| Some(bits(c.network()).checked_sub(base)? / step))
        .collect();
    let mut wanting: Vec<&NodeRange> = nodes.iter().filter(|n| n.pod_cidr.is_none()).collect();
    wanting.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    let mut free = (0..count).filter(|i| !taken.contains(i));
    let mut given = Vec::new();
    for node in wanting {
        let Some(index) = free.next() else {
            return Err(AllocateError::Full {
                cluster: cluster.to_string(),
                node_prefix,
                node: node.name.clone(),
            });
        };
        let network = address(cluster.network(), base + index * step);
        given.push((node.name.clone(), format!("{network}/{node_prefix}")));
    }
    Ok(given)
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn address(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        // The value came from a v4 base plus v4 offsets: it fits.
        IpAddr::V4(_) => IpAddr::V4((u32::try_from(bits).unwrap_or(u32::MAX)).into()),
        IpAddr::V6(_) => IpAddr::V6(bits.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, range: Option<&str>, created: &str) -> NodeRange {
        NodeRange {
            name: name.into(),
            pod_cidr: range.map(Into::into),
            created: created.into(),
        }
    }

    #[test]
    fn the_oldest_nodes_get_the_lowest_free_ranges_and_taken_ones_are_skipped() {
        let cluster: Cidr = "10.244.0.0/16".parse().unwrap();
        let nodes = [
            node("w2", None, "2026-12-03T12:00:09Z"),
            node("m1", Some("10.244.0.0/24"), "2026-12-03T12:00:01Z"),
            node("w1", None, "2026-12-03T12:00:05Z"),
            node("m2", Some("10.244.2.0/24"), "2026-12-03T12:00:02Z"),
            node("old", Some("10.99.0.0/24"), "2026-12-03T12:00:00Z"),
        ];
        assert_eq!(
            allocate(&cluster, &nodes).unwrap(),
            vec![
                ("w1".to_string(), "10.244.1.0/24".to_string()),
                ("w2".to_string(), "10.244.3.0/24".to_string()),
            ]
        );
        let all_have_one: Vec<NodeRange> = nodes
            .iter()
            .map(|n| node(&n.name, Some("10.244.7.0/24"), &n.created))
            .collect();
        assert!(allocate(&cluster, &all_have_one).unwrap().is_empty());
    }

    #[test]
    fn a_full_or_too_small_cluster_range_is_an_error_naming_it() {
        let cluster: Cidr = "10.244.0.0/23".parse().unwrap();
        let nodes = [
            node("a", None, "1"),
            node("b", None, "2"),
            node("c", None, "3"),
        ];
        let e = allocate(&cluster, &nodes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "every /24 range of 10.244.0.0/23 is taken; node c gets none"
        );
        let tiny: Cidr = "10.244.0.0/25".parse().unwrap();
        let e = allocate(&tiny, &nodes).unwrap_err();
        assert!(e.to_string().contains("10.244.0.0/25 is too small"), "{e}");
    }

    #[test]
    fn ipv6_nodes_get_slash_64_ranges() {
        let cluster: Cidr = "fd00:10:244::/56".parse().unwrap();
        let nodes = [
            node("a", Some("fd00:10:244::/64"), "1"),
            node("b", None, "2"),
        ];
        assert_eq!(
            allocate(&cluster, &nodes).unwrap(),
            vec![("b".to_string(), "fd00:10:244:1::/64".to_string())]
        );
    }
}
