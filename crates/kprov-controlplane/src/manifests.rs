//! Static pods of the control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) as typed Pod objects, with the
//! flags kubeadm of the target release sets. Pure: the spec in, YAML out.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, HostPathVolumeSource, Pod, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kprov_pki::spec::Host;

use crate::spec::{ClusterSpec, PodNetwork, NODE_CIDR_MASK_V4};

/// The components, in the order they start.
pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// A static pod and the file it goes to in the manifests directory.
#[derive(Debug, Clone)]
pub struct StaticPod {
    /// e.g. `kube-apiserver.yaml`.
    pub file_name: String,
    /// The pod.
    pub pod: Pod,
}

impl StaticPod {
    /// The component's name.
    pub fn component(&self) -> &str {
        self.file_name.trim_end_matches(".yaml")
    }

    /// The manifest's YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.pod)
            .unwrap_or_else(|_| unreachable!("a Pod of plain data always serializes"))
    }

    /// The container's command line.
    pub fn command(&self) -> Vec<String> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.command.clone())
            .unwrap_or_default()
    }

    /// The host paths the pod mounts, each with the path inside the
    /// container (equal for every control-plane pod).
    pub fn host_paths(&self) -> Vec<String> {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// One hostPath volume and its mount at the same path.
struct Mount {
    name: &'static str,
    path: String,
    kind: &'static str,
    read_only: bool,
}

fn mount(name: &'static str, path: String, kind: &'static str, read_only: bool) -> Mount {
    Mount {
        name,
        path,
        kind,
        read_only,
    }
}

/// The CA bundles of the host, which kubeadm mounts into the API server
/// and controller manager (for cloud providers and webhooks).
fn ca_mounts() -> Vec<Mount> {
    vec![
        mount(
            "ca-certs",
            "/etc/ssl/certs".into(),
            "DirectoryOrCreate",
            true,
        ),
        mount(
            "etc-ca-certificates",
            "/etc/ca-certificates".into(),
            "DirectoryOrCreate",
            true,
        ),
        mount(
            "usr-local-share-ca-certificates",
            "/usr/local/share/ca-certificates".into(),
            "DirectoryOrCreate",
            true,
        ),
        mount(
            "usr-share-ca-certificates",
            "/usr/share/ca-certificates".into(),
            "DirectoryOrCreate",
            true,
        ),
    ]
}

/// Failed startup checks (10 s apart) before the kubelet restarts a
/// component.
const STARTUP_CHECKS: i32 = 60;

fn probe(host: &str, port: i32, path: &str, scheme: &str, failures: i32, initial: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            host: Some(host.into()),
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some(scheme.into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        timeout_seconds: Some(15),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

struct Component {
    name: &'static str,
    image: String,
    command: Vec<String>,
    mounts: Vec<Mount>,
    cpu: Option<&'static str>,
    liveness: Probe,
    readiness: Option<Probe>,
    annotations: BTreeMap<String, String>,
}

fn pod(spec: &ClusterSpec, c: Component) -> StaticPod {
    let labels = BTreeMap::from([
        ("component".to_string(), c.name.to_string()),
        ("tier".to_string(), "control-plane".to_string()),
    ]);
    // kubeadm allows 24 failed checks (4 minutes). The first start of an
    // API server on a slow machine (a small board, an emulated VM) can
    // take longer, and every kill starts it over: allow 10 minutes. Once
    // started, the liveness probe is kubeadm's.
    let mut startup = c.liveness.clone();
    startup.failure_threshold = Some(STARTUP_CHECKS);
    let newer = spec.node().kubernetes_version.at_least(1, 22);
    let container = Container {
        name: c.name.into(),
        image: Some(c.image),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(c.command),
        liveness_probe: Some(c.liveness),
        readiness_probe: c.readiness,
        startup_probe: Some(startup),
        resources: c.cpu.map(|cpu| ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(
            c.mounts
                .iter()
                .map(|m| VolumeMount {
                    name: m.name.into(),
                    mount_path: m.path.clone(),
                    read_only: m.read_only.then_some(true),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        ..Container::default()
    };
    let volumes = c
        .mounts
        .iter()
        .map(|m| Volume {
            name: m.name.into(),
            host_path: Some(HostPathVolumeSource {
                path: m.path.clone(),
                type_: Some(m.kind.into()),
            }),
            ..Volume::default()
        })
        .collect();
    StaticPod {
        file_name: format!("{}.yaml", c.name),
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(c.name.into()),
                namespace: Some("kube-system".into()),
                labels: Some(labels),
                annotations: (!c.annotations.is_empty()).then_some(c.annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                host_network: Some(true),
                priority_class_name: Some("system-node-critical".into()),
                // kubeadm sets RuntimeDefault seccomp from v1.22.
                security_context: newer.then(|| k8s_openapi::api::core::v1::PodSecurityContext {
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        ..SeccompProfile::default()
                    }),
                    ..Default::default()
                }),
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        },
    }
}

fn flags(binary: &str, mut args: Vec<(String, String)>) -> Vec<String> {
    // kubeadm sorts the flags by name.
    args.sort();
    std::iter::once(binary.to_string())
        .chain(args.into_iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn url_host(ip: std::net::IpAddr) -> String {
    Host::Ip(ip).url_host()
}

/// etcd's static pod: a single member on the advertise address.
pub fn etcd(spec: &ClusterSpec) -> StaticPod {
    etcd_member(spec, None)
}

/// etcd's static pod on a master that joins a running etcd, which has
/// added it already: `initial_cluster` lists every member, this one too
/// (see [`crate::etcd::initial_cluster`]).
pub fn etcd_joining(spec: &ClusterSpec, initial_cluster: &str) -> StaticPod {
    etcd_member(spec, Some(initial_cluster))
}

fn etcd_member(spec: &ClusterSpec, joining: Option<&str>) -> StaticPod {
    let node = spec.node();
    let ip = url_host(node.advertise_address.ip());
    let name = node.node_name.as_str();
    let pki = spec.cert_dir.join("etcd");
    let file = |f: &str| path(&pki.join(f));
    let client_url = format!("https://{ip}:2379");
    let initial_cluster = match joining {
        Some(members) => members.to_string(),
        None => format!("{name}=https://{ip}:2380"),
    };
    let mut args = vec![
        kv("advertise-client-urls", client_url.clone()),
        kv("cert-file", file("server.crt")),
        kv("client-cert-auth", "true"),
        kv("data-dir", path(&spec.etcd_data_dir)),
        kv("initial-advertise-peer-urls", format!("https://{ip}:2380")),
        kv("initial-cluster", initial_cluster),
        kv("key-file", file("server.key")),
        kv(
            "listen-client-urls",
            format!("https://127.0.0.1:2379,{client_url}"),
        ),
        kv("listen-metrics-urls", "http://127.0.0.1:2381"),
        kv("listen-peer-urls", format!("https://{ip}:2380")),
        kv("name", name),
        kv("peer-cert-file", file("peer.crt")),
        kv("peer-client-cert-auth", "true"),
        kv("peer-key-file", file("peer.key")),
        kv("peer-trusted-ca-file", file("ca.crt")),
        kv("snapshot-count", "10000"),
        kv("trusted-ca-file", file("ca.crt")),
    ];
    if joining.is_some() {
        args.insert(6, kv("initial-cluster-state", "existing"));
    }
    pod(
        spec,
        Component {
            name: "etcd",
            image: spec.etcd_image(),
            command: flags("etcd", args),
            mounts: vec![
                mount("etcd-certs", path(&pki), "DirectoryOrCreate", false),
                mount(
                    "etcd-data",
                    path(&spec.etcd_data_dir),
                    "DirectoryOrCreate",
                    false,
                ),
            ],
            cpu: None,
            liveness: probe("127.0.0.1", 2381, "/health", "HTTP", 8, 10),
            readiness: None,
            annotations: BTreeMap::from([(
                "kubeadm.kubernetes.io/etcd.advertise-client-urls".to_string(),
                client_url,
            )]),
        },
    )
}

/// The API server's static pod.
pub fn kube_apiserver(spec: &ClusterSpec) -> StaticPod {
    let node = spec.node();
    let version = &node.kubernetes_version;
    let pki = &spec.cert_dir;
    let file = |f: &str| path(&pki.join(f));
    let address = node.advertise_address.ip();
    let mut args = vec![
        kv("advertise-address", address.to_string()),
        kv("allow-privileged", "true"),
        kv("authorization-mode", "Node,RBAC"),
        kv("client-ca-file", file("ca.crt")),
        kv("enable-admission-plugins", "NodeRestriction"),
        kv("enable-bootstrap-token-auth", "true"),
        kv("etcd-cafile", file("etcd/ca.crt")),
        kv("etcd-certfile", file("apiserver-etcd-client.crt")),
        kv("etcd-keyfile", file("apiserver-etcd-client.key")),
        kv("etcd-servers", "https://127.0.0.1:2379"),
        kv(
            "kubelet-client-certificate",
            file("apiserver-kubelet-client.crt"),
        ),
        kv("kubelet-client-key", file("apiserver-kubelet-client.key")),
        kv(
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname",
        ),
        kv("proxy-client-cert-file", file("front-proxy-client.crt")),
        kv("proxy-client-key-file", file("front-proxy-client.key")),
        kv("requestheader-allowed-names", "front-proxy-client"),
        kv("requestheader-client-ca-file", file("front-proxy-ca.crt")),
        kv("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        kv("requestheader-group-headers", "X-Remote-Group"),
        kv("requestheader-username-headers", "X-Remote-User"),
        kv("secure-port", node.bind_port.to_string()),
        kv(
            "service-account-issuer",
            format!(
                "https://kubernetes.default.svc.{}",
                spec.cluster_domain().as_str()
            ),
        ),
        kv("service-account-key-file", file("sa.pub")),
        kv("service-account-signing-key-file", file("sa.key")),
        kv("service-cluster-ip-range", spec.service_cidr().to_string()),
        kv("tls-cert-file", file("apiserver.crt")),
        kv("tls-private-key-file", file("apiserver.key")),
    ];
    // The insecure port existed (and kubeadm closed it) until v1.24.
    if !version.at_least(1, 24) {
        args.push(kv("insecure-port", "0"));
    }
    let ip = address.to_string();
    let port = i32::from(node.bind_port);
    let mut mounts = ca_mounts();
    mounts.push(mount("k8s-certs", path(pki), "DirectoryOrCreate", true));
    pod(
        spec,
        Component {
            name: "kube-apiserver",
            image: spec.component_image("kube-apiserver"),
            command: flags("kube-apiserver", args),
            mounts,
            cpu: Some("250m"),
            liveness: probe(&ip, port, "/livez", "HTTPS", 8, 10),
            readiness: Some(probe(&ip, port, "/readyz", "HTTPS", 3, 0)),
            annotations: BTreeMap::from([(
                "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint".to_string(),
                format!("{}:{}", url_host(address), node.bind_port),
            )]),
        },
    )
}

/// The controller manager's static pod: CSR signing with the cluster CA,
/// the bootstrap signer and token cleaner, and per-node pod ranges when
/// the pod network needs them.
pub fn kube_controller_manager(spec: &ClusterSpec) -> StaticPod {
    let version = &spec.node().kubernetes_version;
    let pki = &spec.cert_dir;
    let file = |f: &str| path(&pki.join(f));
    let kubeconfig = path(&spec.kubernetes_dir.join("controller-manager.conf"));
    let mut args = vec![
        kv("authentication-kubeconfig", kubeconfig.clone()),
        kv("authorization-kubeconfig", kubeconfig.clone()),
        kv("bind-address", "127.0.0.1"),
        kv("client-ca-file", file("ca.crt")),
        kv("cluster-name", "kubernetes"),
        kv("cluster-signing-cert-file", file("ca.crt")),
        kv("cluster-signing-key-file", file("ca.key")),
        kv("controllers", "*,bootstrapsigner,tokencleaner"),
        kv("kubeconfig", kubeconfig.clone()),
        kv("leader-elect", "true"),
        kv("requestheader-client-ca-file", file("front-proxy-ca.crt")),
        kv("root-ca-file", file("ca.crt")),
        kv("service-account-private-key-file", file("sa.key")),
        kv("service-cluster-ip-range", spec.service_cidr().to_string()),
        kv("use-service-account-credentials", "true"),
    ];
    // Both pod networks kprov installs route by the node's spec.podCIDR:
    // flannel's come from the controller manager, bridge's from kprov
    // (`crate::pod_ranges`: without the 10 s nodeipam's start costs).
    match spec.pod_network {
        PodNetwork::Flannel => {
            args.push(kv("allocate-node-cidrs", "true"));
            args.push(kv("cluster-cidr", spec.pod_cidr.to_string()));
            if spec.pod_cidr.network().is_ipv4() {
                args.push(kv("node-cidr-mask-size", NODE_CIDR_MASK_V4.to_string()));
            }
        }
        PodNetwork::Bridge => {}
    }
    if !version.at_least(1, 24) {
        args.push(kv("port", "0"));
    }
    let mut mounts = ca_mounts();
    mounts.push(mount(
        "flexvolume-dir",
        "/usr/libexec/kubernetes/kubelet-plugins/volume/exec".into(),
        "DirectoryOrCreate",
        false,
    ));
    mounts.push(mount("k8s-certs", path(pki), "DirectoryOrCreate", true));
    mounts.push(mount("kubeconfig", kubeconfig, "FileOrCreate", true));
    pod(
        spec,
        Component {
            name: "kube-controller-manager",
            image: spec.component_image("kube-controller-manager"),
            command: flags("kube-controller-manager", args),
            mounts,
            cpu: Some("200m"),
            liveness: probe("127.0.0.1", 10257, "/healthz", "HTTPS", 8, 10),
            readiness: None,
            annotations: BTreeMap::new(),
        },
    )
}

/// The scheduler's static pod.
pub fn kube_scheduler(spec: &ClusterSpec) -> StaticPod {
    let version = &spec.node().kubernetes_version;
    let kubeconfig = path(&spec.kubernetes_dir.join("scheduler.conf"));
    let mut args = vec![
        kv("authentication-kubeconfig", kubeconfig.clone()),
        kv("authorization-kubeconfig", kubeconfig.clone()),
        kv("bind-address", "127.0.0.1"),
        kv("kubeconfig", kubeconfig.clone()),
        kv("leader-elect", "true"),
    ];
    if !version.at_least(1, 24) {
        args.push(kv("port", "0"));
    }
    pod(
        spec,
        Component {
            name: "kube-scheduler",
            image: spec.component_image("kube-scheduler"),
            command: flags("kube-scheduler", args),
            mounts: vec![mount("kubeconfig", kubeconfig, "FileOrCreate", true)],
            cpu: Some("100m"),
            liveness: probe("127.0.0.1", 10259, "/healthz", "HTTPS", 8, 10),
            readiness: None,
            annotations: BTreeMap::new(),
        },
    )
}

/// All four static pods, in start order.
pub fn static_pods(spec: &ClusterSpec) -> Vec<StaticPod> {
    vec![
        etcd(spec),
        kube_apiserver(spec),
        kube_controller_manager(spec),
        kube_scheduler(spec),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_pki::{ControlPlaneNode, PkiSpec};

    fn spec(version: &str) -> ClusterSpec {
        let node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "192.168.1.10".parse().unwrap(),
            version.parse().unwrap(),
        );
        ClusterSpec::new(PkiSpec::new(node))
    }

    fn has(pod: &StaticPod, flag: &str) -> bool {
        pod.command().iter().any(|a| a == flag)
    }

    #[test]
    fn v1_20_apiserver_has_kubeadms_flags() {
        let s = spec("v1.20.2");
        let api = kube_apiserver(&s);
        assert_eq!(api.command()[0], "kube-apiserver");
        for flag in [
            "--enable-bootstrap-token-auth=true",
            "--insecure-port=0",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
            "--advertise-address=192.168.1.10",
            "--etcd-servers=https://127.0.0.1:2379",
        ] {
            assert!(has(&api, flag), "{flag} missing from {:?}", api.command());
        }
        let yaml = api.to_yaml();
        assert!(
            yaml.contains("image: k8s.gcr.io/kube-apiserver:v1.20.2"),
            "{yaml}"
        );
        assert!(yaml.contains("hostNetwork: true"));
        let mut sorted = api.command()[1..].to_vec();
        sorted.sort();
        assert_eq!(sorted, api.command()[1..].to_vec());
    }

    #[test]
    fn a_slow_first_start_has_ten_minutes_before_a_restart() {
        let yaml = kube_apiserver(&spec("v1.20.2")).to_yaml();
        let startup = &yaml[yaml.find("startupProbe:").unwrap()..];
        assert!(startup.contains("failureThreshold: 60"), "{startup}");
        assert!(startup.contains("periodSeconds: 10"), "{startup}");
        let liveness = &yaml[yaml.find("livenessProbe:").unwrap()..];
        assert!(liveness.contains("failureThreshold: 8"), "{liveness}");
    }

    #[test]
    fn insecure_ports_are_gone_from_v1_24() {
        let s = spec("v1.30.0");
        assert!(!has(&kube_apiserver(&s), "--insecure-port=0"));
        assert!(!has(&kube_controller_manager(&s), "--port=0"));
        assert!(!has(&kube_scheduler(&s), "--port=0"));
        assert!(kube_apiserver(&s).to_yaml().contains("RuntimeDefault"));
        assert!(kube_apiserver(&s)
            .to_yaml()
            .contains("image: registry.k8s.io/kube-apiserver:v1.30.0"));
    }

    #[test]
    fn controller_manager_signs_csrs_and_allocates_node_ranges() {
        let cm = kube_controller_manager(&spec("v1.20.2"));
        for flag in [
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
            "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
            "--allocate-node-cidrs=true",
            "--cluster-cidr=10.244.0.0/16",
        ] {
            assert!(has(&cm, flag), "{flag}");
        }
        // kprov allocates the bridge network's ranges itself.
        let mut bridge = spec("v1.20.2");
        bridge.pod_network = PodNetwork::Bridge;
        let cm = kube_controller_manager(&bridge);
        assert!(!cm
            .command()
            .iter()
            .any(|a| a.starts_with("--allocate-node-cidrs") || a.starts_with("--cluster-cidr")));
    }

    #[test]
    fn etcd_is_one_member_on_the_advertise_address() {
        let e = etcd(&spec("v1.20.2"));
        assert!(has(
            &e,
            "--initial-cluster=master-1=https://192.168.1.10:2380"
        ));
        assert!(has(
            &e,
            "--listen-client-urls=https://127.0.0.1:2379,https://192.168.1.10:2379"
        ));
        assert!(e.to_yaml().contains("image: k8s.gcr.io/etcd:3.4.13-0"));
        assert_eq!(
            e.host_paths(),
            vec!["/etc/kubernetes/pki/etcd", "/var/lib/etcd"]
        );
        assert!(!e
            .command()
            .iter()
            .any(|a| a.starts_with("--initial-cluster-state")));
    }

    #[test]
    fn a_joining_etcd_starts_with_every_member_and_an_existing_cluster() {
        let members = "m0=https://192.168.1.9:2380,master-1=https://192.168.1.10:2380";
        let e = etcd_joining(&spec("v1.20.2"), members);
        let command = e.command();
        let at = |flag: &str| command.iter().position(|a| a.starts_with(flag)).unwrap();
        assert!(has(&e, &format!("--initial-cluster={members}")));
        assert!(has(&e, "--initial-cluster-state=existing"));
        assert_eq!(at("--initial-cluster-state"), at("--initial-cluster=") + 1);
        assert!(has(&e, "--name=master-1"));
    }
}
