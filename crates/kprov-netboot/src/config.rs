//! The server's configuration file (`kprov netboot serve --config FILE`):
//! YAML with camelCase keys, validated into [`Config`] before any socket
//! is opened. Relative paths are relative to the file.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::crd::ProfileSpec;
use crate::machine::{check_cmdline, parse_profile, Profile};
use crate::paths::RelPath;

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

/// Bounds on what clients may hold: time to send a request head, idle
/// time, connections, TFTP timeouts and transfers. The connection and
/// transfer caps are lowered further at start so that they fit the
/// process's file-descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Seconds a client has to send a whole request head.
    #[serde(default = "default_header_timeout")]
    pub http_header_timeout_seconds: u64,
    /// Seconds a connection may sit without traffic (keep-alive idle, or
    /// a client that stops reading) before it is closed.
    #[serde(default = "default_idle_timeout")]
    pub http_idle_timeout_seconds: u64,
    /// HTTP connections at once.
    #[serde(default = "default_max_connections")]
    pub http_max_connections: usize,
    /// HTTP connections at once from one address (at most a quarter of
    /// all).
    #[serde(default = "default_max_per_address")]
    pub http_max_connections_per_address: usize,
    /// The largest TFTP `timeout` option accepted (a larger one is left
    /// out of the option acknowledgement, and the default of 1 s is used).
    #[serde(default = "default_tftp_max_timeout")]
    pub tftp_max_timeout_seconds: u64,
    /// TFTP transfers sending at once (each holds a thread).
    #[serde(default = "default_tftp_max_transfers")]
    pub tftp_max_transfers: usize,
    /// TFTP requests waiting for their first acknowledgement at once;
    /// requests beyond it are dropped (clients send theirs again).
    #[serde(default = "default_tftp_max_pending")]
    pub tftp_max_pending: usize,
}

fn default_header_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_per_address() -> usize {
    64
}
fn default_tftp_max_timeout() -> u64 {
    5
}
fn default_tftp_max_transfers() -> usize {
    64
}
fn default_tftp_max_pending() -> usize {
    256
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            http_header_timeout_seconds: default_header_timeout(),
            http_idle_timeout_seconds: default_idle_timeout(),
            http_max_connections: default_max_connections(),
            http_max_connections_per_address: default_max_per_address(),
            tftp_max_timeout_seconds: default_tftp_max_timeout(),
            tftp_max_transfers: default_tftp_max_transfers(),
            tftp_max_pending: default_tftp_max_pending(),
        }
    }
}

impl Limits {
    /// The first key whose value is out of range, with the range.
    fn check(&self) -> Result<(), (String, String)> {
        let checks: [(&str, u64, u64, u64); 7] = [
            (
                "httpHeaderTimeoutSeconds",
                self.http_header_timeout_seconds,
                1,
                300,
            ),
            (
                "httpIdleTimeoutSeconds",
                self.http_idle_timeout_seconds,
                1,
                3600,
            ),
            (
                "httpMaxConnections",
                self.http_max_connections as u64,
                1,
                1 << 20,
            ),
            (
                "httpMaxConnectionsPerAddress",
                self.http_max_connections_per_address as u64,
                1,
                1 << 20,
            ),
            (
                "tftpMaxTimeoutSeconds",
                self.tftp_max_timeout_seconds,
                1,
                255,
            ),
            ("tftpMaxTransfers", self.tftp_max_transfers as u64, 1, 4096),
            ("tftpMaxPending", self.tftp_max_pending as u64, 1, 65536),
        ];
        for (key, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err((
                    format!("limits.{key}"),
                    format!("{value} is out of range: expected {min} to {max}"),
                ));
            }
        }
        Ok(())
    }
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
    #[serde(default = "default_offer")]
    offer_seconds: u32,
    #[serde(default = "default_token_ttl")]
    token_ttl_seconds: u64,
    #[serde(default = "default_user_data_window")]
    user_data_window_seconds: u64,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    pool: Option<Pool>,
    #[serde(default)]
    machines_dir: Option<PathBuf>,
    tftp_root: PathBuf,
    http_root: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    ports: Ports,
    #[serde(default)]
    boot_files: BootFiles,
    #[serde(default)]
    default_profile: Option<ProfileSpec>,
    #[serde(default)]
    stage2: Option<RawStage2>,
    #[serde(default)]
    ipv6_ra_lifetime_zero: Option<bool>,
    #[serde(default)]
    join: Option<crate::join::RawJoin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage2 {
    kernel: String,
    initrd: String,
    #[serde(default)]
    cmdline: String,
}

