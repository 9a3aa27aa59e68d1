//! Where the boot configs put things on the node, and validated node paths
//! given by the user.
//!
//! `/opt/kprov` is used for kprov's own files because it is writable on
//! every supported system, Flatcar included (whose `/usr` is read-only).

use std::fmt;

/// The cluster CA certificate (0644).
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
/// The bootstrap token (0600), read by setup.sh into `KPROV_TOKEN`.
pub const TOKEN_FILE: &str = "/etc/kprov/bootstrap-token";
/// setup.sh (0700).
pub const SETUP_SCRIPT: &str = "/opt/kprov/setup.sh";
/// Where setup.sh installs the verified kprov binary (0755).
pub const KPROV_BINARY: &str = "/opt/kprov/bin/kprov";
/// Written by setup.sh after `kprov provision` succeeded; its presence
/// makes later runs (and the Ignition unit) do nothing.
pub const SETUP_DONE: &str = "/var/lib/kprov/setup.done";
/// The cloud provider's config when `--cloud-config` is not given.
pub const DEFAULT_CLOUD_CONFIG: &str = "/etc/kubernetes/cloud-config";
/// The systemd unit that runs setup.sh on Ignition systems.
pub const SETUP_UNIT: &str = "kprov-setup.service";

/// An absolute, normalised path on the node (no `.` or `..`, no empty
/// components, no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath(String);

/// Why a node path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {flag} {value:?}: {reason}; expected an absolute path on the node such as {example}"
)]
pub struct NodePathError {
    /// The flag the value came from.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
    /// An example of a good value.
    pub example: &'static str,
}

impl NodePath {
    /// Checks `value`, given with `flag`; `example` goes into the error.
    pub fn parse(
        flag: &'static str,
        value: &str,
        example: &'static str,
    ) -> Result<Self, NodePathError> {
        let refuse = |reason| NodePathError {
            flag,
            value: value.to_string(),
            reason,
            example,
        };
        if !value.starts_with('/') {
            return Err(refuse("it is not absolute"));
        }
        if value.chars().any(char::is_control) {
            return Err(refuse("it has control characters"));
        }
        if value.len() > 1 && value.ends_with('/') || value.contains("//") {
            return Err(refuse("it has an empty component"));
        }
        if value.split('/').any(|c| c == "." || c == "..") {
            return Err(refuse("it has '.' or '..' components"));
        }
        if value == "/" {
            return Err(refuse("it is the root directory"));
        }
        Ok(Self(value.to_string()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_must_be_absolute_and_normalised() {
        for ok in ["/etc/kubernetes/cloud-config", "/a", "/opt/my dir/x"] {
            assert_eq!(
                NodePath::parse("--cloud-config", ok, "/x")
                    .unwrap()
                    .as_str(),
                ok
            );
        }
        for (bad, reason) in [
            ("cloud.conf", "it is not absolute"),
            ("", "it is not absolute"),
            ("/", "it is the root directory"),
            ("/etc/../x", "it has '.' or '..' components"),
            ("/etc/./x", "it has '.' or '..' components"),
            ("/etc/x/.", "it has '.' or '..' components"),
            ("/etc//x", "it has an empty component"),
            ("/etc/x/", "it has an empty component"),
            ("/etc/x\n", "it has control characters"),
        ] {
            let err =
                NodePath::parse("--cloud-config", bad, "/etc/kubernetes/cloud-config").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid --cloud-config {bad:?}: {reason}; expected an absolute path on the node such as /etc/kubernetes/cloud-config")
            );
        }
    }
}
