//! `kprov bundle create|verify`: offline bundles.

use std::process::ExitCode;

use anyhow::{bail, Context};
use kprov_artifacts::bundle::BundleSource;
use kprov_artifacts::catalog::{Bases, ImageRef};
use kprov_fetch::bundle::{self, BundleSpec};
use kprov_fetch::download::Downloader;
use kprov_fetch::image::RegistryOptions;

use crate::cli::{BundleCommand, BundleCreateArgs, BundleVerifyArgs};

/// Runs a `kprov bundle` subcommand.
pub fn run(command: BundleCommand) -> anyhow::Result<ExitCode> {
    match command {
        BundleCommand::Create(args) => create(*args),
        BundleCommand::Verify(args) => verify(args),
    }
}

fn create(args: BundleCreateArgs) -> anyhow::Result<ExitCode> {
    kprov_artifacts::catalog::companions(&args.kubernetes_version)
        .context("--kubernetes-version")?;
    let bases = match &args.mirror {
        Some(url) => Bases::mirror(&super::provision::parse_mirror(url)?),
        None => Bases::upstream(),
    };
    let spec = BundleSpec {
        kubernetes_version: args.kubernetes_version.clone(),
        arch: args.arch,
        control_plane: args.control_plane,
        upstream_runtime: args.upstream_runtime,
        extras: args.include.iter().map(|e| (*e).into()).collect(),
        images: images(&args)?,
        registry: registry_options(&args)?,
    };
    let downloader = Downloader::new(&args.cache_dir)
        .with_context(|| format!("--cache-dir {}", args.cache_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let start = std::time::Instant::now();
    let manifest = runtime
        .block_on(bundle::create(&args.output, &spec, &bases, &downloader))
        .with_context(|| format!("creating bundle {}", args.output.display()))?;
    let total: u64 = manifest.artifacts.iter().map(|a| a.size).sum();
    eprintln!(
        "bundle {}: {} artifacts, {} bytes, in {:.1} s",
        args.output.display(),
        manifest.artifacts.len(),
        total,
        start.elapsed().as_secs_f64()
    );
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The catalog's images for the bundle, less the excluded ones, plus the
/// extra ones.
fn images(args: &BundleCreateArgs) -> anyhow::Result<Vec<ImageRef>> {
    if args.no_images {
        return Ok(Vec::new());
    }
    let all = kprov_artifacts::catalog::images(&args.kubernetes_version, args.control_plane, None)
        .context("--kubernetes-version")?;
    for excluded in &args.exclude_image {
        if !all.iter().any(|i| i.to_string() == *excluded) {
            bail!(
                "--exclude-image {excluded:?}: not an image of this bundle; expected one of: {}",
                all.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut images: Vec<ImageRef> = all
        .into_iter()
        .filter(|i| !args.exclude_image.contains(&i.to_string()))
        .collect();
    for extra in &args.extra_images {
        let image = kprov_artifacts::catalog::parse_image_ref(extra).with_context(|| {
            format!("--image {extra:?}: expected REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/busybox:1.35.0")
        })?;
        if !images.contains(&image) {
            images.push(image);
        }
    }
    Ok(images)
}

/// Checks --registry-mirror (HOST[:PORT]) and reads the registry password.
fn registry_options(args: &BundleCreateArgs) -> anyhow::Result<RegistryOptions> {
    if let Some(m) = &args.registry_mirror {
        let (host, port) = match m.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (m.as_str(), None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !host_ok || !port_ok {
            bail!("--registry-mirror {m:?}: expected HOST or HOST:PORT, e.g. registry.example.com:5000 (no scheme, no path)");
        }
    }
    let basic_auth = match &args.registry_username {
        None => None,
        Some(user) => {
            let password = std::env::var("KPROV_REGISTRY_PASSWORD").map_err(|_| {
                anyhow::anyhow!(
                    "--registry-username {user}: set the password in KPROV_REGISTRY_PASSWORD"
                )
            })?;
            Some((user.clone(), password))
        }
    };
    Ok(RegistryOptions {
        mirror: args.registry_mirror.clone(),
        insecure: args.insecure_registry,
        basic_auth,
    })
}

fn verify(args: BundleVerifyArgs) -> anyhow::Result<ExitCode> {
    let source = BundleSource::open(&args.bundle)?;
    source.verify()?;
    let m = source.manifest();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "bundle {}: Kubernetes {} ({}), {} artifacts verified",
            args.bundle.display(),
            m.kubernetes_version,
            m.arch,
            m.artifacts.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
