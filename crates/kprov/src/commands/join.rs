//! The join phase of `kprov provision`: establish trust in the API server
//! (`--ca-cert` or token discovery with a pinned CA hash), write the CA,
//! the bootstrap kubeconfig and the kubelet's configuration through the
//! apply engine, then on a running host start the kubelet and wait for
//! TLS bootstrap and the Node, diagnosing a failure by its cause.
//!
//! The decisions (which CA to trust, which cause) are pure, in
//! kprov_controlplane::discovery; this module probes and waits.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kprov_controlplane::api;
use kprov_controlplane::discovery::{self, JoinCause, JoinFacts, Pins, Probe};
use kprov_core::{ApiServerUrl, BootstrapToken, NodeSpec};
use kprov_host::Root;
use kprov_pki::kubeconfig::Kubeconfig;
use kprov_provision::os::OsFacts;
use kprov_provision::plan::{self, JoinFiles};
use kprov_provision::render::kubelet::{self, KubeletParams};

use crate::cli::ProvisionArgs;
use crate::commands::runtime;

/// Where the kubelet keeps its current client certificate.
const KUBELET_CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// How often the waits say what they wait for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long cluster-info may lack a valid signature for the token before
/// the token counts as invalid: the controller manager's bootstrapsigner
/// signs a token made by kubeadm a few seconds after it was created.
const SIGNATURE_GRACE: Duration = Duration::from_secs(10);

/// The validated join inputs (NodeSpec::validate has checked that they
/// are present).
struct Join<'a> {
    server: &'a ApiServerUrl,
    token: &'a BootstrapToken,
    spec: &'a NodeSpec,
    deadline: Instant,
    timeout: Duration,
}

/// Before anything is touched: --ca-cert must match a pinned hash when
/// both are given.
pub fn check_inputs(spec: &NodeSpec) -> anyhow::Result<()> {
    if let (Some(ca), false) = (&spec.ca_cert, spec.ca_cert_hashes.is_empty()) {
        discovery::check_pinned(ca.pem().as_bytes(), &Pins::Hashes(&spec.ca_cert_hashes))
            .map_err(|cause| anyhow::anyhow!("--ca-cert: {cause}"))?;
    }
    Ok(())
}

/// Runs the join phase on `root`.
pub fn run(root: &Root, os: &OsFacts, spec: &NodeSpec, args: &ProvisionArgs) -> anyhow::Result<()> {
    let (Some(server), Some(token)) = (&spec.api_server, &spec.token) else {
        unreachable!("NodeSpec::validate requires --api-server and --token for the join phase")
    };
    let base_in_place = kprov_provision::tables::UNIT_SEARCH_PATH.iter().any(|dir| {
        root.resolve_following(Path::new(dir).join("kubelet.service"))
            .is_ok_and(|p| p.is_file())
    });
    // A dry run of --phase all has not installed the base phase yet.
    let base_planned = args.dry_run && spec_includes_base(args);
    if !(base_in_place || base_planned) {
        bail!(
            "the base phase is not in place on {root} (no kubelet.service unit): run `kprov provision --phase base` first, or --phase all"
        );
    }
    let timeout = Duration::from_secs(args.timeout);
    let join = Join {
        server,
        token,
        spec,
        deadline: Instant::now() + timeout,
        timeout,
    };
    let joined = joined_ca(root)?;
    let (ca_pem, bootstrap) = match joined {
        Some(ca_pem) => {
            check_same_cluster(spec, &ca_pem)?;
            eprintln!(
                "kprov: this node has joined already (/etc/kubernetes/kubelet.conf holds a valid client certificate); bootstrap-kubelet.conf is left as it is"
            );
            (ca_pem, None)
        }
        None => {
            let ca_pem = trust(&join, root)?;
            let conf = Kubeconfig::with_token(
                &server.to_string(),
                "tls-bootstrap-token-user",
                &ca_pem,
                &token.expose_secret(),
            )
            .to_yaml()?;
            (ca_pem, Some(conf.into_bytes()))
        }
    };
    let params = kubelet_params(spec, args);
    let files = JoinFiles {
        ca_pem: String::from_utf8_lossy(&ca_pem).into_owned(),
        bootstrap_kubeconfig: bootstrap,
    };
    let plan = plan::plan_join(os, &params, &files, root.is_live(), spec.container_runtime)?;
    let report = super::provision::apply_plan(
        root,
        &plan,
        &kprov_artifacts::NoArtifacts,
        args.dry_run,
        args.output,
    )?;
    if args.dry_run {
        return Ok(());
    }
    if !root.is_live() {
        eprintln!(
            "kprov: join phase written to {root}; kubelet.service is enabled and joins the cluster when the machine boots"
        );
        return Ok(());
    }
    let node = node_name(spec, root)?;
    wait_joined(&join, &ca_pem, &node)?;
    if report.summary.created + report.summary.changed == 0 {
        eprintln!("kprov: node {node} is joined; nothing changed");
    } else {
        eprintln!("kprov: node {node} joined {}", join.server);
    }
    Ok(())
}

