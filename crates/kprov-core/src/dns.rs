//! DNS-1123 names, as Kubernetes checks them: the one validator behind
//! node names, host names, cluster domains, DNS SANs and netboot's Machine
//! names. Lower case only: these names become Kubernetes object names.
//!
//! Each caller wraps [`DnsNameError`] into its own error naming the input
//! (`--hostname`, `--node-name`, `spec.hostname`, ...).

use std::fmt;
use std::str::FromStr;

/// What a DNS-1123 subdomain is, for error messages.
pub const DNS_SUBDOMAIN_RULE: &str = "expected a DNS-1123 subdomain: at most 253 characters of lower-case letters, digits, '-' and '.', each label starting and ending with a letter or digit";

/// What a DNS-1123 label is, for error messages.
pub const DNS_LABEL_RULE: &str = "expected a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit";

/// Why a name is not a DNS-1123 name: the first thing wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DnsNameError {
    /// What is wrong, e.g. `label "Node_1" has 'N': only a-z, 0-9 and '-'
    /// are allowed`.
    pub reason: String,
}

fn refuse(reason: String) -> DnsNameError {
    DnsNameError { reason }
}

fn check_label(label: &str) -> Result<(), DnsNameError> {
    if label.is_empty() {
        return Err(refuse(
            "it has an empty label (two dots in a row, or a dot at the start or end)".into(),
        ));
    }
    if label.len() > 63 {
        return Err(refuse(format!(
            "label {label:?} has {} characters, at most 63 are allowed",
            label.len()
        )));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(refuse(format!(
            "label {label:?} has {c:?}: only a-z, 0-9 and '-' are allowed"
        )));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(refuse(format!("label {label:?} starts or ends with '-'")));
    }
    Ok(())
}

fn check_subdomain(value: &str) -> Result<(), DnsNameError> {
    if value.is_empty() {
        return Err(refuse("it is empty".into()));
    }
    if value.len() > 253 {
        return Err(refuse(format!(
            "it has {} characters, at most 253 are allowed",
            value.len()
        )));
    }
    value.split('.').try_for_each(check_label)
}

/// A DNS-1123 subdomain: dot-separated labels of 1 to 63 lower-case
/// letters, digits and `-` (not first or last), 253 characters at most.
/// Node names, host names, cluster domains.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsSubdomain(String);

impl FromStr for DnsSubdomain {
    type Err = DnsNameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_subdomain(value)?;
        Ok(Self(value.to_string()))
    }
}

impl DnsSubdomain {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label, e.g. `worker-1` of `worker-1.example.com`.
    pub fn first_label(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for DnsSubdomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS-1123 label: 1 to 63 lower-case letters, digits and `-` (not
/// first or last). Names that must not contain a dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsLabel(String);

impl FromStr for DnsLabel {
    type Err = DnsNameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.contains('.') {
            return Err(refuse("it has a '.': a label has none".into()));
        }
        check_subdomain(value)?;
        Ok(Self(value.to_string()))
    }
}

impl DnsLabel {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dns_1123_subdomains_are_accepted() {
        let longest_label = "a".repeat(63);
        let longest = [longest_label.as_str(); 3].join(".") + "." + &"b".repeat(61);
        assert_eq!(longest.len(), 253);
        for name in [
            "worker-1",
            "worker-1.example.com",
            "0node",
            "a",
            "12345",
            "x--y",
            &longest_label,
            &longest,
        ] {
            let parsed: DnsSubdomain = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.as_str(), name);
        }
        assert_eq!(
            "worker-1.example.com"
                .parse::<DnsSubdomain>()
                .unwrap()
                .first_label(),
            "worker-1"
        );
    }

    #[test]
    fn other_names_are_refused_with_the_first_reason() {
        let long_label = "a".repeat(64);
        let long_name = ["a"; 127].join(".");
        for (name, reason) in [
            ("", "it is empty"),
            (
                "Worker-1",
                "label \"Worker-1\" has 'W': only a-z, 0-9 and '-' are allowed",
            ),
            (
                "worker_1",
                "label \"worker_1\" has '_': only a-z, 0-9 and '-' are allowed",
            ),
            (
                "worker 1",
                "label \"worker 1\" has ' ': only a-z, 0-9 and '-' are allowed",
            ),
            (
                "node\n1",
                "label \"node\\n1\" has '\\n': only a-z, 0-9 and '-' are allowed",
            ),
            ("-worker", "label \"-worker\" starts or ends with '-'"),
            ("worker-", "label \"worker-\" starts or ends with '-'"),
            (
                "worker.",
                "it has an empty label (two dots in a row, or a dot at the start or end)",
            ),
            (
                "a..b",
                "it has an empty label (two dots in a row, or a dot at the start or end)",
            ),
            (
                &long_label,
                "label \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" has 64 characters, at most 63 are allowed",
            ),
            (
                &(long_name.clone() + "aaa"),
                "it has 256 characters, at most 253 are allowed",
            ),
        ] {
            let err = name.parse::<DnsSubdomain>().unwrap_err();
            assert_eq!(err.to_string(), reason, "{name:?}");
        }
    }

    #[test]
    fn labels_are_subdomains_without_dots() {
        assert_eq!("node1".parse::<DnsLabel>().unwrap().as_str(), "node1");
        for (name, reason) in [
            ("node.1", "it has a '.': a label has none"),
            (
                "Node1",
                "label \"Node1\" has 'N': only a-z, 0-9 and '-' are allowed",
            ),
            ("", "it is empty"),
            ("-n", "label \"-n\" starts or ends with '-'"),
        ] {
            assert_eq!(
                name.parse::<DnsLabel>().unwrap_err().to_string(),
                reason,
                "{name:?}"
            );
        }
    }
}
