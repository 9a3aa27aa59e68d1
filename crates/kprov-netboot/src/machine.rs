//! Machine resources: what the netboot server knows about each machine
//! (its MAC, fixed address, host name, what it boots and its user-data),
//! loaded from a directory of YAML files with the schema of the
//! `machines.kprov.dev` custom resource (`apiVersion: kprov.dev/v1alpha1`,
//! `kind: Machine`; one Rust type for both, in [`crate::crd`]).
//!
//! Loading is split so that validation is pure: [`parse_machine`] turns one
//! file's text into a [`Machine`] or a [`MachineError`] naming the file,
//! field and reason; [`load_dir`] reads a directory and keeps the valid
//! ones, reporting the others.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::config::Subnet;
use crate::crd::{MachineSpec, ProfileSpec};
use crate::paths::RelPath;

/// The API version of Machine resources.
pub const API_VERSION: &str = "kprov.dev/v1alpha1";

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (also accepted
/// with `-` separators and in upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {value:?}: expected six hex byte pairs separated by ':' or '-', e.g. 52:54:00:12:34:56")]
pub struct MacAddrError {
    /// The text refused.
    pub value: String,
}

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacAddrError {
            value: s.to_string(),
        };
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (byte, part) in out.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(Self(out))
    }
}

impl MacAddr {
    /// The address from a DHCP `chaddr` field (hardware length 6).
    pub fn from_chaddr(chaddr: &[u8]) -> Option<Self> {
        chaddr.get(..6)?.try_into().ok().map(Self)
    }

    /// The form used in URLs: `aa-bb-cc-dd-ee-ff`.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What a machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A kernel and initrd (paths under the HTTP root) with a command line.
    Kernel {
        /// The kernel, relative to the HTTP root.
        kernel: RelPath,
        /// The initrd, relative to the HTTP root.
        initrd: Option<RelPath>,
        /// Extra kernel command line.
        cmdline: String,
    },
    /// A disk image (relative to the HTTP root) that the stage2 initrd
    /// writes to disk.
    Image {
        /// The image, relative to the HTTP root.
        image: RelPath,
    },
}

/// A machine's boot profile: everything but its identity. The server's
/// default profile (for unknown MACs) is one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The role (e.g. master, worker); informational for now.
    pub role: Option<String>,
    /// What it boots.
    pub boot: Boot,
    /// Its cloud-init user-data.
    pub user_data: Option<String>,
    /// Once installed, its iPXE script exits to the local disk.
    pub installed: bool,
}

/// A validated Machine resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `metadata.name`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// `spec.macAddress`.
    pub mac: MacAddr,
    /// `spec.uuid`: the SMBIOS UUID, lower-case, when given.
    pub uuid: Option<String>,
    /// `spec.ipAddress`: the fixed address in full DHCP mode.
    pub ip: Option<Ipv4Addr>,
    /// `spec.hostname`.
    pub hostname: Option<String>,
    /// The boot profile.
    pub profile: Profile,
    /// Its Node, when the cluster has one: whether it is Ready.
    pub node: Option<bool>,
}

/// The node a Machine becomes: its host name, else its name.
pub fn node_name_for<'a>(hostname: Option<&'a str>, name: &'a str) -> &'a str {
    hostname.unwrap_or(name)
}

impl Machine {
    /// The node it becomes ([`node_name_for`]).
    pub fn node_name(&self) -> &str {
        node_name_for(self.hostname.as_deref(), &self.name)
    }

    /// Whether it is done installing: its spec says so, or its Node
    /// exists (it has joined). Its script then boots the local disk and
    /// its user-data is no longer served.
    pub fn served_as_installed(&self) -> bool {
        self.profile.installed || self.node.is_some()
    }
}

/// A Machine file that was refused: which file, which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct MachineError {
    /// The file.
    pub file: PathBuf,
    /// The field (dotted path), or `(document)` when the file does not
    /// parse at all.
    pub field: String,
    /// What was wrong and what was expected.
    pub reason: String,
}

/// A Machine file's shape: the resource's spec type with the API
/// version, kind and name (unknown fields are refused so typos show up).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MachineFile {
    api_version: String,
    kind: String,
    metadata: FileMetadata,
    spec: MachineSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileMetadata {
    name: String,
}

