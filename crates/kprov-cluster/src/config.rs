//! What a cluster is, as the user gives it: one clap + serde struct,
//! [`ClusterConfig`], for `kprov cluster`'s flags and its `--config` YAML
//! file (the same names, the long flags without `--`), checked into a
//! [`ClusterSpec`] before any machine is touched.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::name::{ClusterName, MachineName, Role};
use crate::network::ClusterNetwork;
use crate::target::qemu::Accel;

/// Default of `--network`: the cluster bridge's address and prefix.
pub const DEFAULT_NETWORK: &str = "10.84.0.1/24";
/// Default of `--machines-dir`.
pub const DEFAULT_MACHINES_DIR: &str = "/var/lib/kprov/machines";
/// Default of `--kubernetes-version`.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.20.2";
/// Default of `--check-image`.
pub const DEFAULT_CHECK_IMAGE: &str = "docker.io/library/busybox:1.35.0";
/// Default of `--timeout`, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 600;

/// Where machines run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// systemd-nspawn containers on this host.
    #[default]
    Nspawn,
    /// qemu VMs on this host (TCG unless --qemu-accel kvm).
    Qemu,
    /// Existing hosts over ssh (`--ssh-host`), with the base phase done.
    Ssh,
}

/// A cluster's flags and config-file keys.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (a DNS label): its machines are NAME-master-N
    /// and NAME-worker-N, found on the target by that name and labels.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How many masters (stacked etcd: an odd number keeps quorum best).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub masters: u16,
    /// How many workers.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub workers: u16,
    /// Where the machines run.
    #[arg(long, value_enum, default_value_t = TargetKind::Nspawn)]
    pub target: TargetKind,
    /// The Kubernetes version of the control plane and kubelets; the node
    /// image must hold its kubelet.
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_KUBERNETES_VERSION)]
    pub kubernetes_version: String,
    /// The cluster's network: the bridge's address and prefix length.
    /// Masters get host number 10+N, workers 100+N, unless --address says
    /// otherwise.
    #[arg(long, value_name = "GATEWAY/LEN", default_value = DEFAULT_NETWORK)]
    pub network: String,
    /// A machine's address instead of the default one, as
    /// MACHINE=ADDRESS (repeatable).
    #[arg(long = "address", value_name = "MACHINE=ADDRESS")]
    #[serde(rename = "address")]
    pub addresses: Vec<String>,
    /// The node image: a root directory made by `kprov provision --phase
    /// base --root DIR` from a bundle with the control plane's images;
    /// for nspawn with --node-in-container, for qemu from a Debian root
    /// with a kernel, cloud-init and openssh-server. Needed to create
    /// machines.
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// Where the nspawn and qemu targets keep their machines.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MACHINES_DIR)]
    pub machines_dir: PathBuf,
    /// Put the cluster's bridge in this network namespace
    /// (/run/netns/NAME) instead of the host's.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Where `up` writes the cluster's admin kubeconfig (0600) and `down`
    /// removes it; default: /root/.kube/kprov-NAME.conf.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The image of the network and Service checks' pods (busybox: sh,
    /// httpd, nc); it must be on the nodes already (in the bundle the
    /// node image was made from). Without it those checks are skipped.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_CHECK_IMAGE)]
    pub check_image: String,
    /// Seconds each long step (a boot, kprov init, a join, nodes becoming
    /// Ready) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT)]
    pub timeout: u64,
    /// With --target ssh: the host a machine is, as
    /// MACHINE=DESTINATION (`[user@]host` or a Host of the ssh config; the
    /// user must be root), one per machine. Its address is DESTINATION's
    /// when that is an IPv4 address, else give --address.
    #[arg(long = "ssh-host", value_name = "MACHINE=DESTINATION")]
    #[serde(rename = "ssh-host")]
    pub ssh_hosts: Vec<String>,
    /// With --target ssh: an ssh config file to use instead of the user's
    /// (ssh -F).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// With --target qemu: how guest code runs (KVM is opt-in: nested KVM
    /// crashes guests on some hosts).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub qemu_accel: Accel,
    /// With --target qemu: virtual CPUs per VM; default 2 for masters
    /// (under TCG one cannot keep an API server answering), 1 for workers.
    #[arg(long, value_name = "N")]
    pub qemu_cpus: Option<u16>,
    /// With --target qemu: MiB of memory per VM; default 2048 for
    /// masters, 1536 for workers.
    #[arg(long, value_name = "MIB")]
    pub qemu_memory: Option<u32>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: None,
            masters: 1,
            workers: 1,
            target: TargetKind::Nspawn,
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.into(),
            network: DEFAULT_NETWORK.into(),
            addresses: Vec::new(),
            image: None,
            machines_dir: DEFAULT_MACHINES_DIR.into(),
            netns: None,
            kubeconfig: None,
            check_image: DEFAULT_CHECK_IMAGE.into(),
            timeout: DEFAULT_TIMEOUT,
            ssh_hosts: Vec::new(),
            ssh_config: None,
            qemu_accel: Accel::Tcg,
            qemu_cpus: None,
            qemu_memory: None,
        }
    }
}

