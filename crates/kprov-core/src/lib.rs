//! Shared model of kprov: the validated inputs every capability works from.
//!
//! Everything a user types that later becomes a path, a file's contents or a
//! command argument is parsed here into a type that cannot hold a bad value
//! (`KubernetesVersion`, `BootstrapToken`, `CaCertificate`, ...). The
//! planning crates take these types, so they never see unvalidated input.
//! The node's flags themselves, as typed on a command line or in a config
//! file, are one struct in [`node_config`], checked into a [`NodeSpec`].

pub mod arch;
pub mod ca;
pub mod dns;
pub mod image;
pub mod join;
pub mod node_config;
pub mod runtime;
pub mod spec;
pub mod token;
pub mod version;

pub use arch::Arch;
pub use ca::CaCertificate;
pub use dns::{DnsLabel, DnsSubdomain};
pub use image::{ImageRef, ImageRegistry};
pub use join::{ApiServerUrl, CaCertHash, NodeName, Taint};
pub use node_config::NodeConfig;
pub use runtime::{ContainerRuntime, ProxyMode, RuntimeSource};
pub use spec::{NodeSpec, Phase, SpecError};
pub use token::BootstrapToken;
pub use version::KubernetesVersion;