/// A kernel command line that can go into an iPXE `kernel` line as it is.
pub fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.contains(['\n', '\r']) || cmdline.contains("${") {
        return Err("must be one line without iPXE settings (${...})".into());
    }
    Ok(())
}

impl ProfileSpec {
    /// Validates the profile; errors name the field under `prefix`.
    pub fn validate(self, prefix: &str) -> Result<Profile, (String, String)> {
        let field = |f: &str| format!("{prefix}{f}");
        let boot = match (self.boot.kernel, self.boot.image) {
            (Some(kernel), None) => {
                let kernel = RelPath::new(&kernel).map_err(|e| (field("boot.kernel"), e))?;
                let initrd = self
                    .boot
                    .initrd
                    .map(|i| RelPath::new(&i))
                    .transpose()
                    .map_err(|e| (field("boot.initrd"), e))?;
                let cmdline = self.boot.cmdline.unwrap_or_default();
                check_cmdline(&cmdline).map_err(|e| (field("boot.cmdline"), e))?;
                Boot::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                }
            }
            (None, Some(image)) => {
                if self.boot.initrd.is_some() || self.boot.cmdline.is_some() {
                    return Err((
                        field("boot"),
                        "image boots take no initrd or cmdline (the stage2 initrd writes the image)".into(),
                    ));
                }
                Boot::Image {
                    image: RelPath::new(&image).map_err(|e| (field("boot.image"), e))?,
                }
            }
            (Some(_), Some(_)) => {
                return Err((
                    field("boot"),
                    "give either kernel (+initrd, cmdline) or image, not both".into(),
                ))
            }
            (None, None) => {
                return Err((
                    field("boot"),
                    "expected kernel (+initrd, cmdline) or image".into(),
                ))
            }
        };
        if let Some(role) = &self.role {
            if role.is_empty() || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err((
                    field("role"),
                    format!("invalid role {role:?}: expected letters, digits and '-'"),
                ));
            }
        }
        Ok(Profile {
            role: self.role,
            boot,
            user_data: self.user_data,
            installed: self.installed,
        })
    }
}

/// Parses a default profile given in the server's config.
pub fn parse_profile(raw: ProfileSpec, prefix: &str) -> Result<Profile, (String, String)> {
    raw.validate(prefix)
}

