//! Operating system detection from os-release, and what kprov supports.
//!
//! Detection is pure: it takes the text of `<root>/etc/os-release` (or
//! `<root>/usr/lib/os-release`) and returns [`OsFacts`]; reading the file is
//! the caller's job.

use std::collections::BTreeMap;
use std::fmt;

/// How a distro installs packages; decides the plan's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Debian and Ubuntu: apt and dpkg.
    Apt,
    /// CentOS 7: yum.
    Yum,
    /// Rocky, Alma, RHEL 8/9: dnf.
    Dnf,
    /// Flatcar and Container Linux: no package manager; binaries under
    /// /opt/bin, units under /etc/systemd/system.
    Flatcar,
}

impl fmt::Display for OsFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Apt => "apt",
            Self::Yum => "yum",
            Self::Dnf => "dnf",
            Self::Flatcar => "flatcar",
        })
    }
}

/// The distributions kprov knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// Ubuntu.
    Ubuntu,
    /// Debian.
    Debian,
    /// CentOS.
    Centos,
    /// Rocky Linux.
    Rocky,
    /// AlmaLinux.
    Almalinux,
    /// Red Hat Enterprise Linux.
    Rhel,
    /// Flatcar Container Linux.
    Flatcar,
    /// CoreOS Container Linux (Flatcar's predecessor).
    Coreos,
}

/// What kprov knows about the target's operating system.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OsFacts {
    /// The distribution.
    pub distro: Distro,
    /// `VERSION_ID` as found, e.g. `12`, `22.04`, `8.9`, `3815.2.0`.
    pub version_id: String,
    /// The major version used for table lookups (`8` for `8.9`).
    pub major: u32,
    /// The package family.
    pub family: OsFamily,
    /// `PRETTY_NAME`, for messages.
    pub pretty_name: String,
}

/// One row of the support table: an os-release `ID`, the versions accepted
/// (`None`: any), and the family.
struct Supported {
    id: &'static str,
    distro: Distro,
    versions: Option<&'static [&'static str]>,
    family_by_major: fn(u32) -> OsFamily,
}

const SUPPORTED: &[Supported] = &[
    Supported {
        id: "ubuntu",
        distro: Distro::Ubuntu,
        versions: Some(&["18.04", "20.04", "22.04", "24.04"]),
        family_by_major: |_| OsFamily::Apt,
    },
    Supported {
        id: "debian",
        distro: Distro::Debian,
        versions: Some(&["11", "12", "13"]),
        family_by_major: |_| OsFamily::Apt,
    },
    Supported {
        id: "centos",
        distro: Distro::Centos,
        versions: Some(&["7"]),
        family_by_major: |_| OsFamily::Yum,
    },
    Supported {
        id: "rocky",
        distro: Distro::Rocky,
        versions: Some(&["8", "9"]),
        family_by_major: |_| OsFamily::Dnf,
    },
    Supported {
        id: "almalinux",
        distro: Distro::Almalinux,
        versions: Some(&["8", "9"]),
        family_by_major: |_| OsFamily::Dnf,
    },
    Supported {
        id: "rhel",
        distro: Distro::Rhel,
        versions: Some(&["8", "9"]),
        family_by_major: |_| OsFamily::Dnf,
    },
    Supported {
        id: "flatcar",
        distro: Distro::Flatcar,
        versions: None,
        family_by_major: |_| OsFamily::Flatcar,
    },
    Supported {
        id: "coreos",
        distro: Distro::Coreos,
        versions: None,
        family_by_major: |_| OsFamily::Flatcar,
    },
];

/// The list shown when an OS is not supported.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|s| match s.versions {
            Some(v) => format!("{} {}", s.id, v.join("/")),
            None => format!("{} (any version)", s.id),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why detection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OsError {
    /// Neither os-release file exists under the root.
    #[error("cannot detect the operating system: neither {root}/etc/os-release nor {root}/usr/lib/os-release exists")]
    NoOsRelease {
        /// The target root.
        root: String,
    },
    /// An os-release without `ID`.
    #[error("{path}: no ID= line, cannot tell the operating system")]
    NoId {
        /// The file read.
        path: String,
    },
    /// A distro or version kprov does not support.
    #[error(
        "unsupported operating system: ID={id} VERSION_ID={version_id}; supported: {supported}"
    )]
    Unsupported {
        /// `ID` found.
        id: String,
        /// `VERSION_ID` found (empty when absent).
        version_id: String,
        /// The supported list.
        supported: String,
    },
}

