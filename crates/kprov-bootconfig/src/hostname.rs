//! Node host names (`--hostname`): RFC 1123, in lower case because the
//! host name becomes the Kubernetes node name; checked by kprov-core's one
//! DNS-1123 validator ([`kprov_core::DnsSubdomain`]).

use std::fmt;
use std::str::FromStr;

/// A valid host name: dot-separated labels of 1 to 63 lower-case letters,
/// digits and `-` (not first or last in a label), 253 characters at most.
///
/// A name may look like something else to a YAML reader (`yes`, `12345`,
/// `2001-12-14`); the YAML emitter quotes it, so that is not refused here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

/// Why a host name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --hostname {value:?}: {reason}; expected an RFC 1123 host name such as worker-1 or worker-1.example.com")]
pub struct HostnameError {
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Hostname {
    type Err = HostnameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let name = value.parse::<kprov_core::DnsSubdomain>().map_err(|e| {
            let hint = if value.chars().any(|c| c.is_ascii_uppercase()) {
                " (host names become Kubernetes node names, which are lower case)"
            } else {
                ""
            };
            HostnameError {
                value: value.to_string(),
                reason: format!("{e}{hint}"),
            }
        })?;
        Ok(Self(name.as_str().to_string()))
    }
}

impl Hostname {
    /// The whole name as given, e.g. `worker-1.example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label, e.g. `worker-1`.
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// True when the name has more than one label.
    pub fn is_qualified(&self) -> bool {
        self.0.contains('.')
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_1123_names_are_accepted() {
        for (name, short, qualified) in [
            ("worker-1", "worker-1", false),
            ("worker-1.example.com", "worker-1", true),
            ("yes", "yes", false),
            ("12345", "12345", false),
            ("0x1f", "0x1f", false),
            ("a", "a", false),
            (&"a".repeat(63), &"a".repeat(63), false),
        ] {
            let h: Hostname = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(h.as_str(), name);
            assert_eq!(h.short(), short);
            assert_eq!(h.is_qualified(), qualified);
        }
    }

    #[test]
    fn other_names_are_refused_with_the_reason() {
        let long_label = "a".repeat(64);
        let long_name = ["a"; 127].join(".") + ".bb";
        for (name, reason) in [
            ("", "it is empty"),
            ("Worker-1", "label \"Worker-1\" has 'W': only a-z, 0-9 and '-' are allowed (host names become Kubernetes node names, which are lower case)"),
            ("worker_1", "label \"worker_1\" has '_': only a-z, 0-9 and '-' are allowed"),
            ("worker 1", "label \"worker 1\" has ' ': only a-z, 0-9 and '-' are allowed"),
            ("-worker", "label \"-worker\" starts or ends with '-'"),
            ("worker.", "it has an empty label"),
            ("a..b", "it has an empty label"),
            (&long_label, "has 64 characters, at most 63 are allowed"),
            (&long_name, "it has 256 characters, at most 253 are allowed"),
            ("node\n1", "has '\\n'"),
        ] {
            let err = name.parse::<Hostname>().unwrap_err().to_string();
            assert!(err.contains(reason), "{name:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid --hostname {name:?}: ")),
                "{err}"
            );
            assert!(err.ends_with("expected an RFC 1123 host name such as worker-1 or worker-1.example.com"));
        }
    }
}
