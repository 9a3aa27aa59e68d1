//! The control plane's PKI, as kubeadm builds it.
pub mod keys;
pub mod spec;
pub mod table;