fn spec_includes_base(args: &ProvisionArgs) -> bool {
    kprov_core::Phase::from(args.phase).includes_base()
}

/// The kubelet's parameters from the spec.
fn kubelet_params(spec: &NodeSpec, args: &ProvisionArgs) -> KubeletParams {
    KubeletParams {
        version: spec.kubelet_version.clone(),
        client_ca_file: plan::CA_CERT_PATH.into(),
        cluster_dns: args.cluster_dns.to_string(),
        cluster_domain: args.cluster_domain.clone(),
        runtime_endpoint: format!("unix://{}", spec.container_runtime.socket()),
        node_ip: spec.node_ip.map(|ip| ip.to_string()),
        node_labels: spec.node_labels.iter().cloned().collect(),
        register_with_taints: spec
            .register_with_taints
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
        cloud_provider: spec.cloud_provider.clone(),
        cloud_config: spec.cloud_config.as_ref().map(|p| p.display().to_string()),
        static_pods: false,
        hostname_override: spec.node_name.as_ref().map(|n| n.to_string()),
    }
}

/// The CA of a node that has joined: kubelet.conf parses and its client
/// certificate (a file the kubelet rotates, or embedded data) is valid
/// now. None when the node has not joined (or its credentials are gone).
fn joined_ca(root: &Root) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(bytes) = kprov_host::fs::read(root, Path::new(kubelet::KUBECONFIG_PATH))? else {
        return Ok(None);
    };
    let Ok(config) = Kubeconfig::from_yaml(&bytes) else {
        return Ok(None);
    };
    let Ok((_, ca_pem)) = config.current_cluster() else {
        return Ok(None);
    };
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == config.current_context)
        .and_then(|c| config.users.iter().find(|u| u.name == c.context.user));
    let cert_pem = match user {
        Some(u) if !u.user.client_certificate.is_empty() => {
            kprov_host::fs::read(root, Path::new(&u.user.client_certificate))?
        }
        Some(u) if !u.user.client_certificate_data.is_empty() => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(u.user.client_certificate_data.trim())
                .ok()
        }
        _ => None,
    };
    let valid = cert_pem
        .and_then(|pem| kprov_pki::cert::Certificate::from_pem(&pem).ok())
        .is_some_and(|c| c.info().not_after > time::OffsetDateTime::now_utc());
    Ok(valid.then_some(ca_pem))
}