/// Parses and validates one Machine file's text. Addresses must lie in
/// `subnet` when one is given (full DHCP mode).
pub fn parse_machine(
    file: &Path,
    text: &str,
    subnet: Option<&Subnet>,
) -> Result<Machine, MachineError> {
    let fail = |field: &str, reason: String| MachineError {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let raw: MachineFile =
        serde_yaml::from_str(text).map_err(|e| fail("(document)", e.to_string()))?;
    if raw.api_version != API_VERSION {
        return Err(fail(
            "apiVersion",
            format!("{:?}: expected {API_VERSION:?}", raw.api_version),
        ));
    }
    if raw.kind != "Machine" {
        return Err(fail(
            "kind",
            format!("{:?}: expected \"Machine\"", raw.kind),
        ));
    }
    validate_spec(file, raw.metadata.name, raw.spec, subnet)
}

/// Validates a Machine's name and spec, from a file or from the API
/// server (`source` names it in errors: the file, or `machine/NAME`).
/// Addresses must lie in `subnet` when one is given (full DHCP mode).
pub fn validate_spec(
    source: &Path,
    name: String,
    spec: MachineSpec,
    subnet: Option<&Subnet>,
) -> Result<Machine, MachineError> {
    let file = source;
    let fail = |field: &str, reason: String| MachineError {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    if let Err(e) = name.parse::<kprov_core::DnsLabel>() {
        return Err(fail(
            "metadata.name",
            format!(
                "invalid name {name:?}: {e}; {}",
                kprov_core::dns::DNS_LABEL_RULE
            ),
        ));
    }
    let mac: MacAddr = spec
        .mac_address
        .parse()
        .map_err(|e: MacAddrError| fail("spec.macAddress", e.to_string()))?;
    if mac.0[0] & 1 == 1 {
        return Err(fail(
            "spec.macAddress",
            format!("{mac} is a multicast address: expected a unicast NIC address"),
        ));
    }
    let ip = match spec.ip_address {
        None => None,
        Some(text) => {
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|_| fail("spec.ipAddress", format!("invalid IPv4 address {text:?}")))?;
            if let Some(subnet) = subnet {
                if !subnet.contains_host(ip) {
                    return Err(fail(
                        "spec.ipAddress",
                        format!("{ip} is not a host address of the configured subnet {subnet}"),
                    ));
                }
            }
            Some(ip)
        }
    };
    let uuid = match spec.uuid {
        None => None,
        Some(u) => Some(parse_uuid(&u).ok_or_else(|| {
            fail(
                "spec.uuid",
                format!("invalid UUID {u:?}: expected 8-4-4-4-12 hex digits"),
            )
        })?),
    };
    if let Some(h) = &spec.hostname {
        if let Err(e) = h.parse::<kprov_core::DnsSubdomain>() {
            return Err(fail(
                "spec.hostname",
                format!(
                    "invalid host name {h:?}: {e}; {}",
                    kprov_core::dns::DNS_SUBDOMAIN_RULE
                ),
            ));
        }
    }
    let profile = spec
        .profile
        .validate("spec.")
        .map_err(|(field, reason)| fail(&field, reason))?;
    Ok(Machine {
        name,
        file: file.to_path_buf(),
        mac,
        uuid,
        ip,
        hostname: spec.hostname,
        profile,
        node: None,
    })
}

/// A UUID in canonical lower-case form, or None.
pub fn parse_uuid(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let groups: Vec<&str> = t.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(t)
}

/// The machines the server knows, by MAC and by SMBIOS UUID.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_mac: BTreeMap<MacAddr, Machine>,
    by_uuid: BTreeMap<String, MacAddr>,
    fixed: std::collections::HashSet<Ipv4Addr>,
}

impl Registry {
    /// Builds a registry; a MAC, UUID or address claimed twice is an
    /// error for the later file (files are taken in name order).
    pub fn build(machines: Vec<Machine>) -> (Self, Vec<MachineError>) {
        let mut reg = Self::default();
        let mut errors = Vec::new();
        let mut ips: BTreeMap<Ipv4Addr, PathBuf> = BTreeMap::new();
        for m in machines {
            let dup = |field: &str, what: String, other: &Path| MachineError {
                file: m.file.clone(),
                field: field.into(),
                reason: format!("{what} is already used by {}", other.display()),
            };
            if let Some(other) = reg.by_mac.get(&m.mac) {
                errors.push(dup("spec.macAddress", m.mac.to_string(), &other.file));
                continue;
            }
            if let Some(ip) = m.ip {
                if let Some(other) = ips.get(&ip) {
                    errors.push(dup("spec.ipAddress", ip.to_string(), other));
                    continue;
                }
            }
            if let Some(uuid) = &m.uuid {
                if let Some(other) = reg.by_uuid.get(uuid).and_then(|mac| reg.by_mac.get(mac)) {
                    errors.push(dup("spec.uuid", uuid.clone(), &other.file));
                    continue;
                }
                reg.by_uuid.insert(uuid.clone(), m.mac);
            }
            if let Some(ip) = m.ip {
                ips.insert(ip, m.file.clone());
                reg.fixed.insert(ip);
            }
            reg.by_mac.insert(m.mac, m);
        }
        (reg, errors)
    }

    /// The machine with this MAC, else the one with this SMBIOS UUID.
    pub fn find(&self, mac: &MacAddr, uuid: Option<&str>) -> Option<&Machine> {
        self.by_mac.get(mac).or_else(|| {
            uuid.and_then(|u| self.by_uuid.get(u))
                .and_then(|m| self.by_mac.get(m))
        })
    }

    /// Every machine, by MAC.
    pub fn iter(&self) -> impl Iterator<Item = &Machine> {
        self.by_mac.values()
    }

