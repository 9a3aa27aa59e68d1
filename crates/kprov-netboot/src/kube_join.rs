//! The join loop (with `--machines kubernetes` and a `join` section):
//! every few seconds the leader reads its bootstrap tokens back from the
//! API server, creates and deletes them as [`crate::join::plan_tokens`]
//! says, and renders each waiting worker's user-data from its newest
//! token; the HTTP server serves it to that machine only (its address,
//! its NoCloud token). Token ids are logged, their secrets never.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kprov_bootconfig::{ProvisionSource, Sha256Digest};
use kprov_controlplane::token::{TokenSpec, Ttl};
use kube::Client;

use crate::join::{
    cluster_from_info, machine_token, newest, plan_tokens, user_data, wants_join_data, Cluster,
    JoinConfig, TokenAction, DESCRIPTION_PREFIX,
};
use crate::server::Shared;

/// How often tokens and user-data are brought up to date.
const JOIN_EVERY: Duration = Duration::from_secs(2);

/// The path this server serves its own binary at.
pub const OWN_BINARY_PATH: &str = "/kprov";

/// Where setup.sh fetches kprov from and its sha256: as configured, else
/// this server's own binary from its HTTP server.
async fn provision_source(
    shared: &Shared,
    join: &JoinConfig,
) -> Result<(ProvisionSource, Sha256Digest), String> {
    let source = match &join.provision_source {
        Some(s) => s.clone(),
        None => format!("{}{OWN_BINARY_PATH}", shared.config.http_base())
            .parse()
            .map_err(|e| format!("this server's URL for its binary: {e}"))?,
    };
    let sha = match &join.provision_sha256 {
        Some(s) => s.clone(),
        None => {
            let sum = tokio::task::spawn_blocking(|| {
                kprov_host::fs::sha256_file(std::path::Path::new("/proc/self/exe"))
            })
            .await
            .map_err(|e| format!("hashing this server's binary: {e}"))?
            .map_err(|e| format!("hashing this server's binary: {e}"))?;
            hex::encode(sum)
                .parse()
                .map_err(|e| format!("this server's sha256: {e}"))?
        }
    };
    Ok((source, sha))
}

/// Creates one Machine's token; its expiry is `now + ttl`.
async fn create(
    client: &Client,
    machine: &str,
    ttl: u64,
) -> Result<kprov_core::BootstrapToken, kprov_kube::ApiError> {
    let token = kprov_controlplane::token::generate();
    let spec = TokenSpec {
        description: format!("{DESCRIPTION_PREFIX}{machine}"),
        ttl: Ttl::from_duration(Duration::from_secs(ttl)),
        ..TokenSpec::for_joining(token.clone())
    };
    kprov_kube::create_token(client, &spec, time::OffsetDateTime::now_utc()).await?;
    Ok(token)
}

/// Keeps the worker Machines' tokens and user-data up to date while this
/// replica leads. Returns only when the config has no `join` section (the
/// caller does not start it then).
pub async fn join_loop(shared: Arc<Shared>, client: Client) {
    let Some(join) = shared.config.join.clone() else {
        return;
    };
    let (source, sha) = match provision_source(&shared, &join).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("join data: {e}");
            return;
        }
    };
    tracing::info!(source = %source, sha256 = %sha, ttl = join.token_ttl_seconds, "join data for worker Machines without user-data");
    let mut known: Option<Cluster> = None;
    let mut warned = String::new();
    let mut warn = |what: String| {
        if what != warned {
            tracing::warn!("join data: {what} (retrying)");
            warned = what;
        }
    };
    // By Machine: the token id its user-data was rendered with, and it.
    let mut rendered: BTreeMap<String, (String, String)> = BTreeMap::new();
    loop {
        tokio::time::sleep(JOIN_EVERY).await;
        if !shared.leading() {
            continue;
        }
        if known.is_none() {
            let read = kprov_kube::cluster_info_data(&client)
                .await
                .map_err(|e| e.to_string())
                .and_then(|d| cluster_from_info(&d));
            match read {
                Ok(c) => {
                    tracing::info!(api_server = %c.api_server, ca = %c.ca_hash, "join data: the cluster, from kube-public/cluster-info");
                    known = Some(c);
                }
                Err(e) => {
                    warn(e);
                    continue;
                }
            }
        }
        let Some(cluster) = known.clone() else {
            continue;
        };
        let secrets = match kprov_kube::token_secrets(&client).await {
            Ok(list) => list.items,
            Err(e) => {
                warn(e.to_string());
                continue;
            }
        };
        let mut tokens: Vec<_> = secrets.iter().filter_map(machine_token).collect();
        let machines = shared.machines();
        let now = crate::server::now();
        let ttl = join.token_ttl_seconds;
        for action in plan_tokens(&machines, &tokens, now, ttl) {
            match action {
                TokenAction::Create { machine } => match create(&client, &machine, ttl).await {
                    Ok(token) => {
                        tracing::info!(machine = %machine, token = %token.id(), ttl, "join token created");
                        tokens.push(crate::join::MachineToken {
                            token,
                            machine,
                            expires: now + ttl,
                        });
                    }
                    Err(e) => warn(format!("creating Machine {machine}'s token: {e}")),
                },
                TokenAction::Delete { id, machine, why } => {
                    match kprov_kube::delete_token(&client, &id).await {
                        Ok(_) => {
                            tracing::info!(machine = %machine, token = %id, "join token deleted: {why}");
                            tokens.retain(|t| t.token.id() != id);
                        }
                        Err(e) => warn(format!("deleting Machine {machine}'s token {id}: {e}")),
                    }
                }
            }
        }
        let mut made = BTreeMap::new();
        for m in machines.iter().filter(|m| wants_join_data(m)) {
            let Some(t) = newest(&tokens, &m.name, now) else {
                continue;
            };
            let id = t.token.id().to_string();
            let data = match rendered.remove(&m.name) {
                Some((was, data)) if was == id => data,
                _ => match user_data(m, &cluster, &join, &t.token, &source, &sha) {
                    Ok(data) => {
                        tracing::info!(machine = %m.name, token = %id, bytes = data.len(), "join user-data rendered");
                        data
                    }
                    Err(e) => {
                        warn(e);
                        continue;
                    }
                },
            };
            made.insert(m.name.clone(), (id, data));
        }
        rendered = made;
        shared.set_made_user_data(
            rendered
                .iter()
                .map(|(name, (_, data))| (name.clone(), data.clone()))
                .collect(),
        );
    }
}
