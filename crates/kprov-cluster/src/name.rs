//! Names of clusters and machines: a cluster `NAME` has machines
//! `NAME-master-1`, `NAME-worker-2`, ...; the name alone says which
//! cluster a machine belongs to and its role, and it is the machine's
//! host name and the node's name.

use std::fmt;
use std::str::FromStr;

/// Longest cluster name: `NAME-worker-NNNN` must stay a DNS label (63
/// characters) and fit the places that carry it.
pub const MAX_CLUSTER_NAME: usize = 40;

/// Why a cluster or machine name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A cluster name that is not a short DNS label.
    #[error("invalid cluster name {value:?}: {reason}")]
    Cluster {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A machine name that is not `CLUSTER-ROLE-INDEX`.
    #[error("invalid machine name {value:?}: expected CLUSTER-master-N or CLUSTER-worker-N with N from 1 to 9999")]
    Machine {
        /// The value given.
        value: String,
    },
}

/// A cluster's name: a DNS label of at most [`MAX_CLUSTER_NAME`]
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterName(String);

impl FromStr for ClusterName {
    type Err = NameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| NameError::Cluster {
            value: value.to_string(),
            reason,
        };
        let label: kprov_core::DnsLabel =
            value.parse().map_err(|e: kprov_core::dns::DnsNameError| {
                refuse(format!("expected a DNS label ({e})"))
            })?;
        if value.len() > MAX_CLUSTER_NAME {
            return Err(refuse(format!(
                "{} characters, at most {MAX_CLUSTER_NAME}",
                value.len()
            )));
        }
        Ok(Self(label.as_str().to_string()))
    }
}

impl ClusterName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a machine is in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs the control plane.
    Master,
    /// Runs workloads.
    Worker,
}

impl Role {
    /// `master` or `worker`, as in machine names and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Self::Master),
            "worker" => Ok(Self::Worker),
            _ => Err(()),
        }
    }
}

/// A machine's name: its cluster, role and index (from 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineName {
    /// The cluster it belongs to.
    pub cluster: ClusterName,
    /// Its role.
    pub role: Role,
    /// Its number among the cluster's machines of that role, from 1.
    pub index: u16,
}

/// Highest machine index.
pub const MAX_INDEX: u16 = 9999;

impl MachineName {
    /// The `index`th machine of `role` in `cluster`; `None` when `index`
    /// is 0 or above [`MAX_INDEX`].
    pub fn new(cluster: &ClusterName, role: Role, index: u16) -> Option<Self> {
        (1..=MAX_INDEX).contains(&index).then(|| Self {
            cluster: cluster.clone(),
            role,
            index,
        })
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.cluster, self.role, self.index)
    }
}

impl FromStr for MachineName {
    type Err = NameError;

    /// Parses `CLUSTER-ROLE-INDEX`; the cluster name may itself contain
    /// `-`, the role and index are the last two parts.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = || NameError::Machine {
            value: value.to_string(),
        };
        let (rest, index) = value.rsplit_once('-').ok_or_else(refuse)?;
        let (cluster, role) = rest.rsplit_once('-').ok_or_else(refuse)?;
        // Digits only, no sign or leading zero: one spelling per machine.
        if index.is_empty() || index.starts_with('0') || !index.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(refuse());
        }
        let index: u16 = index.parse().map_err(|_| refuse())?;
        let role: Role = role.parse().map_err(|_| refuse())?;
        let cluster: ClusterName = cluster.parse().map_err(|_| refuse())?;
        Self::new(&cluster, role, index).ok_or_else(refuse)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cluster_names_are_short_dns_labels() {
        for good in ["demo", "a", "k-1", "x".repeat(40).as_str()] {
            assert_eq!(good.parse::<ClusterName>().unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "DNS label"),
            ("Demo", "DNS label"),
            ("a.b", "DNS label"),
            ("-a", "DNS label"),
            ("a_b", "DNS label"),
            (&"x".repeat(41), "41 characters, at most 40"),
        ] {
            let err = bad.parse::<ClusterName>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid cluster name {bad:?}: ")) && err.contains(why),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn machine_names_round_trip_through_their_text() {
        for text in ["demo-master-1", "my-lab-worker-12", "a-worker-9999"] {
            let name: MachineName = text.parse().unwrap();
            assert_eq!(name.to_string(), text);
        }
        let name: MachineName = "my-lab-worker-12".parse().unwrap();
        assert_eq!(name.cluster.as_str(), "my-lab");
        assert_eq!(name.role, Role::Worker);
        assert_eq!(name.index, 12);
    }

    #[test]
    fn machine_names_that_are_not_cluster_role_index_are_refused() {
        for bad in [
            "demo",
            "demo-master",
            "demo-master-0",
            "demo-master-01",
            "demo-master-+1",
            "demo-master-10000",
            "demo-boss-1",
            "Demo-master-1",
            "-master-1",
            "demo-master-1 ",
        ] {
            let err = bad.parse::<MachineName>().unwrap_err();
            assert_eq!(
                err,
                NameError::Machine {
                    value: bad.to_string()
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn new_refuses_index_zero_and_above_the_maximum() {
        let c: ClusterName = "demo".parse().unwrap();
        assert!(MachineName::new(&c, Role::Master, 0).is_none());
        assert!(MachineName::new(&c, Role::Master, MAX_INDEX + 1).is_none());
        assert_eq!(
            MachineName::new(&c, Role::Worker, 3).unwrap().to_string(),
            "demo-worker-3"
        );
    }
}
