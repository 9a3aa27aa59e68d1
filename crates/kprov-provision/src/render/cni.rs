//! The node side of kprov's `bridge` pod network: the CNI config for this
//! node's pod range, and the routes to the other nodes' pod ranges. Pure:
//! `kprov pod-network sync` reads the Node objects and applies the plan
//! made here with kprov-plan's engine.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where the CNI config goes; `10-` sorts it before configs that other
/// networks may have left, so the kubelet picks it.
pub const BRIDGE_CONFLIST: &str = "/etc/cni/net.d/10-kprov-bridge.conflist";

/// The Linux bridge the pods' veths are attached to.
pub const BRIDGE_NAME: &str = "kprov0";

/// The routing protocol number kprov's pod routes carry, so that they can
/// be found and removed again without touching anyone else's routes
/// (`ip route ... proto 77`; numbers above 4 are free for daemons).
pub const ROUTE_PROTOCOL: u8 = 77;

/// The CNI config for a node whose pods get addresses from `pod_cidr`:
/// the bridge plugin (the node is the pods' gateway, traffic leaving the
/// pod range is masqueraded) with host-local IPAM, and portmap for
/// hostPort. CNI spec 0.3.1, which the v1.20 kubelet's libcni and current
/// plugins both speak.
pub fn bridge_conflist(pod_cidr: &str) -> String {
    let config = serde_json::json!({
        "cniVersion": "0.3.1",
        "name": "kprov-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE_NAME,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    text.push('\n');
    text
}

/// What the API says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The node's name.
    pub name: String,
    /// Its pod range (`spec.podCIDR`), once the controller manager has
    /// allocated one.
    pub pod_cidr: Option<String>,
    /// Its InternalIP, if it has reported one.
    pub internal_ip: Option<IpAddr>,
}

/// The routes this node (`me`) needs: every other node's pod range via
/// that node's address. Nodes without a range or an address yet are left
/// out (a later sync picks them up).
pub fn desired_routes(nodes: &[NodeRoute], me: &str) -> BTreeMap<String, IpAddr> {
    nodes
        .iter()
        .filter(|n| n.name != me)
        .filter_map(|n| Some((n.pod_cidr.clone()?, n.internal_ip?)))
        .collect()
}

/// The plan of `kprov pod-network sync` on a running node: the CNI config
/// for its pod range, and kprov's routes (protocol [`ROUTE_PROTOCOL`])
/// exactly to the other nodes' ranges (stale ones deleted).
pub fn plan_pod_network(pod_cidr: &str, routes: BTreeMap<String, IpAddr>) -> kprov_plan::Plan {
    kprov_plan::Plan::new(
        format!("bridge pod network for pod range {pod_cidr}"),
        true,
        vec![
            kprov_plan::Resource::File {
                path: BRIDGE_CONFLIST.into(),
                mode: 0o644,
                contents: kprov_plan::Contents::Text(bridge_conflist(pod_cidr)),
            },
            kprov_plan::Resource::Routes {
                protocol: ROUTE_PROTOCOL,
                routes,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            pod_cidr: cidr.map(str::to_string),
            internal_ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    #[test]
    fn the_conflist_gives_pods_addresses_from_the_nodes_range_only() {
        let text = bridge_conflist("10.244.3.0/24");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(
            bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24",
            "{text}"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn routes_go_to_every_other_node_that_has_a_range_and_an_address() {
        let nodes = [
            node("master-1", Some("10.244.0.0/24"), Some("10.0.0.10")),
            node("worker-1", Some("10.244.1.0/24"), Some("10.0.0.11")),
            node("worker-2", None, Some("10.0.0.12")),
            node("worker-3", Some("10.244.3.0/24"), None),
        ];
        let routes = desired_routes(&nodes, "master-1");
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![("10.244.1.0/24".to_string(), "10.0.0.11".parse().unwrap())]
        );
    }
}
