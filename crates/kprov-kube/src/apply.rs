//! API plans applied server-side.
//!
//! Each object is applied with kprov's field manager and reported with
//! kprov-plan's [`Outcome`]: created when it did not exist, unchanged when
//! the apply left its resourceVersion alone, changed otherwise. With
//! `dry_run` nothing is stored: the API server is asked for the object as
//! the apply would make it (server-side dry run) and that is compared with
//! what it holds now. When the API server does not answer a dry run, every
//! object is listed as it would be created, with the reason it could not
//! be checked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kprov_controlplane::objects::{ApiObject, ApiPlan};
use kprov_plan::{Outcome, Report, ResourceReport};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ApiError, FIELD_MANAGER};

/// Applies `plan` through `client` (or with `dry_run` says what would
/// change); `target` names the API server in the report.
pub async fn apply_plan(
    client: &Client,
    plan: &ApiPlan,
    target: &str,
    dry_run: bool,
) -> Result<Report, ApiError> {
    let mut report = Report::new(&plan.headline, target, dry_run);
    for object in &plan.objects {
        let span = tracing::info_span!("object", id = %object.label());
        let _guard = span.enter();
        match apply_object(client, object, dry_run).await {
            Ok(entry) => report.push(entry),
            Err(e) if dry_run && e.is_unavailable() => {
                // Nothing to compare with: say what the plan holds.
                for object in plan.objects.iter().skip(report.resources.len()) {
                    report.push(ResourceReport {
                        id: object.label(),
                        description: object.label(),
                        outcome: Outcome::Created,
                        detail: Some(format!("not checked: {e}")),
                    });
                }
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Applies one object (or dry-runs it).
pub async fn apply_object(
    client: &Client,
    object: &ApiObject,
    dry_run: bool,
) -> Result<ResourceReport, ApiError> {
    let c = client.clone();
    let ns = |o: &ApiObject| o.namespace().unwrap_or("default").to_string();
    let outcome = match object {
        ApiObject::CustomResourceDefinition(o) => apply_typed(Api::all(c), o, dry_run).await,
        ApiObject::ClusterRole(o) => apply_typed(Api::all(c), o, dry_run).await,
        ApiObject::ClusterRoleBinding(o) => apply_typed(Api::all(c), o, dry_run).await,
        ApiObject::Role(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
        ApiObject::RoleBinding(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
        ApiObject::ConfigMap(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
        ApiObject::ServiceAccount(o) => {
            apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await
        }
        ApiObject::Service(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
        ApiObject::Deployment(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
        ApiObject::DaemonSet(o) => apply_typed(Api::namespaced(c, &ns(object)), o, dry_run).await,
    };
    let label = object.label();
    let (outcome, detail) = outcome.map_err(|(action, source)| ApiError::Request {
        what: format!("{action} {label}"),
        source,
    })?;
    Ok(ResourceReport {
        id: label.clone(),
        description: label,
        outcome,
        detail,
    })
}

type Failed = (&'static str, kube::Error);

async fn apply_typed<K>(
    api: Api<K>,
    object: &K,
    dry_run: bool,
) -> Result<(Outcome, Option<String>), Failed>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let before = api.get_opt(&name).await.map_err(|e| ("reading", e))?;
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        let Some(before) = before else {
            return Ok((Outcome::Created, Some("does not exist".into())));
        };
        params = params.dry_run();
        let after = api
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| ("dry-run applying", e))?;
        if kprov_entry(before.meta()) == kprov_entry(after.meta()) {
            return Ok((Outcome::Unchanged, None));
        }
        let differs = changed_fields(&before, &after);
        return Ok((
            Outcome::Changed,
            Some(format!("{} differ", differs.join(", "))),
        ));
    }
    let after = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|e| ("applying", e))?;
    let Some(before) = before else {
        return Ok((Outcome::Created, None));
    };
    let unchanged = before.meta().resource_version == after.meta().resource_version
        || kprov_entry(before.meta()) == kprov_entry(after.meta());
    Ok(if unchanged {
        (Outcome::Unchanged, None)
    } else {
        (Outcome::Changed, None)
    })
}

/// kprov's own entry of an object's managed fields: the fields its applies
/// own and when they last changed them. Controllers write the same objects
/// (the token controller adds a ServiceAccount's secrets, for one), so a
/// new resourceVersion alone does not mean kprov's apply changed anything;
/// a change of this entry does.
fn kprov_entry(meta: &ObjectMeta) -> Option<serde_json::Value> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .find(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .map(|m| serde_json::json!({ "fields": m.fields_v1, "time": m.time }))
}

/// The top-level fields (and metadata's labels and annotations) in which
/// two versions of an object differ, ignoring what the server keeps for
/// itself (managed fields, resourceVersion, generation, timestamps).
fn changed_fields<K: Serialize>(before: &K, after: &K) -> Vec<String> {
    let normalise = |o: &K| {
        let mut v = serde_json::to_value(o).unwrap_or_default();
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for key in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                meta.remove(key);
            }
        }
        if let Some(obj) = v.as_object_mut() {
            obj.remove("status");
        }
        v
    };
    let (a, b) = (normalise(before), normalise(after));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["object".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn map(version: &str, data: &str) -> ConfigMap {
        let mut m = ConfigMap::default();
        m.metadata.name = Some("x".into());
        m.metadata.resource_version = Some(version.into());
        m.data = Some([("k".to_string(), data.to_string())].into());
        m
    }

    #[test]
    fn server_bookkeeping_is_not_a_change_but_data_is() {
        assert!(changed_fields(&map("1", "a"), &map("2", "a")).is_empty());
        assert_eq!(changed_fields(&map("1", "a"), &map("1", "b")), ["data"]);
    }
}
