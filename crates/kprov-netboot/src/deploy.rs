//! Netboot as a workload of the cluster it serves (`kprov netboot
//! deploy`): the Machine definition, a service account whose rights are
//! limited to what the server does (Machines and their status, Nodes
//! read, its Lease, the bootstrap-token Secrets it makes and the
//! cluster-info it signs them into), the config file in a ConfigMap, and
//! a host-network DaemonSet on the nodes of the machines' network
//! (masters by default) running the image that holds the static kprov.
//! Every replica binds its own node's address (the downward API's
//! status.hostIP); their Lease lets one answer DHCP at a time.
//!
//! Pure: [`plan`] turns a [`DeploySpec`] into an API plan that kprov-kube
//! applies server-side.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, HTTPGetAction, HostPathVolumeSource,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, ServiceAccount,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kprov_controlplane::addons::{field_env, meta, selector};
use kprov_controlplane::objects::ApiPlan;
use kube::CustomResourceExt;

use crate::config::Config;
use crate::crd::MachineResource;

/// The name of every object netboot's deployment makes.
pub const NAME: &str = "kprov-netboot";

/// Where the config file is mounted in the pod.
pub const CONFIG_DIR: &str = "/etc/kprov/netboot";

/// The config file's name in the ConfigMap and the mount.
pub const CONFIG_FILE: &str = "netboot.yaml";

/// Where the image keeps kprov.
pub const BINARY: &str = "/usr/local/bin/kprov";

/// The namespace bootstrap tokens live in.
const TOKENS_NAMESPACE: &str = "kube-system";

/// What the deployment is made from.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    /// The namespace of the workload, its config and its Lease.
    pub namespace: String,
    /// The image holding the static kprov at [`BINARY`].
    pub image: String,
    /// The config file's text, as checked by [`check_config`].
    pub config_text: String,
    /// The HTTP port (the readiness probe's).
    pub http_port: u16,
    /// The host directory under which the roots and the state directory
    /// lie, mounted at the same path.
    pub data_dir: String,
    /// The nodes it runs on.
    pub node_selector: BTreeMap<String, String>,
}

/// Why a config cannot run in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DeployError {
    /// The config key.
    pub field: String,
    /// Why, and what is expected.
    pub reason: String,
}

/// Checks that `config` can run as the pod: Machines come from the
/// cluster (no machinesDir), and the roots and state directory are
/// absolute paths under `data_dir`, the host directory the pod mounts.
pub fn check_config(text: &str, config: &Config, data_dir: &str) -> Result<(), DeployError> {
    let written: RawPaths = serde_yaml::from_str(text).map_err(|e| DeployError {
        field: "(document)".into(),
        reason: e.to_string(),
    })?;
    if config.machines_dir.is_some() {
        return Err(DeployError {
            field: "machinesDir".into(),
            reason: "in the cluster, Machines are machines.kprov.dev objects: leave it out".into(),
        });
    }
    for (field, written) in [
        ("tftpRoot", &written.tftp_root),
        ("httpRoot", &written.http_root),
        ("stateDir", &written.state_dir),
    ] {
        let path = Path::new(written);
        if !path.is_absolute() || !path.starts_with(data_dir) {
            return Err(DeployError {
                field: field.into(),
                reason: format!(
                    "{written:?} is not under --data-dir {data_dir:?}: the pod sees the host's {data_dir} only (e.g. {data_dir}/{})",
                    field.trim_end_matches("Root").trim_end_matches("Dir").to_lowercase()
                ),
            });
        }
    }
    Ok(())
}

/// The paths of a config file as written (before they are made relative
/// to the file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPaths {
    tftp_root: String,
    http_root: String,
    state_dir: String,
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(list(groups)),
        resources: Some(list(resources)),
        verbs: list(verbs),
        ..PolicyRule::default()
    }
}

fn named(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
    rule.resource_names = Some(names.iter().map(|s| s.to_string()).collect());
    rule
}

fn binding_subjects(namespace: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    }]
}

fn role_ref(kind: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: NAME.into(),
    }
}

/// A Role and its binding to the service account, in `namespace`.
fn role(namespace: &str, sa_namespace: &str, rules: Vec<PolicyRule>) -> (Role, RoleBinding) {
    (
        Role {
            metadata: meta(NAME, Some(namespace), &[]),
            rules: Some(rules),
        },
        RoleBinding {
            metadata: meta(NAME, Some(namespace), &[]),
            role_ref: role_ref("Role"),
            subjects: Some(binding_subjects(sa_namespace)),
        },
    )
}

