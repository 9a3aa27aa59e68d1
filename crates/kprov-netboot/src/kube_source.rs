//! Machines from the API server (`kprov netboot serve --machines
//! kubernetes`): a watcher (kube-runtime's reflector) keeps the registry
//! in step with the `machines.kprov.dev` objects, validated as files are
//! ([`crate::machine::validate_spec`]); a status loop writes each
//! Machine's status ([`crate::crd::status_of`]) whenever what netboot has
//! seen of it changes. A Machine netboot refuses stays in the cluster and
//! says why in its status (phase Failed, the field in lastError).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
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

/// The registry of the valid objects, and why each other one was refused
/// (by name).
pub fn registry_from(
    objects: &[Arc<MachineResource>],
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
            Ok(m) => machines.push(m),
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

/// The store of Machine objects the watcher fills.
pub fn store() -> (
    Store<MachineResource>,
    reflector::store::Writer<MachineResource>,
) {
    reflector::store()
}

/// Follows the Machines: on each change, swaps in a new registry.
pub async fn watch_loop(
    shared: Arc<Shared>,
    client: Client,
    reader: Store<MachineResource>,
    writer: reflector::store::Writer<MachineResource>,
) {
    let api: Api<MachineResource> = Api::all(client);
    let mut events = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            // The initial list comes one object at a time: build once at
            // its end.
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {}
            Err(e) => {
                tracing::warn!("watching Machines: {e} (retrying)");
                continue;
            }
        }
        let (registry, refused) = registry_from(&reader.state(), shared.config.subnet.as_ref());
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
pub async fn status_loop(shared: Arc<Shared>, client: Client, reader: Store<MachineResource>) {
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
        for object in reader.state() {
            let name = object.name_any();
            let record = machines
                .by_name(&name)
                .and_then(|m| shared.record(&m.mac).map(|r| (m.profile.installed, r)));
            let status = status_of(
                Observed {
                    record: record.as_ref().map(|(_, r)| r),
                    spec_installed: record.as_ref().is_some_and(|(i, _)| *i),
                    refused: refused.get(&name),
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
        let names: std::collections::BTreeSet<String> =
            reader.state().iter().map(|o| o.name_any()).collect();
        written.retain(|name, _| names.contains(name));
    }
}