/// Why a cluster config was refused; each names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value that is not valid.
    #[error("--{key}: {reason}")]
    Invalid {
        /// The flag or key.
        key: &'static str,
        /// What is wrong and what was expected.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// One machine a cluster should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedMachine {
    /// Its name.
    pub name: MachineName,
    /// Its address.
    pub address: Ipv4Addr,
}

/// A checked cluster config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The name.
    pub name: ClusterName,
    /// The network.
    pub network: ClusterNetwork,
    /// Masters first, then workers, each by index.
    pub machines: Vec<WantedMachine>,
    /// The Kubernetes version.
    pub kubernetes_version: kprov_core::KubernetesVersion,
    /// Where the kubeconfig goes.
    pub kubeconfig: PathBuf,
    /// The image of the checks' pods.
    pub check_image: kprov_core::ImageRef,
    /// With the ssh target: each machine's ssh destination.
    pub ssh_hosts: BTreeMap<MachineName, String>,
}

impl ClusterSpec {
    /// The first master: where `kprov init` runs.
    pub fn first_master(&self) -> &WantedMachine {
        // check() refuses a cluster without a master.
        &self.machines[0]
    }
}

/// The virtual range of the cluster (`kprov init`'s defaults) that holds
/// `address`, named, if any.
fn cluster_range_holding(address: Ipv4Addr) -> Option<String> {
    use kprov_controlplane::spec::{Cidr, DEFAULT_POD_CIDR};
    [
        ("pod range", DEFAULT_POD_CIDR),
        (
            "service range",
            kprov_controlplane::spec::DEFAULT_SERVICE_CIDR,
        ),
    ]
    .into_iter()
    .find_map(|(what, cidr)| {
        let range: Cidr = cidr.parse().ok()?;
        range
            .overlaps(address.into(), 32)
            .then(|| format!("{what} {cidr}"))
    })
}

