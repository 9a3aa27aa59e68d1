//! `kprov kubeconfig`: make the control plane's kubeconfigs from the CA
//! that `kprov pki` made.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::KubeconfigArgs;
use crate::commands::pki::{control_plane_node, print_report, root_and_dir};

/// Runs `kprov kubeconfig`.
pub fn run(args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let node = control_plane_node(&args.node)?;
    let (root, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
    let (_, kubeconfig_dir) =
        root_and_dir(&args.dirs.root, &args.kubeconfig_dir, "--kubeconfig-dir")?;
    let _lock = super::lock_node_unless(args.dry_run, &root)?;
    let report = kprov_pki::write_kubeconfigs(
        &root,
        &cert_dir,
        &kubeconfig_dir,
        &node,
        time::OffsetDateTime::now_utc(),
        args.dry_run,
    )
    .with_context(|| format!("making the kubeconfigs in {}", kubeconfig_dir.display()))?;
    print_report(&report, args.output, "kubeconfigs")?;
    Ok(ExitCode::SUCCESS)
}