/// The objects, in apply order.
pub fn plan(spec: &DeploySpec) -> ApiPlan {
    let ns = spec.namespace.as_str();
    let mut plan = ApiPlan::new("netboot in the cluster");
    plan.extend([MachineResource::crd()]);
    plan.extend([ServiceAccount {
        metadata: meta(NAME, Some(ns), &[]),
        ..ServiceAccount::default()
    }]);
    plan.extend([ClusterRole {
        metadata: meta(NAME, None, &[]),
        rules: Some(vec![
            rule(&["kprov.dev"], &["machines"], &["get", "list", "watch"]),
            rule(
                &["kprov.dev"],
                &["machines/status"],
                &["get", "patch", "update"],
            ),
            rule(&[""], &["nodes"], &["get", "list", "watch"]),
        ]),
        ..ClusterRole::default()
    }]);
    plan.extend([ClusterRoleBinding {
        metadata: meta(NAME, None, &[]),
        role_ref: role_ref("ClusterRole"),
        subjects: Some(binding_subjects(ns)),
    }]);
    // The Lease in the workload's namespace; the token Secrets in
    // kube-system (a Role cannot name Secrets not made yet, so it covers
    // that namespace's Secrets: the server reads only bootstrap tokens).
    let lease = rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update"],
    );
    let secrets = rule(&[""], &["secrets"], &["get", "list", "create", "delete"]);
    let mut roles = Vec::new();
    if ns == TOKENS_NAMESPACE {
        roles.push(role(ns, ns, vec![lease, secrets]));
    } else {
        roles.push(role(ns, ns, vec![lease]));
        roles.push(role(TOKENS_NAMESPACE, ns, vec![secrets]));
    }
    // Reading the cluster's address and CA, and signing its tokens into
    // cluster-info.
    roles.push(role(
        "kube-public",
        ns,
        vec![named(
            rule(&[""], &["configmaps"], &["get", "patch", "update"]),
            &["cluster-info"],
        )],
    ));
    let (roles, bindings): (Vec<Role>, Vec<RoleBinding>) = roles.into_iter().unzip();
    plan.extend(roles);
    plan.extend(bindings);
    plan.extend([ConfigMap {
        metadata: meta(NAME, Some(ns), &[]),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            spec.config_text.clone(),
        )])),
        ..ConfigMap::default()
    }]);
    plan.extend([daemon_set(spec)]);
    plan
}

fn daemon_set(spec: &DeploySpec) -> DaemonSet {
    let labels = BTreeMap::from([("app".to_string(), NAME.to_string())]);
    let args: Vec<String> = [
        "--log-level",
        "info",
        "netboot",
        "serve",
        "--config",
        &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        "--machines",
        "kubernetes",
        "--lease-namespace",
        &spec.namespace,
        "--server-address",
        "$(HOST_IP)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let toleration = |key: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    };
    let container = Container {
        name: NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![BINARY.into()]),
        args: Some(args),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("HOST_IP", "status.hostIP"),
        ]),
        // DHCP, TFTP and HTTP on the node's ports (below 1024 by
        // default), sockets bound to the interface, and the raw ICMPv6
        // socket of the router advertisement.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            capabilities: Some(Capabilities {
                add: Some(vec![
                    "NET_ADMIN".into(),
                    "NET_RAW".into(),
                    "NET_BIND_SERVICE".into(),
                ]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".into()),
                port: IntOrString::Int(i32::from(spec.http_port)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("32Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: spec.data_dir.clone(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    DaemonSet {
        metadata: meta(NAME, Some(&spec.namespace), &[("app", NAME)]),
        spec: Some(DaemonSetSpec {
            selector: selector(&labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    node_selector: Some(spec.node_selector.clone()),
                    tolerations: Some(vec![
                        toleration("node-role.kubernetes.io/master"),
                        toleration("node-role.kubernetes.io/control-plane"),
                    ]),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: NAME.into(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "data".into(),
                            host_path: Some(HostPathVolumeSource {
                                path: spec.data_dir.clone(),
                                type_: Some("DirectoryOrCreate".into()),
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CONFIG: &str = "mode: full\ninterface: eth0\nserverAddress: 10.77.0.1\nsubnet: 10.77.0.0/24\ntftpRoot: /var/lib/kprov/netboot/tftp\nhttpRoot: /var/lib/kprov/netboot/http\nstateDir: /var/lib/kprov/netboot/state\n";

    fn spec(namespace: &str) -> DeploySpec {
        DeploySpec {
            namespace: namespace.into(),
            image: "kprov.dev/kprov:test".into(),
            config_text: CONFIG.into(),
            http_port: 80,
            data_dir: "/var/lib/kprov/netboot".into(),
            node_selector: BTreeMap::from([(
                "node-role.kubernetes.io/master".to_string(),
                String::new(),
            )]),
        }
    }

    #[test]
    fn the_plan_defines_machines_then_limited_rights_then_the_host_network_daemon_set() {
        let plan = plan(&spec("kube-system"));
        assert_eq!(
            plan.labels(),
            [
                "CustomResourceDefinition/machines.kprov.dev",
                "ServiceAccount/kube-system/kprov-netboot",
                "ClusterRole/kprov-netboot",
                "ClusterRoleBinding/kprov-netboot",
                "Role/kube-system/kprov-netboot",
                "Role/kube-public/kprov-netboot",
                "RoleBinding/kube-system/kprov-netboot",
                "RoleBinding/kube-public/kprov-netboot",
                "ConfigMap/kube-system/kprov-netboot",
                "DaemonSet/kube-system/kprov-netboot",
            ]
        );
        // In another namespace, the token Secrets keep a Role of their own
        // in kube-system.
        let other = super::plan(&spec("netboot"));
        assert!(other
            .labels()
            .contains(&"Role/kube-system/kprov-netboot".to_string()));
        let ds = other
            .objects
            .iter()
            .find_map(|o| match o {
                kprov_controlplane::objects::ApiObject::DaemonSet(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        let pod = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(
            args.ends_with(
                "--machines kubernetes --lease-namespace netboot --server-address $(HOST_IP)"
            ),
            "{args}"
        );
    }

    #[test]
    fn a_config_that_cannot_run_in_the_pod_is_refused_naming_the_key() {
        let check = |text: &str| {
            let config = Config::parse(Path::new("/etc/netboot.yaml"), text).unwrap();
            check_config(text, &config, "/var/lib/kprov/netboot")
        };
        assert_eq!(check(CONFIG), Ok(()));
        let e = check(&CONFIG.replace("/var/lib/kprov/netboot/http", "http")).unwrap_err();
        assert_eq!(e.field, "httpRoot");
        assert!(e.reason.contains("is not under --data-dir"), "{e}");
        let e = check(&format!("{CONFIG}machinesDir: /srv/machines\n")).unwrap_err();
        assert_eq!(e.field, "machinesDir");
    }
}