/// What machines that boot an image (`boot: {image: ...}`) netboot to
/// install it: the kernel and the stage2 initrd (`kprov initrd build`),
/// under the HTTP root, and kernel arguments of the server's choosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage2Boot {
    /// The kernel the initrd's modules are for.
    pub kernel: RelPath,
    /// The stage2 initrd.
    pub initrd: RelPath,
    /// Extra kernel arguments (console=ttyS0, kprov.disk=/dev/sda).
    pub cmdline: String,
}

fn default_lease() -> u32 {
    3600
}
fn default_offer() -> u32 {
    10
}
fn default_token_ttl() -> u64 {
    1800
}
fn default_user_data_window() -> u64 {
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
    /// How long an offered pool address is held for the client it was
    /// offered to (a pool with no free address takes back the oldest
    /// offer first).
    pub offer_seconds: u32,
    /// Lifetime of script and seed tokens.
    pub token_ttl_seconds: u64,
    /// How long after a machine's user-data was first served it stays
    /// available (per token epoch).
    pub user_data_window_seconds: u64,
    /// Timeouts and caps for clients.
    pub limits: Limits,
    /// Dynamic pool (full mode, for the default profile).
    pub pool: Option<Pool>,
    /// Directory of Machine YAML files (None: Machines come from the
    /// API server only).
    pub machines_dir: Option<PathBuf>,
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
    /// How image machines install their image, if configured.
    pub stage2: Option<Stage2Boot>,
    /// Send IPv6 router advertisements with lifetime 0 every 2 s on the
    /// interface, so that iPXE does not wait for IPv6 (default: on in
    /// full mode, off in proxy mode, where the network has its own
    /// routers).
    pub ipv6_ra_lifetime_zero: bool,
    /// Join data netboot makes for worker Machines without user-data
    /// (with `--machines kubernetes`).
    pub join: Option<crate::join::JoinConfig>,
}

