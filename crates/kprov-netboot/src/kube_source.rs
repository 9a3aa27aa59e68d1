//! Machines from the API server (`kprov netboot serve --machines
//! kubernetes`): a watcher (kube-runtime's reflector) keeps the registry
//! in step with the `machines.kprov.dev` objects, validated as files are
//! ([`crate::machine::validate_spec`]), and another one follows the
//! Nodes: a Machine whose Node exists has joined (its script boots the
//! local disk, its user-data is closed) and is Ready with its Node. A
//! status loop writes each Machine's status ([`crate::crd::status_of`])
//! whenever what netboot has seen of it changes. A Machine netboot
//! refuses stays in the cluster and says why in its status (phase Failed,
//! the field in lastError).
//!
//! Pure: [`registry_from`], [`node_name`], [`node_ready`]; the loops are
//! the thin layer around the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};

use crate::config::Subnet;
use crate::crd::{status_of, MachineResource, Observed};
use crate::machine::{validate_spec, MachineError, Registry};
use crate::server::Shared;

/// How often the status loop compares what it saw with what each
/// Machine's status says.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The source named in errors about a Machine object.
fn source(name: &str) -> PathBuf {
    PathBuf::from(format!("machine/{name}"))
}

/// The node a Machine becomes: its host name, else its name.
pub fn node_name(object: &MachineResource) -> String {
    let name = object.name_any();
    crate::machine::node_name_for(object.spec.hostname.as_deref(), &name).to_string()
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The registry of the valid objects, and why each other one was refused
/// (by name). A Machine whose Node exists (in `nodes`, by name: Ready or
/// not) has joined: it is served as installed (its script boots the
/// local disk, its user-data is closed).
pub fn registry_from(
    objects: &[Arc<MachineResource>],
    nodes: &BTreeMap<String, bool>,
    subnet: Option<&Subnet>,
) -> (Registry, BTreeMap<String, MachineError>) {
    let mut objects: Vec<&Arc<MachineResource>> = objects.iter().collect();
    // Duplicates are refused for the later one, as files are in name
    // order: the older object keeps its MAC.
    objects.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref(), a.name_any())
            .cmp(&(b.metadata.creation_timestamp.as_ref(), b.name_any()))
    });
    let mut machines = Vec::new();
    let mut refused = BTreeMap::new();
    for object in objects {
        let name = object.name_any();
        match validate_spec(&source(&name), name.clone(), object.spec.clone(), subnet) {
            Ok(mut m) => {
                m.node = nodes.get(&node_name(object)).copied();
                machines.push(m);
            }
            Err(e) => {
                refused.insert(name, e);
            }
        }
    }
    let (registry, duplicates) = Registry::build(machines);
    for e in duplicates {
        let name = e
            .file
            .strip_prefix("machine")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        refused.insert(name, e);
    }
    (registry, refused)
}

/// Whether the cluster serves Machines: an error that says how to
/// install the definition when it does not, or what the API answered.
pub async fn check_served(client: &Client) -> Result<(), String> {
    let api: Api<MachineResource> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(
            "the cluster does not serve machines.kprov.dev: install its definition with `kprov netboot crd | kubectl apply -f -`"
                .into(),
        ),
        Err(e) => Err(format!("listing Machines: {e}")),
    }
}

/// What the watchers keep: the Machines and the Nodes.
#[derive(Clone)]
pub struct Watched {
    /// The Machine objects.
    pub machines: Store<MachineResource>,
    /// The Nodes.
    pub nodes: Store<Node>,
}

/// The stores' writing ends, for [`watch_loop`].
pub struct Writers {
    machines: reflector::store::Writer<MachineResource>,
    nodes: reflector::store::Writer<Node>,
}

/// Empty stores.
pub fn stores() -> (Watched, Writers) {
    let (machines, machines_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    (
        Watched { machines, nodes },
        Writers {
            machines: machines_writer,
            nodes: nodes_writer,
        },
    )
}

/// What a watch event means for the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing yet (the initial list comes one object at a time).
    None,
    /// The initial list is complete.
    Listed,
    /// An object changed or went.
    Changed,
}

fn change<K>(what: &str, event: Result<Event<K>, watcher::Error>) -> Change {
    match event {
        Ok(Event::Init | Event::InitApply(_)) => Change::None,
        Ok(Event::InitDone) => Change::Listed,
        Ok(Event::Apply(_) | Event::Delete(_)) => Change::Changed,
        Err(e) => {
            tracing::warn!("watching {what}: {e} (retrying)");
            Change::None
        }
    }
}

