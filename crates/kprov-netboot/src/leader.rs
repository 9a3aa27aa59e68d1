//! One DHCP server among replicas: with `--machines kubernetes`, the
//! replicas share a `coordination.k8s.io` Lease (`kprov-netboot`) and only
//! its holder answers DHCP and writes Machine status; the others receive
//! and drop. A holder that stops renewing is replaced once its lease has
//! run out ([`LEASE_SECONDS`]); a holder that cannot renew stops answering
//! before then, so two replicas never answer at once.
//!
//! [`step`] decides (pure, times in milliseconds since the Unix epoch);
//! [`lead_loop`] reads and writes the Lease with optimistic concurrency
//! (a write against a stale resourceVersion loses the race).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::server::Shared;

/// The Lease's name.
pub const LEASE_NAME: &str = "kprov-netboot";

// A holder stops answering before its lease runs out for the others.
const _: () = assert!(
    RENEW_DEADLINE.as_secs() < LEASE_SECONDS as u64 && RETRY.as_secs() < RENEW_DEADLINE.as_secs()
);

/// How long a holder's lease lasts after its last renewal.
pub const LEASE_SECONDS: i32 = 15;

/// How often the holder renews and the others look.
pub const RETRY: Duration = Duration::from_secs(2);

/// A holder that could not renew for this long stops answering (before
/// its lease runs out for the others).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// Who holds the Lease and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The holder's identity (empty: released).
    pub holder: String,
    /// Its last renewal.
    pub renewed_ms: i64,
    /// Its lease's length.
    pub duration_s: i32,
}

/// What a replica does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// It holds the Lease: renew it.
    Renew,
    /// The Lease ran out or was released: take it over.
    TakeOver,
    /// Another replica holds it.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// The next step for replica `me` at `now_ms`.
pub fn step(current: Option<&Held>, me: &str, now_ms: i64) -> Step {
    let Some(held) = current else {
        return Step::Create;
    };
    if held.holder == me {
        return Step::Renew;
    }
    let expires = held
        .renewed_ms
        .saturating_add(i64::from(held.duration_s.max(1)) * 1000);
    if held.holder.is_empty() || now_ms >= expires {
        Step::TakeOver
    } else {
        Step::Follow {
            holder: held.holder.clone(),
        }
    }
}

fn held(lease: &Lease) -> Held {
    let spec = lease.spec.clone().unwrap_or_default();
    Held {
        holder: spec.holder_identity.unwrap_or_default(),
        renewed_ms: spec
            .renew_time
            .map(|t| t.0.as_millisecond())
            .unwrap_or_default(),
        duration_s: spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS),
    }
}

/// One look at the Lease: whether this replica holds it afterwards, and
/// who does otherwise.
async fn attempt(api: &Api<Lease>, me: &str) -> Result<(bool, String), kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(LEASE_NAME).await?;
    let lost = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
    let decided = step(
        current.as_ref().map(held).as_ref(),
        me,
        now.as_millisecond(),
    );
    let mut lease = match (&decided, current) {
        (Step::Follow { holder }, _) => return Ok((false, holder.clone())),
        (Step::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.into()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok((true, me.into())),
                Err(e) if lost(&e) => Ok((false, String::new())),
                Err(e) => Err(e),
            };
        }
        (_, Some(lease)) => lease,
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if decided == Step::TakeOver {
        spec.holder_identity = Some(me.into());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
    }
    spec.renew_time = Some(MicroTime(now));
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok((true, me.into())),
        Err(e) if lost(&e) => Ok((false, String::new())),
        Err(e) => Err(e),
    }
}

/// Keeps this replica's side of the Lease in `namespace`, and
/// [`Shared::set_leading`] in step with it.
pub async fn lead_loop(shared: Arc<Shared>, client: Client, namespace: String, me: String) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_held = None::<Instant>;
    let mut leading = false;
    let mut said_follow = String::new();
    loop {
        let now_leading = match attempt(&api, &me).await {
            Ok((true, _)) => {
                last_held = Some(Instant::now());
                true
            }
            Ok((false, holder)) => {
                if holder != said_follow && !holder.is_empty() {
                    tracing::info!(lease = %format!("{namespace}/{LEASE_NAME}"), holder = %holder, "following: {holder} answers DHCP");
                    said_follow = holder;
                }
                false
            }
            Err(e) => {
                let keep = leading && last_held.is_some_and(|t| t.elapsed() < RENEW_DEADLINE);
                tracing::warn!(lease = %format!("{namespace}/{LEASE_NAME}"), "the Lease: {e}{}", if keep { " (still holding it)" } else { "" });
                keep
            }
        };
        if now_leading != leading {
            leading = now_leading;
            if leading {
                said_follow.clear();
                tracing::info!(lease = %format!("{namespace}/{LEASE_NAME}"), identity = %me, "leading: this replica answers DHCP");
            } else {
                tracing::warn!(lease = %format!("{namespace}/{LEASE_NAME}"), identity = %me, "no longer leading: DHCP is left to the holder");
            }
            shared.set_leading(leading);
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed_ms: i64) -> Held {
        Held {
            holder: holder.into(),
            renewed_ms,
            duration_s: 15,
        }
    }

    #[test]
    fn a_replica_creates_renews_follows_and_takes_over_once_the_lease_runs_out() {
        assert_eq!(step(None, "a", 0), Step::Create);
        assert_eq!(step(Some(&held_by("a", 0)), "a", 60_000), Step::Renew);
        assert_eq!(
            step(Some(&held_by("a", 10_000)), "b", 24_999),
            Step::Follow { holder: "a".into() }
        );
        assert_eq!(
            step(Some(&held_by("a", 10_000)), "b", 25_000),
            Step::TakeOver
        );
        assert_eq!(
            step(Some(&held_by("", 10_000)), "b", 10_001),
            Step::TakeOver
        );
    }
}
