//! A cluster's network on one host: a subnet with a gateway (the cluster
//! bridge's own address), a fixed address per machine, and the names of
//! the host-side interfaces (at most 15 characters, so derived from a hash
//! of the cluster's or machine's name, with the name itself kept in the
//! interface's alias).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::name::{ClusterName, MachineName, Role};

/// Why a network or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not `A.B.C.D/LEN` with a usable prefix length.
    #[error("invalid cluster network {value:?}: {reason}")]
    Network {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A machine address that is not a host of the network, or is its
    /// gateway.
    #[error("machine address {address} is not usable in {network}: {reason}")]
    Address {
        /// The address.
        address: Ipv4Addr,
        /// The network.
        network: ClusterNetwork,
        /// Why.
        reason: &'static str,
    },
}

/// A cluster's subnet, written as its gateway and prefix length
/// (`10.80.0.1/24`): the gateway is the address of the cluster bridge on
/// the host, through which the host reaches the machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterNetwork {
    gateway: Ipv4Addr,
    prefix_len: u8,
}

impl ClusterNetwork {
    /// The bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The prefix length (8 to 30).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    /// The network's first address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & self.mask())
    }

    /// The network's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) | !self.mask())
    }

    /// Checks that `address` can be a machine's: a host of the network
    /// other than the gateway.
    pub fn check_host(&self, address: Ipv4Addr) -> Result<(), NetworkError> {
        let refuse = |reason| NetworkError::Address {
            address,
            network: *self,
            reason,
        };
        if u32::from(address) & self.mask() != u32::from(self.network()) {
            return Err(refuse("outside the network"));
        }
        if address == self.network() || address == self.broadcast() {
            return Err(refuse("the network's own or broadcast address"));
        }
        if address == self.gateway {
            return Err(refuse("the gateway (the host's bridge)"));
        }
        Ok(())
    }

    /// The address kprov gives `machine` by default: host number 10 + N
    /// for masters, 100 + N for workers; `None` when that is not a host
    /// of the network or is the gateway.
    pub fn default_address(&self, machine: &MachineName) -> Option<Ipv4Addr> {
        let base: u32 = match machine.role {
            Role::Master if machine.index < 90 => 10,
            Role::Master => return None,
            Role::Worker => 100,
        };
        let host = u32::from(self.network()).checked_add(base + u32::from(machine.index))?;
        let address = Ipv4Addr::from(host);
        self.check_host(address).ok().map(|()| address)
    }
}

impl fmt::Display for ClusterNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.prefix_len)
    }
}

impl FromStr for ClusterNetwork {
    type Err = NetworkError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| NetworkError::Network {
            value: value.to_string(),
            reason,
        };
        let (addr, len) = value
            .split_once('/')
            .ok_or_else(|| refuse("expected GATEWAY/PREFIX-LENGTH such as 10.80.0.1/24"))?;
        let gateway: Ipv4Addr = addr
            .parse()
            .map_err(|_| refuse("the gateway is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| refuse("expected a prefix length from 8 to 30"))?;
        let network = Self {
            gateway,
            prefix_len,
        };
        if gateway == network.network() || gateway == network.broadcast() {
            return Err(refuse(
                "the gateway is the network's own or broadcast address",
            ));
        }
        Ok(network)
    }
}

/// 10 hex digits of `text`'s sha256: short names for interfaces.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..5])
}

/// The cluster bridge's interface name: `kpbr` and 10 hex digits of the
/// name's sha256 (14 characters).
pub fn bridge_name(cluster: &ClusterName) -> String {
    format!("kpbr{}", short_hash(cluster.as_str()))
}

/// The host end of a machine's veth pair: `kpv` and 10 hex digits of the
/// name's sha256 (13 characters).
pub fn veth_name(machine: &MachineName) -> String {
    format!("kpv{}", short_hash(&machine.to_string()))
}