/// Follows the Machines and the Nodes: on each change, swaps in a new
/// registry.
pub async fn watch_loop(shared: Arc<Shared>, client: Client, watched: Watched, writers: Writers) {
    let machines = reflector(
        writers.machines,
        watcher(
            Api::<MachineResource>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| (true, change("Machines", e)));
    let nodes = reflector(
        writers.nodes,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| (false, change("Nodes", e)));
    let mut events = futures_util::stream::select(machines.boxed(), nodes.boxed());
    let mut said_joined = BTreeSet::new();
    let mut listed = false;
    while let Some((of_machines, change)) = events.next().await {
        if of_machines && change == Change::Listed {
            listed = true;
        }
        // No registry before every Machine is known: a partial one would
        // answer some machines and not others.
        if change == Change::None || !listed {
            continue;
        }
        let nodes: BTreeMap<String, bool> = watched
            .nodes
            .state()
            .iter()
            .map(|n| (n.name_any(), node_ready(n)))
            .collect();
        let (registry, refused) = registry_from(
            &watched.machines.state(),
            &nodes,
            shared.config.subnet.as_ref(),
        );
        let was_joined = std::mem::take(&mut said_joined);
        for machine in watched.machines.state() {
            let node = node_name(&machine);
            if nodes.contains_key(&node) {
                if !was_joined.contains(&node) {
                    tracing::info!(machine = %machine.name_any(), node = %node, "its Node exists: served as installed (local disk, no user-data)");
                }
                said_joined.insert(node);
            }
        }
        for (name, e) in &refused {
            tracing::error!(machine = %name, field = %e.field, "machine refused: {}", e.reason);
        }
        tracing::info!(
            machines = registry.len(),
            refused = refused.len(),
            "machines loaded from the API server"
        );
        shared.set_machines(registry, refused);
    }
}

/// Writes each Machine's status when it differs from what netboot saw.
pub async fn status_loop(shared: Arc<Shared>, client: Client, watched: Watched) {
    let api: Api<MachineResource> = Api::all(client);
    let params = PatchParams::default();
    // What was written last, by name: the store may lag behind a patch.
    let mut written: BTreeMap<String, crate::crd::MachineStatus> = BTreeMap::new();
    loop {
        tokio::time::sleep(STATUS_EVERY).await;
        // The replica that answers DHCP is the one that sees the machines.
        if !shared.leading() {
            written.clear();
            continue;
        }
        let machines = shared.machines();
        let refused = shared.refused();
        let now = crate::server::now();
        for object in watched.machines.state() {
            let name = object.name_any();
            let machine = machines.by_name(&name);
            let record = machine.and_then(|m| shared.record(&m.mac));
            let node = node_name(&object);
            let status = status_of(
                Observed {
                    record: record.as_ref(),
                    spec_installed: object.spec.profile.installed,
                    refused: refused.get(&name),
                    node: machine
                        .and_then(|m| m.node)
                        .map(|ready| (node.as_str(), ready)),
                },
                written.get(&name).or(object.status.as_ref()),
                now,
            );
            if object.status.as_ref() == Some(&status) {
                written.insert(name, status);
                continue;
            }
            if written.get(&name) == Some(&status) {
                continue;
            }
            let patch = Patch::Merge(serde_json::json!({ "status": status }));
            match api.patch_status(&name, &params, &patch).await {
                Ok(_) => {
                    tracing::info!(machine = %name, phase = ?status.phase, "status written");
                    written.insert(name, status);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(machine = %name, "writing its status: {e}"),
            }
        }
        let names: BTreeSet<String> = watched
            .machines
            .state()
            .iter()
            .map(|o| o.name_any())
            .collect();
        written.retain(|name, _| names.contains(name));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::{BootSpec, MachineSpec, ProfileSpec};

    fn object(name: &str, mac: &str, ip: &str) -> Arc<MachineResource> {
        Arc::new(MachineResource::new(
            name,
            MachineSpec {
                mac_address: mac.into(),
                uuid: None,
                ip_address: Some(ip.into()),
                hostname: None,
                profile: ProfileSpec {
                    role: Some("worker".into()),
                    boot: BootSpec {
                        image: Some("node.img.zst".into()),
                        ..BootSpec::default()
                    },
                    user_data: None,
                    installed: false,
                },
            },
        ))
    }

    #[test]
    fn objects_are_validated_as_files_and_a_joined_machine_is_served_as_installed() {
        let subnet: Subnet = "10.77.0.0/24".parse().unwrap();
        let objects = [
            object("node1", "52:54:00:00:00:01", "10.77.0.21"),
            object("node2", "52:54:00:00:00:02", "10.1.0.9"),
            object("node3", "52:54:00:00:00:01", "10.77.0.23"),
        ];
        let nodes = BTreeMap::from([("node1".to_string(), false)]);
        let (registry, refused) = registry_from(&objects, &nodes, Some(&subnet));
        assert_eq!(registry.len(), 1);
        let node1 = registry.by_name("node1").unwrap();
        assert!(node1.served_as_installed() && !node1.profile.installed);
        assert_eq!(node1.node, Some(false));
        assert_eq!(
            refused.keys().map(String::as_str).collect::<Vec<_>>(),
            ["node2", "node3"]
        );
        assert_eq!(refused["node2"].field, "spec.ipAddress");
        assert_eq!(refused["node3"].field, "spec.macAddress");
        assert_eq!(
            refused["node3"].reason,
            "52:54:00:00:00:01 is already used by machine/node1"
        );
        let (registry, _) = registry_from(&objects, &BTreeMap::new(), Some(&subnet));
        assert!(!registry.by_name("node1").unwrap().served_as_installed());
    }
}
