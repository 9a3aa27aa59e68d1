//! Ignition configs (spec 3.4.0, what Flatcar reads) from typed structs.
//!
//! The structs mirror the parts of the Ignition 3.4 spec kprov uses, with
//! the spec's JSON names; unset fields are left out. Files carry their
//! contents as RFC 2397 `data:` URLs (base64; with `--gzip` the contents
//! are gzip-compressed first and marked `compression: gzip`) and their
//! modes as decimal numbers, as JSON has no octal. The host name goes to
//! /etc/hostname, SSH keys to the `core` user, and a oneshot unit,
//! `kprov-setup.service`, runs setup.sh at boot until it has succeeded
//! once: it is skipped while setup.sh's success stamp exists.

use base64::Engine as _;
use serde::Serialize;

use crate::paths;
use crate::BootSpec;

/// The spec version rendered.
pub const VERSION: &str = "3.4.0";

/// The login user Flatcar creates.
pub const USER: &str = "core";

/// An Ignition config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Metadata: the spec version.
    pub ignition: Ignition,
    /// Users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passwd: Option<Passwd>,
    /// Files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd: Option<Systemd>,
}

/// `ignition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignition {
    /// Spec version, e.g. `3.4.0`.
    pub version: String,
}

/// `passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Passwd {
    /// Users to create or modify.
    pub users: Vec<User>,
}

/// `passwd.users[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Login name.
    pub name: String,
    /// authorized_keys lines.
    pub ssh_authorized_keys: Vec<String>,
}

/// `storage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// Files to write.
    pub files: Vec<File>,
}

/// `storage.files[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    /// Absolute path.
    pub path: String,
    /// Replace whatever is at the path.
    pub overwrite: bool,
    /// Mode bits, decimal in JSON (e.g. 420 for 0644).
    pub mode: u32,
    /// Owner.
    pub user: NodeUser,
    /// Group.
    pub group: NodeGroup,
    /// Where the contents come from.
    pub contents: Resource,
}

/// A file's owner, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeUser {
    /// User name.
    pub name: String,
}

/// A file's group, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeGroup {
    /// Group name.
    pub name: String,
}

/// A resource: here always an inline `data:` URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// The URL.
    pub source: String,
    /// `gzip` when the data is compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// `systemd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Systemd {
    /// Units to write and enable.
    pub units: Vec<Unit>,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    /// Unit name, e.g. `kprov-setup.service`.
    pub name: String,
    /// Enable it (by its `[Install]` section).
    pub enabled: bool,
    /// The unit file text.
    pub contents: String,
}

/// Why an Ignition config could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum IgnitionError {
    /// JSON serialisation failed.
    #[error("serialising the Ignition config: {0}")]
    Json(#[from] serde_json::Error),
    /// Compressing failed (in memory; should not happen).
    #[error("compressing a file for the Ignition config: {0}")]
    Gzip(#[from] std::io::Error),
}

fn data_url(content: &[u8], gzip: bool) -> Result<Resource, std::io::Error> {
    let (bytes, compression) = if gzip {
        (
            crate::cloud_init::gzip_bytes(content)?,
            Some("gzip".to_string()),
        )
    } else {
        (content.to_vec(), None)
    };
    Ok(Resource {
        source: format!(
            "data:;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        compression,
    })
}

fn file(path: &str, content: &[u8], mode: u32, gzip: bool) -> Result<File, std::io::Error> {
    Ok(File {
        path: path.to_string(),
        overwrite: true,
        mode,
        user: NodeUser {
            name: "root".into(),
        },
        group: NodeGroup {
            name: "root".into(),
        },
        contents: data_url(content, gzip)?,
    })
}

/// The unit that runs setup.sh at boot until it has succeeded once.
pub fn setup_unit() -> String {
    let condition = format!("!{}", paths::SETUP_DONE);
    kprov_provision::render::systemd::UnitFile::new()
        .section(
            "Unit",
            &[
                (
                    "Description",
                    "kprov first-boot setup: fetch and verify kprov, run kprov provision",
                ),
                ("Wants", "network-online.target"),
                ("After", "network-online.target"),
                // setup.sh writes this after success: later boots skip it.
                ("ConditionPathExists", &condition),
            ],
        )
        .section(
            "Service",
            &[
                ("Type", "oneshot"),
                ("RemainAfterExit", "yes"),
                ("ExecStart", paths::SETUP_SCRIPT),
                // Package installs and downloads take a while.
                ("TimeoutStartSec", "1h"),
                ("StandardOutput", "journal+console"),
                ("StandardError", "journal+console"),
            ],
        )
        .section("Install", &[("WantedBy", "multi-user.target")])
        .render()
        .unwrap_or_else(|e| unreachable!("the setup unit's values are constants: {e}"))
}

/// The Ignition config for `spec`; with `gzip`, file contents are
/// compressed.
pub fn ignition_config(spec: &BootSpec, gzip: bool) -> Result<Config, IgnitionError> {
    let mut files = vec![file(
        "/etc/hostname",
        format!("{}\n", spec.hostname).as_bytes(),
        0o644,
        gzip,
    )?];
    if let Some(ca) = &spec.ca_cert {
        files.push(file(paths::CA_CERT, ca.pem().as_bytes(), 0o644, gzip)?);
    }
    if let (Some(content), Some(path)) = (&spec.cloud_config_content, &spec.provision.cloud_config)
    {
        files.push(file(
            &path.to_string_lossy(),
            content.as_bytes(),
            0o600,
            gzip,
        )?);
    }
    if let Some(token) = &spec.token {
        files.push(file(
            paths::TOKEN_FILE,
            format!("{}\n", token.expose_secret()).as_bytes(),
            0o600,
            gzip,
        )?);
    }
    files.push(file(
        paths::SETUP_SCRIPT,
        crate::setup::render(spec).as_bytes(),
        0o700,
        gzip,
    )?);
    let passwd = (!spec.ssh_authorized_keys.is_empty()).then(|| Passwd {
        users: vec![User {
            name: USER.to_string(),
            ssh_authorized_keys: spec
                .ssh_authorized_keys
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
        }],
    });
    Ok(Config {
        ignition: Ignition {
            version: VERSION.to_string(),
        },
        passwd,
        storage: Some(Storage { files }),
        systemd: Some(Systemd {
            units: vec![Unit {
                name: paths::SETUP_UNIT.to_string(),
                enabled: true,
                contents: setup_unit(),
            }],
        }),
    })
}

/// Renders `spec` as Ignition JSON (pretty-printed, with a final newline).
pub fn render(spec: &BootSpec, gzip: bool) -> Result<Vec<u8>, IgnitionError> {
    let mut out = serde_json::to_vec_pretty(&ignition_config(spec, gzip)?)?;
    out.push(b'\n');
    Ok(out)
}
