//! `kprov netboot serve`: reads and validates the config, then runs the
//! servers of kprov-netboot on a tokio runtime until one of them stops
//! (then the command fails, naming it). `kprov netboot rotate-token`:
//! starts a new token epoch for one machine in the config's state
//! directory. `kprov netboot crd`: prints the Machine resource's
//! CustomResourceDefinition. `kprov netboot deploy`: runs netboot in the
//! cluster (kprov-netboot's deploy objects, applied server-side).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kprov_netboot::config::Config;
use kprov_netboot::machine::MacAddr;

use crate::cli::{MachinesArg, NetbootCommand, NetbootDeployArgs};
use kprov_netboot::server::MachineSource;

fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    Ok(Config::parse(path, &text)?)
}

/// A replica's name in the Lease: given, else the pod's, else the host's
/// with the process ID.
fn identity(given: Option<&str>) -> String {
    if let Some(name) = given {
        return name.to_string();
    }
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.is_empty() {
            return pod;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// `kprov netboot deploy`: checks the config, builds the objects, and
/// prints them or applies them.
fn deploy(args: NetbootDeployArgs) -> anyhow::Result<ExitCode> {
    use kprov_netboot::deploy::{check_config, plan, DeploySpec};
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("--config {}: cannot read", args.config.display()))?;
    let config = Config::parse(&args.config, &text)?;
    check_config(&text, &config, &args.data_dir)
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", args.config.display()))?;
    let mut node_selector = std::collections::BTreeMap::new();
    for pair in &args.node_selector {
        let (key, value) = pair.split_once('=').with_context(|| {
            format!("--node-selector {pair:?}: expected KEY=VALUE, e.g. kubernetes.io/hostname=master-1")
        })?;
        node_selector.insert(key.to_string(), value.to_string());
    }
    if node_selector.is_empty() {
        node_selector.insert("node-role.kubernetes.io/master".into(), String::new());
    }
    let plan = plan(&DeploySpec {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        config_text: text,
        http_port: config.ports.http,
        data_dir: args.data_dir.clone(),
        node_selector,
    });
    if args.output.is_some() {
        let docs: Vec<String> = plan.objects.iter().map(|o| o.to_yaml()).collect();
        #[allow(clippy::print_stdout)]
        {
            print!("{}", docs.join("---\n"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(async {
        let client = kprov_kube::client(&args.kubeconfig)
            .await
            .with_context(|| format!("--kubeconfig {}", args.kubeconfig.display()))?;
        let target = format!("the cluster of {}", args.kubeconfig.display());
        kprov_kube::apply::apply_plan(&client, &plan, &target, args.dry_run)
            .await
            .context("applying netboot's objects")
    })?;
    eprint!("{}", report.render_text());
    Ok(ExitCode::SUCCESS)
}

/// Runs a `kprov netboot` subcommand.
pub fn run(command: NetbootCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetbootCommand::Serve(args) => {
            let mut config = read_config(&args.config)?;
            if let Some(address) = args.server_address {
                config = config.with_server_address(&args.config, address)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let result = runtime.block_on(async {
                let source = match args.machines {
                    MachinesArg::Files => MachineSource::Files,
                    MachinesArg::Kubernetes => {
                        let client = match &args.kubeconfig {
                            Some(path) => kprov_kube::client(path).await,
                            None => kprov_kube::client_in_cluster().await,
                        }
                        .context("--machines kubernetes: connecting to the cluster")?;
                        kprov_netboot::kube_source::check_served(&client)
                            .await
                            .map_err(|e| anyhow::anyhow!("--machines kubernetes: {e}"))?;
                        MachineSource::Kubernetes {
                            client,
                            lease_namespace: args.lease_namespace.clone(),
                            identity: identity(args.identity.as_deref()),
                        }
                    }
                };
                kprov_netboot::server::serve(config, source)
                    .await
                    .map_err(anyhow::Error::from)
            });
            // A TFTP transfer on a blocking thread may still wait for its
            // client: do not wait for it.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        NetbootCommand::RotateToken(args) => {
            let mac: MacAddr = args
                .mac
                .parse()
                .map_err(|e| anyhow::anyhow!("MAC argument: {e}"))?;
            let config = read_config(&args.config)?;
            let epoch =
                kprov_netboot::epochs::rotate(&config.state_dir, &mac).with_context(|| {
                    format!(
                        "raising the token epoch of {mac} in {}",
                        kprov_netboot::epochs::dir(&config.state_dir).display()
                    )
                })?;
            eprintln!(
                "{mac}: token epoch {epoch}; tokens of earlier epochs are refused from now on"
            );
            #[allow(clippy::print_stdout)]
            {
                println!("{epoch}");
            }
            Ok(ExitCode::SUCCESS)
        }
        NetbootCommand::Deploy(args) => deploy(args),
        NetbootCommand::Crd => {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", kprov_netboot::crd::definition());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
