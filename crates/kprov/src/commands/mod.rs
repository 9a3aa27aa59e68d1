//! One module per subcommand: turn parsed flags into library calls and
//! format the results.

pub mod bundle;
pub mod completions;
pub mod health_check;
pub mod init;
pub mod kubeconfig;
pub mod man;
pub mod netboot;
pub mod os;
pub mod pki;
pub mod pod_network;
pub mod provision;
pub mod reset;
pub mod token;
pub mod userdata;
pub mod version;

/// Writes `bytes` to stdout. A closed pipe (`kprov man | head`) ends the
/// output quietly, as for any filter.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// The command's one tokio runtime (for the commands that talk to
/// servers); library code blocks on its handle.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Reads and parses the PEM file given with `--ca-cert`, if any.
pub fn read_ca_cert(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<kprov_core::CaCertificate>> {
    use anyhow::Context;
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("--ca-cert {}: cannot read", path.display()))?;
    let cert = kprov_core::CaCertificate::from_pem(&bytes)
        .with_context(|| format!("--ca-cert {}", path.display()))?;
    Ok(Some(cert))
}
