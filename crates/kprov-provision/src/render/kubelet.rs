//! The kubelet's configuration (a typed `KubeletConfiguration`) and the
//! systemd drop-in that gives the base phase's kubelet unit its flags, for
//! a joining node and for a control-plane node alike.

use std::collections::BTreeMap;

use kprov_core::KubernetesVersion;
use serde::Serialize;

use crate::render::systemd::UnitFile;

/// Where the kubelet reads its configuration.
pub const CONFIG_PATH: &str = "/var/lib/kubelet/config.yaml";
/// The drop-in kprov writes for the kubelet unit.
pub const DROPIN_PATH: &str = "/etc/systemd/system/kubelet.service.d/10-kprov.conf";
/// The kubelet's credentials once it has them.
pub const KUBECONFIG_PATH: &str = "/etc/kubernetes/kubelet.conf";
/// The token kubeconfig the kubelet trades for its credentials.
pub const BOOTSTRAP_KUBECONFIG_PATH: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// Static pods (the control plane's).
pub const STATIC_POD_PATH: &str = "/etc/kubernetes/manifests";

/// What the kubelet's configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletParams {
    /// The kubelet's release (flags and fields differ by version).
    pub version: KubernetesVersion,
    /// The cluster CA on the node, which authenticates clients.
    pub client_ca_file: String,
    /// The cluster DNS Service's address.
    pub cluster_dns: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// containerd's (or cri-dockerd's) socket.
    pub runtime_endpoint: String,
    /// The node's address, when it must be pinned.
    pub node_ip: Option<String>,
    /// Labels the node registers with.
    pub node_labels: BTreeMap<String, String>,
    /// Taints the node registers with (`key=value:Effect`).
    pub register_with_taints: Vec<String>,
    /// An in-tree cloud provider, or `external`.
    pub cloud_provider: Option<String>,
    /// The cloud provider's config file on the node.
    pub cloud_config: Option<String>,
    /// Run static pods (control-plane nodes).
    pub static_pods: bool,
    /// The node's name when it is not the host name.
    pub hostname_override: Option<String>,
    /// The node is a container sharing its host's kernel, swap and disk
    /// (`--node-in-container`).
    pub in_container: bool,
}

/// The hard eviction thresholds of a node in a container: the kubelet's
/// default for memory, none for disk (the disk is the host's, shared
/// with everything else on it, as kind's nodes do). Setting any threshold
/// replaces all of the kubelet's defaults, so memory is repeated.
pub const IN_CONTAINER_EVICTION_HARD: [(&str, &str); 4] = [
    ("imagefs.available", "0%"),
    ("memory.available", "100Mi"),
    ("nodefs.available", "0%"),
    ("nodefs.inodesFree", "0%"),
];

