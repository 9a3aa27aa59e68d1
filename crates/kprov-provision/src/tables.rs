//! Declarative tables: what each OS family needs, and where things go.
//!
//! Adding a distro or a package means editing a row here; the planner only
//! reads these tables.

use kprov_core::{ContainerRuntime, KubernetesVersion, ProxyMode};

use crate::os::{Distro, OsFacts, OsFamily};

/// Where a family keeps kprov-installed files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Binaries kprov installs (kubelet, kubectl, kprov, and on Flatcar the
    /// runtime): /usr/local/bin, or /opt/bin where /usr is read-only.
    pub bin_dir: &'static str,
    /// Unit files kprov writes.
    pub unit_dir: &'static str,
    /// CNI plugin binaries.
    pub cni_bin_dir: &'static str,
    /// CNI network configs.
    pub cni_conf_dir: &'static str,
}

/// The layout of `family`.
pub fn layout(family: OsFamily) -> Layout {
    Layout {
        bin_dir: match family {
            OsFamily::Flatcar => "/opt/bin",
            OsFamily::Apt | OsFamily::Yum | OsFamily::Dnf => "/usr/local/bin",
        },
        unit_dir: "/etc/systemd/system",
        cni_bin_dir: "/opt/cni/bin",
        cni_conf_dir: "/etc/cni/net.d",
    }
}

pub use kprov_plan::UNIT_SEARCH_PATH;

/// Packages kubelet and kube-proxy need on every node of a family, with
/// what each is for.
pub fn base_packages(os: &OsFacts) -> Vec<&'static str> {
    match os.family {
        // conntrack: kube-proxy flushes conntrack entries; socat: port-forward;
        // ebtables/ethtool/iptables/ipset/ipvsadm: networking; kmod/procps:
        // modprobe and sysctl; curl/ca-certificates: health and downloads.
        OsFamily::Apt => vec![
            "ca-certificates",
            "conntrack",
            "curl",
            "ebtables",
            "ethtool",
            "ipset",
            "iptables",
            "ipvsadm",
            "kmod",
            "procps",
            "socat",
        ],
        OsFamily::Yum => vec![
            "ca-certificates",
            "conntrack-tools",
            "curl",
            "ebtables",
            "ethtool",
            "ipset",
            "iptables",
            "ipvsadm",
            "kmod",
            "procps-ng",
            "socat",
        ],
        OsFamily::Dnf => {
            let mut p = vec![
                "ca-certificates",
                "conntrack-tools",
                "curl",
                "ethtool",
                "ipset",
                "ipvsadm",
                "kmod",
                "procps-ng",
                "socat",
            ];
            // EL9 ships only the nftables flavour of iptables (ebtables included).
            if os.major >= 9 {
                p.push("iptables-nft");
            } else {
                p.extend(["ebtables", "iptables"]);
            }
            p.sort_unstable();
            p
        }
        OsFamily::Flatcar => Vec::new(),
    }
}

/// Packages of the container runtime, when the distro provides it.
pub fn runtime_packages(os: &OsFacts, runtime: ContainerRuntime) -> Vec<&'static str> {
    match (os.family, runtime) {
        (OsFamily::Apt, ContainerRuntime::Containerd) => vec!["containerd"],
        (OsFamily::Apt, ContainerRuntime::Docker) => vec!["docker.io"],
        // RHEL-family distros do not ship containerd; Docker's repository does.
        (OsFamily::Yum | OsFamily::Dnf, ContainerRuntime::Containerd) => vec!["containerd.io"],
        (OsFamily::Yum | OsFamily::Dnf, ContainerRuntime::Docker) => {
            vec!["docker-ce", "containerd.io"]
        }
        (OsFamily::Flatcar, _) => Vec::new(),
    }
}

/// The yum/dnf repository that provides `containerd.io` and `docker-ce`.
pub fn docker_repo(os: &OsFacts) -> Option<(&'static str, String)> {
    if !matches!(os.family, OsFamily::Yum | OsFamily::Dnf) {
        return None;
    }
    let flavour = if os.distro == Distro::Rhel {
        "rhel"
    } else {
        "centos"
    };
    Some((
        "/etc/yum.repos.d/docker-ce.repo",
        format!(
            "# Written by kprov: Docker's repository, for containerd.io.\n\
             [docker-ce-stable]\n\
             name=Docker CE Stable - $basearch\n\
             baseurl=https://download.docker.com/linux/{flavour}/$releasever/$basearch/stable\n\
             enabled=1\n\
             gpgcheck=1\n\
             gpgkey=https://download.docker.com/linux/{flavour}/gpg\n"
        ),
    ))
}

