//! The control plane's PKI, as kubeadm builds it: the certificate
//! authorities and certificates of the API server, etcd and the front
//! proxy, the service-account key pair, the kubeconfigs of the admin, the
//! controller manager, the scheduler and the control-plane kubelet, and
//! the CA hash that joining nodes pin.
//!
//! Layout, pure first:
//!
//! - [`spec`]: validated inputs ([`PkiSpec`], [`ControlPlaneNode`]);
//! - [`table`]: the declarative certificate and kubeconfig tables and the
//!   SAN rules, turned into concrete requests by
//!   [`table::plan_certificates`] and [`table::plan_kubeconfigs`];
//! - [`keys`], [`cert`], [`kubeconfig`], [`hash`]: keys, X.509 issuing and
//!   reading, kubeconfig YAML, the CA hash;
//! - [`generate`]: the phases as functions from (spec, existing files,
//!   time) to the files to write, in memory;
//! - [`check`]: expiry of what exists;
//! - [`store`]: the thin layer that reads under a [`kprov_host::Root`] and
//!   makes each phase a host plan applied by kprov-plan's engine.

pub mod cert;
pub mod check;
pub mod error;
pub mod generate;
pub mod hash;
pub mod keys;
pub mod kubeconfig;
pub mod spec;
pub mod store;
pub mod table;

pub use error::PkiError;
pub use generate::Entry;
pub use hash::ca_cert_hash;
pub use spec::{ControlPlaneNode, KeyType, PkiSpec, SpecError};
pub use store::{
    ca_hash, check, plan_certificates, plan_kubeconfigs, write_certificates, write_kubeconfigs,
    PkiPlan, Report,
};
