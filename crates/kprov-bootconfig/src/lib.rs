//! Boot configs: the user-data that turns a freshly booted machine into a
//! kprov node, rendered without touching anything.
//!
//! A [`BootSpec`] (validated inputs: host name, SSH keys, CA, cloud config,
//! bootstrap token, where kprov comes from and its sha256, the flags of
//! `kprov provision`) renders as:
//!
//! - [`cloud_init`]: a `#cloud-config` document for cloud-init;
//! - [`ignition`]: an Ignition 3.4 config for Flatcar;
//!
//! both of which install the same files and [`setup`]'s setup.sh, which
//! fetches kprov, verifies its sha256 and runs `kprov provision`. Where
//! things go on the node is in [`paths`].
//!
//! Everything here is pure: inputs in, bytes out. Reading flag files and
//! writing the output is the CLI's job (`kprov userdata`).

pub mod cloud_init;
pub mod hostname;
pub mod ignition;
pub mod paths;
pub mod setup;
mod shell;
pub mod source;
pub mod spec;
pub mod ssh;
mod yaml;

pub use hostname::{Hostname, HostnameError};
pub use paths::{NodePath, NodePathError};
pub use source::{DigestError, ProvisionSource, Sha256Digest, SourceError, SourceKind};
pub use spec::{BootSpec, BootSpecError};
pub use ssh::{SshKeyError, SshPublicKey};
pub use yaml::YamlError;

/// The smallest user-data limit among common clouds (EC2: 16 KB before
/// base64), which a typical node's user-data stays under.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// Boot config formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// cloud-init `#cloud-config` YAML.
    CloudInit,
    /// Ignition 3.4 JSON (Flatcar).
    Ignition,
}

/// Why a boot config could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The spec is inconsistent.
    #[error(transparent)]
    Spec(#[from] BootSpecError),
    /// cloud-config rendering failed.
    #[error(transparent)]
    CloudInit(#[from] cloud_init::CloudInitError),
    /// Ignition rendering failed.
    #[error(transparent)]
    Ignition(#[from] ignition::IgnitionError),
}

/// Validates `spec` and renders it in `format`. With `gzip`, cloud-config
/// is gzipped and base64-encoded as a whole, Ignition has each file's
/// contents gzipped (see the modules' docs).
pub fn render(spec: &BootSpec, format: Format, gzip: bool) -> Result<Vec<u8>, RenderError> {
    spec.validate()?;
    Ok(match format {
        Format::CloudInit => cloud_init::render(spec, gzip)?,
        Format::Ignition => ignition::render(spec, gzip)?,
    })
}