/// A kernel parameter kprov sets, and why.
pub struct Sysctl {
    /// The key, e.g. `net.ipv4.ip_forward`.
    pub key: &'static str,
    /// The value.
    pub value: &'static str,
    /// Why it is set.
    pub why: &'static str,
}

/// Kernel parameters for every node. The kernel.* and vm.* values are the
/// ones kubelet's `protectKernelDefaults` requires, so that it can run with
/// that option on.
pub const SYSCTLS: &[Sysctl] = &[
    Sysctl {
        key: "net.ipv4.ip_forward",
        value: "1",
        why: "route pod traffic",
    },
    Sysctl {
        key: "net.bridge.bridge-nf-call-iptables",
        value: "1",
        why: "bridged pod traffic passes iptables",
    },
    Sysctl {
        key: "net.bridge.bridge-nf-call-ip6tables",
        value: "1",
        why: "same for IPv6",
    },
    Sysctl {
        key: "fs.inotify.max_user_watches",
        value: "524288",
        why: "kubelet and pods watch many files",
    },
    Sysctl {
        key: "fs.inotify.max_user_instances",
        value: "8192",
        why: "one inotify instance per watcher",
    },
    Sysctl {
        key: "kernel.panic",
        value: "10",
        why: "protectKernelDefaults",
    },
    Sysctl {
        key: "kernel.panic_on_oops",
        value: "1",
        why: "protectKernelDefaults",
    },
    Sysctl {
        key: "vm.overcommit_memory",
        value: "1",
        why: "protectKernelDefaults",
    },
    Sysctl {
        key: "vm.panic_on_oom",
        value: "0",
        why: "protectKernelDefaults",
    },
    Sysctl {
        key: "kernel.keys.root_maxkeys",
        value: "1000000",
        why: "protectKernelDefaults",
    },
    Sysctl {
        key: "kernel.keys.root_maxbytes",
        value: "25000000",
        why: "protectKernelDefaults",
    },
];

/// The sysctl drop-in kprov owns.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-kprov-kubernetes.conf";

/// The modules-load drop-in kprov owns.
pub const MODULES_FILE: &str = "/etc/modules-load.d/kprov-kubernetes.conf";

/// Kernel modules to load at boot (and now, on a live host).
pub fn kernel_modules(proxy_mode: ProxyMode) -> Vec<&'static str> {
    // overlay: containerd's snapshotter; br_netfilter: the bridge-nf sysctls.
    let mut m = vec!["overlay", "br_netfilter"];
    if proxy_mode == ProxyMode::Ipvs {
        m.extend(["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"]);
    }
    m
}

/// The pause (sandbox) image kubeadm uses for `version`, from the artifact
/// catalog; releases newer than the catalog get its newest pause image.
pub fn pause_image(version: &KubernetesVersion) -> String {
    use kprov_artifacts::catalog;
    match catalog::pause_image(version, None) {
        Ok(image) => image.to_string(),
        Err(_) => {
            let newest = catalog::COMPANIONS[catalog::COMPANIONS.len() - 1];
            format!(
                "{}/pause:{}",
                catalog::default_registry(version),
                newest.pause
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_images_follow_kubeadm_defaults() {
        let v = |s: &str| s.parse::<KubernetesVersion>().unwrap();
        assert_eq!(pause_image(&v("v1.20.2")), "k8s.gcr.io/pause:3.2");
        assert_eq!(pause_image(&v("v1.25.0")), "registry.k8s.io/pause:3.8");
        assert_eq!(pause_image(&v("v1.37.0")), "registry.k8s.io/pause:3.10.1");
        assert_eq!(pause_image(&v("v1.40.0")), "registry.k8s.io/pause:3.10.1");
    }

    #[test]
    fn ipvs_mode_adds_the_ip_vs_modules() {
        assert_eq!(
            kernel_modules(ProxyMode::Iptables),
            ["overlay", "br_netfilter"]
        );
        assert!(kernel_modules(ProxyMode::Ipvs).contains(&"ip_vs_rr"));
    }
}
