//! The server's configuration file (`kprov netboot serve --config FILE`):
//! YAML with camelCase keys, validated into [`Config`] before any socket
//! is opened. Relative paths are relative to the file.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::machine::{parse_profile, Profile, RawProfile};

/// An IPv4 subnet such as `10.77.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid subnet {s:?}: expected ADDRESS/PREFIX, e.g. 10.77.0.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(format!(
                "invalid subnet {s:?}: the prefix must be 30 or shorter"
            ));
        }
        let net = Self {
            network: addr,
            prefix,
        };
        if u32::from(addr) & !net.mask_bits() != 0 {
            return Err(format!("invalid subnet {s:?}: host bits are set"));
        }
        Ok(net)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    fn mask_bits(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The subnet mask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask_bits())
    }

    /// Whether `ip` is a usable host address in the subnet (not the
    /// network or broadcast address).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network)
            && ip != self.network
            && ip != self.broadcast()
    }
}

/// Full DHCP server, or proxyDHCP next to another DHCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Hands out addresses (fixed per Machine, optional pool) and PXE options.
    Full,
    /// Only PXE options; another server hands out addresses.
    Proxy,
}

/// Listening ports (the standard ones by default; tests and benchmarks may
/// move TFTP and HTTP).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ports {
    /// DHCP server port.
    #[serde(default = "default_dhcp_port")]
    pub dhcp: u16,
    /// The PXE boot server port of proxyDHCP (4011).
    #[serde(default = "default_proxy_port")]
    pub proxy: u16,
    /// TFTP.
    #[serde(default = "default_tftp_port")]
    pub tftp: u16,
    /// HTTP.
    #[serde(default = "default_http_port")]
    pub http: u16,
}

fn default_dhcp_port() -> u16 {
    67
}
fn default_proxy_port() -> u16 {
    4011
}
fn default_tftp_port() -> u16 {
    69
}
fn default_http_port() -> u16 {
    80
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            dhcp: 67,
            proxy: 4011,
            tftp: 69,
            http: 80,
        }
    }
}

/// The iPXE binaries handed to PXE ROMs that are not iPXE yet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootFiles {
    /// Legacy BIOS (client architecture 0).
    #[serde(default = "default_bios")]
    pub bios: String,
    /// UEFI x86-64 (client architecture 7 and 9).
    #[serde(default = "default_uefi")]
    pub uefi: String,
}

fn default_bios() -> String {
    "undionly.kpxe".into()
}
fn default_uefi() -> String {
    "ipxe.efi".into()
}

impl Default for BootFiles {
    fn default() -> Self {
        Self {
            bios: default_bios(),
            uefi: default_uefi(),
        }
    }
}

/// An address pool for machines without a fixed address (with a default
/// profile).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    mode: Mode,
    interface: String,
    server_address: Ipv4Addr,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default = "default_lease")]
    lease_seconds: u32,
    #[serde(default)]
    pool: Option<Pool>,
    machines_dir: PathBuf,
    tftp_root: PathBuf,
    http_root: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    ports: Ports,
    #[serde(default)]
    boot_files: BootFiles,
    #[serde(default)]
    default_profile: Option<RawProfile>,
    #[serde(default)]
    ipv6_ra_lifetime_zero: Option<bool>,
}

fn default_lease() -> u32 {
    3600
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// full or proxy.
    pub mode: Mode,
    /// The interface DHCP listens on (sockets are bound to it).
    pub interface: String,
    /// The server's own address on that interface (DHCP server id, TFTP
    /// and HTTP address).
    pub server_address: Ipv4Addr,
    /// The subnet handed out (required in full mode).
    pub subnet: Option<Subnet>,
    /// Default router for clients.
    pub router: Option<Ipv4Addr>,
    /// DNS servers for clients.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time.
    pub lease_seconds: u32,
    /// Dynamic pool (full mode, for the default profile).
    pub pool: Option<Pool>,
    /// Directory of Machine YAML files.
    pub machines_dir: PathBuf,
    /// TFTP root.
    pub tftp_root: PathBuf,
    /// HTTP root (kernels, initrds, images).
    pub http_root: PathBuf,
    /// Leases and the token secret.
    pub state_dir: PathBuf,
    /// Ports.
    pub ports: Ports,
    /// iPXE binaries.
    pub boot_files: BootFiles,
    /// What unknown MACs boot, if anything.
    pub default_profile: Option<Profile>,
    /// Send IPv6 router advertisements with lifetime 0 every 2 s on the
    /// interface, so that iPXE does not wait for IPv6 (default: on in
    /// full mode, off in proxy mode, where the network has its own
    /// routers).
    pub ipv6_ra_lifetime_zero: bool,
}

