//! The one plan engine of kprov.
//!
//! Every command that changes something first computes a [`Plan`]: a list
//! of typed [`Resource`]s saying what should be true ("this file has these
//! contents and this mode", "this unit is stopped", "this path is gone"),
//! with no side effects. [`apply::apply`] checks each resource on a target
//! [`kprov_host::Root`] and converges only what differs, returning a
//! [`Report`] of one [`Outcome`] per resource. Host plans (provisioning,
//! the kubelet's files, PKI files, static pods, the pod network's
//! configuration, reset) all go through this engine; objects sent to the
//! API server are reported with the same [`Outcome`] and [`Report`].
//!
//! [`workflow`] runs a table of named phases (kubeadm's workflow runner
//! model); workflows such as `kprov init` are such tables in the
//! libraries that own them.

pub mod apply;
pub mod fstab;
mod plan;
pub mod report;
pub mod resource;
pub mod workflow;

pub use apply::{apply, ApplyContext, ApplyError, Event, Status};
pub use plan::Plan;
pub use report::{Outcome, Report, ResourceReport, RunReport, Summary};
pub use resource::{Contents, ImageImport, PackageManager, Resource};

/// Where kprov keeps its own state on a node.
pub const STATE_DIR: &str = "/var/lib/kprov";

/// Directories where unit files may live, searched in this order when
/// enabling a unit (as systemd does).
pub const UNIT_SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
