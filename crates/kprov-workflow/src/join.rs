//! The join phase of `kprov provision`, as a table of phases ([`phases`]):
//! make sure the base phase is in place, establish trust in the API
//! server (`--ca-cert` or token discovery with a pinned CA hash), write
//! the CA, the bootstrap kubeconfig and the kubelet's configuration
//! through the plan engine, then on a running host wait for TLS bootstrap
//! and the Node, diagnosing a failure by its cause.
//!
//! The decisions (which CA to trust, which cause) are pure, in
//! kprov_controlplane::discovery; this module probes and waits.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kprov_controlplane::discovery::{self, JoinCause, JoinFacts, Pins, Probe};
use kprov_controlplane::kubeadm_config;
use kprov_core::{ApiServerUrl, BootstrapToken, NodeSpec};
use kprov_host::Root;
use kprov_pki::kubeconfig::Kubeconfig;
use kprov_plan::workflow::{self, Observed, Observer, Phase, Selection};
use kprov_plan::Report;
use kprov_provision::plan::{self, JoinFiles};
use kprov_provision::render::kubelet::{self, KubeletParams};

use crate::pod_network::Synced;
use crate::{facts, Context, Error, Target};

/// Where the kubelet keeps its current client certificate.
pub const KUBELET_CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// How often the waits say what they wait for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long cluster-info may lack a valid signature for the token before
/// the token counts as invalid: the controller manager's bootstrapsigner
/// signs a token made by kubeadm a few seconds after it was created.
const SIGNATURE_GRACE: Duration = Duration::from_secs(10);

/// What joining needs besides the node's spec.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// The node (validated for the join phase: API server and token set).
    pub node: NodeSpec,
    /// The cluster DNS address the kubelet hands to pods.
    pub cluster_dns: IpAddr,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// How long the whole phase may take.
    pub timeout: Duration,
    /// The base phase is planned by the same dry run (`--phase all
    /// --dry-run`), so its absence is not an error.
    pub base_planned: bool,
}

/// Before anything is touched: --ca-cert must match a pinned hash when
/// both are given.
pub fn check_inputs(spec: &NodeSpec) -> Result<(), Error> {
    if let (Some(ca), false) = (&spec.ca_cert, spec.ca_cert_hashes.is_empty()) {
        discovery::check_pinned(ca.pem().as_bytes(), &Pins::Hashes(&spec.ca_cert_hashes))
            .map_err(|cause| Error::failed(format!("--ca-cert: {cause}")))?;
    }
    Ok(())
}

/// One run of the join phase.
pub struct Join<'a> {
    /// What to join.
    pub spec: JoinSpec,
    /// The node.
    pub target: Target<'a>,
    /// The host plan's report, once applied.
    pub report: Option<Report>,
    deadline: Instant,
    /// The CA of a node that has joined already.
    joined_ca: Option<Vec<u8>>,
    /// The CA trusted by discovery (or the joined one).
    ca_pem: Option<Vec<u8>>,
    /// The kubelet reaches the API through the node-local balancer and
    /// checks the certificates against [`API_SERVER_NAME`], which kubelet
    /// v1.20 forgets at TLS bootstrap.
    lb_server_name: bool,
}

impl Observed for Join<'_> {
    fn observer(&mut self) -> &mut dyn Observer {
        &mut *self.target.observer
    }
}

impl<'a> Join<'a> {
    /// A run of `spec` on `target`; the timeout starts now.
    pub fn new(spec: JoinSpec, target: Target<'a>) -> Self {
        let deadline = Instant::now() + spec.timeout;
        Self {
            spec,
            target,
            report: None,
            deadline,
            joined_ca: None,
            ca_pem: None,
            lb_server_name: false,
        }
    }

    fn server(&self) -> &ApiServerUrl {
        self.spec
            .node
            .api_server
            .as_ref()
            .unwrap_or_else(|| unreachable!("NodeSpec::validate requires --api-server for joining"))
    }

    fn token(&self) -> &BootstrapToken {
        self.spec
            .node
            .token
            .as_ref()
            .unwrap_or_else(|| unreachable!("NodeSpec::validate requires a token for joining"))
    }

    /// Runs the phases `selection` picks.
    pub fn run(&mut self, selection: &Selection) -> Result<(), Error> {
        workflow::run("join", &phases(), selection, self)
    }