/// A refused configuration: the file, the key and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl Config {
    /// Parses and validates the config text; relative paths are taken
    /// relative to `file`'s directory.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let fail = |field: &str, reason: String| ConfigError {
            file: file.to_path_buf(),
            field: field.into(),
            reason,
        };
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| fail("(document)", e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let subnet = raw
            .subnet
            .as_deref()
            .map(str::parse::<Subnet>)
            .transpose()
            .map_err(|e| fail("subnet", e))?;
        if raw.mode == Mode::Full {
            let Some(subnet) = subnet else {
                return Err(fail("subnet", "required in full mode".into()));
            };
            if !subnet.contains_host(raw.server_address) {
                return Err(fail(
                    "serverAddress",
                    format!("{} is not in subnet {subnet}", raw.server_address),
                ));
            }
            if let Some(pool) = raw.pool {
                if !subnet.contains_host(pool.start)
                    || !subnet.contains_host(pool.end)
                    || u32::from(pool.start) > u32::from(pool.end)
                {
                    return Err(fail(
                        "pool",
                        format!(
                            "{}-{} is not an ascending range inside {subnet}",
                            pool.start, pool.end
                        ),
                    ));
                }
            }
        } else if raw.pool.is_some() {
            return Err(fail("pool", "only full mode hands out addresses".into()));
        }
        if raw.interface.is_empty() || raw.interface.len() > 15 || raw.interface.contains('/') {
            return Err(fail(
                "interface",
                format!("invalid interface name {:?}", raw.interface),
            ));
        }
        let default_profile = raw
            .default_profile
            .map(|p| parse_profile(p, "defaultProfile."))
            .transpose()
            .map_err(|(field, reason)| fail(&field, reason))?;
        Ok(Self {
            mode: raw.mode,
            interface: raw.interface,
            server_address: raw.server_address,
            subnet,
            router: raw.router,
            dns: raw.dns,
            lease_seconds: raw.lease_seconds.max(60),
            pool: raw.pool,
            machines_dir: base.join(raw.machines_dir),
            tftp_root: base.join(raw.tftp_root),
            http_root: base.join(raw.http_root),
            state_dir: base.join(raw.state_dir),
            ports: raw.ports,
            boot_files: raw.boot_files,
            default_profile,
            ipv6_ra_lifetime_zero: raw.ipv6_ra_lifetime_zero.unwrap_or(raw.mode == Mode::Full),
        })
    }

    /// The base URL of the HTTP server.
    pub fn http_base(&self) -> String {
        if self.ports.http == 80 {
            format!("http://{}", self.server_address)
        } else {
            format!("http://{}:{}", self.server_address, self.ports.http)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "\
mode: full
interface: br0
serverAddress: 10.77.0.1
subnet: 10.77.0.0/24
pool: {start: 10.77.0.100, end: 10.77.0.199}
machinesDir: machines
tftpRoot: tftp
httpRoot: http
stateDir: state
ports: {http: 8080}
";

    #[test]
    fn subnets_parse_and_know_their_hosts() {
        let s: Subnet = "10.77.0.0/24".parse().unwrap();
        assert_eq!(s.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 77, 0, 255));
        assert!(s.contains_host(Ipv4Addr::new(10, 77, 0, 1)));
        assert!(!s.contains_host(Ipv4Addr::new(10, 77, 0, 0)));
        assert!(!s.contains_host(Ipv4Addr::new(10, 77, 1, 1)));
        for bad in [
            "10.77.0.0",
            "10.77.0.1/24",
            "10.77.0.0/33",
            "x/24",
            "10.77.0.0/31",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_parses_with_paths_relative_to_its_file() {
        let c = Config::parse(Path::new("/etc/kprov/netboot.yaml"), GOOD).unwrap();
        assert_eq!(c.mode, Mode::Full);
        assert_eq!(c.machines_dir, Path::new("/etc/kprov/machines"));
        assert_eq!(c.ports.http, 8080);
        assert_eq!(c.ports.dhcp, 67);
        assert_eq!(c.http_base(), "http://10.77.0.1:8080");
        assert_eq!(c.boot_files.bios, "undionly.kpxe");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (
                "subnet: 10.77.0.0/24\n",
                "",
                "f.yaml: subnet: required in full mode",
            ),
            (
                "serverAddress: 10.77.0.1",
                "serverAddress: 10.78.0.1",
                "f.yaml: serverAddress: 10.78.0.1 is not in subnet 10.77.0.0/24",
            ),
            (
                "end: 10.77.0.199",
                "end: 10.77.0.9",
                "f.yaml: pool: 10.77.0.100-10.77.0.9 is not an ascending range inside 10.77.0.0/24",
            ),
            (
                "mode: full",
                "mode: proxy",
                "f.yaml: pool: only full mode hands out addresses",
            ),
        ];
        for (from, to, want) in cases {
            let err = Config::parse(Path::new("f.yaml"), &GOOD.replace(from, to)).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
