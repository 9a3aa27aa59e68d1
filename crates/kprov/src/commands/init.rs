//! `kprov init` and `kprov init phase NAME`: bootstrap a control plane.
//! Flags become a validated [`ClusterSpec`] here; the work is in
//! kprov-pki and kprov-controlplane.

use std::process::ExitCode;

use anyhow::Context;
use kprov_controlplane::spec::ClusterSpec;
use kprov_controlplane::{api, manifests, store};
use kprov_host::Root;

use crate::cli::{ClusterArgs, InitAction, InitArgs, InitPhaseArg, OutputArg, ProxyModeArg};
use crate::commands::pki::{pki_spec, print_report, root_and_dir};
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
            let mut phases = vec![
                InitPhaseArg::Base,
                InitPhaseArg::Certs,
                InitPhaseArg::Kubeconfig,
                InitPhaseArg::Etcd,
                InitPhaseArg::ControlPlane,
                InitPhaseArg::KubeletStart,
            ];
            if ctx.root.is_live() && !ctx.dry_run {
                phases.extend([
                    InitPhaseArg::WaitControlPlane,
                    InitPhaseArg::UploadConfig,
                    InitPhaseArg::MarkControlPlane,
                    InitPhaseArg::BootstrapToken,
                    InitPhaseArg::Addons,
                ]);
            }
            phases.retain(|p| !args.skip_phases.contains(p));
            let start = std::time::Instant::now();
            for phase in phases {
                eprintln!("kprov: init phase {}", phase_name(phase));
                run_phase(&ctx, phase)?;
            }
            if ctx.root.is_live() && !ctx.dry_run {
                print_join_command(&ctx)?;
                eprintln!(
                    "kprov: the control plane is up ({:.0} s)",
                    start.elapsed().as_secs_f64()
                );
            } else {
                eprintln!("kprov: the control plane's files are in place; the API phases run on the node itself");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn phase_name(phase: InitPhaseArg) -> String {
    use clap::ValueEnum;
    phase
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A validated spec and where it is written.
struct InitContext {
    spec: ClusterSpec,
    source: crate::cli::ArtifactSourceArgs,
    timeout: std::time::Duration,
    proxy_mode: &'static str,
    flannel_image: String,
    root: Root,
    dry_run: bool,
    output: OutputArg,
}

impl InitContext {
    fn new(args: &ClusterArgs) -> anyhow::Result<Self> {
        let (root, cert_dir) = root_and_dir(&args.dirs.root, &args.dirs.cert_dir, "--cert-dir")?;
        let (_, kubernetes_dir) =
            root_and_dir(&args.dirs.root, &args.kubernetes_dir, "--kubernetes-dir")?;
        let pki = pki_spec(&args.node, &args.pki)?;
        let mut spec = ClusterSpec::new(pki);
        spec.pod_cidr = args.pod_cidr.clone();
        spec.pod_network = args.pod_network.into();
        if let Some(registry) = &args.image_registry {
            spec.image_registry = registry.as_str().to_string();
        }
        spec.cert_dir = cert_dir;
        spec.kubernetes_dir = kubernetes_dir;
        spec.validate()?;
        Ok(Self {
            source: crate::cli::ArtifactSourceArgs {
                artifacts_dir: args.source.artifacts_dir.clone(),
                bundle: args.source.bundle.clone(),
                mirror: args.source.mirror.clone(),
                cache_dir: args.source.cache_dir.clone(),
            },
            timeout: std::time::Duration::from_secs(args.timeout),
            spec,
            proxy_mode: match args.proxy_mode {
                ProxyModeArg::Iptables => "iptables",
                ProxyModeArg::Ipvs => "ipvs",
            },
            flannel_image: args.flannel_image.to_string(),
            root,
            dry_run: args.dry_run,
            output: args.output,
        })
    }
}

fn run_phase(ctx: &InitContext, phase: InitPhaseArg) -> anyhow::Result<()> {
    let spec = &ctx.spec;
    // The phases that change the node's files do so under the node lock.
    let _lock = match phase {
        InitPhaseArg::Base
        | InitPhaseArg::Certs
        | InitPhaseArg::Kubeconfig
        | InitPhaseArg::Etcd
        | InitPhaseArg::ControlPlane
        | InitPhaseArg::KubeletStart
            if !ctx.dry_run =>
        {
            Some(super::lock_node(&ctx.root)?)
        }
        _ => None,
    };
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
        InitPhaseArg::Base => base(ctx),
        InitPhaseArg::KubeletStart => kubelet_start(ctx),
        InitPhaseArg::WaitControlPlane => wait_control_plane(ctx),
        InitPhaseArg::UploadConfig => upload_config(ctx),
        InitPhaseArg::MarkControlPlane => mark_control_plane(ctx),
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
    api_target(ctx, "bootstrap-token")?;
    let spec = &ctx.spec;
    let ca_path = spec.cert_dir.join("ca.crt");
    let ca_pem =
        std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let server = spec.node().control_plane_url();
    if ctx.dry_run {
        eprintln!("kprov: would apply the bootstrap RBAC and cluster-info (server {server})");
        return Ok(());
    }
    let (rt, client) = admin_client(ctx, "bootstrap-token")?;
    let report = rt
        .block_on(api::apply_bootstrap(&client, &server, &ca_pem))
        .context("applying the bootstrap RBAC and cluster-info")?;
    print_applied(ctx, &report, "bootstrap RBAC and cluster-info")
}

fn addons(ctx: &InitContext) -> anyhow::Result<()> {
    api_target(ctx, "addons")?;
    let addons = kprov_controlplane::addons::addons(&ctx.spec, ctx.proxy_mode, &ctx.flannel_image);
    if ctx.dry_run {
        eprintln!("kprov: would apply kube-proxy, CoreDNS and the pod network's objects");
        return Ok(());
    }
    let (rt, client) = admin_client(ctx, "addons")?;
    let report = rt
        .block_on(api::apply_addons(&client, &addons))
        .context("applying the add-ons")?;
    print_applied(ctx, &report, "add-ons")
}

/// The description of the token `kprov init` makes, by which a re-run
/// finds it again.
const INIT_TOKEN_DESCRIPTION: &str = "made by kprov init for joining nodes";

fn node_spec(ctx: &InitContext) -> anyhow::Result<kprov_core::NodeSpec> {
    let arch = kprov_core::Arch::host()
        .context("cannot tell this machine's architecture (amd64 or arm64)")?;
    let mut spec = kprov_core::NodeSpec::new(ctx.spec.node().kubernetes_version.clone(), arch);
    spec.proxy_mode = match ctx.proxy_mode {
        "ipvs" => kprov_core::ProxyMode::Ipvs,
        _ => kprov_core::ProxyMode::Iptables,
    };
    Ok(spec)
}

fn base(ctx: &InitContext) -> anyhow::Result<()> {
    let os = kprov_provision::facts::detect_os(&ctx.root)?;
    if !ctx.source.given() {
        // Without a source the base phase would download; a prebaked
        // node needs none, so only check that it was prebaked.
        let kubelet = std::path::Path::new(kprov_provision::tables::layout(os.family).bin_dir)
            .join("kubelet");
        if !ctx.root.resolve(&kubelet)?.exists() {
            anyhow::bail!(
                "the base phase is not in place ({} is missing): pass --bundle, --artifacts-dir or --mirror to install it, or run `kprov provision --phase base` first",
                kubelet.display()
            );
        }
        eprintln!("kprov: base phase: in place (no --bundle, --artifacts-dir or --mirror given; nothing installed)");
        return Ok(());
    }
    let mut spec = node_spec(ctx)?;
    spec.validate(kprov_core::Phase::Base)?;
    let artifacts = kprov_artifacts::WithSelf::new(crate::commands::provision::artifact_source(
        &ctx.source,
        &mut spec,
    )?);
    let plan = kprov_provision::plan::plan_base(&os, &spec, ctx.root.is_live())?;
    crate::commands::provision::apply_plan(&ctx.root, &plan, &artifacts, ctx.dry_run, ctx.output)?;
    Ok(())
}

fn upload_config(ctx: &InitContext) -> anyhow::Result<()> {
    api_target(ctx, "upload-config")?;
    // Joining nodes keep the CA where kubeadm join (and kprov's join)
    // writes it, whatever this master's --cert-dir.
    let params = kprov_provision::render::kubelet::KubeletParams {
        client_ca_file: kprov_provision::plan::CA_CERT_PATH.into(),
        ..kubelet_params(ctx)
    };
    let kubelet_config = kprov_provision::render::kubelet::kubelet_config(&params);
    let upload = kprov_controlplane::kubeadm_config::upload_config(&ctx.spec, &kubelet_config);
    if ctx.dry_run {
        eprintln!(
            "kprov: would upload kubeadm-config and the kubelet's configuration for kubeadm join"
        );
        return Ok(());
    }
    let (rt, client) = admin_client(ctx, "upload-config")?;
    let report = rt
        .block_on(api::apply_upload_config(&client, &upload))
        .context("uploading kubeadm-config and the kubelet's configuration")?;
    print_applied(
        ctx,
        &report,
        "kubeadm-config and the kubelet's configuration",
    )
}

/// This node's kubelet settings; with the joining nodes' CA path, also
/// the KubeletConfiguration upload-config gives nodes that join with
/// kubeadm.
fn kubelet_params(ctx: &InitContext) -> kprov_provision::render::kubelet::KubeletParams {
    let spec = &ctx.spec;
    kprov_provision::render::kubelet::KubeletParams {
        version: spec.node().kubernetes_version.clone(),
        client_ca_file: spec.cert_dir.join("ca.crt").display().to_string(),
        cluster_dns: kprov_controlplane::addons::cluster_dns_ip(spec).to_string(),
        cluster_domain: spec.cluster_domain().as_str().to_string(),
        runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
        node_ip: Some(spec.node().advertise_address.ip().to_string()),
        node_labels: Default::default(),
        register_with_taints: Vec::new(),
        cloud_provider: None,
        cloud_config: None,
        static_pods: true,
        // The kubelet must register under the name its certificate and
        // the control plane's pod names use, not the host name.
        hostname_override: Some(spec.node().node_name.to_string()),
    }
}

fn kubelet_start(ctx: &InitContext) -> anyhow::Result<()> {
    let os = kprov_provision::facts::detect_os(&ctx.root)?;
    let plan = kprov_provision::plan::plan_kubelet(
        &os,
        &kubelet_params(ctx),
        ctx.root.is_live(),
        "init kubelet-start",
        kprov_core::ContainerRuntime::Containerd,
    )?;
    crate::commands::provision::apply_plan(
        &ctx.root,
        &plan,
        &kprov_artifacts::NoArtifacts,
        ctx.dry_run,
        ctx.output,
    )?;
    Ok(())
}

fn admin_client(
    ctx: &InitContext,
    phase: &str,
) -> anyhow::Result<(tokio::runtime::Runtime, api::Client)> {
    let admin = api_target(ctx, phase)?;
    let rt = runtime()?;
    let client = rt
        .block_on(api::client(&admin))
        .with_context(|| format!("phase {phase}"))?;
    Ok((rt, client))
}

fn wait_control_plane(ctx: &InitContext) -> anyhow::Result<()> {
    if ctx.dry_run {
        eprintln!("kprov: would wait for the API server");
        return Ok(());
    }
    let (rt, client) = admin_client(ctx, "wait-control-plane")?;
    let url = ctx.spec.node().local_url();
    let start = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let mut last_error;
    loop {
        match rt.block_on(api::readyz(&client)) {
            Ok(()) => {
                eprintln!(
                    "kprov: the API server at {url} is ready ({:.0} s)",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(e) => last_error = e,
        }
        if start.elapsed() > ctx.timeout {
            break;
        }
        if last_report.elapsed() > std::time::Duration::from_secs(10) {
            eprintln!(
                "kprov: waiting for the API server at {url} ({:.0} s of {} s): {last_error}",
                start.elapsed().as_secs_f64(),
                ctx.timeout.as_secs()
            );
            last_report = std::time::Instant::now();
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let diagnosis = kprov_controlplane::diagnose::diagnose(
        &format!("the API server at {url}"),
        &last_error,
        &super::kubelet_facts(),
        &component_facts(ctx),
    );
    anyhow::bail!("{diagnosis}")
}

/// Each static pod's container logs as the kubelet keeps them:
/// /var/log/pods/kube-system_<name>-<node>_<uid>/<name>/<restart>.log.
fn component_facts(ctx: &InitContext) -> Vec<kprov_controlplane::diagnose::ComponentFacts> {
    let node = ctx.spec.node().node_name.as_str();
    manifests::COMPONENTS
        .iter()
        .map(|name| {
            let prefix = format!("kube-system_{name}-{node}_");
            let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir("/var/log/pods")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .flat_map(|e| {
                    std::fs::read_dir(e.path().join(name))
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .map(|e| e.path())
                .collect();
            logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            // The newest log with something in it: a container that was
            // just restarted has not logged yet.
            let tails: Vec<String> = logs
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                    lines[lines.len().saturating_sub(10)..].join("\n")
                })
                .collect();
            let log_tail = tails
                .iter()
                .rev()
                .find(|t| !t.is_empty())
                .or(tails.last())
                .cloned();
            kprov_controlplane::diagnose::ComponentFacts {
                name: name.to_string(),
                log_tail,
                attempts: logs.len(),
            }
        })
        .collect()
}

fn mark_control_plane(ctx: &InitContext) -> anyhow::Result<()> {
    if ctx.dry_run {
        eprintln!("kprov: would label and taint this node as a control-plane node");
        return Ok(());
    }
    let (rt, client) = admin_client(ctx, "mark-control-plane")?;
    let node = ctx.spec.node().node_name.as_str();
    let version = &ctx.spec.node().kubernetes_version;
    let start = std::time::Instant::now();
    loop {
        if let Some(applied) = rt
            .block_on(api::mark_control_plane(&client, node, version))
            .context("marking the control-plane node")?
        {
            return print_applied(ctx, &[applied], "the control-plane node's labels and taint");
        }
        if start.elapsed() > ctx.timeout {
            let diagnosis = kprov_controlplane::diagnose::diagnose(
                &format!("the Node {node}"),
                "not registered",
                &super::kubelet_facts(),
                &[],
            );
            anyhow::bail!("{diagnosis}");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Prints the command that joins a node: with the token an earlier run
/// made, or a new one.
fn print_join_command(ctx: &InitContext) -> anyhow::Result<()> {
    let (rt, client) = admin_client(ctx, "join command")?;
    let now = time::OffsetDateTime::now_utc();
    let token = match rt.block_on(api::find_token(&client, INIT_TOKEN_DESCRIPTION, now))? {
        Some(token) => {
            eprintln!(
                "kprov: bootstrap token {} exists; nothing changed",
                token.id()
            );
            token
        }
        None => {
            let mut spec = kprov_controlplane::token::TokenSpec::for_joining(
                kprov_controlplane::token::generate(),
            );
            spec.description = INIT_TOKEN_DESCRIPTION.into();
            rt.block_on(api::create_token(&client, &spec, now))
                .context("creating the first bootstrap token")?;
            eprintln!("kprov: created bootstrap token {}", spec.token.id());
            spec.token
        }
    };
    let (server, hash) =
        crate::commands::token::join_target(&ctx.spec.kubernetes_dir.join("admin.conf"))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}",
            kprov_controlplane::token::join_command(&server, &token, &hash)
        );
    }
    Ok(())
}
