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
        let applied = if dry_run {
            apply_object(client, object, dry_run).await
        } else {
            // An apply is idempotent: one the API server failed for a
            // while (a 5xx while it is overloaded or still starting, a
            // dropped connection) is made again.
            retry_unavailable(APPLY_RETRY_LIMIT, || apply_object(client, object, false)).await
        };
        match applied {
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

/// How long one object's apply is tried again while the API server
/// fails it with an error worth trying again.
pub const APPLY_RETRY_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `attempt` until it succeeds, fails for good (an error that is not
/// [`ApiError::is_unavailable`]) or `limit` has passed since the first
/// try, waiting 1 s, then twice as long each time up to 8 s, between
/// tries; the last error is returned.
pub async fn retry_unavailable<T, F, Fut>(
    limit: std::time::Duration,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match attempt().await {
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, retry_in_s = pause.as_secs(), "the API server failed a request; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(8));
            }
            done => return done,
        }
    }
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

    fn api_error(code: u16) -> ApiError {
        ApiError::Request {
            what: "applying ServiceAccount/kube-system/coredns".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("resource quota evaluation timed out", "InternalError")
                    .with_code(code)
                    .boxed(),
            ),
        }
    }

    /// Runs `retry_unavailable` over `answers` (one per attempt, then the
    /// last again); the result and the number of attempts.
    fn run_retry(
        limit: std::time::Duration,
        answers: &[Option<u16>],
    ) -> (Result<u32, ApiError>, usize) {
        let calls = std::cell::Cell::new(0usize);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let result = runtime.block_on(retry_unavailable(limit, || {
            let n = calls.get();
            calls.set(n + 1);
            let answer = answers[n.min(answers.len() - 1)];
            async move {
                match answer {
                    None => Ok(7),
                    Some(code) => Err(api_error(code)),
                }
            }
        }));
        (result, calls.get())
    }

    #[test]
    fn an_apply_the_api_server_fails_for_a_while_is_made_again_and_a_refusal_is_not() {
        let limit = std::time::Duration::from_secs(10);
        // Overloaded: 500, then 503, then it answers.
        let (result, calls) = run_retry(limit, &[Some(500), Some(503), None]);
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls, 3);
        // Refused or invalid: at once, once.
        for code in [403, 422] {
            let (result, calls) = run_retry(limit, &[Some(code), None]);
            assert!(!result.unwrap_err().is_unavailable());
            assert_eq!(calls, 1, "{code}");
        }
        // Still failing when the limit is near: the last error.
        let (result, calls) = run_retry(std::time::Duration::from_millis(1500), &[Some(500)]);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("resource quota evaluation timed out"), "{err}");
        assert_eq!(calls, 2);
    }

    #[test]
    fn server_bookkeeping_is_not_a_change_but_data_is() {
        assert!(changed_fields(&map("1", "a"), &map("2", "a")).is_empty());
        assert_eq!(changed_fields(&map("1", "a"), &map("1", "b")), ["data"]);
    }
}