    /// The CA the discovery phase trusts (None before it ran).
    pub fn trusted_ca(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// Whether the preflight phase found this node joined already.
    pub fn has_joined(&self) -> bool {
        self.joined_ca.is_some()
    }

    /// The node, for the workflow that goes on from here (a master's
    /// join).
    pub fn into_target(self) -> Target<'a> {
        self.target
    }

    fn progress(&mut self, started: Instant, waiting_for: &str) {
        let message = format!(
            "waiting for {waiting_for} ({:.0} s of {} s)",
            started.elapsed().as_secs_f64(),
            self.spec.timeout.as_secs()
        );
        self.target.note(message);
    }
}

fn live_change(ctx: &Join<'_>) -> bool {
    ctx.target.live() && !ctx.target.dry_run
}

/// The phases of joining, in order.
pub fn phases<'a>() -> Vec<Phase<Join<'a>, Error>> {
    vec![
        Phase {
            name: "preflight",
            description: "check that the base phase is in place, and whether this node has joined already (and to this cluster)",
            run_if: workflow::always,
            run: preflight,
        },
        Phase {
            name: "discovery",
            description: "trust the API server: --ca-cert, or token discovery of cluster-info with a pinned CA hash; then check the token",
            run_if: workflow::always,
            run: discover,
        },
        Phase {
            name: "kubelet-start",
            description: "write the CA, the bootstrap kubeconfig and the kubelet's configuration, and (re)start the kubelet",
            run_if: workflow::always,
            run: kubelet_start,
        },
        Phase {
            name: "wait-node",
            description: "wait for TLS bootstrap and the Node, and name the cause if they do not come",
            run_if: live_change,
            run: wait_node,
        },
        Phase {
            name: "pod-network",
            description: "in a cluster on kprov's bridge network, write the CNI config once the node has its pod range (kprov-pod-network.service would too)",
            run_if: live_change,
            run: pod_network,
        },
    ]
}

fn preflight(ctx: &mut Join<'_>) -> Result<(), Error> {
    let root = ctx.target.root.clone();
    let base_in_place = kprov_provision::tables::UNIT_SEARCH_PATH.iter().any(|dir| {
        root.resolve_following(Path::new(dir).join("kubelet.service"))
            .is_ok_and(|p| p.is_file())
    });
    if !(base_in_place || (ctx.target.dry_run && ctx.spec.base_planned)) {
        return Err(Error::failed(format!(
            "the base phase is not in place on {root} (no kubelet.service unit): run `kprov provision --phase base` first, or --phase all"
        )));
    }
    ctx.joined_ca = joined_ca(&root)?;
    if let Some(ca_pem) = &ctx.joined_ca {
        check_same_cluster(&ctx.spec.node, ca_pem)?;
        ctx.target.note(
            "this node has joined already (/etc/kubernetes/kubelet.conf holds a valid client certificate); bootstrap-kubelet.conf is left as it is",
        );
    }
    Ok(())
}

