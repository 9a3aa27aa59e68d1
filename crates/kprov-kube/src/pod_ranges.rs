//! What the `bridge` pod network reads and writes: every Node's range and
//! address, the controller manager's leader (who gives ranges), a range
//! given, and the wait for the next change to any Node.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kprov_controlplane::pod_ranges::NodeRange;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::Client;

use crate::{request, ApiError, FIELD_MANAGER};

/// One Node: its name, pod range, InternalIP (as text) and creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name, range and creation time.
    pub range: NodeRange,
    /// Its InternalIP, if it has reported one.
    pub internal_ip: Option<String>,
}

/// Every Node, and the list's resource version (to watch from).
pub async fn list_nodes(client: &Client) -> Result<(Vec<NodeInfo>, String), ApiError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(request("listing Nodes"))?;
    let version = list.metadata.resource_version.unwrap_or_default();
    let nodes = list
        .items
        .into_iter()
        .map(|n| {
            let internal_ip = n
                .status
                .and_then(|s| s.addresses)
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address);
            NodeInfo {
                range: NodeRange {
                    name: n.metadata.name.unwrap_or_default(),
                    pod_cidr: n.spec.and_then(|s| s.pod_cidr),
                    created: n
                        .metadata
                        .creation_timestamp
                        .map(|t| t.0.to_string())
                        .unwrap_or_default(),
                },
                internal_ip,
            }
        })
        .collect();
    Ok((nodes, version))
}

/// The host name of the controller manager that holds its leader lease
/// (the part of the holder before `_`), or None when the lease is missing,
/// unheld or expired.
pub async fn controller_manager_leader(client: &Client) -> Result<Option<String>, ApiError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let Some(lease) = leases
        .get_opt("kube-controller-manager")
        .await
        .map_err(request("reading Lease kube-system/kube-controller-manager"))?
    else {
        return Ok(None);
    };
    let Some(spec) = lease.spec else {
        return Ok(None);
    };
    let (Some(holder), Some(renewed), Some(seconds)) = (
        spec.holder_identity,
        spec.renew_time,
        spec.lease_duration_seconds,
    ) else {
        return Ok(None);
    };
    let expires = renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(seconds));
    if expires < k8s_openapi::jiff::Timestamp::now() {
        return Ok(None);
    }
    Ok(holder
        .split('_')
        .next()
        .filter(|h| !h.is_empty())
        .map(str::to_string))
}

/// Gives Node `node` the pod range `range` (spec.podCIDR and podCIDRs).
/// The API server refuses to change a range once set.
pub async fn set_pod_range(client: &Client, node: &str, range: &str) -> Result<(), ApiError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({ "spec": { "podCIDR": range, "podCIDRs": [range] } });
    nodes
        .patch(
            node,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(request(format!("giving Node {node} the pod range {range}")))?;
    Ok(())
}

/// Waits until any Node changes after resource version `since`, or
/// `limit` passes; true on a change. A version too old to watch from
/// counts as a change (the caller reads the Nodes again anyway).
pub async fn wait_node_change(
    client: &Client,
    since: &str,
    limit: Duration,
) -> Result<bool, ApiError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let seconds = u32::try_from(limit.as_secs().max(1)).unwrap_or(u32::MAX);
    let params = WatchParams::default().timeout(seconds);
    let stream = nodes
        .watch(&params, since)
        .await
        .map_err(request("watching Nodes"))?;
    let mut stream = stream.boxed();
    while let Some(event) = stream.try_next().await.map_err(request("watching Nodes"))? {
        match event {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Added(_)
            | WatchEvent::Modified(_)
            | WatchEvent::Deleted(_)
            | WatchEvent::Error(_) => return Ok(true),
        }
    }
    Ok(false)
}
