//! `kprov provision`: validate every input, plan, apply, report.

use std::process::ExitCode;

use anyhow::{bail, Context};
use kprov_artifacts::bundle::BundleSource;
use kprov_artifacts::catalog::Bases;
use kprov_artifacts::{ArtifactSource, LocalDirSource, WithSelf};
use kprov_controlplane::copy_certs::CertificateKey;
use kprov_core::{Arch, ContainerRuntime, NodeSpec};
use kprov_fetch::download::{DownloadSource, Downloader};
use kprov_host::Root;
use kprov_workflow::join::{Join, JoinSpec};
use kprov_workflow::join_control_plane::{self, MasterJoinSpec};
use kprov_workflow::Selection;

use crate::cli::{ArtifactSourceArgs, ProvisionArgs};
use crate::output::Printer;

/// Turns flags into a validated spec; reads --ca-cert. Nothing on the
/// target is touched here.
fn node_spec(args: &ProvisionArgs) -> anyhow::Result<NodeSpec> {
    let node = &args.node;
    let ca_cert = super::read_ca_cert(node.ca_cert.as_deref())?;
    let arch = match node.arch {
        Some(a) => a,
        None => Arch::host()
            .context("--arch: cannot tell this machine's architecture; pass amd64 or arm64")?,
    };
    let spec = node
        .node_spec(ca_cert, arch)
        .map_err(|e| args.from_config.blame(e))?;
    if node.phase.includes_join() {
        kprov_workflow::join::check_inputs(&spec)?;
    }
    Ok(spec)
}

/// A master's join (--control-plane): its certificate key and advertise
/// address, checked before anything is touched. None for other nodes.
fn master_inputs(
    args: &ProvisionArgs,
) -> anyhow::Result<Option<(CertificateKey, kprov_pki::spec::AdvertiseAddress)>> {
    let node = &args.node;
    if !node.control_plane {
        return Ok(None);
    }
    if !node.phase.includes_join() {
        bail!("--control-plane: a master joins in the join phase; use --phase join or --phase all");
    }
    let Some(key) = &node.certificate_key else {
        bail!("--control-plane needs --certificate-key (or KPROV_CERTIFICATE_KEY): the key `kprov init --upload-certs` printed, or the one `kprov init phase upload-certs --certificate-key` was given");
    };
    let key: CertificateKey = key.expose().parse().context("--certificate-key")?;
    let Some(ip) = &node.node_ip else {
        bail!("--control-plane needs --node-ip: the address this master's API server and etcd member advertise to the others");
    };
    let address = ip.parse().context("--node-ip")?;
    Ok(Some((key, address)))
}

/// Where binaries come from: a bundle, an artifact directory, or verified
/// downloads from upstream or a mirror. A bundle's images are added to
/// the spec, to be imported into containerd.
pub fn artifact_source(
    args: &ArtifactSourceArgs,
    spec: &mut NodeSpec,
    runtime: &tokio::runtime::Handle,
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
        runtime.clone(),
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
    let phase = args.node.phase;
    let mut spec = node_spec(&args)?;
    let master = master_inputs(&args)?;
    let root = Root::new(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let session = super::Session::new(root.clone())?;
    let rt = &session.rt;
    let mut printer = Printer::new("provision", args.output, args.dry_run);
    let result = (|| -> anyhow::Result<()> {
        let mut target = session.target(args.dry_run, &mut printer);
        if phase.includes_base() {
            let os = kprov_provision::facts::detect_os(&root)?;
            let source = ArtifactSourceArgs {
                artifacts_dir: args.node.artifacts_dir.clone(),
                bundle: args.node.bundle.clone(),
                mirror: args.node.mirror.clone(),
                cache_dir: args.node.cache_dir.clone(),
            };
            let artifacts = WithSelf::new(artifact_source(&source, &mut spec, rt.handle())?);
            let plan = kprov_provision::plan::plan_base(&os, &spec, root.is_live())?;
            target.apply(&plan, &artifacts, "provisioning")?;
        }
        if phase.includes_join() {
            let join = JoinSpec {
                node: spec.clone(),
                cluster_dns: args.node.cluster_dns,
                cluster_domain: args.node.cluster_domain.clone(),
                timeout: std::time::Duration::from_secs(args.node.timeout),
                base_planned: phase.includes_base(),
            };
            match master {
                Some((certificate_key, advertise_address)) => join_control_plane::run(
                    MasterJoinSpec {
                        join,
                        certificate_key,
                        advertise_address,
                    },
                    target,
                )?,
                None => Join::new(join, target).run(&Selection::All { skip: Vec::new() })?,
            }
        }
        Ok(())
    })();
    printer.finish()?;
    result?;
    Ok(ExitCode::SUCCESS)
}
