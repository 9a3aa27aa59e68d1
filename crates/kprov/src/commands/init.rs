//! `kprov init` and `kprov init phase NAME`: bootstrap a control plane.
//! Flags become a validated [`ClusterSpec`] here; the work is in
//! kprov-pki and kprov-controlplane.

use std::process::ExitCode;

use anyhow::Context;
use kprov_controlplane::spec::ClusterSpec;
use kprov_controlplane::{api, manifests, store};
use kprov_host::Root;
use kprov_pki::PkiSpec;

use crate::cli::{ClusterArgs, InitAction, InitArgs, InitPhaseArg, OutputArg, ProxyModeArg};
use crate::commands::pki::{control_plane_node, print_report, root_and_dir};
use crate::commands::runtime;

/// Runs `kprov init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(InitAction::Phase(phase)) => {
            let ctx = InitContext::new(&phase.cluster)?;
            run_phase(&ctx, phase.name)?;
        }
        None => {
            let ctx = InitContext::new(&args.cluster)?;
            for phase in [
                InitPhaseArg::Certs,
                InitPhaseArg::Kubeconfig,
                InitPhaseArg::Etcd,
                InitPhaseArg::ControlPlane,
            ] {
                run_phase(&ctx, phase)?;
            }
            eprintln!(
                "kprov: the control plane's files are in place; start the kubelet, then run `kprov init phase bootstrap-token`"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A validated spec and where it is written.
struct InitContext {
    spec: ClusterSpec,
    proxy_mode: &'static str,
    flannel_image: String,
    root: Root,
    dry_run: bool,
    output: OutputArg,
}

impl InitContext {
    fn new(args: &ClusterArgs) -> anyhow::Result<Self> {
        let node = control_plane_node(&args.node)?;
        let (root, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
        let (_, kubernetes_dir) =
            root_and_dir(&args.dirs.root, &args.kubernetes_dir, "--kubernetes-dir")?;
        let pki = PkiSpec {
            node,
            service_cidr: args.service_cidr.clone(),
            cluster_domain: args.cluster_domain.clone(),
            extra_sans: args.san.clone(),
        };
        let mut spec = ClusterSpec::new(pki);
        spec.pod_cidr = args.pod_cidr.clone();
        spec.pod_network = args.pod_network.into();
        if let Some(registry) = &args.image_registry {
            spec.image_registry = registry.trim_end_matches('/').to_string();
        }
        spec.cert_dir = cert_dir;
        spec.kubernetes_dir = kubernetes_dir;
        spec.validate()?;
        Ok(Self {
            spec,
            proxy_mode: match args.proxy_mode {
                ProxyModeArg::Iptables => "iptables",
                ProxyModeArg::Ipvs => "ipvs",
            },
            flannel_image: args.flannel_image.clone(),
            root,
            dry_run: args.dry_run,
            output: args.output,
        })
    }
}

fn run_phase(ctx: &InitContext, phase: InitPhaseArg) -> anyhow::Result<()> {
    let spec = &ctx.spec;
    let now = time::OffsetDateTime::now_utc();
    match phase {
        InitPhaseArg::Certs => {
            let report = kprov_pki::write_certificates(
                &ctx.root,
                &spec.cert_dir,
                &spec.pki,
                now,
                ctx.dry_run,
            )
            .with_context(|| format!("making the PKI in {}", spec.cert_dir.display()))?;
            print_report(&report, ctx.output, "certificates")
        }
        InitPhaseArg::Kubeconfig
            if ctx.dry_run && !ctx.root.resolve(spec.cert_dir.join("ca.crt"))?.exists() =>
        {
            // A dry run of init writes no CA for this phase to sign with.
            eprintln!(
                "kprov: would write the kubeconfigs to {} once the CA exists",
                spec.kubernetes_dir.display()
            );
            Ok(())
        }
        InitPhaseArg::Kubeconfig => {
            let report = kprov_pki::write_kubeconfigs(
                &ctx.root,
                &spec.cert_dir,
                &spec.kubernetes_dir,
                spec.node(),
                now,
                ctx.dry_run,
            )
            .with_context(|| {
                format!(
                    "making the kubeconfigs in {}",
                    spec.kubernetes_dir.display()
                )
            })?;
            print_report(&report, ctx.output, "kubeconfigs")
        }
        InitPhaseArg::Etcd => write_pods(ctx, vec![manifests::etcd(spec)]),
        InitPhaseArg::ControlPlane => write_pods(
            ctx,
            vec![
                manifests::kube_apiserver(spec),
                manifests::kube_controller_manager(spec),
                manifests::kube_scheduler(spec),
            ],
        ),
        InitPhaseArg::BootstrapToken => bootstrap_token(ctx),
        InitPhaseArg::Addons => addons(ctx),
    }
}

fn write_pods(ctx: &InitContext, pods: Vec<manifests::StaticPod>) -> anyhow::Result<()> {
    let report =
        store::write_static_pods(&ctx.root, &ctx.spec, &pods, ctx.dry_run).with_context(|| {
            format!(
                "writing static pods to {}",
                store::manifests_dir(&ctx.spec).display()
            )
        })?;
    #[allow(clippy::print_stdout)]
    match ctx.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputArg::Text => {
            for w in &report {
                println!("{:<10} {}", w.outcome, w.path.display());
            }
        }
    }
    if report.iter().all(|w| w.outcome == "unchanged") {
        eprintln!("kprov: static pods are up to date; nothing changed");
    }
    Ok(())
}

/// The admin kubeconfig and the API server URL of an API phase; these
/// phases talk to the running API server and cannot target --root.
fn api_target(ctx: &InitContext, phase: &str) -> anyhow::Result<std::path::PathBuf> {
    if !ctx.root.is_live() {
        anyhow::bail!("phase {phase} talks to the running API server; it cannot run with --root");
    }
    Ok(ctx.spec.kubernetes_dir.join("admin.conf"))
}

fn print_applied(ctx: &InitContext, report: &[api::Applied], what: &str) -> anyhow::Result<()> {
    #[allow(clippy::print_stdout)]
    match ctx.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(report)?),
        OutputArg::Text => {
            for a in report {
                println!("{:<10} {}", a.outcome, a.object);
            }
        }
    }
    if report.iter().all(|a| a.outcome == "unchanged") {
        eprintln!("kprov: {what} are up to date; nothing changed");
    }
    Ok(())
}