/// The CA of a node that has joined: kubelet.conf parses and its client
/// certificate (a file the kubelet rotates, or embedded data) is valid
/// now. None when the node has not joined (or its credentials are gone).
pub fn joined_ca(root: &Root) -> Result<Option<Vec<u8>>, Error> {
    let read =
        |p: &Path| kprov_host::fs::read(root, p).context(|| format!("reading {}", p.display()));
    let Some(bytes) = read(Path::new(kubelet::KUBECONFIG_PATH))? else {
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
            read(Path::new(&u.user.client_certificate))?
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
fn check_same_cluster(spec: &NodeSpec, ca_pem: &[u8]) -> Result<(), Error> {
    let pinned_ok = spec.ca_cert_hashes.is_empty()
        || discovery::check_pinned(ca_pem, &Pins::Hashes(&spec.ca_cert_hashes)).is_ok();
    let ca_ok = spec
        .ca_cert
        .as_ref()
        .is_none_or(|ca| ca.pem().as_bytes() == ca_pem);
    if pinned_ok && ca_ok {
        return Ok(());
    }
    Err(Error::failed(
        "this node has joined a cluster whose CA is not the one given (--ca-cert or --discovery-token-ca-cert-hash); run `kprov reset` first to join another cluster",
    ))
}

/// The CA to trust: --ca-cert as given (checked against the API server
/// when it is reachable from a live host), or token discovery.
fn discover(ctx: &mut Join<'_>) -> Result<(), Error> {
    if let Some(ca) = &ctx.joined_ca {
        ctx.ca_pem = Some(ca.clone());
        return Ok(());
    }
    let server = ctx.server().to_string();
    let ca_pem = match &ctx.spec.node.ca_cert {
        Some(ca) => {
            let ca_pem = ca.pem().as_bytes().to_vec();
            if !ctx.target.live() {
                // Prebaking: the API server may be out of reach; the
                // kubelet proves the token at first boot.
                ctx.ca_pem = Some(ca_pem);
                return Ok(());
            }
            ca_pem
        }
        None => {
            let hashes = ctx.spec.node.ca_cert_hashes.clone();
            let pins = if hashes.is_empty() {
                ctx.target.note(format!(
                    "warning: --discovery-token-unsafe-skip-ca-verification: trusting whatever CA {server} presents"
                ));
                Pins::Unsafe
            } else {
                Pins::Hashes(&hashes)
            };
            discover_cluster_info(ctx, &pins)?
        }
    };
    // The signature proves the token's secret, not that the token is
    // still valid (a deleted or expired token's signature can linger).
    let secret = ctx.token().expose_secret();
    let rt = ctx.target.rt.clone();
    let probe = retry_unreachable(ctx, "the API server to accept the token", || {
        rt.block_on(kprov_kube::probe_token(&server, &ca_pem, &secret))
    });
    match probe {
        Probe::Ok | Probe::Skipped => {
            ctx.ca_pem = Some(ca_pem);
            Ok(())
        }
        other => Err(Error::Failed(diagnose(ctx, other, None).to_string())),
    }
}

/// Token discovery: cluster-info read anonymously, its signature checked
/// with the token, its CA accepted if pinned.
fn discover_cluster_info(ctx: &mut Join<'_>, pins: &Pins<'_>) -> Result<Vec<u8>, Error> {
    let server = ctx.server().to_string();
    let mut first_bad_signature: Option<Instant> = None;
    let mut last_report = Instant::now();
    let started = Instant::now();
    loop {
        let outcome = ctx
            .target
            .rt
            .block_on(kprov_kube::discover_cluster_info(&server));
        let waiting_for = match outcome {
            Ok(data) => {
                match kprov_controlplane::bootstrap::verify_cluster_info(&data, ctx.token()) {
                    Ok(kubeconfig) => {
                        return discovery::trusted_ca(kubeconfig, pins)
                            .map_err(|cause| Error::Failed(cause.to_string()));
                    }
                    Err(e) => {
                        let since = *first_bad_signature.get_or_insert_with(Instant::now);
                        if since.elapsed() >= SIGNATURE_GRACE || Instant::now() >= ctx.deadline {
                            let cause = JoinCause::from_discovery(&e, ctx.token().id());
                            return Err(Error::Failed(cause.to_string()));
                        }
                        format!(
                            "a signature of cluster-info for token {}: {e}",
                            ctx.token().id()
                        )
                    }
                }
            }
            Err(Probe::Unreachable(detail)) => {
                if Instant::now() >= ctx.deadline {
                    let cause = JoinCause::Unreachable {
                        server: server.clone(),
                        detail,
                    };
                    return Err(Error::Failed(cause.to_string()));
                }
                format!("{server} to answer: {detail}")
            }
            Err(other) => return Err(Error::Failed(diagnose(ctx, other, None).to_string())),
        };
        if last_report.elapsed() >= PROGRESS_EVERY {
            ctx.progress(started, &waiting_for);
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Calls `probe` until it is not Unreachable or the deadline passes.
fn retry_unreachable(ctx: &mut Join<'_>, what: &str, mut probe: impl FnMut() -> Probe) -> Probe {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let result = probe();
        match &result {
            Probe::Unreachable(detail) if Instant::now() < ctx.deadline => {
                if last_report.elapsed() >= PROGRESS_EVERY {
                    ctx.progress(started, &format!("{what}: {detail}"));
                    last_report = Instant::now();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            _ => return result,
        }
    }
}

/// The kubelet's parameters from the spec.
fn kubelet_params(spec: &JoinSpec) -> KubeletParams {
    let node = &spec.node;
    KubeletParams {
        version: node.kubelet_version.clone(),
        client_ca_file: plan::CA_CERT_PATH.into(),
        cluster_dns: spec.cluster_dns.to_string(),
        cluster_domain: spec.cluster_domain.clone(),
        runtime_endpoint: format!("unix://{}", node.container_runtime.socket()),
        node_ip: node.node_ip.map(|ip| ip.to_string()),
        node_labels: node.node_labels.iter().cloned().collect(),
        register_with_taints: node
            .register_with_taints
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
        cloud_provider: node.cloud_provider.clone(),
        cloud_config: node.cloud_config.as_ref().map(|p| p.display().to_string()),
        static_pods: false,
        hostname_override: node.node_name.as_ref().map(|n| n.to_string()),
        in_container: node.in_container,
    }
}

fn kubelet_start(ctx: &mut Join<'_>) -> Result<(), Error> {
    let root = ctx.target.root.clone();
    let os = kprov_provision::facts::detect_os(&root).context(|| format!("reading {root}"))?;
    let ca_pem = ctx.ca_pem.clone().ok_or_else(|| {
        Error::failed("the join's kubelet-start phase needs the discovery phase first")
    })?;
    let lb = lb_spec(ctx.server());
    let bootstrap = match ctx.joined_ca {
        Some(_) => None,
        None => {
            let config = match &lb {
                // Through the balancer: its address is in every API
                // server's certificate in a kprov cluster.
                Some(_) if certificates_name_node_local_address(ctx, &ca_pem) => {
                    Kubeconfig::with_token(
                        LB_URL,
                        "tls-bootstrap-token-user",
                        &ca_pem,
                        &ctx.token().expose_secret(),
                    )
                }
                // Else checked against a name every API server
                // certificate carries (kubeadm's too).
                Some(_) => {
                    ctx.lb_server_name = true;
                    Kubeconfig::with_token(
                        LB_URL,
                        "tls-bootstrap-token-user",
                        &ca_pem,
                        &ctx.token().expose_secret(),
                    )
                    .with_tls_server_name(API_SERVER_NAME)
                }
                None => Kubeconfig::with_token(
                    &ctx.server().to_string(),
                    "tls-bootstrap-token-user",
                    &ca_pem,
                    &ctx.token().expose_secret(),
                ),
            };
            Some(
                config
                    .to_yaml()
                    .map_err(|e| Error::failed(format!("rendering bootstrap-kubelet.conf: {e}")))?
                    .into_bytes(),
            )
        }
    };
    if lb.is_none() {
        ctx.target.note(format!(
            "no node-local API load balancer: {} names a host, not an address (an external load balancer or DNS name serves the API)",
            ctx.server()
        ));
    }
    let files = JoinFiles {
        ca_pem: String::from_utf8_lossy(&ca_pem).into_owned(),
        bootstrap_kubeconfig: bootstrap,
        lb,
    };
    let plan = plan::plan_join(
        &os,
        &kubelet_params(&ctx.spec),
        &files,
        root.is_live(),
        ctx.spec.node.container_runtime,
    )
    .map_err(|e| Error::failed(format!("planning the join phase: {e}")))?;
    let report = ctx.target.apply_files(&plan, "writing the join phase")?;
    ctx.report = Some(report);
    if !root.is_live() && !ctx.target.dry_run {
        ctx.target.note(format!(
            "join phase written to {root}; kubelet.service is enabled and joins the cluster when the machine boots"
        ));
    }
    Ok(())
}

/// Whether kubeadm-config says every API server's certificate names the
/// balancer's address (read with the token; a cluster that does not let
/// it read kubeadm-config gets the name-checked path).
fn certificates_name_node_local_address(ctx: &mut Join<'_>, ca_pem: &[u8]) -> bool {
    let name = kubeadm_config::KUBEADM_CONFIG;
    let read = ctx
        .target
        .rt
        .block_on(kprov_kube::get_config_map_with_token(
            &ctx.server().to_string(),
            ca_pem,
            ctx.token(),
            "kube-system",
            name,
        ));
    let config = match read {
        Ok(map) => map
            .and_then(|m| m.data)
            .and_then(|d| d.get("ClusterConfiguration").cloned()),
        Err(e) => {
            ctx.target.note(format!(
                "reading kube-system/{name} (for the API servers' names): {e}"
            ));
            None
        }
    };
    config.is_some_and(|c| kubeadm_config::names_node_local_address(&c))
}

/// Where the node-local balancer listens, and the kubelet connects.
pub const LB_URL: &str = "https://127.0.0.1:6443";
/// The name the API servers' certificates are checked against through
/// the balancer (kubeadm's and kprov's all carry it).
pub const API_SERVER_NAME: &str = "kubernetes";

/// The balancer of a node joining through `server`: seeded with it when
/// it is an address (a DNS name stands for a balancer of the user's own,
/// which `--control-plane-endpoint` keeps supported).
fn lb_spec(server: &ApiServerUrl) -> Option<kprov_provision::render::systemd::LbUnitSpec> {
    let ip: IpAddr = server.host().trim_matches(['[', ']']).parse().ok()?;
    Some(kprov_provision::render::systemd::LbUnitSpec {
        listen: "127.0.0.1:6443".into(),
        ca_file: plan::CA_CERT_PATH.into(),
        kubeconfig: kubelet::KUBECONFIG_PATH.into(),
        seeds: vec![std::net::SocketAddr::new(ip, server.port()).to_string()],
        metrics_address: LB_METRICS.into(),
    })
}

/// Where the node-local balancer serves its metrics and status.
pub const LB_METRICS: &str = "127.0.0.1:6445";

/// The kubelet of v1.20 drops `tls-server-name` when it writes
/// kubelet.conf from the bootstrap kubeconfig: put it back (every
/// cluster) and restart the kubelet once. True when it was missing.
fn keep_tls_server_name(ctx: &mut Join<'_>) -> Result<bool, Error> {
    let path = Path::new(kubelet::KUBECONFIG_PATH);
    let root = ctx.target.root.clone();
    let Some(bytes) =
        kprov_host::fs::read(&root, path).context(|| format!("reading {}", path.display()))?
    else {
        return Ok(false);
    };
    let mut doc: serde_yaml::Value = serde_yaml::from_slice(&bytes)
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    let mut changed = false;
    if let Some(clusters) = doc.get_mut("clusters").and_then(|c| c.as_sequence_mut()) {
        for entry in clusters {
            if let Some(cluster) = entry.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
                let key = serde_yaml::Value::from("tls-server-name");
                if cluster.get(&key).is_none() {
                    cluster.insert(key, API_SERVER_NAME.into());
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Ok(false);
    }
    let text = serde_yaml::to_string(&doc)
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    kprov_host::fs::write_atomic(
        &root,
        path,
        text.as_bytes(),
        kprov_host::FileAttrs::root(0o600),
    )
    .context(|| format!("writing {}", path.display()))?;
    ctx.target
        .runner
        .run_checked(&kprov_host::Command::new(
            "systemctl",
            ["restart", "kubelet"],
        ))
        .context(|| "restarting the kubelet on its corrected kubeconfig".into())?;
    ctx.target.note(format!(
        "{}: tls-server-name {API_SERVER_NAME} put back (the kubelet drops it at TLS bootstrap); kubelet restarted",
        path.display()
    ));
    Ok(true)
}

/// The kubelet of v1.20 that bootstrapped in the background takes its new
/// client certificate up only at its next check (every 10 s), and its
/// registration retries back off to 7 s meanwhile: a restart registers
/// the node at once. Not when the certificate came within
/// [`KUBELET_START_FLOOR`] of the kubelet's start: the kubelet sends its
/// request at once but opens its first API connection only after that
/// start, with the certificate then (a restart would cost another start).
/// If the node has still not registered [`CERTIFICATE_TAKE_UP`] later,
/// the kubelet is restarted then.
fn restart_kubelet_on_its_certificate(ctx: &mut Join<'_>) -> Result<(), Error> {
    ctx.target
        .runner
        .run_checked(&kprov_host::Command::new(
            "systemctl",
            ["restart", "kubelet"],
        ))
        .context(|| "restarting the kubelet on its new client certificate".into())?;
    ctx.target.note(format!(
        "kubelet restarted on its client certificate {KUBELET_CLIENT_CERT}, so that it registers now"
    ));
    Ok(())
}

/// Whether a Node registered from machine ID `node` is this machine
/// (`local`; either unknown counts as this machine).
fn this_machine(local: &str, node: &str) -> bool {
    local.is_empty() || node.is_empty() || local == node
}

/// The node's name: --node-name, or the host name the kubelet uses.
fn node_name(ctx: &Join<'_>) -> Result<String, Error> {
    if let Some(n) = &ctx.spec.node.node_name {
        return Ok(n.to_string());
    }
    facts::hostname(&ctx.target.root).context(|| "reading the host name".into())
}

/// Waits for TLS bootstrap and the Node, with progress, and diagnoses a
/// timeout.
fn wait_node(ctx: &mut Join<'_>) -> Result<(), Error> {
    let node = node_name(ctx)?;
    let root = ctx.target.root.clone();
    let kubeconfig = root
        .resolve(kubelet::KUBECONFIG_PATH)
        .context(|| "the kubelet's kubeconfig".into())?;
    // A re-imaged machine finds its old Node, still Ready for a while:
    // only this machine's registration counts.
    let machine_id = kprov_host::fs::read(&root, Path::new("/etc/machine-id"))
        .context(|| "reading /etc/machine-id".into())?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let started = Instant::now();
    // The kubelet was (re)started just before this phase.
    let started_at = std::time::SystemTime::now();
    let mut last_report = Instant::now();
    let mut bootstrapped = false;
    // When to restart a kubelet whose certificate came during its start,
    // should the node not have registered by then.
    let mut restart_after: Option<Instant> = None;
    // This node's pending requests as last seen: the diagnosis names them
    // even when the API server does not answer at the deadline.
    let mut seen_csrs: Vec<String> = Vec::new();
    let mut last_csr_look = Instant::now();
    loop {
        let waiting_for = if !bootstrapped {
            bootstrapped = joined_ca(&root)?.is_some()
                && kprov_host::fs::read(&root, Path::new(KUBELET_CLIENT_CERT))
                    .context(|| format!("reading {KUBELET_CLIENT_CERT}"))?
                    .is_some();
            if bootstrapped {
                ctx.target.note(format!(
                    "TLS bootstrap done: {} and {KUBELET_CLIENT_CERT} ({:.0} s)",
                    kubelet::KUBECONFIG_PATH,
                    started.elapsed().as_secs_f64()
                ));
                let restarted = ctx.lb_server_name && keep_tls_server_name(ctx)?;
                let registered = ctx
                    .target
                    .rt
                    .block_on(kprov_kube::node_machine_id(&kubeconfig, &node))
                    .is_ok_and(|id| id.is_some_and(|id| this_machine(&machine_id, &id)));
                if !restarted && !registered {
                    // When the kubelet wrote it, not when this loop saw it.
                    let came_during_start = root
                        .resolve(KUBELET_CLIENT_CERT)
                        .ok()
                        .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
                        .is_some_and(|written| written < started_at + KUBELET_START_FLOOR);
                    match came_during_start {
                        true => restart_after = Some(Instant::now() + CERTIFICATE_TAKE_UP),
                        false => restart_kubelet_on_its_certificate(ctx)?,
                    }
                }
                continue;
            }
            format!(
                "the kubelet's TLS bootstrap ({} and {KUBELET_CLIENT_CERT})",
                kubelet::KUBECONFIG_PATH
            )
        } else {
            let registered = ctx
                .target
                .rt
                .block_on(kprov_kube::node_machine_id(&kubeconfig, &node));
            let registered = registered.map(|id| id.map(|id| this_machine(&machine_id, &id)));
            if !matches!(registered, Ok(Some(true)))
                && restart_after.is_some_and(|at| Instant::now() >= at)
            {
                restart_after = None;
                restart_kubelet_on_its_certificate(ctx)?;
            }
            match registered {
                Ok(Some(false)) => format!(
                    "Node {node} to be registered by this machine (it exists from an earlier machine of that name, which had another machine ID)"
                ),
                Ok(Some(true)) => {
                    ctx.target.note(format!(
                        "Node {node} is registered ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    ));
                    let changed = ctx.report.as_ref().is_some_and(Report::changed_anything);
                    ctx.target.note(if changed {
                        format!("node {node} joined {}", ctx.server())
                    } else {
                        format!("node {node} is joined; nothing changed")
                    });
                    return Ok(());
                }
                Ok(None) => format!("Node {node} to register"),
                Err(e) => format!("Node {node} to register: {e}"),
            }
        };
        if Instant::now() >= ctx.deadline {
            let server = ctx.server().to_string();
            let ca_pem = ctx.ca_pem.clone().unwrap_or_default();
            let secret = ctx.token().expose_secret();
            let probe = ctx
                .target
                .rt
                .block_on(kprov_kube::probe_token(&server, &ca_pem, &secret));
            let csrs = if bootstrapped {
                Vec::new()
            } else {
                ctx.target
                    .rt
                    .block_on(kprov_kube::list_csrs(&server, &ca_pem, &secret))
                    .map(|list| discovery::pending_node_csrs(&list, ctx.token().id()))
                    .unwrap_or(seen_csrs)
            };
            return Err(Error::Failed(format!(
                "timed out after {} s waiting for {waiting_for}\n{}",
                ctx.spec.timeout.as_secs(),
                diagnose(ctx, probe, Some(csrs))
            )));
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            ctx.progress(started, &waiting_for);
            last_report = Instant::now();
        }
        if !bootstrapped && last_csr_look.elapsed() >= PROGRESS_EVERY {
            let server = ctx.server().to_string();
            let ca_pem = ctx.ca_pem.clone().unwrap_or_default();
            let secret = ctx.token().expose_secret();
            if let Ok(list) = ctx
                .target
                .rt
                .block_on(kprov_kube::list_csrs(&server, &ca_pem, &secret))
            {
                seen_csrs = discovery::pending_node_csrs(&list, ctx.token().id());
            }
            last_csr_look = Instant::now();
        }
        // Local files and one GET: cheap enough to look often.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The least time a v1.20 kubelet takes to start before its first API
/// connection: cAdvisor asks for Docker five times, 1 s apart, after
/// about 0.3 s of other work (5.5 to 5.7 s from systemd's start to the
/// first connection, measured here).
const KUBELET_START_FLOOR: Duration = Duration::from_millis(5400);

/// How long a certificate that came during the kubelet's start may take
/// to register the node before the kubelet is restarted on it.
const CERTIFICATE_TAKE_UP: Duration = Duration::from_secs(10);

/// How long the join waits for the node's pod range; after that
/// kprov-pod-network.service writes the CNI config when the range comes.
const POD_RANGE_WAIT: Duration = Duration::from_secs(30);

/// One `pod-network sync` as soon as the node has its pod range: the node
/// is Ready only with a CNI config. Best effort: the service owns the sync,
/// so nothing here fails the join.
fn pod_network(ctx: &mut Join<'_>) -> Result<(), Error> {
    let started = Instant::now();
    let kubeconfig = Path::new(kubelet::KUBECONFIG_PATH);
    loop {
        let why = match crate::pod_network::sync(&mut ctx.target, kubeconfig) {
            Ok(Synced::Applied(report)) => {
                ctx.target.note(format!(
                    "pod network: {} ({:.1} s)",
                    report.summary_line(),
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Ok(Synced::NotJoined | Synced::NoNetwork) => return Ok(()),
            // A cluster that does not let nodes read kprov's pod network
            // (kubeadm's) runs another one; a sync under way (the service's)
            // writes the config itself.
            Ok(Synced::NotYet(_)) => return Ok(()),
            Ok(Synced::NoRange(node)) => format!("node {node} has no pod range yet"),
            Err(e) => {
                ctx.target.note(format!(
                    "pod network: {e}; kprov-pod-network.service tries again"
                ));
                return Ok(());
            }
        };
        if started.elapsed() >= POD_RANGE_WAIT || Instant::now() >= ctx.deadline {
            ctx.target.note(format!(
                "pod network: {why} after {} s; kprov-pod-network.service writes the CNI config when it comes",
                started.elapsed().as_secs()
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The diagnosis from a probe of the token and, once the kubelet was
/// started, its state and the pending requests.
fn diagnose(ctx: &Join<'_>, token_probe: Probe, pending_csrs: Option<Vec<String>>) -> JoinCause {
    let kubelet_started = pending_csrs.is_some();
    let (kubelet_active, journal_tail) = if kubelet_started {
        let k = facts::kubelet(ctx.target.runner);
        (k.active, k.journal_tail)
    } else {
        (true, String::new())
    };
    discovery::diagnose_join(&JoinFacts {
        server: ctx.server().to_string(),
        token_id: ctx.token().id().to_string(),
        token_probe,
        kubelet_active,
        journal_tail,
        pending_csrs: pending_csrs.unwrap_or_default(),
    })
}
