//! What the master workflows share about stacked etcd: a client with the
//! API server's etcd client certificate, and which members answer.

use std::collections::BTreeSet;
use std::path::Path;

use kprov_controlplane::etcd::Member;
use kprov_host::Root;
use kprov_kube::etcd::EtcdClient;

use crate::{Context, Error};

/// A client of `endpoints` with the certificates under `cert_dir` (node
/// path under `root`): etcd's CA and the API server's etcd client pair.
pub(crate) fn client(
    root: &Root,
    cert_dir: &Path,
    endpoints: Vec<String>,
) -> Result<EtcdClient, Error> {
    let read = |name: &str| -> Result<Vec<u8>, Error> {
        let path = cert_dir.join(name);
        kprov_host::fs::read(root, &path)
            .context(|| format!("reading {}", path.display()))?
            .ok_or_else(|| Error::failed(format!("{} does not exist", path.display())))
    };
    EtcdClient::new(
        endpoints,
        &read("etcd/ca.crt")?,
        &read("apiserver-etcd-client.crt")?,
        &read("apiserver-etcd-client.key")?,
    )
    .map_err(|e| Error::failed(e.to_string()))
}

/// The IDs of the started members that answer a status request as
/// themselves.
pub(crate) fn healthy(
    rt: &tokio::runtime::Handle,
    etcd: &EtcdClient,
    members: &[Member],
) -> BTreeSet<u64> {
    members
        .iter()
        .filter(|m| m.started())
        .filter_map(|m| {
            let url = m.client_urls.first()?;
            rt.block_on(etcd.status_of(url)).filter(|id| *id == m.id)
        })
        .collect()
}

/// etcd's members as `endpoint` lists them, each with whether it answers
/// as itself (`kprov etcd members`; the certificates under `cert_dir`).
pub fn members(
    rt: &tokio::runtime::Handle,
    root: &Root,
    cert_dir: &Path,
    endpoint: &str,
) -> Result<Vec<(Member, bool)>, Error> {
    let etcd = client(root, cert_dir, vec![endpoint.to_string()])?;
    let list = rt
        .block_on(etcd.members())
        .map_err(|e| Error::failed(e.to_string()))?;
    let answering = healthy(rt, &etcd, &list);
    Ok(list
        .into_iter()
        .map(|m| {
            let up = answering.contains(&m.id);
            (m, up)
        })
        .collect())
}