impl ClusterConfig {
    /// The cluster's name, checked.
    pub fn cluster_name(&self) -> Result<ClusterName, ConfigError> {
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| invalid("name", "required: the cluster's name, e.g. --name demo"))?;
        name.parse()
            .map_err(|e: crate::name::NameError| invalid("name", e.to_string()))
    }

    /// Where the admin kubeconfig of `cluster` goes.
    pub fn kubeconfig_path(&self, cluster: &ClusterName) -> PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/root/.kube/kprov-{cluster}.conf")))
    }

    /// Checks everything `up` needs, before any machine exists: a name, at
    /// least one master, a network, and an
    /// address in it for every machine, no two alike.
    pub fn check(&self) -> Result<ClusterSpec, ConfigError> {
        let name = self.cluster_name()?;
        if self.masters == 0 {
            return Err(invalid("masters", "0: a cluster needs at least one master"));
        }
        if let Some(cpus) = self.qemu_cpus {
            if !(1..=64).contains(&cpus) {
                return Err(invalid("qemu-cpus", format!("{cpus}: expected 1 to 64")));
            }
        }
        if let Some(mib) = self.qemu_memory {
            if !(512..=1 << 20).contains(&mib) {
                return Err(invalid(
                    "qemu-memory",
                    format!("{mib}: expected 512 to 1048576 (MiB)"),
                ));
            }
        }
        let kubernetes_version: kprov_core::KubernetesVersion = self
            .kubernetes_version
            .parse()
            .map_err(|e: kprov_core::version::VersionError| {
                invalid("kubernetes-version", e.to_string())
            })?;
        let network: ClusterNetwork = self
            .network
            .parse()
            .map_err(|e: crate::network::NetworkError| invalid("network", e.to_string()))?;
        let mut wanted = Vec::new();
        for (role, count) in [(Role::Master, self.masters), (Role::Worker, self.workers)] {
            for index in 1..=count {
                let machine = MachineName::new(&name, role, index).ok_or_else(|| {
                    invalid(
                        if role == Role::Master {
                            "masters"
                        } else {
                            "workers"
                        },
                        format!("{count}: at most {}", crate::name::MAX_INDEX),
                    )
                })?;
                wanted.push(machine);
            }
        }
        let mut given: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for entry in &self.addresses {
            let (machine, address) = entry.split_once('=').ok_or_else(|| {
                invalid("address", format!("{entry:?}: expected MACHINE=ADDRESS"))
            })?;
            if !wanted.iter().any(|w| w.to_string() == machine) {
                return Err(invalid(
                    "address",
                    format!("{entry:?}: {machine} is not a machine of cluster {name}"),
                ));
            }
            let address: Ipv4Addr = address.parse().map_err(|_| {
                invalid(
                    "address",
                    format!("{entry:?}: {address:?} is not an IPv4 address"),
                )
            })?;
            if self.target != TargetKind::Ssh {
                network
                    .check_host(address)
                    .map_err(|e| invalid("address", e.to_string()))?;
            }
            if given.insert(machine.to_string(), address).is_some() {
                return Err(invalid(
                    "address",
                    format!("{machine} is given an address twice"),
                ));
            }
        }
        let ssh_hosts = self.ssh_hosts(&name, &wanted)?;
        let mut machines: Vec<WantedMachine> = Vec::new();
        for machine in wanted {
            let from_destination = || ssh_hosts.get(&machine).and_then(|d| destination_address(d));
            let address = match given.get(&machine.to_string()) {
                Some(a) => *a,
                None if self.target == TargetKind::Ssh => from_destination().ok_or_else(|| {
                    invalid(
                        "address",
                        format!(
                            "{machine}: its --ssh-host destination has no IPv4 address: give --address {machine}=ADDRESS"
                        ),
                    )
                })?,
                None => network.default_address(&machine).ok_or_else(|| {
                    invalid(
                        "network",
                        format!("{network} has no default address for {machine}: use a larger network or --address"),
                    )
                })?,
            };
            if let Some(range) = cluster_range_holding(address) {
                return Err(invalid(
                    if given.contains_key(&machine.to_string()) {
                        "address"
                    } else {
                        "network"
                    },
                    format!(
                        "{machine}'s address {address} lies in the cluster's {range}: machines need addresses outside the ranges pods and Services use"
                    ),
                ));
            }
            if let Some(other) = machines.iter().find(|m| m.address == address) {
                return Err(invalid(
                    "address",
                    format!(
                        "{machine} and {} would both have address {address}",
                        other.name
                    ),
                ));
            }
            machines.push(WantedMachine {
                name: machine,
                address,
            });
        }
        let check_image = self
            .check_image
            .parse()
            .map_err(|e: kprov_core::image::ImageRefError| invalid("check-image", e.to_string()))?;
        Ok(ClusterSpec {
            ssh_hosts,
            check_image,
            kubeconfig: self.kubeconfig_path(&name),
            name,
            network,
            machines,
            kubernetes_version,
        })
    }
}

