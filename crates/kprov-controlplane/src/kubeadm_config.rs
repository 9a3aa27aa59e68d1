//! What `kubeadm init` uploads for `kubeadm join` (and `kubeadm upgrade`)
//! to read back: the `kubeadm-config` ConfigMap (ClusterConfiguration, and
//! before v1.22 ClusterStatus), the cluster's KubeletConfiguration in
//! `kubelet-config-1.X` (`kubelet-config` from v1.24), and the roles that
//! let nodes and bootstrap tokens read exactly those two. With them a
//! machine can join a kprov cluster with kubeadm as well as with kprov.
//! Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kprov_core::KubernetesVersion;
use kprov_pki::spec::ControlPlaneNode;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{config_map_reader, group, meta};
use crate::spec::{ClusterSpec, NODE_LOCAL_API_ADDRESS};
use crate::token::DEFAULT_NODE_GROUP;

const NS: &str = "kube-system";

/// The ConfigMap kubeadm keeps its cluster configuration in.
pub const KUBEADM_CONFIG: &str = "kubeadm-config";

/// The objects of the upload-config phase, in apply order.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// kubeadm-config and the kubelet's ConfigMap.
    pub config_maps: Vec<ConfigMap>,
    /// One role per ConfigMap: get it, by name.
    pub roles: Vec<Role>,
    /// Each role bound to the nodes and the default node-token group.
    pub role_bindings: Vec<RoleBinding>,
}

/// kubeadm's configuration API version for `version`'s kubeadm.
pub fn kubeadm_api_version(version: &KubernetesVersion) -> &'static str {
    if version.at_least(1, 31) {
        "kubeadm.k8s.io/v1beta4"
    } else if version.at_least(1, 22) {
        "kubeadm.k8s.io/v1beta3"
    } else {
        "kubeadm.k8s.io/v1beta2"
    }
}

