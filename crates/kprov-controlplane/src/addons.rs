//! The cluster add-ons `kprov init` installs, as typed objects: kube-proxy
//! (ConfigMap + DaemonSet), CoreDNS (Deployment, Service, ConfigMap, RBAC)
//! and, with the flannel pod network, flannel's DaemonSet. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::spec::{ClusterSpec, PodNetwork};

const NS: &str = "kube-system";

/// Every add-on object, by kind, in apply order.
#[derive(Debug, Clone, Default)]
pub struct Addons {
    /// Service accounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// Cluster roles.
    pub cluster_roles: Vec<ClusterRole>,
    /// Cluster role bindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Config maps.
    pub config_maps: Vec<ConfigMap>,
    /// Services.
    pub services: Vec<Service>,
    /// Deployments.
    pub deployments: Vec<Deployment>,
    /// Daemon sets.
    pub daemon_sets: Vec<DaemonSet>,
}

/// Metadata with a name, a namespace (None: cluster-scoped) and labels.
pub fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

fn service_account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, Some(NS), &[]),
        ..ServiceAccount::default()
    }
}

fn bind_service_account(name: &str, role: &str, account: &str) -> ClusterRoleBinding {
    bind(
        name,
        role,
        Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(NS.into()),
            api_group: None,
        },
    )
}

fn bind(name: &str, role: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None, &[]),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![subject]),
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Volume::default()
    }
}

fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn tolerate_everything() -> Vec<Toleration> {
    vec![Toleration {
        operator: Some("Exists".into()),
        ..Toleration::default()
    }]
}

/// A selector matching `labels`.
pub fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

/// An environment variable set from a field of the pod (the downward API).
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The cluster DNS Service's address: the tenth of the service range, as
/// kubeadm picks it.
pub fn cluster_dns_ip(spec: &ClusterSpec) -> IpAddr {
    match spec.service_cidr().network() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + 10).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + 10).into()),
    }
}

