//! `kprov provision`: validate every input, plan, apply, report.

use std::process::ExitCode;

use anyhow::{bail, Context};
use kprov_artifacts::bundle::BundleSource;
use kprov_artifacts::catalog::Bases;
use kprov_artifacts::download::{DownloadSource, Downloader};
use kprov_artifacts::{ArtifactSource, LocalDirSource, WithSelf};
use kprov_core::{Arch, BootstrapToken, ContainerRuntime, NodeSpec, Phase};
use kprov_host::{Root, SystemRunner};
use kprov_plan::{ApplyContext, Event, Plan, Report, Resource};

use crate::cli::{ArtifactSourceArgs, OutputArg, ProvisionArgs};

/// Turns flags into a validated spec; reads --ca-cert. Nothing on the
/// target is touched here.
fn node_spec(args: &ProvisionArgs, phase: Phase) -> anyhow::Result<NodeSpec> {
    let ca_cert = super::read_ca_cert(args.ca_cert.as_deref())?;
    let arch = match args.arch {
        Some(a) => a,
        None => Arch::host()
            .context("--arch: cannot tell this machine's architecture; pass amd64 or arm64")?,
    };
    let spec = NodeSpec {
        container_runtime: args.container_runtime.into(),
        proxy_mode: args.proxy_mode.into(),
        cloud_provider: args.cloud_provider.clone(),
        cloud_config: args.cloud_config.clone(),
        token: match &args.token {
            None => None,
            Some(t) => Some(t.parse::<BootstrapToken>().context("--token")?),
        },
        ca_cert,
        sandbox_image: args.sandbox_image.clone(),
        runtime_source: args.runtime_source.into(),
        api_server: args.api_server.as_deref().map(str::parse).transpose()?,
        ca_cert_hashes: args
            .discovery_token_ca_cert_hash
            .iter()
            .map(|h| h.parse())
            .collect::<Result<_, _>>()?,
        unsafe_skip_ca_verification: args.discovery_token_unsafe_skip_ca_verification,
        node_name: args.node_name.as_deref().map(str::parse).transpose()?,
        node_ip: match &args.node_ip {
            None => None,
            Some(ip) => Some(ip.parse().map_err(|_| {
                anyhow::anyhow!("invalid --node-ip {ip:?}: expected an IPv4 or IPv6 address")
            })?),
        },
        node_labels: match &args.node_labels {
            None => Vec::new(),
            Some(l) => kprov_core::join::parse_node_labels(l)?,
        },
        register_with_taints: args
            .register_with_taints
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()?,
        ..NodeSpec::new(args.kubelet_version.clone(), arch)
    };
    spec.validate(phase)?;
    if phase.includes_join() {
        if args.timeout == 0 {
            bail!("--timeout 0: expected a number of seconds above 0");
        }
        if !kprov_core::join::is_dns_name(&args.cluster_domain) {
            bail!(
                "invalid --cluster-domain {:?}: expected a DNS domain such as cluster.local",
                args.cluster_domain
            );
        }
        super::join::check_inputs(&spec)?;
    }
    Ok(spec)
}

