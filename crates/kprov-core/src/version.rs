//! Kubernetes release versions (`v1.20.2`) and the version-dependent facts
//! kprov renders from.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The oldest Kubernetes release kprov provisions: the one its real-cluster
/// tests run (v1.20.2), rounded down to the minor.
pub const MINIMUM_SUPPORTED: KubernetesVersion = KubernetesVersion::new(1, 20, 0);

/// The newest release kprov knows; the default `--kubelet-version`.
pub const NEWEST_KNOWN: KubernetesVersion = KubernetesVersion::new(1, 37, 0);

/// A Kubernetes release version: `v<major>.<minor>.<patch>`, optionally with
/// a pre-release suffix such as `-rc.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesVersion {
    major: u32,
    minor: u32,
    patch: u32,
    pre: Option<String>,
}

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The text is not of the form `v1.2.3`.
    #[error("malformed Kubernetes version {value:?}: expected vMAJOR.MINOR.PATCH, e.g. v1.20.2")]
    Malformed {
        /// The text that was given.
        value: String,
    },
    /// Well formed but older than kprov supports.
    #[error("Kubernetes version {value} is not supported: the minimum is {minimum}")]
    TooOld {
        /// The version that was given.
        value: String,
        /// The oldest supported version.
        minimum: KubernetesVersion,
    },
}

impl KubernetesVersion {
    /// A release version without pre-release suffix.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
        }
    }

    /// Parses a version and checks it against [`MINIMUM_SUPPORTED`].
    pub fn parse_supported(value: &str) -> Result<Self, VersionError> {
        let version: Self = value.parse()?;
        version.check_supported()?;
        Ok(version)
    }

    /// Checks a well-formed version against [`MINIMUM_SUPPORTED`].
    pub fn check_supported(&self) -> Result<(), VersionError> {
        if self.minor_version() < MINIMUM_SUPPORTED.minor_version() {
            return Err(VersionError::TooOld {
                value: self.to_string(),
                minimum: MINIMUM_SUPPORTED,
            });
        }
        Ok(())
    }

    /// The major version (always 1 today).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The minor version, e.g. 20 for v1.20.2.
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// The patch version.
    pub fn patch(&self) -> u32 {
        self.patch
    }

    /// `(major, minor)`, for comparisons such as `>= (1, 24)`.
    pub fn minor_version(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// True when this release is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.minor_version() >= (major, minor)
    }
}

impl FromStr for KubernetesVersion {
    type Err = VersionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionError::Malformed {
            value: value.to_string(),
        };
        let rest = value.strip_prefix('v').unwrap_or(value);
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let numbers: Vec<&str> = core.split('.').collect();
        if numbers.len() != 3 {
            return Err(malformed());
        }
        let number = |s: &str| -> Result<u32, VersionError> {
            let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let no_leading_zero = s == "0" || !s.starts_with('0');
            if !digits_only || !no_leading_zero {
                return Err(malformed());
            }
            s.parse().map_err(|_| malformed())
        };
        let pre = match pre {
            Some(p)
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') =>
            {
                Some(p.to_string())
            }
            Some(_) => return Err(malformed()),
            None => None,
        };
        Ok(Self {
            major: number(numbers[0])?,
            minor: number(numbers[1])?,
            patch: number(numbers[2])?,
            pre,
        })
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

impl PartialOrd for KubernetesVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KubernetesVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            // A release sorts after its pre-releases.
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl serde::Serialize for KubernetesVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KubernetesVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_supported(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_versions_parse() {
        for (text, shown) in [
            ("v1.20.2", "v1.20.2"),
            ("1.20.2", "v1.20.2"),
            ("v1.37.0", "v1.37.0"),
            ("v1.30.0-rc.1", "v1.30.0-rc.1"),
        ] {
            let v: KubernetesVersion = text.parse().unwrap();
            assert_eq!(v.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn malformed_versions_are_refused_with_the_value_named() {
        for text in [
            "1.x",
            "v1.20",
            "v1.20.2.1",
            "",
            "v",
            "v01.20.2",
            "v1.20.2-",
            "v1.20.-1",
            "latest",
        ] {
            let err = text.parse::<KubernetesVersion>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("malformed Kubernetes version {text:?}: expected vMAJOR.MINOR.PATCH, e.g. v1.20.2")
            );
        }
    }

    #[test]
    fn versions_below_the_minimum_name_the_minimum() {
        let err = KubernetesVersion::parse_supported("v1.13.1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Kubernetes version v1.13.1 is not supported: the minimum is v1.20.0"
        );
        assert!(KubernetesVersion::parse_supported("v1.20.2").is_ok());
    }

    #[test]
    fn ordering_follows_release_order() {
        let v = |s: &str| s.parse::<KubernetesVersion>().unwrap();
        assert!(v("v1.20.2") < v("v1.20.10"));
        assert!(v("v1.9.0") < v("v1.20.0"));
        assert!(v("v1.30.0-rc.1") < v("v1.30.0"));
        assert!(v("v1.24.0").at_least(1, 24));
        assert!(!v("v1.23.9").at_least(1, 24));
    }
}
