//! The target-root layer: the only place where kprov touches a host.
//!
//! Every effect on a node goes through a [`Root`] (a base directory that
//! stands for the node's `/`: `/` itself on a live host, a directory when
//! prebaking offline) and a [`Runner`] (commands run on the node, through
//! `chroot` when the root is not `/`). Planning code never touches the
//! filesystem; it hands typed resources to an engine that uses this crate.

pub mod failpoint;
pub mod fs;
pub mod hash_cache;
pub mod lock;
pub mod root;
pub mod runner;

pub use fs::{FileAttrs, FileState};
pub use lock::NodeLock;
pub use root::{HostError, Root};
pub use runner::{Command, CommandOutput, Runner, SystemRunner};