/// `path` with `.` parts dropped and `..` parts applied, without reading
/// the filesystem (symlinks are checked again when the server starts).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// What a served root must not contain: the state directory (token
/// secret, leases, machine state) and the Machine files (user-data).
/// Each entry is (key, value as written, resolved path); the error names
/// both keys.
pub fn check_roots(
    served: &[(&str, &Path, &Path)],
    private: &[(&str, &Path, &Path)],
) -> Result<(), (String, String)> {
    // Without "." parts, "." is the empty path, which every relative
    // path starts with.
    let plain = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect()
    };
    for (root_key, root_text, root) in served {
        for (key, text, dir) in private {
            if plain(dir).starts_with(plain(root)) {
                let what = if *key == "stateDir" {
                    "the token secret and the lease table"
                } else {
                    "the Machine files (with their user-data)"
                };
                return Err((
                    root_key.to_string(),
                    format!(
                        "{:?} contains {key} {:?}: {what} would be served; use separate directories",
                        root_text.display().to_string(),
                        text.display().to_string()
                    ),
                ));
            }
        }
    }
    Ok(())
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
        if !(1..=3600).contains(&raw.offer_seconds) {
            return Err(fail(
                "offerSeconds",
                format!("{} is out of range: expected 1 to 3600", raw.offer_seconds),
            ));
        }
        if !(5..=7 * 86400).contains(&raw.token_ttl_seconds) {
            return Err(fail(
                "tokenTtlSeconds",
                format!(
                    "{} is out of range: expected 5 to 604800 (a week)",
                    raw.token_ttl_seconds
                ),
            ));
        }
        if !(1..=30 * 86400).contains(&raw.user_data_window_seconds) {
            return Err(fail(
                "userDataWindowSeconds",
                format!(
                    "{} is out of range: expected 1 to 2592000 (30 days)",
                    raw.user_data_window_seconds
                ),
            ));
        }
        raw.limits
            .check()
            .map_err(|(field, reason)| fail(&field, reason))?;
        let machines_dir = raw.machines_dir.as_ref().map(|d| normalize(&base.join(d)));
        let tftp_root = normalize(&base.join(&raw.tftp_root));
        let http_root = normalize(&base.join(&raw.http_root));
        let state_dir = normalize(&base.join(&raw.state_dir));
        let mut private = vec![("stateDir", raw.state_dir.as_path(), state_dir.as_path())];
        if let (Some(written), Some(dir)) = (&raw.machines_dir, &machines_dir) {
            private.push(("machinesDir", written.as_path(), dir.as_path()));
        }
        check_roots(
            &[
                ("httpRoot", &raw.http_root, &http_root),
                ("tftpRoot", &raw.tftp_root, &tftp_root),
            ],
            &private,
        )
        .map_err(|(field, reason)| fail(&field, reason))?;
        let default_profile = raw
            .default_profile
            .map(|p| parse_profile(p, "defaultProfile."))
            .transpose()
            .map_err(|(field, reason)| fail(&field, reason))?;
        let stage2 = raw
            .stage2
            .map(|s| -> Result<Stage2Boot, (String, String)> {
                check_cmdline(&s.cmdline).map_err(|e| ("stage2.cmdline".to_string(), e))?;
                Ok(Stage2Boot {
                    kernel: RelPath::new(&s.kernel)
                        .map_err(|e| ("stage2.kernel".to_string(), e))?,
                    initrd: RelPath::new(&s.initrd)
                        .map_err(|e| ("stage2.initrd".to_string(), e))?,
                    cmdline: s.cmdline,
                })
            })
            .transpose()
            .map_err(|(field, reason)| fail(&field, reason))?;
        let join = raw
            .join
            .map(crate::join::RawJoin::validate)
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
            offer_seconds: raw.offer_seconds,
            token_ttl_seconds: raw.token_ttl_seconds,
            user_data_window_seconds: raw.user_data_window_seconds,
            limits: raw.limits,
            pool: raw.pool,
            machines_dir,
            tftp_root,
            http_root,
            state_dir,
            ports: raw.ports,
            boot_files: raw.boot_files,
            default_profile,
            stage2,
            ipv6_ra_lifetime_zero: raw.ipv6_ra_lifetime_zero.unwrap_or(raw.mode == Mode::Full),
            join,
        })
    }

    /// The config with another server address (`serve --server-address`:
    /// each replica of the DaemonSet binds its own node's), which must lie
    /// in the subnet in full mode.
    pub fn with_server_address(
        mut self,
        file: &Path,
        address: Ipv4Addr,
    ) -> Result<Self, ConfigError> {
        if let (Mode::Full, Some(subnet)) = (self.mode, self.subnet) {
            if !subnet.contains_host(address) {
                return Err(ConfigError {
                    file: file.to_path_buf(),
                    field: "serverAddress (--server-address)".into(),
                    reason: format!("{address} is not in subnet {subnet}"),
                });
            }
        }
        self.server_address = address;
        Ok(self)
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
        assert_eq!(
            c.machines_dir.as_deref(),
            Some(Path::new("/etc/kprov/machines"))
        );
        assert_eq!(c.ports.http, 8080);
        assert_eq!(c.ports.dhcp, 67);
        assert_eq!(c.http_base(), "http://10.77.0.1:8080");
        assert_eq!(c.boot_files.bios, "undionly.kpxe");
        assert_eq!(
            (
                c.offer_seconds,
                c.token_ttl_seconds,
                c.user_data_window_seconds
            ),
            (10, 1800, 3600)
        );
        assert_eq!(c.limits, Limits::default());
        // Roots side by side, or a state directory beside the served root
        // reached through "..", are fine.
        let c = Config::parse(
            Path::new("/etc/kprov/netboot.yaml"),
            &GOOD.replace("stateDir: state", "stateDir: http/../state"),
        )
        .unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/kprov/state"));
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
            (
                "httpRoot: http",
                "httpRoot: .",
                "f.yaml: httpRoot: \".\" contains stateDir \"state\": the token secret and the lease table would be served; use separate directories",
            ),
            (
                "tftpRoot: tftp",
                "tftpRoot: http/../state/..",
                "f.yaml: tftpRoot: \"http/../state/..\" contains stateDir \"state\": the token secret and the lease table would be served; use separate directories",
            ),
            (
                "machinesDir: machines",
                "machinesDir: http/m",
                "f.yaml: httpRoot: \"http\" contains machinesDir \"http/m\": the Machine files (with their user-data) would be served; use separate directories",
            ),
            (
                "stateDir: state",
                "stateDir: ./tftp/./s",
                "f.yaml: tftpRoot: \"tftp\" contains stateDir \"./tftp/./s\": the token secret and the lease table would be served; use separate directories",
            ),
            (
                "ports:",
                "tokenTtlSeconds: 4\nports:",
                "f.yaml: tokenTtlSeconds: 4 is out of range: expected 5 to 604800 (a week)",
            ),
            (
                "ports:",
                "limits: {tftpMaxTimeoutSeconds: 0}\nports:",
                "f.yaml: limits.tftpMaxTimeoutSeconds: 0 is out of range: expected 1 to 255",
            ),
        ];
        for (from, to, want) in cases {
            let err = Config::parse(Path::new("f.yaml"), &GOOD.replace(from, to)).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