/// A joined node must be joined to the cluster the flags name.
fn check_same_cluster(spec: &NodeSpec, ca_pem: &[u8]) -> anyhow::Result<()> {
    let pinned_ok = spec.ca_cert_hashes.is_empty()
        || discovery::check_pinned(ca_pem, &Pins::Hashes(&spec.ca_cert_hashes)).is_ok();
    let ca_ok = spec
        .ca_cert
        .as_ref()
        .is_none_or(|ca| ca.pem().as_bytes() == ca_pem);
    if pinned_ok && ca_ok {
        return Ok(());
    }
    bail!(
        "this node has joined a cluster whose CA is not the one given (--ca-cert or --discovery-token-ca-cert-hash); run `kprov reset` first to join another cluster"
    )
}

/// The CA to trust: --ca-cert as given (checked against the API server
/// when it is reachable from a live host), or token discovery.
fn trust(join: &Join<'_>, root: &Root) -> anyhow::Result<Vec<u8>> {
    let rt = runtime()?;
    let server = join.server.to_string();
    let ca_pem = match &join.spec.ca_cert {
        Some(ca) => {
            let ca_pem = ca.pem().as_bytes().to_vec();
            if !root.is_live() {
                // Prebaking: the API server may be out of reach; the
                // kubelet proves the token at first boot.
                return Ok(ca_pem);
            }
            ca_pem
        }
        None => {
            let pins = if join.spec.ca_cert_hashes.is_empty() {
                Pins::Unsafe
            } else {
                Pins::Hashes(&join.spec.ca_cert_hashes)
            };
            if pins == Pins::Unsafe {
                eprintln!(
                    "kprov: warning: --discovery-token-unsafe-skip-ca-verification: trusting whatever CA {server} presents"
                );
            }
            discover(join, &rt, &pins)?
        }
    };
    // The signature proves the token's secret, not that the token is
    // still valid (a deleted or expired token's signature can linger).
    let probe = retry_unreachable(join, "the API server to accept the token", || {
        rt.block_on(api::probe_token(
            &server,
            &ca_pem,
            &join.token.expose_secret(),
        ))
    });
    match probe {
        Probe::Ok | Probe::Skipped => Ok(ca_pem),
        other => bail!("{}", diagnose(join, other, None)),
    }
}

