//! `kprov userdata`: read the files the flags name, build a validated boot
//! spec, render it (kprov-bootconfig) and write it to stdout or a 0600
//! file. The token never reaches stderr.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use kprov_bootconfig::{
    paths, BootSpec, Format, Hostname, NodePath, ProvisionFlags, ProvisionSource, Sha256Digest,
    SshPublicKey, USER_DATA_LIMIT,
};
use kprov_core::version::NEWEST_KNOWN;
use kprov_core::{BootstrapToken, KubernetesVersion, Phase};

use crate::cli::{FormatArg, PhaseArg, UserdataArgs};

/// Reads --config and merges the command line over it. Relative paths in
/// the file are taken relative to the file's directory.
fn with_config(args: UserdataArgs) -> anyhow::Result<UserdataArgs> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    let mut file: UserdataArgs = if text.trim().is_empty() {
        UserdataArgs::default()
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("--config {}", path.display()))?
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let rebase = |p: &mut Option<PathBuf>| {
        if let Some(p) = p {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    };
    rebase(&mut file.ssh_authorized_keys_file);
    rebase(&mut file.ca_cert);
    rebase(&mut file.cloud_config_file);
    rebase(&mut file.provision_binary);
    Ok(args.over(file))
}

fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{flag} {}: not UTF-8 text", path.display()))
}

/// The sha256 to pin: --provision-sha256, or that of --provision-binary;
/// both must agree when both are given.
fn pinned_sha256(args: &UserdataArgs) -> anyhow::Result<Sha256Digest> {
    let given = match &args.provision_sha256 {
        Some(hex) => Some(hex.parse::<Sha256Digest>()?),
        None => None,
    };
    let computed = match &args.provision_binary {
        Some(path) => {
            let sum = kprov_host::fs::sha256_file(path)
                .with_context(|| format!("--provision-binary {}", path.display()))?;
            Some(hex::encode(sum).parse::<Sha256Digest>()?)
        }
        None => None,
    };
    match (given, computed) {
        (Some(g), Some(c)) if g != c => bail!(
            "--provision-sha256 {g} does not match --provision-binary {}, whose sha256 is {c}",
            args.provision_binary.as_deref().unwrap_or(Path::new("")).display()
        ),
        (Some(g), _) => Ok(g),
        (None, Some(c)) => Ok(c),
        (None, None) => bail!(
            "--provision-sha256 or --provision-binary is required: setup.sh checks the sha256 of kprov before it runs it"
        ),
    }
}