/// The name of the ConfigMap holding the cluster's KubeletConfiguration:
/// versioned by minor release until v1.24 made it unversioned.
pub fn kubelet_config_map_name(version: &KubernetesVersion) -> String {
    if version.at_least(1, 24) {
        "kubelet-config".into()
    } else {
        let (major, minor) = version.minor_version();
        format!("kubelet-config-{major}.{minor}")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    api_version: &'static str,
    kind: &'static str,
    kubernetes_version: String,
    cluster_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane_endpoint: Option<String>,
    certificates_dir: String,
    image_repository: String,
    networking: Networking,
    etcd: Etcd,
    api_server: ApiServer,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    dns_domain: String,
    pod_subnet: String,
    service_subnet: String,
}

#[derive(Serialize)]
struct Etcd {
    local: LocalEtcd,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    data_dir: String,
}

#[derive(Serialize)]
struct ApiServer {
    #[serde(rename = "certSANs", skip_serializing_if = "Vec::is_empty")]
    cert_sans: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStatus {
    api_version: &'static str,
    kind: &'static str,
    api_endpoints: BTreeMap<String, ApiEndpoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiEndpoint {
    advertise_address: String,
    bind_port: u16,
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|_| unreachable!("plain data serializes"))
}

/// The ClusterConfiguration kubeadm would have written for `spec`.
pub fn cluster_configuration(spec: &ClusterSpec) -> String {
    let node = spec.node();
    let version = &node.kubernetes_version;
    yaml(&ClusterConfiguration {
        api_version: kubeadm_api_version(version),
        kind: "ClusterConfiguration",
        kubernetes_version: version.to_string(),
        cluster_name: "kubernetes",
        control_plane_endpoint: node.control_plane_endpoint.as_ref().map(|ep| {
            format!(
                "{}:{}",
                ep.host().url_host(),
                ep.port().unwrap_or(node.bind_port)
            )
        }),
        certificates_dir: spec.cert_dir.display().to_string(),
        image_repository: spec.image_registry.clone(),
        networking: Networking {
            dns_domain: spec.cluster_domain().as_str().to_string(),
            pod_subnet: spec.pod_cidr.to_string(),
            service_subnet: spec.service_cidr().to_string(),
        },
        etcd: Etcd {
            local: LocalEtcd {
                data_dir: spec.etcd_data_dir.display().to_string(),
            },
        },
        api_server: ApiServer {
            cert_sans: spec
                .pki
                .extra_sans
                .iter()
                .map(|s| s.host().to_string())
                .collect(),
        },
    })
}

/// Whether the API servers' certificates name
/// [`NODE_LOCAL_API_ADDRESS`]: `kprov init` lists it in certSANs, which
/// every master joining later (kprov's or kubeadm's) puts in its own. False
/// for what does not parse.
pub fn names_node_local_address(config_yaml: &str) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Read {
        #[serde(default)]
        api_server: ReadApiServer,
    }
    serde_yaml::from_str::<Read>(config_yaml).is_ok_and(|r| {
        r.api_server
            .cert_sans
            .iter()
            .any(|s| s == NODE_LOCAL_API_ADDRESS)
    })
}

/// ClusterConfiguration as a master that joins reads it back (kubeadm's
/// or kprov's): what it needs to make the same control plane. Fields
/// kubeadm may leave out take kubeadm's defaults.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadClusterConfiguration {
    #[serde(default)]
    kind: String,
    kubernetes_version: String,
    #[serde(default)]
    control_plane_endpoint: String,
    #[serde(default)]
    certificates_dir: String,
    #[serde(default)]
    image_repository: String,
    #[serde(default)]
    networking: ReadNetworking,
    #[serde(default)]
    etcd: ReadEtcd,
    #[serde(default)]
    api_server: ReadApiServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadNetworking {
    #[serde(default)]
    dns_domain: String,
    #[serde(default)]
    pod_subnet: String,
    #[serde(default)]
    service_subnet: String,
}

#[derive(Debug, Default, Deserialize)]
struct ReadEtcd {
    #[serde(default)]
    local: Option<ReadLocalEtcd>,
    #[serde(default)]
    external: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadLocalEtcd {
    #[serde(default)]
    data_dir: String,
}

#[derive(Debug, Default, Deserialize)]
struct ReadApiServer {
    #[serde(rename = "certSANs", default)]
    cert_sans: Vec<String>,
}

/// The cluster a master joins, from the ClusterConfiguration in
/// kubeadm-config, for `node` (this master: its name and address; the
/// Kubernetes version and control-plane endpoint are the cluster's).
/// Errors name the field and what was expected.
pub fn joining_spec(config_yaml: &str, node: ControlPlaneNode) -> Result<ClusterSpec, String> {
    let read: ReadClusterConfiguration = serde_yaml::from_str(config_yaml)
        .map_err(|e| format!("ClusterConfiguration in {NS}/{KUBEADM_CONFIG}: {e}"))?;
    if !read.kind.is_empty() && read.kind != "ClusterConfiguration" {
        return Err(format!(
            "{NS}/{KUBEADM_CONFIG}: expected kind ClusterConfiguration, found {}",
            read.kind
        ));
    }
    if read.etcd.external.is_some() {
        return Err(format!(
            "{NS}/{KUBEADM_CONFIG}: the cluster uses an external etcd; kprov joins masters to stacked etcd only"
        ));
    }
    let field = |name: &str, e: &dyn std::fmt::Display| {
        format!("ClusterConfiguration in {NS}/{KUBEADM_CONFIG}: {name}: {e}")
    };
    let mut node = node;
    node.kubernetes_version = read
        .kubernetes_version
        .parse()
        .map_err(|e| field("kubernetesVersion", &e))?;
    node.control_plane_endpoint = match read.control_plane_endpoint.as_str() {
        "" => None,
        ep => Some(ep.parse().map_err(|e| field("controlPlaneEndpoint", &e))?),
    };
    let mut pki = kprov_pki::spec::PkiSpec::new(node);
    if !read.networking.service_subnet.is_empty() {
        pki.service_cidr = read
            .networking
            .service_subnet
            .parse()
            .map_err(|e| field("networking.serviceSubnet", &e))?;
    }
    if !read.networking.dns_domain.is_empty() {
        pki.cluster_domain = read
            .networking
            .dns_domain
            .parse()
            .map_err(|e| field("networking.dnsDomain", &e))?;
    }
    pki.extra_sans = read
        .api_server
        .cert_sans
        .iter()
        .map(|san| san.parse().map_err(|e| field("apiServer.certSANs", &e)))
        .collect::<Result<_, _>>()?;
    let mut spec = ClusterSpec::new(pki);
    if !read.networking.pod_subnet.is_empty() {
        spec.pod_cidr = read
            .networking
            .pod_subnet
            .parse()
            .map_err(|e| field("networking.podSubnet", &e))?;
    }
    if !read.image_repository.is_empty() {
        spec.image_registry = read.image_repository;
    }
    if !read.certificates_dir.is_empty() {
        spec.cert_dir = read.certificates_dir.into();
    }
    if let Some(local) = read.etcd.local.filter(|l| !l.data_dir.is_empty()) {
        spec.etcd_data_dir = local.data_dir.into();
    }
    Ok(spec)
}

/// ClusterStatus (kubeadm before v1.22): every control-plane node's API
/// endpoint, `existing`'s (the ConfigMap's, when there is one) with this
/// node's added or updated. None from v1.22, where kubeadm reads the
/// endpoints from the API server pods' annotation instead.
pub fn cluster_status(spec: &ClusterSpec, existing: Option<&str>) -> Option<String> {
    let node = spec.node();
    if node.kubernetes_version.at_least(1, 22) {
        return None;
    }
    let mut endpoints = existing.map(api_endpoints).unwrap_or_default();
    endpoints.insert(
        node.node_name.to_string(),
        ApiEndpoint {
            advertise_address: node.advertise_address.ip().to_string(),
            bind_port: node.bind_port,
        },
    );
    Some(yaml(&ClusterStatus {
        api_version: kubeadm_api_version(&node.kubernetes_version),
        kind: "ClusterStatus",
        api_endpoints: endpoints,
    }))
}

/// kubeadm-config as read (`data`) with `status` as its ClusterStatus:
/// the whole ConfigMap, since an apply drops the keys kprov manages and
/// leaves out.
pub fn with_cluster_status(
    mut data: BTreeMap<String, String>,
    status: String,
) -> crate::objects::ApiPlan {
    data.insert("ClusterStatus".into(), status);
    let mut plan = crate::objects::ApiPlan::new("kubeadm-config's ClusterStatus");
    plan.extend([config_map(KUBEADM_CONFIG, data)]);
    plan
}

/// `existing` ClusterStatus without `node`'s endpoint (a master that
/// leaves); None when it lists no such node.
pub fn cluster_status_without(existing: &str, node: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        #[serde(default)]
        api_version: String,
    }
    let mut endpoints = api_endpoints(existing);
    endpoints.remove(node)?;
    let api_version = serde_yaml::from_str::<Head>(existing)
        .map(|h| h.api_version)
        .unwrap_or_default();
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("apiVersion".into(), api_version.into());
    doc.insert("kind".into(), "ClusterStatus".into());
    doc.insert(
        "apiEndpoints".into(),
        serde_yaml::to_value(&endpoints).unwrap_or_else(|_| unreachable!("plain data serializes")),
    );
    Some(yaml(&doc))
}

/// The endpoints a ClusterStatus lists; none for what does not parse (it
/// is then rewritten from what this node knows).
fn api_endpoints(status: &str) -> BTreeMap<String, ApiEndpoint> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Read {
        #[serde(default)]
        api_endpoints: BTreeMap<String, ApiEndpoint>,
    }
    serde_yaml::from_str::<Read>(status)
        .map(|r| r.api_endpoints)
        .unwrap_or_default()
}