/// Parses os-release text (`KEY=value`, values optionally quoted with
/// shell-style escapes) into a map.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        fields.insert(key.trim().to_string(), unquote(raw.trim()));
    }
    fields
}

fn unquote(raw: &str) -> String {
    let quote = match raw.chars().next() {
        Some(q @ ('"' | '\'')) if raw.len() >= 2 && raw.ends_with(q) => q,
        _ => return raw.to_string(),
    };
    let inner = &raw[1..raw.len() - 1];
    if quote == '\'' {
        return inner.to_string();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Detects the OS from os-release text read from `path`.
pub fn detect(text: &str, path: &str) -> Result<OsFacts, OsError> {
    let fields = parse_os_release(text);
    let id = fields
        .get("ID")
        .map(|s| s.to_ascii_lowercase())
        .ok_or_else(|| OsError::NoId {
            path: path.to_string(),
        })?;
    let version_id = fields.get("VERSION_ID").cloned().unwrap_or_default();
    let unsupported = || OsError::Unsupported {
        id: id.clone(),
        version_id: version_id.clone(),
        supported: supported_list(),
    };
    let row = SUPPORTED
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(unsupported)?;
    let major: u32 = version_id
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(unsupported)?;
    if let Some(versions) = row.versions {
        // Ubuntu is matched on the full X.Y; the others on their major.
        let key = if row.distro == Distro::Ubuntu {
            version_id.clone()
        } else {
            major.to_string()
        };
        if !versions.contains(&key.as_str()) {
            return Err(unsupported());
        }
    }
    Ok(OsFacts {
        distro: row.distro,
        version_id: version_id.clone(),
        major,
        family: (row.family_by_major)(major),
        pretty_name: fields
            .get("PRETTY_NAME")
            .cloned()
            .unwrap_or_else(|| format!("{id} {version_id}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &str, version: &str) -> Result<OsFacts, OsError> {
        detect(
            &format!("ID={id}\nVERSION_ID=\"{version}\"\n"),
            "/etc/os-release",
        )
    }

    #[test]
    fn every_supported_release_is_detected_with_its_family() {
        for (id, version, family) in [
            ("ubuntu", "18.04", OsFamily::Apt),
            ("ubuntu", "20.04", OsFamily::Apt),
            ("ubuntu", "22.04", OsFamily::Apt),
            ("ubuntu", "24.04", OsFamily::Apt),
            ("debian", "11", OsFamily::Apt),
            ("debian", "12", OsFamily::Apt),
            ("debian", "13", OsFamily::Apt),
            ("centos", "7", OsFamily::Yum),
            ("rocky", "8.9", OsFamily::Dnf),
            ("almalinux", "9.4", OsFamily::Dnf),
            ("rhel", "9.2", OsFamily::Dnf),
            ("flatcar", "3815.2.0", OsFamily::Flatcar),
            ("coreos", "2512.3.0", OsFamily::Flatcar),
        ] {
            let f = facts(id, version).unwrap_or_else(|e| panic!("{id} {version}: {e}"));
            assert_eq!(f.family, family, "{id} {version}");
        }
    }

    #[test]
    fn unsupported_releases_name_id_version_and_the_supported_list() {
        for (id, version) in [
            ("ubuntu", "16.04"),
            ("debian", "10"),
            ("centos", "8"),
            ("arch", ""),
            ("fedora", "40"),
        ] {
            let err = facts(id, version).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("unsupported operating system: ID={id} VERSION_ID={version}; supported: ubuntu 18.04/20.04/22.04/24.04, debian 11/12/13, centos 7, rocky 8/9, almalinux 8/9, rhel 8/9, flatcar (any version), coreos (any version)")),
                "{err}"
            );
        }
    }

    #[test]
    fn quoting_and_comments_follow_os_release_rules() {
        let f = parse_os_release(
            "# c\nNAME=\"Debian \\\"GNU\\\"\"\nID='debian'\nBROKEN\nVERSION_ID=12\n",
        );
        assert_eq!(f["NAME"], "Debian \"GNU\"");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["VERSION_ID"], "12");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn a_file_without_id_is_an_error() {
        assert_eq!(
            detect("NAME=x\n", "/r/etc/os-release")
                .unwrap_err()
                .to_string(),
            "/r/etc/os-release: no ID= line, cannot tell the operating system"
        );
    }
}
