//! The local file of known backends (`/var/lib/kprov/lb/endpoints.json`):
//! what discovery last found, merged with the seeds, so that a balancer
//! restarted while every API server is down still knows them all.
//!
//! ```json
//! {
//!   "apiVersion": "kprov.dev/v1alpha1",
//!   "kind": "LbEndpoints",
//!   "backends": ["10.0.0.10:6443", "10.0.0.11:6443"]
//! }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::backend::parse_backend;

const API_VERSION: &str = "kprov.dev/v1alpha1";
const KIND: &str = "LbEndpoints";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    backends: Vec<String>,
}

/// The file's text for `backends` (sorted, one line each, newline at the
/// end).
pub fn render(backends: &BTreeSet<SocketAddr>) -> String {
    let file = File {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        backends: backends.iter().map(SocketAddr::to_string).collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// The backends a file lists.
pub fn parse(text: &str) -> Result<BTreeSet<SocketAddr>, String> {
    let file: File =
        serde_json::from_str(text).map_err(|e| format!("not an endpoints file: {e}"))?;
    if file.api_version != API_VERSION || file.kind != KIND {
        return Err(format!(
            "apiVersion/kind {}/{}, expected {API_VERSION}/{KIND}",
            file.api_version, file.kind
        ));
    }
    file.backends
        .iter()
        .enumerate()
        .map(|(i, b)| parse_backend(b).map_err(|e| format!("backends[{i}]: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn render_then_parse_gives_the_same_backends() {
        let set: BTreeSet<SocketAddr> = ["10.0.0.2:6443", "10.0.0.1:6443", "[fd00::1]:6443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = render(&set);
        assert_eq!(
            text,
            "{\n  \"apiVersion\": \"kprov.dev/v1alpha1\",\n  \"kind\": \"LbEndpoints\",\n  \"backends\": [\n    \"10.0.0.1:6443\",\n    \"10.0.0.2:6443\",\n    \"[fd00::1]:6443\"\n  ]\n}\n"
        );
        assert_eq!(parse(&text).unwrap(), set);
        assert_eq!(parse(&render(&BTreeSet::new())).unwrap(), BTreeSet::new());
    }

    #[test]
    fn bad_files_are_refused_naming_what_is_wrong() {
        let cases = [
            ("", "not an endpoints file: EOF while parsing"),
            ("{\"apiVersion\":\"v1\",\"kind\":\"LbEndpoints\",\"backends\":[]}", "apiVersion/kind v1/LbEndpoints, expected kprov.dev/v1alpha1/LbEndpoints"),
            ("{\"apiVersion\":\"kprov.dev/v1alpha1\",\"kind\":\"LbEndpoints\",\"backends\":[\"10.0.0.1:6443\",\"m1:6443\"]}", "backends[1]: \"m1:6443\" is not an IP:PORT address"),
            ("{\"apiVersion\":\"kprov.dev/v1alpha1\",\"kind\":\"LbEndpoints\",\"backends\":[],\"x\":1}", "not an endpoints file: unknown field `x`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }
}
