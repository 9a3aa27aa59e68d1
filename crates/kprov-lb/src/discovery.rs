//! Backends from the API itself: the `default/kubernetes` Endpoints list
//! every API server that is serving (each renews its own entry), on the
//! port named `https`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Endpoints;

/// The API servers an Endpoints object lists: every ready address with
/// the `https` port (or the only port of its subset). Addresses that are
/// not IPs are skipped.
pub fn backends_from_endpoints(endpoints: &Endpoints) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or(if ports.len() == 1 {
                ports.first()
            } else {
                None
            })
            .and_then(|p| u16::try_from(p.port).ok());
        let Some(port) = port else { continue };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// The backend set: what discovery found (or, before any discovery, the
/// endpoints file's list) together with the seeds. Seeds always stay: they
/// are what the node was configured with.
pub fn merge(known: &BTreeSet<SocketAddr>, seeds: &[SocketAddr]) -> BTreeSet<SocketAddr> {
    known.iter().chain(seeds).copied().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn endpoints(json: serde_json::Value) -> Endpoints {
        serde_json::from_value(json).unwrap()
    }

    fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn every_address_of_the_https_port_is_a_backend() {
        let cases = [
            (
                serde_json::json!({"metadata": {"name": "kubernetes"}, "subsets": [{
                    "addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}],
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}),
                set(&["10.0.0.1:6443", "10.0.0.2:6443"]),
            ),
            // An unnamed single port; a subset with several unnamed ports is
            // ambiguous and skipped; not-ready addresses are not backends.
            (
                serde_json::json!({"metadata": {}, "subsets": [
                    {"addresses": [{"ip": "fd00::1"}], "notReadyAddresses": [{"ip": "10.0.0.9"}],
                     "ports": [{"port": 443}]},
                    {"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 1}, {"port": 2}]}]}),
                set(&["[fd00::1]:443"]),
            ),
            (serde_json::json!({"metadata": {}}), set(&[])),
            (
                serde_json::json!({"metadata": {}, "subsets": [{
                    "addresses": [{"ip": "not-an-ip"}, {"ip": "10.0.0.3"}],
                    "ports": [{"name": "https", "port": 6443}, {"name": "other", "port": 1}]}]}),
                set(&["10.0.0.3:6443"]),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(
                backends_from_endpoints(&endpoints(json.clone())),
                want,
                "{json}"
            );
        }
    }

    #[test]
    fn seeds_are_kept_next_to_what_discovery_found() {
        let found = set(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        let seeds: Vec<SocketAddr> = vec![
            "10.0.0.1:6443".parse().unwrap(),
            "10.0.0.9:6443".parse().unwrap(),
        ];
        assert_eq!(
            merge(&found, &seeds),
            set(&["10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.9:6443"])
        );
        assert_eq!(merge(&BTreeSet::new(), &seeds), seeds.into_iter().collect());
    }
}
