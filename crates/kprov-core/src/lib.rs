//! Shared model of kprov: the validated inputs every capability works from.
//!
//! Everything a user types that later becomes a path, a file's contents or a
//! command argument is parsed here into a type that cannot hold a bad value
//! (`KubernetesVersion`, `BootstrapToken`, `CaCertificate`, ...). The
//! planning crates take these types, so they never see unvalidated input.

pub mod arch;
pub mod ca;
pub mod dns;
pub mod image;
pub mod join;
pub mod runtime;
pub mod spec;
pub mod token;
pub mod version;

pub use arch::Arch;
pub use ca::CaCertificate;
pub use dns::{DnsLabel, DnsSubdomain};
pub use image::{ImageRef, ImageRegistry};
pub use join::{ApiServerUrl, CaCertHash, NodeName, Taint};
pub use runtime::{ContainerRuntime, ProxyMode, RuntimeSource};
pub use spec::{NodeSpec, Phase, SpecError};
pub use token::BootstrapToken;
pub use version::KubernetesVersion;
