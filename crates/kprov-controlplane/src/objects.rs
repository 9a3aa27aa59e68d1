//! API plans: the typed objects a phase sends to the API server, in apply
//! order. Pure: the thin layer (kprov-kube) applies them server-side and
//! reports each with kprov-plan's `Outcome`, or with `--dry-run` says
//! what would change.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::addons::Addons;
use crate::bootstrap::BootstrapRbac;
use crate::kubeadm_config::UploadConfig;

/// One object of an API plan.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiObject {
    /// A custom resource definition.
    CustomResourceDefinition(CustomResourceDefinition),
    /// A cluster role.
    ClusterRole(ClusterRole),
    /// A cluster role binding.
    ClusterRoleBinding(ClusterRoleBinding),
    /// A role.
    Role(Role),
    /// A role binding.
    RoleBinding(RoleBinding),
    /// A config map.
    ConfigMap(ConfigMap),
    /// A service account.
    ServiceAccount(ServiceAccount),
    /// A service.
    Service(Service),
    /// A deployment.
    Deployment(Deployment),
    /// A daemon set.
    DaemonSet(DaemonSet),
}

impl ApiObject {
    /// The object's kind, e.g. `ConfigMap`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CustomResourceDefinition(_) => "CustomResourceDefinition",
            Self::ClusterRole(_) => "ClusterRole",
            Self::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Self::Role(_) => "Role",
            Self::RoleBinding(_) => "RoleBinding",
            Self::ConfigMap(_) => "ConfigMap",
            Self::ServiceAccount(_) => "ServiceAccount",
            Self::Service(_) => "Service",
            Self::Deployment(_) => "Deployment",
            Self::DaemonSet(_) => "DaemonSet",
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::CustomResourceDefinition(o) => &o.metadata,
            Self::ClusterRole(o) => &o.metadata,
            Self::ClusterRoleBinding(o) => &o.metadata,
            Self::Role(o) => &o.metadata,
            Self::RoleBinding(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
            Self::DaemonSet(o) => &o.metadata,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// Its namespace; None for cluster-scoped kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The object as a YAML document (with its apiVersion and kind), for
    /// `kubectl apply -f`.
    pub fn to_yaml(&self) -> String {
        let text = match self {
            Self::CustomResourceDefinition(o) => serde_yaml::to_string(o),
            Self::ClusterRole(o) => serde_yaml::to_string(o),
            Self::ClusterRoleBinding(o) => serde_yaml::to_string(o),
            Self::Role(o) => serde_yaml::to_string(o),
            Self::RoleBinding(o) => serde_yaml::to_string(o),
            Self::ConfigMap(o) => serde_yaml::to_string(o),
            Self::ServiceAccount(o) => serde_yaml::to_string(o),
            Self::Service(o) => serde_yaml::to_string(o),
            Self::Deployment(o) => serde_yaml::to_string(o),
            Self::DaemonSet(o) => serde_yaml::to_string(o),
        };
        text.unwrap_or_else(|e| unreachable!("API objects always serialize: {e}"))
    }

    /// `Kind/namespace/name` or `Kind/name`, as reports name it.
    pub fn label(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{ns}/{}", self.kind(), self.name()),
            None => format!("{}/{}", self.kind(), self.name()),
        }
    }
}

macro_rules! from_typed {
    ($($kind:ident),*) => {$(
        impl From<$kind> for ApiObject {
            fn from(o: $kind) -> Self {
                Self::$kind(o)
            }
        }
    )*};
}
from_typed!(
    CustomResourceDefinition,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    ConfigMap,
    ServiceAccount,
    Service,
    Deployment,
    DaemonSet
);

/// Objects to apply server-side, in order, and what they are for.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiPlan {
    /// What the plan is for: "bootstrap RBAC and cluster-info", "add-ons".
    pub headline: String,
    /// The objects, in apply order (what others refer to first).
    pub objects: Vec<ApiObject>,
}

impl ApiPlan {
    /// An empty plan for `headline`.
    pub fn new(headline: impl Into<String>) -> Self {
        Self {
            headline: headline.into(),
            objects: Vec::new(),
        }
    }

    /// Appends objects of one kind.
    pub fn extend<T: Into<ApiObject>>(&mut self, objects: impl IntoIterator<Item = T>) {
        self.objects.extend(objects.into_iter().map(Into::into));
    }

    /// The labels of its objects, in order.
    pub fn labels(&self) -> Vec<String> {
        self.objects.iter().map(ApiObject::label).collect()
    }
}

impl Addons {
    /// The add-ons as an API plan: service accounts and RBAC first.
    pub fn into_plan(self) -> ApiPlan {
        let mut plan = ApiPlan::new("add-ons: kube-proxy, CoreDNS and the pod network");
        plan.extend(self.service_accounts);
        plan.extend(self.cluster_roles);
        plan.extend(self.cluster_role_bindings);
        plan.extend(self.config_maps);
        plan.extend(self.services);
        plan.extend(self.deployments);
        plan.extend(self.daemon_sets);
        plan
    }
}

impl BootstrapRbac {
    /// The bootstrap RBAC and then `cluster_info` as an API plan.
    pub fn into_plan(self, cluster_info: ConfigMap) -> ApiPlan {
        let mut plan = ApiPlan::new("bootstrap RBAC and cluster-info");
        plan.extend(self.cluster_roles);
        plan.extend(self.cluster_role_bindings);
        plan.extend(self.roles);
        plan.extend(self.role_bindings);
        plan.extend([cluster_info]);
        plan
    }
}

impl UploadConfig {
    /// What `kubeadm join` reads, then the roles that let nodes read it.
    pub fn into_plan(self) -> ApiPlan {
        let mut plan = ApiPlan::new("kubeadm-config and the kubelet's configuration");
        plan.extend(self.config_maps);
        plan.extend(self.roles);
        plan.extend(self.role_bindings);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_kind_namespace_and_name() {
        let mut plan = ApiPlan::new("test");
        plan.extend([ConfigMap {
            metadata: ObjectMeta {
                name: Some("cluster-info".into()),
                namespace: Some("kube-public".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }]);
        plan.extend([ClusterRole {
            metadata: ObjectMeta {
                name: Some("kubeadm:get-nodes".into()),
                ..ObjectMeta::default()
            },
            ..ClusterRole::default()
        }]);
        assert_eq!(
            plan.labels(),
            [
                "ConfigMap/kube-public/cluster-info",
                "ClusterRole/kubeadm:get-nodes"
            ]
        );
    }

    #[test]
    fn the_bootstrap_plan_puts_rbac_before_cluster_info() {
        let rbac = crate::bootstrap::bootstrap_rbac();
        let info = crate::bootstrap::cluster_info(
            &crate::bootstrap::cluster_info_kubeconfig("https://10.0.0.1:6443", b"CA"),
            &[],
        );
        let plan = rbac.into_plan(info);
        assert_eq!(
            plan.objects.last().map(ApiObject::label).as_deref(),
            Some("ConfigMap/kube-public/cluster-info")
        );
        assert!(plan
            .objects
            .iter()
            .any(|o| o.kind() == "ClusterRoleBinding"));
    }
}
