//! One module per subcommand: turn parsed flags into library calls and
//! format the results.

pub mod bundle;
pub mod cluster;
pub mod completions;
pub mod etcd;
pub mod health_check;
pub mod image;
pub mod init;
pub mod kubeconfig;
pub mod lb;
pub mod man;
pub mod netboot;
pub mod os;
pub mod pki;
pub mod pod_network;
pub mod provision;
pub mod reset;
pub mod stage2;
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

/// Takes the node lock of `root` for a command that writes without a
/// workflow (`kprov pki`, `kprov kubeconfig`); none for a dry run.
pub fn lock_node_unless(
    dry_run: bool,
    root: &kprov_host::Root,
) -> anyhow::Result<Option<kprov_host::NodeLock>> {
    if dry_run {
        return Ok(None);
    }
    let lock = kprov_host::NodeLock::acquire_for_command(root, &mut |message| {
        eprintln!("kprov: {message}");
    })?;
    Ok(Some(lock))
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

/// What a command that changes a node runs with: the node's root and
/// runner, and the command's one tokio runtime.
pub struct Session {
    /// The node's root.
    pub root: kprov_host::Root,
    /// Runs commands on the node.
    pub runner: kprov_host::SystemRunner,
    /// The command's runtime.
    pub rt: tokio::runtime::Runtime,
}

impl Session {
    /// A session on `root`.
    pub fn new(root: kprov_host::Root) -> anyhow::Result<Self> {
        Ok(Self {
            runner: kprov_host::SystemRunner::new(root.clone()),
            rt: runtime()?,
            root,
        })
    }

    /// The workflows' view of the node, reporting to `observer`.
    pub fn target<'a>(
        &'a self,
        dry_run: bool,
        observer: &'a mut dyn kprov_workflow::Observer,
    ) -> kprov_workflow::Target<'a> {
        kprov_workflow::Target {
            root: self.root.clone(),
            runner: &self.runner,
            rt: self.rt.handle().clone(),
            dry_run,
            observer,
        }
    }
}