/// The MAC address of a machine's eth0: locally administered, from the
/// name's sha256, so that a machine made again under its name (re-imaged)
/// has the address and the MAC it had, and the other machines' ARP
/// caches still hold true.
pub fn machine_mac(machine: &MachineName) -> String {
    let digest = Sha256::digest(format!("kprov mac {machine}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    // Unicast (bit 0 clear), locally administered (bit 1 set).
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> ClusterNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_as_gateway_and_prefix_length() {
        let n = net("10.80.0.1/24");
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 80, 0, 1));
        assert_eq!(n.network(), Ipv4Addr::new(10, 80, 0, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 80, 0, 255));
        assert_eq!(n.to_string(), "10.80.0.1/24");
        for (bad, why) in [
            ("10.80.0.1", "expected GATEWAY/PREFIX-LENGTH"),
            ("10.80.0/24", "not an IPv4 address"),
            ("10.80.0.1/31", "from 8 to 30"),
            ("10.80.0.1/x", "from 8 to 30"),
            ("10.80.0.0/24", "own or broadcast"),
            ("10.80.0.255/24", "own or broadcast"),
        ] {
            let err = bad.parse::<ClusterNetwork>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid cluster network {bad:?}: ")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn machine_addresses_must_be_hosts_other_than_the_gateway() {
        let n = net("10.80.0.1/24");
        assert!(n.check_host(Ipv4Addr::new(10, 80, 0, 11)).is_ok());
        for (addr, why) in [
            (Ipv4Addr::new(10, 80, 1, 11), "outside the network"),
            (Ipv4Addr::new(10, 80, 0, 0), "own or broadcast"),
            (Ipv4Addr::new(10, 80, 0, 255), "own or broadcast"),
            (Ipv4Addr::new(10, 80, 0, 1), "the gateway"),
        ] {
            let err = n.check_host(addr).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "machine address {addr} is not usable in 10.80.0.1/24: "
                )) && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn default_addresses_put_masters_from_11_and_workers_from_101() {
        let n = net("10.80.0.1/24");
        let c: ClusterName = "demo".parse().unwrap();
        let at = |role, i| n.default_address(&MachineName::new(&c, role, i).unwrap());
        assert_eq!(at(Role::Master, 1), Some(Ipv4Addr::new(10, 80, 0, 11)));
        assert_eq!(at(Role::Master, 3), Some(Ipv4Addr::new(10, 80, 0, 13)));
        assert_eq!(at(Role::Master, 90), None);
        assert_eq!(at(Role::Worker, 2), Some(Ipv4Addr::new(10, 80, 0, 102)));
        assert_eq!(at(Role::Worker, 154), Some(Ipv4Addr::new(10, 80, 0, 254)));
        assert_eq!(at(Role::Worker, 155), None, "the broadcast address");
        assert_eq!(
            net("10.80.0.1/28").default_address(&MachineName::new(&c, Role::Worker, 1).unwrap()),
            None
        );
    }

    #[test]
    fn interface_names_fit_the_kernels_limit_and_differ_by_name() {
        let a: ClusterName = "a-rather-long-cluster-name-for-a-test-xx".parse().unwrap();
        let b: ClusterName = "demo".parse().unwrap();
        assert!(bridge_name(&a).len() <= 15);
        assert_ne!(bridge_name(&a), bridge_name(&b));
        assert_eq!(bridge_name(&b), bridge_name(&"demo".parse().unwrap()));
        let m1 = MachineName::new(&a, Role::Worker, 9999).unwrap();
        let m2 = MachineName::new(&a, Role::Worker, 999).unwrap();
        assert!(veth_name(&m1).len() <= 15);
        assert_ne!(veth_name(&m1), veth_name(&m2));
        assert!(bridge_name(&b).starts_with("kpbr") && veth_name(&m1).starts_with("kpv"));
    }

    #[test]
    fn a_machines_mac_is_its_names_locally_administered_and_unicast() {
        let a: MachineName = "demo-worker-1".parse().unwrap();
        let b: MachineName = "demo-worker-2".parse().unwrap();
        let mac = machine_mac(&a);
        assert_eq!(mac, machine_mac(&a));
        assert_ne!(mac, machine_mac(&b));
        assert_eq!(mac.len(), 17, "{mac}");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{mac}");
    }
}