    /// The machine named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Machine> {
        self.by_mac.values().find(|m| m.name == name)
    }

    /// The machine with this MAC.
    pub fn get(&self, mac: &MacAddr) -> Option<&Machine> {
        self.by_mac.get(mac)
    }

    /// Whether `ip` is some machine's fixed address (a pool never hands
    /// one out).
    pub fn is_fixed(&self, ip: Ipv4Addr) -> bool {
        self.fixed.contains(&ip)
    }

    /// How many machines are known.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// Whether no machine is known.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// The Machine files of a directory: `*.yaml` and `*.yml`, in name order.
pub fn machine_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every Machine file of `dir`: the valid machines, and an error for
/// each file refused (the others are still served).
pub fn load_dir(
    dir: &Path,
    subnet: Option<&Subnet>,
) -> std::io::Result<(Registry, Vec<MachineError>)> {
    let mut machines = Vec::new();
    let mut errors = Vec::new();
    for file in machine_files(dir)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse_machine(&file, &text, subnet) {
                Ok(m) => machines.push(m),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(MachineError {
                file: file.clone(),
                field: "(file)".into(),
                reason: format!("cannot read: {e}"),
            }),
        }
    }
    let (reg, dup_errors) = Registry::build(machines);
    errors.extend(dup_errors);
    Ok((reg, errors))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "\
apiVersion: kprov.dev/v1alpha1
kind: Machine
metadata:
  name: node1
spec:
  macAddress: 52:54:00:12:34:56
  ipAddress: 10.77.0.20
  hostname: node1
  role: worker
  boot:
    kernel: vmlinuz
    initrd: initrd.img
    cmdline: console=ttyS0
  userData: |
    #cloud-config
    hostname: node1