/// Where binaries come from: a bundle, an artifact directory, or verified
/// downloads from upstream or a mirror. A bundle's images are added to
/// the spec, to be imported into containerd.
pub fn artifact_source(
    args: &ArtifactSourceArgs,
    spec: &mut NodeSpec,
) -> anyhow::Result<Box<dyn ArtifactSource>> {
    if let Some(bundle) = &args.bundle {
        let source =
            BundleSource::open(bundle).with_context(|| format!("--bundle {}", bundle.display()))?;
        let m = source.manifest();
        if m.kubernetes_version != spec.kubelet_version.to_string() || m.arch != spec.arch {
            bail!(
                "--bundle {}: holds Kubernetes {} for {}, but the node needs {} for {}",
                bundle.display(),
                m.kubernetes_version,
                m.arch,
                spec.kubelet_version,
                spec.arch
            );
        }
        spec.images = source.images();
        if !spec.images.is_empty() && spec.container_runtime != ContainerRuntime::Containerd {
            eprintln!(
                "kprov: note: --bundle {} holds {} images; they are imported into containerd only, not {}",
                bundle.display(),
                spec.images.len(),
                spec.container_runtime
            );
        }
        return Ok(Box::new(source));
    }
    if let Some(dir) = &args.artifacts_dir {
        let source = LocalDirSource::open(dir)
            .with_context(|| format!("--artifacts-dir {}", dir.display()))?;
        return Ok(Box::new(source));
    }
    let bases = match &args.mirror {
        Some(url) => Bases::mirror(&parse_mirror(url)?),
        None => Bases::upstream(),
    };
    kprov_artifacts::catalog::companions(&spec.kubelet_version).context("--kubelet-version")?;
    let downloader = Downloader::new(&args.cache_dir)
        .with_context(|| format!("--cache-dir {}", args.cache_dir.display()))?;
    Ok(Box::new(DownloadSource::new(
        downloader,
        spec.kubelet_version.clone(),
        bases,
    )?))
}

/// Checks a --mirror value: an http(s) URL.
pub fn parse_mirror(url: &str) -> anyhow::Result<String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if !ok {
        bail!("--mirror {url:?}: expected an http:// or https:// base URL, e.g. https://mirror.example/k8s");
    }
    Ok(url.to_string())
}

/// Runs `kprov provision`.
pub fn run(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let phase: Phase = args.phase.into();
    let mut spec = node_spec(&args, phase)?;
    let root = Root::new(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let os = kprov_provision::facts::detect_os(&root)?;
    if phase.includes_base() {
        let artifacts = WithSelf::new(artifact_source(&args.source, &mut spec)?);
        let plan = kprov_provision::plan::plan_base(&os, &spec, root.is_live())?;
        apply_plan(&root, &plan, &artifacts, args.dry_run, args.output)?;
    }
    if phase.includes_join() {
        super::join::run(&root, &os, &spec, &args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies `plan` with progress on stderr and the report on stdout.
pub fn apply_plan(
    root: &Root,
    plan: &Plan,
    artifacts: &dyn ArtifactSource,
    dry_run: bool,
    output: OutputArg,
) -> anyhow::Result<Report> {
    // Whatever calls this (provision's phases, init's base and
    // kubelet-start), the changes are made under the node lock.
    let _lock = if dry_run {
        None
    } else {
        Some(super::lock_node(root)?)
    };
    let runner = SystemRunner::new(root.clone());
    let ctx = ApplyContext {
        root,
        runner: &runner,
        artifacts,
        dry_run,
    };
    eprintln!("kprov: {}", plan.headline);
    let width = plan.resources.len().to_string().len();
    let mut progress = |event: Event<'_>| match event {
        Event::Started {
            index,
            total,
            resource,
        } => {
            if matches!(
                resource,
                Resource::Packages { .. } | Resource::Archive { .. }
            ) && !dry_run
            {
                eprintln!("[{index:>width$}/{total}] {resource} ...");
            }
        }
        Event::Finished {
            index,
            total,
            entry,
        } => {
            eprintln!(
                "[{index:>width$}/{total}] {:<12} {}",
                entry.outcome.word(dry_run),
                entry.description
            );
        }
    };
    let report = kprov_plan::apply(plan, &ctx, &mut progress)
        .with_context(|| format!("provisioning {root}"))?;

    #[allow(clippy::print_stdout)]
    match output {
        OutputArg::Json => {
            let doc = if dry_run {
                serde_json::json!({ "plan": plan, "report": report })
            } else {
                serde_json::json!({ "report": report })
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputArg::Text => {
            if dry_run {
                print!("{}", plan.render_text());
            }
            print!("{}", report.render_text());
        }
    }
    Ok(report)
}
