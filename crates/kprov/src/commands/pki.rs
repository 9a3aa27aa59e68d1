//! `kprov pki`: make the control plane's certificates (`kprov pki`), list
//! their expiry (`kprov pki check`), print the CA hash (`kprov pki
//! ca-hash`). Flags become a validated spec here; the work is in
//! kprov-pki.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use kprov_host::Root;
use kprov_pki::check::{short_duration, CertState};
use kprov_pki::{ControlPlaneNode, PkiSpec, Report};

use crate::cli::{
    CaHashArgs, CertDirArgs, ControlPlaneNodeArgs, OutputArg, PkiAction, PkiArgs, PkiCheckArgs,
    PkiInputArgs,
};

/// The root and a directory on it. A relative directory is taken from the
/// current directory when the root is the running host.
pub fn root_and_dir(root: &Path, dir: &Path, flag: &str) -> anyhow::Result<(Root, PathBuf)> {
    let root = Root::new(root).with_context(|| format!("--root {}", root.display()))?;
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else if root.is_live() {
        std::path::absolute(dir).with_context(|| format!("{flag} {}", dir.display()))?
    } else {
        anyhow::bail!(
            "{flag} {}: must be an absolute path on the node when --root is not /",
            dir.display()
        );
    };
    Ok((root, dir))
}

/// The node the certificates and kubeconfigs are for, from its flags.
pub fn control_plane_node(args: &ControlPlaneNodeArgs) -> anyhow::Result<ControlPlaneNode> {
    let mut node = ControlPlaneNode::new(
        args.node_name.clone().context("--node-name is required")?,
        args.advertise_address
            .context("--advertise-address is required")?,
        args.kubernetes_version.clone(),
    );
    node.control_plane_endpoint = args.control_plane_endpoint.clone();
    node.key_type = args.key_type.into();
    Ok(node)
}

/// The certificates' inputs, from the node's and the cluster's flags.
pub fn pki_spec(node: &ControlPlaneNodeArgs, pki: &PkiInputArgs) -> anyhow::Result<PkiSpec> {
    Ok(PkiSpec {
        node: control_plane_node(node)?,
        service_cidr: pki.service_cidr.clone(),
        cluster_domain: pki.cluster_domain.clone(),
        extra_sans: pki.san.clone(),
    })
}

/// Runs `kprov pki` and its subcommands.
pub fn run(args: PkiArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(PkiAction::Check(check)) => run_check(check),
        Some(PkiAction::CaHash(hash)) => run_ca_hash(hash),
        None => run_create(args),
    }
}

fn run_create(args: PkiArgs) -> anyhow::Result<ExitCode> {
    let CertDirArgs { root, cert_dir } = &args.dirs;
    let spec = pki_spec(&args.node, &args.pki)?;
    let (root, cert_dir) = root_and_dir(root, cert_dir, "--cert-dir")?;
    let _lock = super::lock_node_unless(args.dry_run, &root)?;
    let report = kprov_pki::write_certificates(
        &root,
        &cert_dir,
        &spec,
        time::OffsetDateTime::now_utc(),
        args.dry_run,
    )
    .with_context(|| format!("making the PKI in {}", cert_dir.display()))?;
    print_report(&report, args.output, "certificates")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a phase's report: a line per certificate (text) or the run's
/// JSON document on stdout, a summary on stderr.
pub fn print_report(report: &Report, output: OutputArg, what: &str) -> anyhow::Result<()> {
    let dry_run = report.files.dry_run;
    #[allow(clippy::print_stdout)]
    match output {
        OutputArg::Json => {
            let mut run = kprov_plan::RunReport::new(what, dry_run);
            run.reports.push(report.files.clone());
            println!("{}", serde_json::to_string_pretty(&run)?);
        }
        OutputArg::Text => {
            for e in &report.entries {
                let subject = if e.subject.is_empty() {
                    String::new()
                } else {
                    format!("  {}, until {}", e.subject, e.not_after)
                };
                println!(
                    "{:<13} {:<26} {}{}",
                    e.outcome.word(dry_run),
                    e.name,
                    e.files.join(" "),
                    subject
                );
                if !e.alt_names.is_empty() {
                    println!("{:<13} {:<26} SANs: {}", "", "", e.alt_names);
                }
            }
        }
    }
    let s = report.files.summary;
    let written = s.created + s.changed;
    if report.unchanged() {
        eprintln!(
            "kprov: {what} in {} are valid; nothing {}",
            report.dir.display(),
            if dry_run { "would change" } else { "changed" }
        );
    } else {
        eprintln!(
            "kprov: {} {written} file(s) to {}",
            if dry_run { "would write" } else { "wrote" },
            report.dir.display()
        );
    }
    Ok(())
}

fn run_check(args: PkiCheckArgs) -> anyhow::Result<ExitCode> {
    let (root, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
    let kubeconfig_dir = match &args.kubeconfig_dir {
        Some(d) => Some(root_and_dir(&args.dirs.root, d, "--kubeconfig-dir")?.1),
        None => None,
    };
    let rows = kprov_pki::check(
        &root,
        &cert_dir,
        kubeconfig_dir.as_deref(),
        time::OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("checking the PKI in {}", cert_dir.display()))?;
    #[allow(clippy::print_stdout)]
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputArg::Text => {
            println!(
                "{:<26} {:<60} {:<21} {:<9} CA",
                "CERTIFICATE", "SUBJECT", "EXPIRES", "RESIDUAL"
            );
            for r in &rows {
                let (subject, expires, residual) = match &r.state {
                    CertState::Missing => ("!MISSING!".to_string(), String::new(), String::new()),
                    CertState::Invalid { reason } => {
                        (format!("!INVALID! {reason}"), String::new(), String::new())
                    }
                    CertState::Present {
                        subject,
                        not_after,
                        remaining_seconds,
                        ..
                    } => (
                        subject.clone(),
                        not_after.clone(),
                        short_duration(*remaining_seconds),
                    ),
                };
                println!(
                    "{:<26} {:<60} {:<21} {:<9} {}",
                    r.name, subject, expires, residual, r.ca
                );
            }
        }
    }
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.is_bad())
        .map(|r| r.name.as_str())
        .collect();
    if bad.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "kprov: expired or invalid: {} (renew by removing the files and running kprov pki / kprov kubeconfig again)",
            bad.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn run_ca_hash(args: CaHashArgs) -> anyhow::Result<ExitCode> {
    let (root, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
    let hash = kprov_pki::ca_hash(&root, &cert_dir)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{hash}");
    }
    Ok(ExitCode::SUCCESS)
}