";

    fn subnet() -> Subnet {
        "10.77.0.0/24".parse().unwrap()
    }

    #[test]
    fn mac_addresses_parse_in_both_spellings_and_bad_ones_are_refused() {
        let ok = [
            ("52:54:00:12:34:56", [0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            ("52-54-00-AB-cd-EF", [0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
        ];
        for (text, bytes) in ok {
            assert_eq!(text.parse::<MacAddr>().unwrap().0, bytes, "{text}");
        }
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "525400123456",
            "+1:54:00:12:34:56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let mac: MacAddr = "52:54:00:AB:CD:EF".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(mac.dashed(), "52-54-00-ab-cd-ef");
    }

    #[test]
    fn a_good_machine_parses() {
        let m = parse_machine(Path::new("m/node1.yaml"), GOOD, Some(&subnet())).unwrap();
        assert_eq!(m.name, "node1");
        assert_eq!(m.ip, Some(Ipv4Addr::new(10, 77, 0, 20)));
        assert_eq!(m.hostname.as_deref(), Some("node1"));
        assert_eq!(m.profile.role.as_deref(), Some("worker"));
        assert!(m
            .profile
            .user_data
            .as_deref()
            .unwrap()
            .starts_with("#cloud-config\n"));
        match &m.profile.boot {
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                assert_eq!(kernel.as_str(), "vmlinuz");
                assert_eq!(initrd.as_ref().unwrap().as_str(), "initrd.img");
                assert_eq!(cmdline, "console=ttyS0");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_machines_are_refused_naming_file_field_and_reason() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("52:54:00:12:34:56", "52:54:00:12:34:zz", "spec.macAddress", "m/x.yaml: spec.macAddress: invalid MAC address \"52:54:00:12:34:zz\": expected six hex byte pairs separated by ':' or '-', e.g. 52:54:00:12:34:56"),
            ("52:54:00:12:34:56", "01:00:5e:00:00:01", "spec.macAddress", "m/x.yaml: spec.macAddress: 01:00:5e:00:00:01 is a multicast address: expected a unicast NIC address"),
            ("10.77.0.20", "10.78.0.20", "spec.ipAddress", "m/x.yaml: spec.ipAddress: 10.78.0.20 is not a host address of the configured subnet 10.77.0.0/24"),
            ("10.77.0.20", "10.77.0.255", "spec.ipAddress", "m/x.yaml: spec.ipAddress: 10.77.0.255 is not a host address of the configured subnet 10.77.0.0/24"),
            ("10.77.0.20", "10.77.0.300", "spec.ipAddress", "m/x.yaml: spec.ipAddress: invalid IPv4 address \"10.77.0.300\""),
            ("kernel: vmlinuz", "kernel: ../vmlinuz", "spec.boot.kernel", "m/x.yaml: spec.boot.kernel: \"../vmlinuz\": expected a relative path without '..' components"),
            ("kernel: vmlinuz", "kernel: /boot/vmlinuz", "spec.boot.kernel", "m/x.yaml: spec.boot.kernel: \"/boot/vmlinuz\": expected a relative path without '..' components"),
            ("kind: Machine", "kind: Node", "kind", "m/x.yaml: kind: \"Node\": expected \"Machine\""),
            ("hostname: node1", "hostname: no_de", "spec.hostname", "m/x.yaml: spec.hostname: invalid host name \"no_de\": label \"no_de\" has '_': only a-z, 0-9 and '-' are allowed; expected a DNS-1123 subdomain: at most 253 characters of lower-case letters, digits, '-' and '.', each label starting and ending with a letter or digit"),
            ("  hostname: node1", "  hostname: Node1", "spec.hostname", "m/x.yaml: spec.hostname: invalid host name \"Node1\": label \"Node1\" has 'N': only a-z, 0-9 and '-' are allowed; expected a DNS-1123 subdomain: at most 253 characters of lower-case letters, digits, '-' and '.', each label starting and ending with a letter or digit"),
            ("  name: node1\n", "  name: Node1\n", "metadata.name", "m/x.yaml: metadata.name: invalid name \"Node1\": label \"Node1\" has 'N': only a-z, 0-9 and '-' are allowed; expected a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"),
            ("  name: node1\n", "  name: node.1\n", "metadata.name", "m/x.yaml: metadata.name: invalid name \"node.1\": it has a '.': a label has none; expected a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"),
            ("cmdline: console=ttyS0", "cmdline: x=${net0/mac}", "spec.boot.cmdline", "m/x.yaml: spec.boot.cmdline: must be one line without iPXE settings (${...})"),
            ("initrd: initrd.img", "image: disk.img", "spec.boot", "m/x.yaml: spec.boot: give either kernel (+initrd, cmdline) or image, not both"),
        ];
        for (from, to, field, text) in cases {
            let doc = GOOD.replace(from, to);
            let err = parse_machine(Path::new("m/x.yaml"), &doc, Some(&subnet())).unwrap_err();
            assert_eq!(err.field, *field, "{to}");
            assert_eq!(err.to_string(), *text);
        }
        let err = parse_machine(
            Path::new("m/x.yaml"),
            &GOOD.replace("role:", "rolle:"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.field, "(document)");
        assert!(
            err.reason.contains("unknown field `rolle`"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn duplicates_are_refused_for_the_later_file_and_lookup_falls_back_to_uuid() {
        let a = parse_machine(
            Path::new("a.yaml"),
            &GOOD.replace(
                "  hostname: node1\n",
                "  uuid: 8C0D3E2A-0000-4000-8000-000000000001\n",
            ),
            None,
        )
        .unwrap();
        let b = parse_machine(
            Path::new("b.yaml"),
            &GOOD.replace("node1", "node2").replace("34:56", "34:57"),
            None,
        )
        .unwrap();
        let c = parse_machine(
            Path::new("c.yaml"),
            &GOOD
                .replace("node1", "node3")
                .replace("10.77.0.20", "10.77.0.21"),
            None,
        )
        .unwrap();
        let (reg, errors) = Registry::build(vec![a, b, c]);
        assert_eq!(reg.len(), 1);
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            [
                "b.yaml: spec.ipAddress: 10.77.0.20 is already used by a.yaml",
                "c.yaml: spec.macAddress: 52:54:00:12:34:56 is already used by a.yaml",
            ]
        );
        let other: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        assert!(reg.find(&other, None).is_none());
        assert_eq!(
            reg.find(&other, Some("8c0d3e2a-0000-4000-8000-000000000001"))
                .unwrap()
                .name,
            "node1"
        );
    }

    #[test]
    fn a_directory_loads_good_files_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node1.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "apiVersion: [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (reg, errors) = load_dir(dir.path(), Some(&subnet())).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("broken.yaml"));
    }
}