impl ClusterConfig {
    /// `--ssh-host`, checked: with the ssh target, one destination for
    /// each machine of `wanted`; with another target, none.
    fn ssh_hosts(
        &self,
        name: &ClusterName,
        wanted: &[MachineName],
    ) -> Result<BTreeMap<MachineName, String>, ConfigError> {
        let mut hosts = BTreeMap::new();
        for entry in &self.ssh_hosts {
            let (machine, destination) = entry.split_once('=').ok_or_else(|| {
                invalid(
                    "ssh-host",
                    format!("{entry:?}: expected MACHINE=DESTINATION"),
                )
            })?;
            let Some(machine) = wanted.iter().find(|w| w.to_string() == machine) else {
                return Err(invalid(
                    "ssh-host",
                    format!("{entry:?}: {machine} is not a machine of cluster {name}"),
                ));
            };
            if destination.is_empty()
                || destination.starts_with('-')
                || destination.contains(char::is_whitespace)
            {
                return Err(invalid(
                    "ssh-host",
                    format!("{entry:?}: expected a destination such as root@10.0.0.5"),
                ));
            }
            if let Some(other) = hosts
                .iter()
                .find(|(_, d)| *d == destination)
                .map(|(m, _)| m)
            {
                return Err(invalid(
                    "ssh-host",
                    format!("{machine} and {other} would both be {destination}"),
                ));
            }
            if hosts
                .insert(machine.clone(), destination.to_string())
                .is_some()
            {
                return Err(invalid("ssh-host", format!("{machine} is given twice")));
            }
        }
        match self.target {
            TargetKind::Ssh => {
                if let Some(missing) = wanted.iter().find(|w| !hosts.contains_key(*w)) {
                    return Err(invalid(
                        "ssh-host",
                        format!("{missing} has none: the ssh target needs a host for every machine (MACHINE=DESTINATION)"),
                    ));
                }
            }
            _ if !hosts.is_empty() => {
                return Err(invalid("ssh-host", "only for --target ssh"));
            }
            _ => {}
        }
        Ok(hosts)
    }
}