fn kube_proxy(spec: &ClusterSpec, out: &mut Addons, proxy_mode: &str) {
    let labels = BTreeMap::from([("k8s-app".to_string(), "kube-proxy".to_string())]);
    out.service_accounts.push(service_account("kube-proxy"));
    out.cluster_role_bindings.push(bind_service_account(
        "kubeadm:node-proxier",
        "system:node-proxier",
        "kube-proxy",
    ));
    // An address that answers on every node: kube-proxy runs before the
    // `kubernetes` Service works (it is what makes it work).
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
        spec.node_api_url()
    );
    let mut config = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: {}\nmode: {proxy_mode}\n",
        spec.pod_cidr
    );
    if spec.nodes_in_containers {
        // nf_conntrack_max is the host's, read-only outside its first
        // network namespace: kube-proxy would exit trying to set it.
        config.push_str("conntrack:\n  maxPerCore: 0\n");
    }
    out.config_maps.push(ConfigMap {
        metadata: meta("kube-proxy", Some(NS), &[("app", "kube-proxy")]),
        data: Some(BTreeMap::from([
            ("config.conf".to_string(), config),
            ("kubeconfig.conf".to_string(), kubeconfig),
        ])),
        ..ConfigMap::default()
    });
    let container = Container {
        name: "kube-proxy".into(),
        image: Some(spec.component_image("kube-proxy")),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/usr/local/bin/kube-proxy".into(),
            "--config=/var/lib/kube-proxy/config.conf".into(),
            "--hostname-override=$(NODE_NAME)".into(),
        ]),
        env: Some(vec![field_env("NODE_NAME", "spec.nodeName")]),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            volume_mount("kube-proxy", "/var/lib/kube-proxy", false),
            volume_mount("xtables-lock", "/run/xtables.lock", false),
            volume_mount("lib-modules", "/lib/modules", true),
        ]),
        ..Container::default()
    };
    out.daemon_sets.push(DaemonSet {
        metadata: meta("kube-proxy", Some(NS), &[("k8s-app", "kube-proxy")]),
        spec: Some(DaemonSetSpec {
            selector: selector(&labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    host_network: Some(true),
                    node_selector: Some(BTreeMap::from([(
                        "kubernetes.io/os".to_string(),
                        "linux".to_string(),
                    )])),
                    priority_class_name: Some("system-node-critical".into()),
                    service_account_name: Some("kube-proxy".into()),
                    tolerations: Some(tolerate_everything()),
                    volumes: Some(vec![
                        config_map_volume("kube-proxy", "kube-proxy"),
                        host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
                        host_path("lib-modules", "/lib/modules", ""),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    });
}

fn coredns(spec: &ClusterSpec, out: &mut Addons) {
    let labels = BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]);
    out.service_accounts.push(service_account("coredns"));
    out.cluster_roles.push(ClusterRole {
        metadata: meta("system:coredns", None, &[]),
        rules: Some(vec![
            rule(
                &[""],
                &["endpoints", "services", "pods", "namespaces"],
                &["list", "watch"],
            ),
            rule(&[""], &["nodes"], &["get"]),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["list", "watch"],
            ),
        ]),
        ..ClusterRole::default()
    });
    out.cluster_role_bindings.push(bind_service_account(
        "system:coredns",
        "system:coredns",
        "coredns",
    ));
    let domain = spec.cluster_domain().as_str();
    let corefile = format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    forward . /etc/resolv.conf {{\n       max_concurrent 1000\n    }}\n    cache 30\n    loop\n    reload\n    loadbalance\n}}\n"
    );
    out.config_maps.push(ConfigMap {
        metadata: meta("coredns", Some(NS), &[]),
        data: Some(BTreeMap::from([("Corefile".to_string(), corefile)])),
        ..ConfigMap::default()
    });
    let image = kprov_artifacts::catalog::images(
        &spec.node().kubernetes_version,
        true,
        Some(&spec.image_registry),
    )
    .ok()
    .and_then(|list| list.into_iter().find(|i| i.repository.ends_with("coredns")))
    .map(|i| i.to_string())
    .unwrap_or_else(|| format!("{}/coredns/coredns:v1.11.3", spec.image_registry));
    let port = |name: &str, number: i32, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some(protocol.into()),
        ..ContainerPort::default()
    };
    let http_probe = |path: &str, port: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    };
    let container = Container {
        name: "coredns".into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["-conf".into(), "/etc/coredns/Corefile".into()]),
        ports: Some(vec![
            port("dns", 53, "UDP"),
            port("dns-tcp", 53, "TCP"),
            port("metrics", 9153, "TCP"),
        ]),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(60),
            failure_threshold: Some(5),
            ..http_probe("/health", 8080)
        }),
        readiness_probe: Some(http_probe("/ready", 8181)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: Some(vec!["all".into()]),
            }),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![volume_mount("config-volume", "/etc/coredns", true)]),
        ..Container::default()
    };
    let control_plane_taint = |key: &str| Toleration {
        key: Some(key.into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    };
    out.deployments.push(Deployment {
        metadata: meta("coredns", Some(NS), &[("k8s-app", "kube-dns")]),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: selector(&labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    dns_policy: Some("Default".into()),
                    node_selector: Some(BTreeMap::from([(
                        "kubernetes.io/os".to_string(),
                        "linux".to_string(),
                    )])),
                    priority_class_name: Some("system-cluster-critical".into()),
                    service_account_name: Some("coredns".into()),
                    tolerations: Some(vec![
                        Toleration {
                            key: Some("CriticalAddonsOnly".into()),
                            operator: Some("Exists".into()),
                            ..Toleration::default()
                        },
                        control_plane_taint("node-role.kubernetes.io/master"),
                        control_plane_taint("node-role.kubernetes.io/control-plane"),
                    ]),
                    volumes: Some(vec![Volume {
                        name: "config-volume".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: "coredns".into(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    });
    let service_port = |name: &str, protocol: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    };
    out.services.push(Service {
        metadata: meta(
            "kube-dns",
            Some(NS),
            &[("k8s-app", "kube-dns"), ("kubernetes.io/name", "CoreDNS")],
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_dns_ip(spec).to_string()),
            ports: Some(vec![
                service_port("dns", "UDP", 53),
                service_port("dns-tcp", "TCP", 53),
                service_port("metrics", "TCP", 9153),
            ]),
            selector: Some(labels),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    });
}

fn flannel(spec: &ClusterSpec, out: &mut Addons, image: &str) {
    let labels = BTreeMap::from([("app".to_string(), "flannel".to_string())]);
    out.service_accounts.push(service_account("flannel"));
    out.cluster_roles.push(ClusterRole {
        metadata: meta("flannel", None, &[]),
        rules: Some(vec![
            rule(&[""], &["pods"], &["get"]),
            rule(&[""], &["nodes"], &["get", "list", "watch"]),
            rule(&[""], &["nodes/status"], &["patch"]),
        ]),
        ..ClusterRole::default()
    });
    out.cluster_role_bindings
        .push(bind_service_account("flannel", "flannel", "flannel"));
    let net_conf = serde_json::json!({
        "Network": spec.pod_cidr.to_string(),
        "Backend": { "Type": "vxlan" }
    });
    let cni_conf = serde_json::json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    out.config_maps.push(ConfigMap {
        metadata: meta("kube-flannel-cfg", Some(NS), &[("app", "flannel")]),
        data: Some(BTreeMap::from([
            ("cni-conf.json".to_string(), cni_conf.to_string()),
            ("net-conf.json".to_string(), net_conf.to_string()),
        ])),
        ..ConfigMap::default()
    });
    let mounts = vec![
        volume_mount("run", "/run/flannel", false),
        volume_mount("flannel-cfg", "/etc/kube-flannel/", false),
        volume_mount("xtables-lock", "/run/xtables.lock", false),
    ];
    let install_cni = Container {
        name: "install-cni".into(),
        image: Some(image.into()),
        command: Some(vec!["cp".into()]),
        args: Some(vec![
            "-f".into(),
            "/etc/kube-flannel/cni-conf.json".into(),
            "/etc/cni/net.d/10-flannel.conflist".into(),
        ]),
        volume_mounts: Some(vec![
            volume_mount("cni", "/etc/cni/net.d", false),
            volume_mount("flannel-cfg", "/etc/kube-flannel/", false),
        ]),
        ..Container::default()
    };
    let flanneld = Container {
        name: "kube-flannel".into(),
        image: Some(image.into()),
        command: Some(vec!["/opt/bin/flanneld".into()]),
        args: Some(vec!["--ip-masq".into(), "--kube-subnet-mgr".into()]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    out.daemon_sets.push(DaemonSet {
        metadata: meta("kube-flannel-ds", Some(NS), &[("app", "flannel")]),
        spec: Some(DaemonSetSpec {
            selector: selector(&labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![flanneld],
                    init_containers: Some(vec![install_cni]),
                    host_network: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    service_account_name: Some("flannel".into()),
                    tolerations: Some(tolerate_everything()),
                    volumes: Some(vec![
                        host_path("run", "/run/flannel", ""),
                        host_path("cni", "/etc/cni/net.d", ""),
                        config_map_volume("flannel-cfg", "kube-flannel-cfg"),
                        host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    });
}

/// The ConfigMap (in kube-system) that tells each node's kprov which pod
/// network the cluster runs; `kprov pod-network sync` reads it with the
/// node's own credentials.
pub const POD_NETWORK_CONFIG_MAP: &str = "kprov-pod-network";

/// The ClusterRole (and its binding) that lets kprov give Nodes their
/// pod ranges.
pub const POD_RANGE_ALLOCATOR: &str = "kprov:pod-range-allocator";

/// The controller manager's user (its kubeconfig's client certificate).
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// The bridge network's objects: its ConfigMap, and the right of every
/// node (group system:nodes) to read that one ConfigMap and the Nodes,
/// whose pod ranges and addresses the routes come from.
fn bridge(spec: &ClusterSpec, out: &mut Addons) {
    let name = "kprov:pod-network";
    let mut read_config = rule(&[""], &["configmaps"], &["get"]);
    read_config.resource_names = Some(vec![POD_NETWORK_CONFIG_MAP.into()]);
    out.cluster_roles.push(ClusterRole {
        metadata: meta(name, None, &[]),
        rules: Some(vec![
            read_config,
            rule(&[""], &["nodes"], &["get", "list", "watch"]),
        ]),
        ..ClusterRole::default()
    });
    out.cluster_role_bindings.push(bind(
        name,
        name,
        Subject {
            kind: "Group".into(),
            name: "system:nodes".into(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".into()),
        },
    ));
    // The pod ranges: kprov on the master whose controller manager leads
    // gives them (crate::pod_ranges), with that controller manager's
    // identity, which may read its own lease already.
    out.cluster_roles.push(ClusterRole {
        metadata: meta(POD_RANGE_ALLOCATOR, None, &[]),
        rules: Some(vec![rule(&[""], &["nodes"], &["get", "list", "patch"])]),
        ..ClusterRole::default()
    });
    out.cluster_role_bindings.push(bind(
        POD_RANGE_ALLOCATOR,
        POD_RANGE_ALLOCATOR,
        Subject {
            kind: "User".into(),
            name: CONTROLLER_MANAGER_USER.into(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".into()),
        },
    ));
    out.config_maps.push(ConfigMap {
        metadata: meta(POD_NETWORK_CONFIG_MAP, Some(NS), &[]),
        data: Some(BTreeMap::from([
            ("network".to_string(), "bridge".to_string()),
            ("podCIDR".to_string(), spec.pod_cidr.to_string()),
        ])),
        ..ConfigMap::default()
    });
}

/// flannel's image when none is given.
pub const DEFAULT_FLANNEL_IMAGE: &str = "docker.io/flannel/flannel:v0.25.7";

/// The add-ons for `spec`: kube-proxy in `proxy_mode` (iptables or
/// ipvs), CoreDNS, and flannel (from `flannel_image`) when it is the pod
/// network. With the bridge network, each node's kprov writes its CNI
/// config and routes itself; the cluster only holds the choice.
pub fn addons(spec: &ClusterSpec, proxy_mode: &str, flannel_image: &str) -> Addons {
    let mut out = Addons::default();
    kube_proxy(spec, &mut out, proxy_mode);
    coredns(spec, &mut out);
    match spec.pod_network {
        PodNetwork::Flannel => flannel(spec, &mut out, flannel_image),
        PodNetwork::Bridge => bridge(spec, &mut out),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_pki::{ControlPlaneNode, PkiSpec};

    fn spec() -> ClusterSpec {
        let node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.168.1.10".parse().unwrap(),
            "v1.20.2".parse().unwrap(),
        );
        ClusterSpec::new(PkiSpec::new(node))
    }

    #[test]
    fn dns_service_takes_the_tenth_service_address() {
        let a = addons(&spec(), "iptables", DEFAULT_FLANNEL_IMAGE);
        let svc = &a.services[0];
        assert_eq!(
            svc.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.0.10")
        );
        let image = a.deployments[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap();
        assert_eq!(image, "k8s.gcr.io/coredns:1.7.0");
    }

    #[test]
    fn kube_proxy_gets_the_pod_range_and_the_api_server() {
        let a = addons(&spec(), "ipvs", DEFAULT_FLANNEL_IMAGE);
        let cm = a
            .config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("kube-proxy"))
            .unwrap();
        let data = cm.data.as_ref().unwrap();
        assert!(data["config.conf"].contains("clusterCIDR: 10.244.0.0/16"));
        assert!(data["config.conf"].contains("mode: ipvs"));
        assert!(data["kubeconfig.conf"].contains("server: https://192.168.1.10:6443"));
        let ds = a
            .daemon_sets
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some("kube-proxy"))
            .unwrap();
        let image = ds
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some("k8s.gcr.io/kube-proxy:v1.20.2"));
        assert!(!data["config.conf"].contains("conntrack"));
    }

    #[test]
    fn kube_proxy_goes_through_the_node_local_address_once_the_certificates_name_it() {
        let server = |s: &ClusterSpec| {
            let a = addons(s, "iptables", DEFAULT_FLANNEL_IMAGE);
            let cm = a
                .config_maps
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some("kube-proxy"))
                .unwrap()
                .clone();
            let conf = cm.data.unwrap()["kubeconfig.conf"].clone();
            conf.lines()
                .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
                .unwrap()
        };
        let mut s = spec();
        assert_eq!(server(&s), "https://192.168.1.10:6443");
        s.name_node_local_address();
        assert_eq!(server(&s), "https://127.0.0.1:6443");
        // A load balancer or DNS name of the user's stays the way in.
        s.pki.node.control_plane_endpoint = Some("api.example.com:6443".parse().unwrap());
        assert_eq!(server(&s), "https://api.example.com:6443");
        // Masters on another port: 127.0.0.1:6443 would not answer there.
        s.pki.node.control_plane_endpoint = None;
        s.pki.node.bind_port = 8443;
        assert_eq!(server(&s), "https://192.168.1.10:8443");
    }

    #[test]
    fn kube_proxy_on_nodes_in_containers_leaves_the_conntrack_table_size_alone() {
        let mut s = spec();
        s.nodes_in_containers = true;
        let a = addons(&s, "iptables", DEFAULT_FLANNEL_IMAGE);
        let cm = a
            .config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("kube-proxy"))
            .unwrap();
        let config: serde_yaml::Value =
            serde_yaml::from_str(&cm.data.as_ref().unwrap()["config.conf"]).unwrap();
        assert_eq!(config["conntrack"]["maxPerCore"].as_u64(), Some(0));
        assert_eq!(config["mode"].as_str(), Some("iptables"));
    }

    #[test]
    fn flannel_only_with_the_flannel_network() {
        let mut s = spec();
        assert!(addons(&s, "iptables", "f:1").daemon_sets.iter().any(|d| d
            .metadata
            .name
            .as_deref()
            == Some("kube-flannel-ds")));
        s.pod_network = PodNetwork::Bridge;
        let a = addons(&s, "iptables", "f:1");
        assert_eq!(a.daemon_sets.len(), 1);
        assert!(!a
            .config_maps
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("kube-flannel-cfg")));
    }

    #[test]
    fn the_bridge_network_lets_nodes_read_its_config_map_and_nothing_else() {
        let mut s = spec();
        s.pod_network = PodNetwork::Bridge;
        let a = addons(&s, "iptables", "f:1");
        let config = a
            .config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(POD_NETWORK_CONFIG_MAP))
            .unwrap();
        assert_eq!(config.data.as_ref().unwrap()["network"], "bridge");
        let role = a
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some("kprov:pod-network"))
            .unwrap();
        for r in role.rules.as_ref().unwrap() {
            assert!(
                r.verbs
                    .iter()
                    .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
                "{r:?}"
            );
            if r.resources.as_ref().unwrap() == &["configmaps".to_string()] {
                assert_eq!(
                    r.resource_names.as_deref(),
                    Some(&[POD_NETWORK_CONFIG_MAP.to_string()][..])
                );
            }
        }
        let binding = a
            .cluster_role_bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("kprov:pod-network"))
            .unwrap();
        assert_eq!(binding.subjects.as_ref().unwrap()[0].name, "system:nodes");
        // Only the controller manager's identity may set pod ranges.
        let allocator = a
            .cluster_role_bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some(POD_RANGE_ALLOCATOR))
            .unwrap();
        assert_eq!(
            allocator.subjects.as_ref().unwrap()[0].name,
            CONTROLLER_MANAGER_USER
        );
        assert!(addons(&spec(), "iptables", "f:1")
            .config_maps
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some(POD_NETWORK_CONFIG_MAP)));
    }
}
