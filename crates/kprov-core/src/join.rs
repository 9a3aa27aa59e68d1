//! Validated inputs of the join phase: the API server's URL, pinned CA
//! hashes, the node's name, labels and taints. Each parses from the text a
//! user types and names the flag in its error.

use std::fmt;
use std::str::FromStr;

/// Why a join input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {value:?}: expected {expected}")]
pub struct JoinInputError {
    /// The flag.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

fn refuse(flag: &'static str, value: &str, expected: &'static str) -> JoinInputError {
    JoinInputError {
        flag,
        value: value.to_string(),
        expected,
    }
}

/// `https://HOST:PORT` of an API server: a host name, an IPv4 address or a
/// bracketed IPv6 address, and an explicit port; no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerUrl {
    host: String,
    port: u16,
}

const API_SERVER_EXPECTED: &str =
    "https://HOST:PORT, e.g. https://10.0.0.1:6443 or https://[fd00::1]:6443";

impl FromStr for ApiServerUrl {
    type Err = JoinInputError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = || refuse("--api-server", value, API_SERVER_EXPECTED);
        let rest = value.strip_prefix("https://").ok_or_else(err)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            is_dns_name(host)
        };
        if !host_ok || port == 0 {
            return Err(err());
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl ApiServerUrl {
    /// The host as written in the URL (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ApiServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}:{}", self.host, self.port)
    }
}

/// A lower-case DNS name (or IPv4 address): dot-separated labels of
/// `[a-z0-9-]`, 1 to 63 long, not starting or ending with `-`.
pub fn is_dns_name(s: &str) -> bool {
    s.parse::<crate::dns::DnsSubdomain>().is_ok()
}

/// A pinned CA public-key hash, `sha256:` and 64 lower-case hex digits (as
/// `kubeadm token create --print-join-command` prints it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaCertHash(String);

impl FromStr for CaCertHash {
    type Err = JoinInputError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let hex = value.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
        } else {
            Err(refuse(
                "--discovery-token-ca-cert-hash",
                value,
                "sha256: and 64 hex digits (`kprov pki ca-hash` prints it)",
            ))
        }
    }
}

impl CaCertHash {
    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaCertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kubernetes node name: a lower-case DNS subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName(String);

impl FromStr for NodeName {
    type Err = JoinInputError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if is_dns_name(value) {
            Ok(Self(value.to_string()))
        } else {
            Err(refuse(
                "--node-name",
                value,
                "a lower-case DNS name of [a-z0-9.-], e.g. worker-1",
            ))
        }
    }
}

impl NodeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label key: an optional DNS prefix and `/`, then a name of
/// `[A-Za-z0-9._-]` that starts and ends alphanumeric.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_name) && is_label_value(name) && !name.is_empty()
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9._-]`, alphanumeric at
/// both ends.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// Parses `--node-labels k=v,k2=v2` into pairs.
pub fn parse_node_labels(value: &str) -> Result<Vec<(String, String)>, JoinInputError> {
    value
        .split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if is_label_key(k) && is_label_value(v) => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(refuse(
                "--node-labels",
                value,
                "comma-separated KEY=VALUE labels, e.g. role=worker,example.com/zone=a",
            )),
        })
        .collect()
}

/// A taint `key[=value]:Effect`, as `--register-with-taints` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint(String);

impl FromStr for Taint {
    type Err = JoinInputError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let ok = value.rsplit_once(':').is_some_and(|(kv, effect)| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
                && is_label_key(k)
                && is_label_value(v)
        });
        if ok {
            Ok(Self(value.to_string()))
        } else {
            Err(refuse(
                "--register-with-taints",
                value,
                "KEY[=VALUE]:EFFECT with EFFECT NoSchedule, PreferNoSchedule or NoExecute, e.g. dedicated=gpu:NoSchedule",
            ))
        }
    }
}

impl Taint {
    /// The taint as the kubelet flag takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_urls_need_https_a_host_and_a_port() {
        for good in [
            "https://10.0.0.1:6443",
            "https://api.example.com:443/",
            "https://[fd00::1]:6443",
        ] {
            assert!(good.parse::<ApiServerUrl>().is_ok(), "{good}");
        }
        assert_eq!(
            "https://10.0.0.1:6443/"
                .parse::<ApiServerUrl>()
                .unwrap()
                .to_string(),
            "https://10.0.0.1:6443"
        );
        for bad in [
            "http://10.0.0.1:6443",
            "10.0.0.1:6443",
            "https://10.0.0.1",
            "https://10.0.0.1:0",
            "https://10.0.0.1:6443/api",
            "https://Bad_Host:6443",
            "https://[nonsense]:6443",
        ] {
            let err = bad.parse::<ApiServerUrl>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid --api-server {bad:?}: expected https://")),
                "{err}"
            );
        }
    }

    #[test]
    fn ca_hashes_are_sha256_and_64_hex_digits() {
        let h = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(
            h.parse::<CaCertHash>().unwrap().as_str(),
            format!("sha256:{}", "ab".repeat(32))
        );
        for bad in ["", "sha256:abc", &"ab".repeat(32), "md5:00"] {
            assert!(bad
                .parse::<CaCertHash>()
                .unwrap_err()
                .to_string()
                .starts_with("invalid --discovery-token-ca-cert-hash"));
        }
    }

    #[test]
    fn labels_and_taints_are_checked() {
        assert_eq!(
            parse_node_labels("role=worker,example.com/zone=a,empty=").unwrap(),
            vec![
                ("role".into(), "worker".into()),
                ("example.com/zone".into(), "a".into()),
                ("empty".into(), String::new()),
            ]
        );
        for bad in ["role", "=x", "a=b c", "-a=b", "a=b,,c=d"] {
            assert!(parse_node_labels(bad).is_err(), "{bad}");
        }
        for good in ["dedicated=gpu:NoSchedule", "spot:PreferNoSchedule"] {
            assert!(good.parse::<Taint>().is_ok(), "{good}");
        }
        for bad in ["dedicated=gpu", "a:Never", ":NoSchedule"] {
            assert!(bad.parse::<Taint>().is_err(), "{bad}");
        }
        assert!("Worker_1".parse::<NodeName>().is_err());
        assert!("worker-1".parse::<NodeName>().is_ok());
    }
}