/// Turns the merged flags into a validated boot spec.
fn boot_spec(args: &UserdataArgs) -> anyhow::Result<BootSpec> {
    let hostname: Hostname = args
        .hostname
        .as_deref()
        .context("--hostname is required: the node's host name, e.g. worker-1")?
        .parse()?;

    let mut ssh_authorized_keys = Vec::new();
    for (i, key) in args.ssh_authorized_keys.iter().enumerate() {
        ssh_authorized_keys.push(
            key.parse::<SshPublicKey>()
                .with_context(|| format!("--ssh-authorized-key (number {})", i + 1))?,
        );
    }
    if let Some(path) = &args.ssh_authorized_keys_file {
        let text = read_text("--ssh-authorized-keys-file", path)?;
        let keys = SshPublicKey::parse_file(&text).map_err(|(line, e)| {
            anyhow::anyhow!(
                "--ssh-authorized-keys-file {} line {line}: {e}",
                path.display()
            )
        })?;
        ssh_authorized_keys.extend(keys);
    }

    let ca_cert = super::read_ca_cert(args.ca_cert.as_deref())?;

    let cloud_config_content = match &args.cloud_config_file {
        None => None,
        Some(path) => Some(read_text("--cloud-config-file", path)?),
    };
    let cloud_config = match (&args.cloud_config, &cloud_config_content) {
        (Some(p), _) => Some(NodePath::parse(
            "--cloud-config",
            p,
            paths::DEFAULT_CLOUD_CONFIG,
        )?),
        (None, Some(_)) => Some(NodePath::parse(
            "--cloud-config",
            paths::DEFAULT_CLOUD_CONFIG,
            paths::DEFAULT_CLOUD_CONFIG,
        )?),
        (None, None) => None,
    };
    let artifacts_dir = match &args.artifacts_dir {
        Some(p) => Some(NodePath::parse(
            "--artifacts-dir",
            p,
            "/opt/kprov/artifacts",
        )?),
        None => None,
    };

    let token = match &args.token {
        None => None,
        Some(t) => Some(t.parse::<BootstrapToken>().context("--token")?),
    };

    let provision_source: ProvisionSource = args
        .provision_source
        .as_deref()
        .context("--provision-source is required: the http://, https:// or file:// URL setup.sh fetches kprov from")?
        .parse()?;
    let provision_sha256 = pinned_sha256(args)?;

    let kubelet_version = match &args.kubelet_version {
        Some(v) => KubernetesVersion::parse_supported(v).context("--kubelet-version")?,
        None => NEWEST_KNOWN,
    };
    let phase: Phase = args.phase.unwrap_or(PhaseArg::All).into();
    let mut provision = ProvisionFlags::new(phase, kubelet_version);
    if let Some(r) = args.container_runtime {
        provision.container_runtime = r.into();
    }
    if let Some(p) = args.proxy_mode {
        provision.proxy_mode = p.into();
    }
    provision.sandbox_image = args.sandbox_image.clone();
    provision.cloud_provider = args.cloud_provider.clone();
    provision.cloud_config = cloud_config;
    provision.artifacts_dir = artifacts_dir;
    provision.bundle = match &args.bundle {
        Some(p) => Some(NodePath::parse("--bundle", p, "/opt/kprov/node.tar.zst")?),
        None => None,
    };
    provision.mirror = match &args.mirror {
        Some(url) => Some(super::provision::parse_mirror(url)?),
        None => None,
    };
    provision.api_server = args.api_server.as_deref().map(str::parse).transpose()?;
    provision.ca_cert_hashes = args
        .discovery_token_ca_cert_hash
        .iter()
        .map(|h| h.parse())
        .collect::<Result<_, _>>()?;

    let spec = BootSpec {
        hostname,
        ssh_authorized_keys,
        ca_cert,
        cloud_config_content,
        token,
        provision_source,
        provision_sha256,
        provision,
    };
    spec.validate()?;
    Ok(spec)
}

/// Writes `bytes` to `path` with mode 0600 from the first byte on, with
/// kprov-host's atomic write (a fresh temporary file next to `path`,
/// fsynced, renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    kprov_host::fs::write_file_atomic(path, bytes, 0o600)
        .with_context(|| format!("--output {}: cannot write", path.display()))
}

/// Runs `kprov userdata`.
pub fn run(args: UserdataArgs) -> anyhow::Result<ExitCode> {
    let (format, format_name) = match args.format {
        FormatArg::CloudInit => (Format::CloudInit, "cloud-init"),
        FormatArg::Ignition => (Format::Ignition, "ignition"),
    };
    let output = args.output.clone();
    let args = with_config(args)?;
    let spec = boot_spec(&args)?;
    let bytes = kprov_bootconfig::render(&spec, format, args.gzip)
        .with_context(|| format!("rendering {format_name} user-data"))?;

    let size = bytes.len();
    let gz = if args.gzip { ", gzip" } else { "" };
    match &output {
        Some(path) => {
            write_private(path, &bytes)?;
            eprintln!(
                "kprov: wrote {format_name} user-data for {} to {} ({size} bytes{gz}, mode 0600)",
                spec.hostname,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .context("writing user-data to stdout")?;
            eprintln!(
                "kprov: rendered {format_name} user-data for {} ({size} bytes{gz})",
                spec.hostname
            );
        }
    }
    if size > USER_DATA_LIMIT {
        eprintln!(
            "kprov: warning: the user-data is {size} bytes, more than the {USER_DATA_LIMIT} bytes some clouds accept{}",
            if args.gzip { "" } else { "; try --gzip" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
