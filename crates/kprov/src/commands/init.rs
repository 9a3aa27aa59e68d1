//! `kprov init` and `kprov init phase NAME`: flags become a validated
//! [`InitSpec`]; kprov-workflow runs the phases; the printer prints.

use std::process::ExitCode;

use anyhow::Context;
use kprov_controlplane::copy_certs::CertificateKey;
use kprov_controlplane::spec::ClusterSpec;
use kprov_workflow::init::{BaseInstall, Init, InitSpec};
use kprov_workflow::Selection;

use crate::cli::{ClusterArgs, InitAction, InitArgs};
use crate::commands::pki::{pki_spec, root_and_dir};
use crate::output::Printer;

/// Runs `kprov init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let (selection, cluster, upload_certs) = match args.action {
        Some(InitAction::Phase(phase)) => (Selection::Only(phase.name), phase.cluster, false),
        None => (
            Selection::All {
                skip: args.skip_phases,
            },
            args.cluster,
            args.upload_certs,
        ),
    };
    let mut spec = init_spec(&cluster)?;
    spec.upload_certs = upload_certs;
    let (root, _) = root_and_dir(&cluster.dirs.root, &cluster.dirs.cert_dir, "--cert-dir")?;
    let session = super::Session::new(root.clone())?;
    let rt = &session.rt;
    let mut printer = Printer::new("init", cluster.output, cluster.dry_run);

    // The base phase installs from a source when one is named.
    let mut node = node_spec(&cluster)?;
    let artifacts = match cluster.source.given() {
        true => Some(crate::commands::provision::artifact_source(
            &cluster.source,
            &mut node,
            rt.handle(),
        )?),
        false => None,
    };
    let base = artifacts.as_deref().map(|artifacts| BaseInstall {
        spec: node,
        artifacts,
    });
    let whole = matches!(selection, Selection::All { .. });
    let start = std::time::Instant::now();
    let target = session.target(cluster.dry_run, &mut printer);
    let mut init = Init::new(spec, base, target);
    let result = init.run(&selection);
    let join = init.join_command.take();
    let generated_key = init.generated_certificate_key.take();
    drop(init);
    if let Some(key) = &generated_key {
        // The only copy: the user keeps it for joining masters.
        eprintln!(
            "kprov: the certificate key of kubeadm-certs (keep it secret; it is shown once):"
        );
        printer.output("certificate_key", key.expose_hex());
    }
    if let Some(join) = &join {
        printer.output("join_command", join.line());
    }
    printer.finish()?;
    result?;
    if whole && join.is_some() {
        eprintln!(
            "kprov: the control plane is up ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    } else if whole && !root.is_live() {
        eprintln!(
            "kprov: the control plane's files are in place; the API phases run on the node itself"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The validated spec of `kprov init`.
fn init_spec(args: &ClusterArgs) -> anyhow::Result<InitSpec> {
    let (_, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
    let (_, kubernetes_dir) =
        root_and_dir(&args.dirs.root, &args.kubernetes_dir, "--kubernetes-dir")?;
    let pki = pki_spec(&args.node, &args.pki)?;
    let mut cluster = ClusterSpec::new(pki);
    cluster.pod_cidr = args.pod_cidr.clone();
    cluster.pod_network = args.pod_network.into();
    cluster.nodes_in_containers = args.node_in_container;
    cluster.name_node_local_address();
    if let Some(registry) = &args.image_registry {
        cluster.image_registry = registry.as_str().to_string();
    }
    cluster.cert_dir = cert_dir;
    cluster.kubernetes_dir = kubernetes_dir;
    cluster.validate()?;
    let certificate_key = args
        .certificate_key
        .as_deref()
        .map(str::parse::<CertificateKey>)
        .transpose()?;
    Ok(InitSpec {
        cluster,
        proxy_mode: args.proxy_mode,
        flannel_image: args.flannel_image.to_string(),
        timeout: std::time::Duration::from_secs(args.timeout),
        upload_certs: false,
        certificate_key,
    })
}

/// The node's spec for the base phase: this master's Kubernetes version,
/// this machine's architecture.
fn node_spec(args: &ClusterArgs) -> anyhow::Result<kprov_core::NodeSpec> {
    let arch = kprov_core::Arch::host()
        .context("cannot tell this machine's architecture (amd64 or arm64)")?;
    let version = args.node.kubernetes_version.clone();
    let mut spec = kprov_core::NodeSpec::new(version, arch);
    spec.proxy_mode = args.proxy_mode;
    spec.in_container = args.node_in_container;
    spec.validate(kprov_core::Phase::Base)?;
    Ok(spec)
}
