//! The control plane kprov bootstraps, the way kubeadm does: static pods
//! for etcd and the Kubernetes control-plane components, bootstrap tokens,
//! the RBAC and `cluster-info` that let nodes join with a token, and the
//! phases of `kprov init`.
//!
//! Layout, pure first:
//!
//! - [`spec`]: validated inputs ([`spec::ClusterSpec`]): ranges that must
//!   not overlap, the pod network, where images come from;
//! - [`manifests`]: the static pods as typed Pod objects;
//! - [`token`]: bootstrap token Secrets, TTLs, usages, groups;
//! - [`jws`]: cluster-info's detached HS256 signatures;
//! - [`addons`]: kube-proxy, CoreDNS and flannel as typed objects;
//! - [`bootstrap`]: the bootstrap RBAC and the cluster-info ConfigMap, and
//!   its verification by a joining node;
//! - [`kubeadm_config`]: what `kubeadm join` reads from the cluster;
//! - [`copy_certs`]: the shared CAs and service-account keys, sealed
//!   with the certificate key into `kubeadm-certs` for new masters;
//! - [`diagnose`]: why a control plane did not come up, from node facts;
//! - [`etcd`]: stacked etcd's membership: joining as a learner, the
//!   initial cluster, quorum when a member leaves;
//! - [`discovery`]: which CA a joining node trusts (pins, token
//!   discovery) and why a join failed;
//! - [`objects`]: API plans, the typed objects a phase applies, in order;
//! - [`store`]: the static pods as a host plan under a root.
//!
//! Nothing here talks to the API server: kprov-kube applies the API plans
//! and reads the cluster, and kprov-workflow runs `kprov init` and the
//! join phase as tables of phases over both.

pub mod addons;
pub mod bootstrap;
pub mod copy_certs;
pub mod diagnose;
pub mod discovery;
pub mod etcd;
pub mod jws;
pub mod kubeadm_config;
pub mod manifests;
pub mod objects;
pub mod pod_ranges;
pub mod spec;
pub mod store;
pub mod token;