/// The IPv4 address in an ssh destination (`user@10.0.0.5`), if it is one.
pub fn destination_address(destination: &str) -> Option<Ipv4Addr> {
    let host = destination.rsplit_once('@').map_or(destination, |(_, h)| h);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> ClusterConfig {
        ClusterConfig {
            name: Some(name.into()),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn the_default_is_one_master_and_one_worker_at_fixed_addresses() {
        let spec = config("demo").check().unwrap();
        let got: Vec<String> = spec
            .machines
            .iter()
            .map(|m| format!("{} {}", m.name, m.address))
            .collect();
        assert_eq!(
            got,
            ["demo-master-1 10.84.0.11", "demo-worker-1 10.84.0.101"]
        );
        assert_eq!(
            spec.kubeconfig,
            PathBuf::from("/root/.kube/kprov-demo.conf")
        );
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        let cases: Vec<(ClusterConfig, &str)> = vec![
            (ClusterConfig::default(), "--name: required"),
            (config("Bad_Name"), "--name: "),
            (
                ClusterConfig {
                    masters: 0,
                    ..config("a")
                },
                "--masters: 0: a cluster needs at least one master",
            ),
            (
                ClusterConfig {
                    network: "10.96.0.1/24".into(),
                    ..config("a")
                },
                "--network: a-master-1's address 10.96.0.11 lies in the cluster's service range 10.96.0.0/12",
            ),
            (
                ClusterConfig {
                    network: "10.0.0.1/8".into(),
                    addresses: vec!["a-worker-1=10.244.3.3".into()],
                    ..config("a")
                },
                "--address: a-worker-1's address 10.244.3.3 lies in the cluster's pod range 10.244.0.0/16",
            ),
            (
                ClusterConfig {
                    addresses: vec!["a-worker-1=10.9.0.5".into()],
                    ..config("a")
                },
                "--address: machine address 10.9.0.5 is not usable in 10.84.0.1/24",
            ),
            (
                ClusterConfig {
                    addresses: vec!["a-worker-1=10.84.0.11".into()],
                    ..config("a")
                },
                "--address: a-worker-1 and a-master-1 would both have address 10.84.0.11",
            ),
            (
                ClusterConfig {
                    addresses: vec![
                        "a-worker-1=10.84.0.50".into(),
                        "a-worker-1=10.84.0.51".into(),
                    ],
                    ..config("a")
                },
                "--address: a-worker-1 is given an address twice",
            ),
            (
                ClusterConfig {
                    addresses: vec!["b-worker-1=10.84.0.50".into()],
                    ..config("a")
                },
                "is not a machine of cluster a",
            ),
            (
                ClusterConfig {
                    network: "10.84.0.1/30".into(),
                    ..config("a")
                },
                "--network: 10.84.0.1/30 has no default address for a-master-1",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Qemu,
                    qemu_cpus: Some(0),
                    ..config("a")
                },
                "--qemu-cpus: 0: expected 1 to 64",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Qemu,
                    qemu_memory: Some(100),
                    ..config("a")
                },
                "--qemu-memory: 100: expected 512",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Ssh,
                    ssh_hosts: vec!["a-master-1=root@10.0.0.5".into()],
                    ..config("a")
                },
                "--ssh-host: a-worker-1 has none",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Ssh,
                    ssh_hosts: vec![
                        "a-master-1=root@10.0.0.5".into(),
                        "a-worker-1=root@10.0.0.5".into(),
                    ],
                    ..config("a")
                },
                "--ssh-host: a-worker-1 and a-master-1 would both be root@10.0.0.5",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Ssh,
                    ssh_hosts: vec![
                        "a-master-1=root@10.0.0.5".into(),
                        "a-worker-1=root@node2".into(),
                    ],
                    ..config("a")
                },
                "--address: a-worker-1: its --ssh-host destination has no IPv4 address",
            ),
            (
                ClusterConfig {
                    ssh_hosts: vec!["a-master-1=root@10.0.0.5".into()],
                    ..config("a")
                },
                "--ssh-host: only for --target ssh",
            ),
            (
                ClusterConfig {
                    target: TargetKind::Ssh,
                    ssh_hosts: vec!["a-master-1=-oProxyCommand=x".into()],
                    ..config("a")
                },
                "--ssh-host: \"a-master-1=-oProxyCommand=x\": expected a destination",
            ),
            (
                ClusterConfig {
                    kubernetes_version: "1.2".into(),
                    ..config("a")
                },
                "--kubernetes-version: ",
            ),
        ];
        for (config, want) in cases {
            let err = config.check().unwrap_err().to_string();
            assert!(err.contains(want), "{config:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn ssh_hosts_give_their_addresses_unless_told_otherwise() {
        let spec = ClusterConfig {
            target: TargetKind::Ssh,
            ssh_hosts: vec![
                "a-master-1=root@192.168.7.5".into(),
                "a-worker-1=node2".into(),
            ],
            addresses: vec!["a-worker-1=192.168.7.6".into()],
            ..config("a")
        }
        .check()
        .unwrap();
        let got: Vec<String> = spec
            .machines
            .iter()
            .map(|m| format!("{} {} {}", m.name, m.address, spec.ssh_hosts[&m.name]))
            .collect();
        assert_eq!(
            got,
            [
                "a-master-1 192.168.7.5 root@192.168.7.5",
                "a-worker-1 192.168.7.6 node2"
            ]
        );
    }

    #[test]
    fn the_yaml_keys_are_the_flag_names() {
        let config: ClusterConfig = serde_yaml::from_str(
            "name: lab\nmasters: 1\nworkers: 3\nnetwork: 10.90.0.1/24\naddress: [lab-worker-3=10.90.0.33]\nkubernetes-version: v1.20.2\n",
        )
        .unwrap();
        let spec = config.check().unwrap();
        assert_eq!(spec.machines.len(), 4);
        assert_eq!(spec.machines[3].address, Ipv4Addr::new(10, 90, 0, 33));
        let err = serde_yaml::from_str::<ClusterConfig>("name: lab\nworker: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `worker`"), "{err}");
    }
}