/// Whether the kubelet of `version` still has `provider` in-tree. The
/// providers were removed one by one: OpenStack in v1.26, AWS in v1.27,
/// and from v1.29 the DisableCloudProviders gate is on by default, which
/// leaves only `external` (the code of the rest went in v1.31).
pub fn in_tree_cloud_provider(version: &KubernetesVersion, provider: &str) -> bool {
    let removed_in = match provider {
        "external" => return true,
        "openstack" => (1, 26),
        "aws" => (1, 27),
        _ => (1, 29),
    };
    !version.at_least(removed_in.0, removed_in.1)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: &'static str,
    kind: &'static str,
    authentication: Authentication,
    authorization: Authorization,
    cgroup_driver: &'static str,
    // The Go field is clusterDNS; "clusterDns" would be ignored silently.
    #[serde(rename = "clusterDNS")]
    cluster_dns: Vec<String>,
    cluster_domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_runtime_endpoint: Option<String>,
    fail_swap_on: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    eviction_hard: Option<BTreeMap<&'static str, &'static str>>,
    #[serde(
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    image_gc_high_threshold_percent: Option<u8>,
    node_status_update_frequency: &'static str,
    node_status_report_frequency: &'static str,
    protect_kernel_defaults: bool,
    rotate_certificates: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    static_pod_path: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authentication {
    anonymous: Enabled,
    webhook: WebhookAuthn,
    x509: X509,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAuthn {
    enabled: bool,
    #[serde(rename = "cacheTTL")]
    cache_ttl: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct X509 {
    #[serde(rename = "clientCAFile")]
    client_ca_file: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authorization {
    mode: &'static str,
    webhook: WebhookAuthz,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAuthz {
    #[serde(rename = "cacheAuthorizedTTL")]
    cache_authorized_ttl: &'static str,
    #[serde(rename = "cacheUnauthorizedTTL")]
    cache_unauthorized_ttl: &'static str,
}

/// The KubeletConfiguration YAML: systemd cgroups, webhook authentication
/// and authorization (no anonymous access), client certificate rotation,
/// and `protectKernelDefaults`, which the base phase's sysctls satisfy
/// (on a node in a container, the host's). A node in a container does not
/// fail on the host's swap, has no disk eviction thresholds and collects
/// no images for disk space: the disk is the host's, and how full it is
/// says nothing about the node (as kind's nodes are set up).
pub fn kubelet_config(p: &KubeletParams) -> String {
    let config = KubeletConfiguration {
        api_version: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        authentication: Authentication {
            anonymous: Enabled { enabled: false },
            webhook: WebhookAuthn {
                enabled: true,
                cache_ttl: "0s",
            },
            x509: X509 {
                client_ca_file: p.client_ca_file.clone(),
            },
        },
        authorization: Authorization {
            mode: "Webhook",
            webhook: WebhookAuthz {
                cache_authorized_ttl: "0s",
                cache_unauthorized_ttl: "0s",
            },
        },
        cgroup_driver: "systemd",
        cluster_dns: vec![p.cluster_dns.clone()],
        cluster_domain: p.cluster_domain.clone(),
        // A config field from v1.27; a flag before.
        container_runtime_endpoint: p
            .version
            .at_least(1, 27)
            .then(|| p.runtime_endpoint.clone()),
        fail_swap_on: !p.in_container,
        eviction_hard: p
            .in_container
            .then(|| IN_CONTAINER_EVICTION_HARD.into_iter().collect()),
        // Image garbage collection by the host's disk usage would delete
        // the images a node was given offline (a workload's busybox).
        image_gc_high_threshold_percent: p.in_container.then_some(100),
        // Before v1.26 (kubernetes#112618) a kubelet whose CNI config
        // comes after its pod range reports Ready only at a later status
        // update: every 10 s by default. Status is computed more often,
        // and still posted only on change or every 5 min (the node lease
        // is the heartbeat); set alone, the update frequency would become
        // the report frequency too.
        node_status_update_frequency: "2s",
        node_status_report_frequency: "5m",
        protect_kernel_defaults: true,
        rotate_certificates: true,
        static_pod_path: p.static_pods.then_some(STATIC_POD_PATH),
    };
    serde_yaml::to_string(&config).unwrap_or_else(|_| unreachable!("plain data serializes"))
}

/// The kubelet's command-line flags, by version.
pub fn kubelet_flags(p: &KubeletParams) -> Vec<String> {
    let mut flags = vec![
        format!("--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG_PATH}"),
        format!("--kubeconfig={KUBECONFIG_PATH}"),
        format!("--config={CONFIG_PATH}"),
    ];
    // dockershim's selector, removed with it in v1.24.
    if !p.version.at_least(1, 24) {
        flags.push("--container-runtime=remote".into());
    }
    if !p.version.at_least(1, 27) {
        flags.push(format!(
            "--container-runtime-endpoint={}",
            p.runtime_endpoint
        ));
    }
    if let Some(ip) = &p.node_ip {
        flags.push(format!("--node-ip={ip}"));
    }
    if !p.node_labels.is_empty() {
        let labels: Vec<String> = p
            .node_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        flags.push(format!("--node-labels={}", labels.join(",")));
    }
    if !p.register_with_taints.is_empty() {
        flags.push(format!(
            "--register-with-taints={}",
            p.register_with_taints.join(",")
        ));
    }
    if let Some(name) = &p.hostname_override {
        flags.push(format!("--hostname-override={name}"));
    }
    if let Some(provider) = &p.cloud_provider {
        let provider = if in_tree_cloud_provider(&p.version, provider) {
            provider.as_str()
        } else {
            "external"
        };
        flags.push(format!("--cloud-provider={provider}"));
        if provider != "external" {
            if let Some(config) = &p.cloud_config {
                flags.push(format!("--cloud-config={config}"));
            }
        }
    }
    flags
}

/// The drop-in that replaces the base unit's bare ExecStart with the
/// flags.
pub fn kubelet_dropin(bin_dir: &str, p: &KubeletParams) -> UnitFile {
    let exec = format!("{bin_dir}/kubelet {}", kubelet_flags(p).join(" "));
    UnitFile::new().section("Service", &[("ExecStart", ""), ("ExecStart", &exec)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(version: &str) -> KubeletParams {
        KubeletParams {
            version: version.parse().unwrap(),
            client_ca_file: "/etc/kubernetes/pki/ca.crt".into(),
            cluster_dns: "10.96.0.10".into(),
            cluster_domain: "cluster.local".into(),
            runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            node_ip: Some("10.0.0.5".into()),
            node_labels: BTreeMap::from([("role".into(), "worker".into())]),
            register_with_taints: vec![],
            cloud_provider: Some("aws".into()),
            cloud_config: Some("/etc/kubernetes/cloud.conf".into()),
            static_pods: false,
            hostname_override: Some("worker-1".into()),
            in_container: false,
        }
    }

    #[test]
    fn v1_20_uses_flags_for_the_runtime_and_keeps_in_tree_clouds() {
        let f = kubelet_flags(&params("v1.20.2"));
        assert!(f.contains(&"--container-runtime=remote".to_string()));
        assert!(f.contains(
            &"--container-runtime-endpoint=unix:///run/containerd/containerd.sock".to_string()
        ));
        assert!(f.contains(&"--cloud-provider=aws".to_string()));
        assert!(f.contains(&"--cloud-config=/etc/kubernetes/cloud.conf".to_string()));
        assert!(f.contains(&"--node-labels=role=worker".to_string()));
        assert!(f.contains(&"--hostname-override=worker-1".to_string()));
        let c = kubelet_config(&params("v1.20.2"));
        assert!(c.contains("cgroupDriver: systemd"), "{c}");
        assert!(c.contains("clusterDNS:\n- 10.96.0.10\n"), "{c}");
        assert!(c.contains("protectKernelDefaults: true"));
        assert!(c.contains("clientCAFile: /etc/kubernetes/pki/ca.crt"));
        assert!(!c.contains("containerRuntimeEndpoint"));
        assert!(!c.contains("staticPodPath"));
    }

    #[test]
    fn a_node_in_a_container_tolerates_swap_and_neither_evicts_nor_collects_images_for_the_hosts_disk(
    ) {
        let host: serde_yaml::Value =
            serde_yaml::from_str(&kubelet_config(&params("v1.20.2"))).unwrap();
        assert_eq!(host["failSwapOn"], serde_yaml::Value::Bool(true));
        assert!(host.get("evictionHard").is_none());
        assert!(host.get("imageGCHighThresholdPercent").is_none());
        let p = KubeletParams {
            in_container: true,
            ..params("v1.20.2")
        };
        let text = kubelet_config(&p);
        let c: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(c["failSwapOn"], serde_yaml::Value::Bool(false), "{text}");
        let eviction = &c["evictionHard"];
        for (signal, value) in [
            ("nodefs.available", "0%"),
            ("nodefs.inodesFree", "0%"),
            ("imagefs.available", "0%"),
            ("memory.available", "100Mi"),
        ] {
            assert_eq!(eviction[signal].as_str(), Some(value), "{signal}: {text}");
        }
        assert_eq!(
            c["imageGCHighThresholdPercent"].as_u64(),
            Some(100),
            "{text}"
        );
        // Kernel settings stay protected: the host sets them.
        assert_eq!(c["protectKernelDefaults"], serde_yaml::Value::Bool(true));
        assert_eq!(c["cgroupDriver"].as_str(), Some("systemd"));
    }

    #[test]
    fn newer_kubelets_take_the_endpoint_in_config_and_only_external_clouds() {
        let f = kubelet_flags(&params("v1.30.0"));
        assert!(!f.iter().any(|x| x.starts_with("--container-runtime")));
        assert!(f.contains(&"--cloud-provider=external".to_string()));
        assert!(!f.iter().any(|x| x.starts_with("--cloud-config")));
        let c = kubelet_config(&params("v1.30.0"));
        assert!(c.contains("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock"));
    }

    #[test]
    fn in_tree_providers_go_by_version_and_name() {
        let v = |s: &str| s.parse::<KubernetesVersion>().unwrap();
        for (version, provider, in_tree) in [
            ("v1.25.0", "openstack", true),
            ("v1.26.0", "openstack", false),
            ("v1.26.0", "aws", true),
            ("v1.27.0", "aws", false),
            ("v1.28.9", "gce", true),
            ("v1.29.0", "gce", false),
            ("v1.37.0", "external", true),
        ] {
            assert_eq!(
                in_tree_cloud_provider(&v(version), provider),
                in_tree,
                "{version} {provider}"
            );
        }
        let mut p = params("v1.26.0");
        p.cloud_provider = Some("openstack".into());
        let f = kubelet_flags(&p);
        assert!(
            f.contains(&"--cloud-provider=external".to_string()),
            "{f:?}"
        );
        assert!(!f.iter().any(|x| x.starts_with("--cloud-config")));
    }

    #[test]
    fn dropin_clears_the_base_exec_start() {
        let d = kubelet_dropin("/usr/local/bin", &params("v1.20.2"))
            .render()
            .unwrap();
        let first = d.find("ExecStart=\n").unwrap();
        let second = d
            .find("ExecStart=/usr/local/bin/kubelet --bootstrap-kubeconfig")
            .unwrap();
        assert!(first < second, "{d}");
    }
}
