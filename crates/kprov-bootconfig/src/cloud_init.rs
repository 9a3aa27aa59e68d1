//! cloud-init user-data (`#cloud-config`) from a typed model.
//!
//! The model holds only the keys kprov uses, with cloud-init's names. It is
//! serialised by serde and emitted by libyaml with every string quoted (see
//! the `yaml` module for why), behind the `#cloud-config` header line
//! cloud-init requires. It sets the host name (and FQDN), installs SSH
//! keys for the default user, writes the CA certificate, the cloud
//! provider's config, the bootstrap token and setup.sh with `write_files`,
//! and runs setup.sh from `runcmd`, which cloud-init runs once per
//! instance.
//!
//! Compression: with `--gzip` the whole document is gzip-compressed and
//! the result base64-encoded, for platforms whose API takes user-data as
//! base64 (EC2, OpenStack, Terraform's `user_data_base64`): the platform
//! decodes the base64 and cloud-init recognises and decompresses gzip
//! user-data by itself. That shrinks the whole document, unlike
//! `write_files` `encoding: gz+b64`, which would compress each file and
//! leave the YAML around them as it is.

use std::io::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::BootSpec;

/// The first line of every cloud-config document.
pub const HEADER: &str = "#cloud-config\n";

/// The cloud-config document kprov renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The host name (the first label of the name given).
    pub hostname: String,
    /// The fully qualified name, when the name given has dots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// Set the system host name to the FQDN, so that both formats give the
    /// node the name the user asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_fqdn_over_hostname: Option<bool>,
    /// Public keys for the default user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Files written before `runcmd` runs.
    pub write_files: Vec<WriteFile>,
    /// Commands run once, at the end of the first boot; each is an argv
    /// list, run without a shell.
    pub runcmd: Vec<Vec<String>>,
}

/// One `write_files` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path on the node.
    pub path: String,
    /// The contents (text, or encoded as `encoding` says).
    pub content: String,
    /// How `content` is encoded, when it is not plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// `user:group`.
    pub owner: String,
    /// Octal mode as a string, e.g. `'0600'`.
    pub permissions: String,
}

/// `write_files` content encodings (cloud-init's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Base64.
    #[serde(rename = "b64")]
    Base64,
    /// Gzip, then base64.
    #[serde(rename = "gz+b64")]
    GzipBase64,
}

/// Why cloud-config could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    /// The YAML emitter failed.
    #[error(transparent)]
    Yaml(#[from] crate::yaml::YamlError),
    /// Compressing failed (in memory; should not happen).
    #[error("compressing user-data: {0}")]
    Gzip(#[from] std::io::Error),
}

fn file(path: &str, content: String, mode: &str) -> WriteFile {
    WriteFile {
        path: path.to_string(),
        content,
        encoding: None,
        owner: "root:root".to_string(),
        permissions: mode.to_string(),
    }
}

/// The cloud-config model for `spec`.
pub fn cloud_config(spec: &BootSpec) -> CloudConfig {
    let mut write_files = Vec::new();
    if let Some(ca) = &spec.ca_cert {
        write_files.push(file(paths::CA_CERT, ca.pem().to_string(), "0644"));
    }
    if let (Some(content), Some(path)) = (&spec.cloud_config_content, &spec.provision.cloud_config)
    {
        write_files.push(file(&path.to_string_lossy(), content.clone(), "0600"));
    }
    if let Some(token) = &spec.token {
        write_files.push(file(
            paths::TOKEN_FILE,
            format!("{}\n", token.expose_secret()),
            "0600",
        ));
    }
    write_files.push(file(
        paths::SETUP_SCRIPT,
        crate::setup::render(spec),
        "0700",
    ));
    let qualified = spec.hostname.is_qualified();
    CloudConfig {
        hostname: spec.hostname.short().to_string(),
        fqdn: qualified.then(|| spec.hostname.as_str().to_string()),
        prefer_fqdn_over_hostname: qualified.then_some(true),
        ssh_authorized_keys: spec
            .ssh_authorized_keys
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        write_files,
        runcmd: vec![vec![paths::SETUP_SCRIPT.to_string()]],
    }
}

impl CloudConfig {
    /// The document: the `#cloud-config` header, then the YAML.
    pub fn to_yaml(&self) -> Result<String, crate::yaml::YamlError> {
        Ok(format!("{HEADER}{}", crate::yaml::to_string(self)?))
    }
}

/// Renders `spec` as cloud-config; with `gzip`, as base64 of the gzipped
/// document (see the module docs).
pub fn render(spec: &BootSpec, gzip: bool) -> Result<Vec<u8>, CloudInitError> {
    let text = cloud_config(spec).to_yaml()?;
    if !gzip {
        return Ok(text.into_bytes());
    }
    Ok(base64::engine::general_purpose::STANDARD
        .encode(gzip_bytes(text.as_bytes())?)
        .into_bytes())
}

/// Gzip with a fixed header (no name, mtime 0), so output is reproducible.
pub(crate) fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}
