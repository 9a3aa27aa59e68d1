//! `kprov bundle create|verify`: offline bundles.

use std::process::ExitCode;

use anyhow::Context;
use kprov_artifacts::bundle::{self, BundleSource, BundleSpec};
use kprov_artifacts::catalog::Bases;
use kprov_artifacts::download::Downloader;

use crate::cli::{BundleCommand, BundleCreateArgs, BundleVerifyArgs};

/// Runs a `kprov bundle` subcommand.
pub fn run(command: BundleCommand) -> anyhow::Result<ExitCode> {
    match command {
        BundleCommand::Create(args) => create(args),
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