/// Token discovery: cluster-info read anonymously, its signature checked
/// with the token, its CA accepted if pinned.
fn discover(
    join: &Join<'_>,
    rt: &tokio::runtime::Runtime,
    pins: &Pins<'_>,
) -> anyhow::Result<Vec<u8>> {
    let server = join.server.to_string();
    let mut first_bad_signature: Option<Instant> = None;
    let mut last_report = Instant::now();
    let started = Instant::now();
    loop {
        let outcome = rt.block_on(api::discover_cluster_info(&server));
        let waiting_for = match outcome {
            Ok(data) => match kprov_controlplane::bootstrap::verify_cluster_info(&data, join.token)
            {
                Ok(kubeconfig) => {
                    return discovery::trusted_ca(kubeconfig, pins)
                        .map_err(|cause| anyhow::anyhow!("{cause}"));
                }
                Err(e) => {
                    let since = *first_bad_signature.get_or_insert_with(Instant::now);
                    if since.elapsed() >= SIGNATURE_GRACE || Instant::now() >= join.deadline {
                        bail!("{}", JoinCause::from_discovery(&e, join.token.id()));
                    }
                    format!(
                        "a signature of cluster-info for token {}: {e}",
                        join.token.id()
                    )
                }
            },
            Err(Probe::Unreachable(detail)) => {
                if Instant::now() >= join.deadline {
                    bail!(
                        "{}",
                        JoinCause::Unreachable {
                            server: server.clone(),
                            detail
                        }
                    );
                }
                format!("{server} to answer: {detail}")
            }
            Err(other) => bail!("{}", diagnose(join, other, None)),
        };
        if last_report.elapsed() >= PROGRESS_EVERY {
            progress(started, join.timeout, &waiting_for);
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Calls `probe` until it is not Unreachable or the deadline passes.
fn retry_unreachable(join: &Join<'_>, what: &str, mut probe: impl FnMut() -> Probe) -> Probe {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let result = probe();
        match &result {
            Probe::Unreachable(detail) if Instant::now() < join.deadline => {
                if last_report.elapsed() >= PROGRESS_EVERY {
                    progress(started, join.timeout, &format!("{what}: {detail}"));
                    last_report = Instant::now();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            _ => return result,
        }
    }
}

fn progress(started: Instant, timeout: Duration, waiting_for: &str) {
    eprintln!(
        "kprov: waiting for {waiting_for} ({:.0} s of {} s)",
        started.elapsed().as_secs_f64(),
        timeout.as_secs()
    );
}

/// The node's name: --node-name, or the host name the kubelet uses.
fn node_name(spec: &NodeSpec, root: &Root) -> anyhow::Result<String> {
    if let Some(n) = &spec.node_name {
        return Ok(n.to_string());
    }
    let path = root.resolve("/proc/sys/kernel/hostname")?;
    let name = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the host name from {}", path.display()))?;
    Ok(name.trim().to_lowercase())
}

/// Starts nothing (the plan started the kubelet); waits for TLS bootstrap
/// and the Node, with progress, and diagnoses a timeout.
fn wait_joined(join: &Join<'_>, ca_pem: &[u8], node: &str) -> anyhow::Result<()> {
    let rt = runtime()?;
    let root = Root::live();
    let kubeconfig = Path::new(kubelet::KUBECONFIG_PATH);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut bootstrapped = false;
    loop {
        let waiting_for = if !bootstrapped {
            bootstrapped = joined_ca(&root)?.is_some()
                && kprov_host::fs::read(&root, Path::new(KUBELET_CLIENT_CERT))?.is_some();
            if bootstrapped {
                eprintln!(
                    "kprov: TLS bootstrap done: {} and {KUBELET_CLIENT_CERT} ({:.0} s)",
                    kubelet::KUBECONFIG_PATH,
                    started.elapsed().as_secs_f64()
                );
                continue;
            }
            format!(
                "the kubelet's TLS bootstrap ({} and {KUBELET_CLIENT_CERT})",
                kubelet::KUBECONFIG_PATH
            )
        } else {
            match rt.block_on(api::node_registered(kubeconfig, node)) {
                Ok(true) => {
                    eprintln!(
                        "kprov: Node {node} is registered ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                Ok(false) => format!("Node {node} to register"),
                Err(e) => format!("Node {node} to register: {e}"),
            }
        };
        if Instant::now() >= join.deadline {
            let probe = rt.block_on(api::probe_token(
                &join.server.to_string(),
                ca_pem,
                &join.token.expose_secret(),
            ));
            let csrs = if bootstrapped {
                Vec::new()
            } else {
                rt.block_on(api::list_csrs(
                    &join.server.to_string(),
                    ca_pem,
                    &join.token.expose_secret(),
                ))
                .map(|list| discovery::pending_node_csrs(&list, join.token.id()))
                .unwrap_or_default()
            };
            bail!(
                "timed out after {} s waiting for {waiting_for}\n{}",
                join.timeout.as_secs(),
                diagnose(join, probe, Some(csrs))
            );
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            progress(started, join.timeout, &waiting_for);
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The diagnosis from a probe of the token and, once the kubelet was
/// started, its state and the pending requests.
fn diagnose(join: &Join<'_>, token_probe: Probe, pending_csrs: Option<Vec<String>>) -> JoinCause {
    let kubelet_started = pending_csrs.is_some();
    let (kubelet_active, journal_tail) = if kubelet_started {
        let k = super::kubelet_facts();
        (k.active, k.journal_tail)
    } else {
        (true, String::new())
    };
    discovery::diagnose_join(&JoinFacts {
        server: join.server.to_string(),
        token_id: join.token.id().to_string(),
        token_probe,
        kubelet_active,
        journal_tail,
        pending_csrs: pending_csrs.unwrap_or_default(),
    })
}
