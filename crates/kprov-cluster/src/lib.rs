//! Clusters of kprov nodes on local machines: the layer under `kprov
//! cluster`.
//!
//! - [`name`]: cluster and machine names (`NAME-master-1`,
//!   `NAME-worker-2`), which carry a machine's cluster and role;
//! - [`network`]: a cluster's subnet and gateway, machine addresses, and
//!   the host-side interface names;
//! - [`target`]: the [`target::Target`] interface (create a machine from
//!   the node image, start, run a command, copy a file in, address, logs,
//!   stop, destroy, list by cluster) and its implementations, with how to
//!   add one; [`target::nspawn`] runs each node as a systemd-nspawn
//!   container and documents what kubelet and containerd need in one;
//!   [`target::qemu`] runs each node as a qemu VM configured over
//!   NoCloud and driven over ssh; [`target::ssh`] adopts existing hosts
//!   over the user's OpenSSH;
//! - [`image`]: node images cached by content;
//! - [`config`]: `kprov cluster`'s flags and config file, checked into a
//!   [`config::ClusterSpec`] before any machine is touched;
//! - [`workflow`]: `up` (phases host, machines, master, nodes,
//!   kubeconfig, each converging) and `down`;
//! - [`inspect`]: `status`, and `check`, the exit criteria.
//!
//! Stateless: nothing here keeps an inventory; machines are found on the
//! target by name and labels. What is proven on real parts
//! (`crates/kprov/tests/cluster_nspawn.rs`): `kprov cluster up` of one
//! master and two workers as nspawn machines with every exit criterion,
//! re-run unchanged, grown by a worker, a cut-off worker failing `check`,
//! then `down` leaving nothing; and `kprov cluster up --target ssh` of two
//! hosts running the real OpenSSH server (an unknown host key refused
//! first), re-run unchanged, then `down` resetting both;
//! (`crates/kprov/tests/cluster_vm.rs`) `kprov cluster up --target qemu`
//! of a master and a worker VM under TCG to every criterion, then `down`
//! leaving nothing.

pub mod config;
pub mod image;
pub mod inspect;
pub mod name;
pub mod network;
pub mod target;
pub mod workflow;

pub use name::{ClusterName, MachineName, Role};
pub use network::ClusterNetwork;
pub use target::nspawn::NspawnTarget;
pub use target::{Machine, MachineCommand, MachineSpec, MachineState, Target, TargetError};