/// A role that may get one ConfigMap in kube-system, bound to the nodes
/// and the default node-token group, both named `role`.
fn readable_by_nodes(role: &str, config_map: &str) -> (Role, RoleBinding) {
    config_map_reader(
        role,
        NS,
        config_map,
        vec![group("system:nodes"), group(DEFAULT_NODE_GROUP)],
    )
}

fn config_map(name: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, Some(NS)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The upload-config objects for `spec`; `kubelet_config` is the
/// KubeletConfiguration (YAML) nodes that join with kubeadm get;
/// `existing_status` the ClusterStatus kubeadm-config holds already
/// (other masters' endpoints, which stay).
pub fn upload_config(
    spec: &ClusterSpec,
    kubelet_config: &str,
    existing_status: Option<&str>,
) -> UploadConfig {
    let version = &spec.node().kubernetes_version;
    let mut kubeadm = BTreeMap::from([(
        "ClusterConfiguration".to_string(),
        cluster_configuration(spec),
    )]);
    if let Some(status) = cluster_status(spec, existing_status) {
        kubeadm.insert("ClusterStatus".into(), status);
    }
    let kubelet_name = kubelet_config_map_name(version);
    let kubelet = BTreeMap::from([("kubelet".to_string(), kubelet_config.to_string())]);
    let (kubeadm_role, kubeadm_binding) =
        readable_by_nodes("kubeadm:nodes-kubeadm-config", KUBEADM_CONFIG);
    let (kubelet_role, kubelet_binding) =
        readable_by_nodes(&format!("kubeadm:{kubelet_name}"), &kubelet_name);
    UploadConfig {
        config_maps: vec![
            config_map(KUBEADM_CONFIG, kubeadm),
            config_map(&kubelet_name, kubelet),
        ],
        roles: vec![kubeadm_role, kubelet_role],
        role_bindings: vec![kubeadm_binding, kubelet_binding],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kprov_pki::{ControlPlaneNode, PkiSpec};

    fn spec(version: &str, endpoint: Option<&str>) -> ClusterSpec {
        let mut node = ControlPlaneNode::new(
            "master-1".parse().unwrap(),
            "10.0.0.10".parse().unwrap(),
            version.parse().unwrap(),
        );
        node.control_plane_endpoint = endpoint.map(|e| e.parse().unwrap());
        let mut pki = PkiSpec::new(node);
        pki.extra_sans = vec!["api.example.com".parse().unwrap()];
        ClusterSpec::new(pki)
    }

    fn parsed(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn names_and_api_versions_follow_the_release() {
        for (version, api, kubelet, status) in [
            (
                "v1.20.2",
                "kubeadm.k8s.io/v1beta2",
                "kubelet-config-1.20",
                true,
            ),
            (
                "v1.21.0",
                "kubeadm.k8s.io/v1beta2",
                "kubelet-config-1.21",
                true,
            ),
            (
                "v1.22.0",
                "kubeadm.k8s.io/v1beta3",
                "kubelet-config-1.22",
                false,
            ),
            (
                "v1.23.5",
                "kubeadm.k8s.io/v1beta3",
                "kubelet-config-1.23",
                false,
            ),
            ("v1.24.0", "kubeadm.k8s.io/v1beta3", "kubelet-config", false),
            ("v1.31.0", "kubeadm.k8s.io/v1beta4", "kubelet-config", false),
        ] {
            let s = spec(version, None);
            let up = upload_config(&s, "kind: KubeletConfiguration\n", None);
            let names: Vec<_> = up
                .config_maps
                .iter()
                .map(|c| c.metadata.name.clone().unwrap())
                .collect();
            assert_eq!(names, ["kubeadm-config", kubelet], "{version}");
            let data = up.config_maps[0].data.as_ref().unwrap();
            let config = parsed(&data["ClusterConfiguration"]);
            assert_eq!(config["apiVersion"].as_str(), Some(api), "{version}");
            assert_eq!(config["kubernetesVersion"].as_str(), Some(version));
            assert_eq!(data.contains_key("ClusterStatus"), status, "{version}");
            let role = format!("kubeadm:{kubelet}");
            assert_eq!(up.roles[1].metadata.name.as_deref(), Some(role.as_str()));
            assert_eq!(
                up.roles[1].rules.as_ref().unwrap()[0].resource_names,
                Some(vec![kubelet.to_string()])
            );
        }
    }

    #[test]
    fn the_cluster_configuration_carries_the_spec() {
        let s = spec("v1.20.2", Some("lb.example.com:8443"));
        let config = parsed(&cluster_configuration(&s));
        assert_eq!(config["kind"].as_str(), Some("ClusterConfiguration"));
        assert_eq!(
            config["controlPlaneEndpoint"].as_str(),
            Some("lb.example.com:8443")
        );
        assert_eq!(
            config["networking"]["podSubnet"].as_str(),
            Some("10.244.0.0/16")
        );
        assert_eq!(
            config["networking"]["serviceSubnet"].as_str(),
            Some("10.96.0.0/12")
        );
        assert_eq!(
            config["networking"]["dnsDomain"].as_str(),
            Some("cluster.local")
        );
        assert_eq!(
            config["certificatesDir"].as_str(),
            Some("/etc/kubernetes/pki")
        );
        assert_eq!(config["imageRepository"].as_str(), Some("k8s.gcr.io"));
        assert_eq!(
            config["etcd"]["local"]["dataDir"].as_str(),
            Some("/var/lib/etcd")
        );
        assert_eq!(
            config["apiServer"]["certSANs"][0].as_str(),
            Some("api.example.com")
        );
        // Without an endpoint there is none (kubeadm then uses the
        // advertise address).
        let plain = parsed(&cluster_configuration(&spec("v1.20.2", None)));
        assert!(plain.get("controlPlaneEndpoint").is_none(), "{plain:?}");
    }

    #[test]
    fn the_cluster_status_names_this_node_and_its_endpoint() {
        let status = parsed(&cluster_status(&spec("v1.20.2", None), None).unwrap());
        assert_eq!(status["kind"].as_str(), Some("ClusterStatus"));
        let endpoint = &status["apiEndpoints"]["master-1"];
        assert_eq!(endpoint["advertiseAddress"].as_str(), Some("10.0.0.10"));
        assert_eq!(endpoint["bindPort"].as_u64(), Some(6443));
    }

    #[test]
    fn masters_join_and_leave_the_cluster_status_and_others_stay() {
        let first = cluster_status(&spec("v1.20.2", None), None).unwrap();
        let mut second = spec("v1.20.2", None);
        second.pki.node.node_name = "master-2".parse().unwrap();
        second.pki.node.advertise_address = "10.0.0.11".parse().unwrap();
        let both = cluster_status(&second, Some(&first)).unwrap();
        let doc = parsed(&both);
        assert_eq!(
            doc["apiEndpoints"]["master-1"]["advertiseAddress"].as_str(),
            Some("10.0.0.10")
        );
        assert_eq!(
            doc["apiEndpoints"]["master-2"]["advertiseAddress"].as_str(),
            Some("10.0.0.11")
        );
        // Again (a re-run, or master 1's init re-run): the same document.
        assert_eq!(cluster_status(&second, Some(&both)).unwrap(), both);
        assert_eq!(
            parsed(&cluster_status(&spec("v1.20.2", None), Some(&both)).unwrap()),
            doc
        );
        // Master 2 leaves: master 1 stays, with the document's apiVersion.
        let left = parsed(&cluster_status_without(&both, "master-2").unwrap());
        assert!(left["apiEndpoints"].get("master-2").is_none(), "{left:?}");
        assert_eq!(
            left["apiEndpoints"]["master-1"]["bindPort"].as_u64(),
            Some(6443)
        );
        assert_eq!(left["apiVersion"], doc["apiVersion"]);
        assert_eq!(left["kind"].as_str(), Some("ClusterStatus"));
        assert!(cluster_status_without(&both, "master-9").is_none());
        // Unreadable: rewritten with this node only.
        let fresh = parsed(&cluster_status(&second, Some("apiEndpoints: [")).unwrap());
        assert_eq!(fresh["apiEndpoints"].as_mapping().unwrap().len(), 1);
    }

    #[test]
    fn only_nodes_and_bootstrap_tokens_may_read_the_two_config_maps() {
        let up = upload_config(&spec("v1.20.2", None), "", None);
        for (role, binding) in up.roles.iter().zip(&up.role_bindings) {
            assert_eq!(role.metadata.name, binding.metadata.name);
            assert_eq!(binding.role_ref.kind, "Role");
            let rules = role.rules.as_ref().unwrap();
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].verbs, ["get"]);
            assert_eq!(rules[0].resources, Some(vec!["configmaps".to_string()]));
            let groups: Vec<_> = binding
                .subjects
                .as_ref()
                .unwrap()
                .iter()
                .map(|s| (s.kind.as_str(), s.name.as_str()))
                .collect();
            assert_eq!(
                groups,
                [
                    ("Group", "system:nodes"),
                    ("Group", "system:bootstrappers:kubeadm:default-node-token")
                ]
            );
        }
        let kubelet = up.config_maps[1].data.as_ref().unwrap();
        assert_eq!(kubelet.keys().collect::<Vec<_>>(), ["kubelet"]);
    }

    #[test]
    fn a_joining_master_reads_back_the_cluster_init_uploaded_for_itself() {
        let mut first = spec("v1.20.2", Some("api.example.com:6443"));
        first.pod_cidr = "10.32.0.0/16".parse().unwrap();
        first.pki.service_cidr = "10.100.0.0/16".parse().unwrap();
        first.image_registry = "registry.example/k8s".into();
        first.etcd_data_dir = "/data/etcd".into();
        let uploaded = cluster_configuration(&first);
        let me = ControlPlaneNode::new(
            "master-2".parse().unwrap(),
            "10.0.0.11".parse().unwrap(),
            "v1.19.0".parse().unwrap(),
        );
        let joined = joining_spec(&uploaded, me).unwrap();
        assert_eq!(joined.node().node_name.as_str(), "master-2");
        assert_eq!(
            joined.node().advertise_address.ip().to_string(),
            "10.0.0.11"
        );
        assert_eq!(joined.node().kubernetes_version.to_string(), "v1.20.2");
        assert_eq!(
            joined.node().control_plane_endpoint,
            first.node().control_plane_endpoint
        );
        assert_eq!(joined.pod_cidr.to_string(), "10.32.0.0/16");
        assert_eq!(joined.service_cidr().to_string(), "10.100.0.0/16");
        assert_eq!(joined.image_registry, "registry.example/k8s");
        assert_eq!(joined.etcd_data_dir, first.etcd_data_dir);
        assert_eq!(joined.pki.extra_sans, first.pki.extra_sans);
        // Everything that names the cluster, not the node, is the same.
        assert_eq!(cluster_configuration(&joined), uploaded);
    }

    #[test]
    fn workers_see_whether_the_certificates_name_the_node_local_address() {
        let mut spec = spec("v1.20.2", None);
        spec.pki.extra_sans = vec!["api.example.com".parse().unwrap()];
        assert!(!names_node_local_address(&cluster_configuration(&spec)));
        spec.name_node_local_address();
        spec.name_node_local_address();
        assert_eq!(spec.pki.extra_sans.len(), 2, "named once");
        let uploaded = cluster_configuration(&spec);
        assert!(names_node_local_address(&uploaded));
        // kubeadm's own, without certSANs, and what does not parse.
        assert!(!names_node_local_address(
            "kind: ClusterConfiguration\nkubernetesVersion: v1.20.2\n"
        ));
        assert!(!names_node_local_address("apiServer: [\n"));
    }

    #[test]
    fn an_unusable_cluster_configuration_is_named() {
        let me = || {
            ControlPlaneNode::new(
                "m".parse().unwrap(),
                "10.0.0.11".parse().unwrap(),
                "v1.20.2".parse().unwrap(),
            )
        };
        let e = joining_spec(
            "kind: ClusterConfiguration\nkubernetesVersion: 1.20\n",
            me(),
        )
        .unwrap_err();
        assert!(e.contains("kubernetesVersion"), "{e}");
        let e = joining_spec(
            "kubernetesVersion: v1.20.2\netcd:\n  external:\n    endpoints: [https://e:2379]\n",
            me(),
        )
        .unwrap_err();
        assert!(e.contains("external etcd"), "{e}");
        let e = joining_spec(
            "kubernetesVersion: v1.20.2\nnetworking:\n  podSubnet: nope\n",
            me(),
        )
        .unwrap_err();
        assert!(e.contains("networking.podSubnet"), "{e}");
    }
}
