//! One module per subcommand: turn parsed flags into library calls and
//! format the results.

pub mod bundle;
pub mod health_check;
pub mod init;
pub mod join;
pub mod kubeconfig;
pub mod netboot;
pub mod os;
pub mod pki;
pub mod pod_network;
pub mod provision;
pub mod reset;
pub mod token;
pub mod userdata;

/// A small tokio runtime for the commands that talk to servers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// How long a command waits for the node lock by default; the
/// environment variable `KPROV_LOCK_TIMEOUT` (seconds) changes it.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes the node lock of `root` (kprov-host's `NodeLock`), saying on
/// stderr when another kprov run holds it and waiting for at most
/// `KPROV_LOCK_TIMEOUT` seconds (600 by default).
pub fn lock_node(root: &kprov_host::Root) -> anyhow::Result<kprov_host::NodeLock> {
    let timeout = match std::env::var("KPROV_LOCK_TIMEOUT") {
        Err(_) => LOCK_TIMEOUT,
        Ok(v) => v.parse().map(std::time::Duration::from_secs).map_err(|_| {
            anyhow::anyhow!("KPROV_LOCK_TIMEOUT {v:?}: expected a whole number of seconds")
        })?,
    };
    kprov_host::NodeLock::acquire(root, timeout, &mut |path| {
        eprintln!(
            "kprov: waiting for the node lock {} (another kprov run holds it)",
            path.display()
        );
    })
    .map_err(|e| match e {
        kprov_host::HostError::Locked { path, waited } => anyhow::anyhow!(
            "the node lock {} is held by another kprov run (waited {} s; KPROV_LOCK_TIMEOUT sets how long)",
            path.display(),
            waited.as_secs()
        ),
        other => other.into(),
    })
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

/// `systemctl is-active kubelet` and the kubelet's last journal lines, for
/// the diagnoses of `kprov init` and the join phase.
pub fn kubelet_facts() -> kprov_controlplane::diagnose::KubeletFacts {
    let active = kprov_host::runner::without_secrets(&mut std::process::Command::new("systemctl"))
        .args(["is-active", "--quiet", "kubelet"])
        .status()
        .is_ok_and(|s| s.success());
    let journal =
        kprov_host::runner::without_secrets(&mut std::process::Command::new("journalctl"))
            .args(["-u", "kubelet", "-n", "400", "--no-pager", "-o", "cat"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    kprov_controlplane::diagnose::KubeletFacts {
        active,
        journal_tail: kprov_controlplane::diagnose::journal_excerpt(&journal),
    }
}
