//! `kprov userdata`: read the files the flags name, build a validated boot
//! spec, render it (kprov-bootconfig) and write it to stdout or a 0600
//! file. The token never reaches stderr.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kprov_bootconfig::{
    paths, BootSpec, BootSpecError, Format, Hostname, ProvisionSource, Sha256Digest, SshPublicKey,
    USER_DATA_LIMIT,
};
use kprov_core::BootstrapToken;

use crate::cli::{FormatArg, UserdataArgs};

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

    let mut node = args.node.clone();
    let ca_cert = super::read_ca_cert(node.ca_cert.as_deref())?;

    let cloud_config_content = match &args.cloud_config_file {
        None => None,
        Some(path) => Some(read_text("--cloud-config-file", path)?),
    };
    if cloud_config_content.is_some() && node.cloud_config.is_none() {
        node.cloud_config = Some(paths::DEFAULT_CLOUD_CONFIG.into());
    }

    if node.control_plane {
        anyhow::bail!("--control-plane: boot configs join workers only for now; join a master with `kprov provision --phase join --control-plane` on it");
    }
    // Written to its own 0600 file on the node, never on a command line.
    let token = match node.token.take() {
        None => None,
        Some(t) => Some(t.expose().parse::<BootstrapToken>().context("--token")?),
    };

    let provision_source: ProvisionSource = args
        .provision_source
        .as_deref()
        .context("--provision-source is required: the http://, https:// or file:// URL setup.sh fetches kprov from")?
        .parse()?;
    let provision_sha256 = pinned_sha256(args)?;

    if let Some(url) = &node.mirror {
        super::provision::parse_mirror(url)?;
    }
    let spec = BootSpec {
        hostname,
        ssh_authorized_keys,
        ca_cert,
        cloud_config_content,
        token,
        provision_source,
        provision_sha256,
        provision: node,
    };
    // The checks kprov provision makes on the node, made now.
    spec.validate().map_err(|e| match e {
        BootSpecError::Node(e) => args.from_config.blame(e),
        e => e.into(),
    })?;
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