fn bootstrap_token(ctx: &InitContext) -> anyhow::Result<()> {
    let admin = api_target(ctx, "bootstrap-token")?;
    let spec = &ctx.spec;
    let ca_path = spec.cert_dir.join("ca.crt");
    let ca_pem =
        std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let server = spec.node().control_plane_url();
    if ctx.dry_run {
        eprintln!("kprov: would apply the bootstrap RBAC and cluster-info (server {server})");
        return Ok(());
    }
    let report = runtime()?
        .block_on(async {
            let client = api::client(&admin).await?;
            api::apply_bootstrap(&client, &server, &ca_pem).await
        })
        .context("applying the bootstrap RBAC and cluster-info")?;
    print_applied(ctx, &report, "bootstrap RBAC and cluster-info")
}

fn addons(ctx: &InitContext) -> anyhow::Result<()> {
    let admin = api_target(ctx, "addons")?;
    let addons = kprov_controlplane::addons::addons(&ctx.spec, ctx.proxy_mode, &ctx.flannel_image);
    if ctx.dry_run {
        eprintln!("kprov: would apply kube-proxy, CoreDNS and the pod network's objects");
        return Ok(());
    }
    let report = runtime()?
        .block_on(async {
            let client = api::client(&admin).await?;
            api::apply_addons(&client, &addons).await
        })
        .context("applying the add-ons")?;
    print_applied(ctx, &report, "add-ons")
}
