//! `kprov init`: the first master, the way `kubeadm init` does it, as a
//! table of phases ([`phases`]). Each phase runs alone (`kprov init phase
//! NAME`); the whole workflow runs them in order, the API phases only on
//! a running host (and in a dry run only when there is an API server to
//! ask). A re-run on a working master changes nothing and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kprov_artifacts::ArtifactSource;
use kprov_controlplane::copy_certs::{self, CertificateKey, Comparison};
use kprov_controlplane::objects::ApiPlan;
use kprov_controlplane::spec::ClusterSpec;
use kprov_controlplane::{addons, bootstrap, kubeadm_config, manifests, store, token};
use kprov_core::{BootstrapToken, NodeSpec, ProxyMode};
use kprov_plan::workflow::{self, Observed, Observer, Phase, Selection};
use kprov_plan::{Outcome, Report, ResourceReport};
use kprov_provision::render::kubelet::KubeletParams;

use crate::{facts, Context, Error, Target};

/// The description of the token `kprov init` makes, by which a re-run
/// finds it again.
pub const INIT_TOKEN_DESCRIPTION: &str = "made by kprov init for joining nodes";

/// How often waits say what they wait for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What `kprov init` is asked to make (validated).
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// The cluster and this master.
    pub cluster: ClusterSpec,
    /// kube-proxy's mode.
    pub proxy_mode: ProxyMode,
    /// flannel's image, for the flannel pod network.
    pub flannel_image: String,
    /// How long the waits wait.
    pub timeout: Duration,
    /// Whether a whole run uploads the shared certificates (`kprov init
    /// --upload-certs`); `kprov init phase upload-certs` always does.
    pub upload_certs: bool,
    /// The key they are sealed with; None: a new one, which the run
    /// hands back in [`Init::generated_certificate_key`].
    pub certificate_key: Option<CertificateKey>,
}

/// How the base phase is installed: the node's spec and where binaries
/// come from. Without it the base phase only checks that the node was
/// prebaked.
pub struct BaseInstall<'a> {
    /// The node's spec (kubelet version, arch, images from a bundle).
    pub spec: NodeSpec,
    /// Verified binaries.
    pub artifacts: &'a dyn ArtifactSource,
}

/// The command that joins a node to the cluster `kprov init` made.
#[derive(Debug, Clone)]
pub struct JoinCommand {
    /// The API server's URL.
    pub server: String,
    /// The bootstrap token.
    pub token: BootstrapToken,
    /// The CA's pin (`sha256:<hex>`).
    pub ca_hash: String,
}

impl JoinCommand {
    /// The line to run on a node; the token goes in the environment,
    /// never on kprov's own command line.
    pub fn line(&self) -> String {
        token::join_command_line(&self.server, &self.token, &self.ca_hash)
    }
}

/// One run of `kprov init`.
pub struct Init<'a> {
    /// What to make.
    pub spec: InitSpec,
    /// How to install the base phase, if at all.
    pub base: Option<BaseInstall<'a>>,
    /// The node.
    pub target: Target<'a>,
    /// Set by the join-command phase.
    pub join_command: Option<JoinCommand>,
    /// The certificate key upload-certs made (none was given): the caller
    /// shows it to the user once; it is nowhere else.
    pub generated_certificate_key: Option<CertificateKey>,
    /// A master that joins: what discovery found (see
    /// [`crate::join_control_plane`]).
    pub(crate) joining: Option<crate::join_control_plane::Joining>,
    client: Option<kprov_kube::Client>,
}

impl Observed for Init<'_> {
    fn observer(&mut self) -> &mut dyn Observer {
        &mut *self.target.observer
    }
}

impl<'a> Init<'a> {
    /// A run of `spec` on `target`.
    pub fn new(spec: InitSpec, base: Option<BaseInstall<'a>>, target: Target<'a>) -> Self {
        Self {
            spec,
            base,
            target,
            join_command: None,
            generated_certificate_key: None,
            joining: None,
            client: None,
        }
    }

    pub(crate) fn admin_conf(&self) -> PathBuf {
        self.spec.cluster.kubernetes_dir.join("admin.conf")
    }

    /// The admin client, made once per run.
    pub(crate) fn client(&mut self, phase: &str) -> Result<kprov_kube::Client, Error> {
        if !self.target.live() {
            return Err(Error::failed(format!(
                "phase {phase} talks to the running API server; it cannot run with --root"
            )));
        }
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let admin = self
            .target
            .root
            .resolve(self.admin_conf())
            .context(|| format!("phase {phase}: the admin kubeconfig"))?;
        let client = self
            .target
            .rt
            .block_on(kprov_kube::client(&admin))
            .context(|| format!("phase {phase}"))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    pub(crate) fn server(&self) -> String {
        self.spec.cluster.node().local_url()
    }

    /// Applies an API plan (or dry-runs it) and reports it.
    pub(crate) fn apply_api(&mut self, phase: &str, plan: &ApiPlan) -> Result<Report, Error> {
        let client = self.client(phase)?;
        let server = self.server();
        let report = self
            .target
            .rt
            .block_on(kprov_kube::apply::apply_plan(
                &client,
                plan,
                &server,
                self.target.dry_run,
            ))
            .context(|| format!("applying the {}", plan.headline))?;
        self.target.observer.report(&report);
        Ok(report)
    }

    /// Runs the phases `selection` picks.
    pub fn run(&mut self, selection: &Selection) -> Result<(), Error> {
        workflow::run("init", &phases(), selection, self)
    }
}

/// Phases that talk to the API server run in the whole workflow on a
/// running host; in a dry run only when an admin kubeconfig exists (a
/// re-run on a master), since before that there is nothing to ask.
fn api_phase(ctx: &Init<'_>) -> bool {
    ctx.target.live()
        && (!ctx.target.dry_run
            || ctx
                .target
                .root
                .resolve(ctx.admin_conf())
                .is_ok_and(|p| p.exists()))
}

/// The phases of `kprov init`, in order.
pub fn phases<'a>() -> Vec<Phase<Init<'a>, Error>> {
    vec![
        Phase {
            name: "base",
            description: "install the base phase from --bundle/--artifacts-dir/--mirror, or check that the node is prebaked",
            run_if: workflow::always,
            run: base,
        },
        Phase {
            name: "certs",
            description: "make the certificates and keys (kubeadm init phase certs all)",
            run_if: workflow::always,
            run: certs,
        },
        Phase {
            name: "kubeconfig",
            description: "make the admin, controller-manager, scheduler and kubelet kubeconfigs",
            run_if: workflow::always,
            run: kubeconfig,
        },
        Phase {
            name: "etcd",
            description: "write etcd's static pod and its data directory",
            run_if: workflow::always,
            run: |c| static_pods(c, vec![manifests::etcd(&c.spec.cluster)]),
        },
        Phase {
            name: "control-plane",
            description: "write the API server's, controller manager's and scheduler's static pods",
            run_if: workflow::always,
            run: control_plane,
        },
        Phase {
            name: "kubelet-start",
            description: "write the kubelet's configuration and (re)start it",
            run_if: workflow::always,
            run: kubelet_start,
        },
        Phase {
            name: "wait-control-plane",
            description: "wait for the API server to be ready, and say which component failed if not",
            run_if: api_phase,
            run: wait_control_plane,
        },
        Phase {
            name: "upload-config",
            description: "upload kubeadm-config and the kubelet's configuration, so kubeadm join works too",
            run_if: api_phase,
            run: upload_config,
        },
        Phase {
            name: "upload-certs",
            description: "upload the shared CAs and keys, encrypted with the certificate key, for masters that join (2 h; a whole run only with --upload-certs)",
            run_if: |c| c.spec.upload_certs && api_phase(c),
            run: upload_certs,
        },
        Phase {
            name: "mark-control-plane",
            description: "label and taint this node as a control-plane node",
            run_if: api_phase,
            run: mark_control_plane,
        },
        Phase {
            name: "bootstrap-token",
            description: "apply the bootstrap RBAC and cluster-info that joining nodes read",
            run_if: api_phase,
            run: bootstrap_token,
        },
        Phase {
            name: "addons",
            description: "apply kube-proxy, CoreDNS and the pod network",
            run_if: api_phase,
            run: apply_addons,
        },
        Phase {
            name: "join-command",
            description: "find or create the join token and print the join command",
            run_if: api_phase,
            run: join_command,
        },
    ]
}

/// The phases' names and descriptions, for `--help` and argument parsing.
pub fn phase_list() -> Vec<(&'static str, &'static str)> {
    phases().iter().map(|p| (p.name, p.description)).collect()
}

pub(crate) fn base(ctx: &mut Init<'_>) -> Result<(), Error> {
    let root = ctx.target.root.clone();
    let os = kprov_provision::facts::detect_os(&root).context(|| format!("reading {root}"))?;
    let Some(install) = &ctx.base else {
        // A prebaked node needs no source; only check that it was.
        let kubelet = Path::new(kprov_provision::tables::layout(os.family).bin_dir).join("kubelet");
        let present = root.resolve(&kubelet).is_ok_and(|p| p.exists());
        if !present {
            return Err(Error::failed(format!(
                "the base phase is not in place ({} is missing): pass --bundle, --artifacts-dir or --mirror to install it, or run `kprov provision --phase base` first",
                kubelet.display()
            )));
        }
        ctx.target.note(
            "base phase: in place (no --bundle, --artifacts-dir or --mirror given; nothing installed)",
        );
        return Ok(());
    };
    let plan = kprov_provision::plan::plan_base(&os, &install.spec, root.is_live())
        .map_err(|e| Error::failed(format!("planning the base phase: {e}")))?;
    let artifacts = kprov_artifacts::WithSelf::new(install.artifacts);
    ctx.target
        .apply(&plan, &artifacts, "installing the base phase")?;
    Ok(())
}

pub(crate) fn certs(ctx: &mut Init<'_>) -> Result<(), Error> {
    let spec = &ctx.spec.cluster;
    let now = time::OffsetDateTime::now_utc();
    let planned = kprov_pki::plan_certificates(&ctx.target.root, &spec.cert_dir, &spec.pki, now)
        .context(|| format!("making the PKI in {}", spec.cert_dir.display()))?;
    ctx.target.apply_files(&planned.plan, "writing the PKI")?;
    Ok(())
}

pub(crate) fn kubeconfig(ctx: &mut Init<'_>) -> Result<(), Error> {
    let spec = &ctx.spec.cluster;
    let ca = spec.cert_dir.join("ca.crt");
    if ctx.target.dry_run && !ctx.target.root.resolve(&ca).is_ok_and(|p| p.exists()) {
        // A dry run of init writes no CA for this phase to sign with.
        let dir = spec.kubernetes_dir.display().to_string();
        ctx.target.note(format!(
            "would write the kubeconfigs to {dir} once the CA exists"
        ));
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let planned = kprov_pki::plan_kubeconfigs(
        &ctx.target.root,
        &spec.cert_dir,
        &spec.kubernetes_dir,
        spec.node(),
        now,
    )
    .context(|| {
        format!(
            "making the kubeconfigs in {}",
            spec.kubernetes_dir.display()
        )
    })?;
    ctx.target
        .apply_files(&planned.plan, "writing the kubeconfigs")?;
    Ok(())
}

pub(crate) fn static_pods(
    ctx: &mut Init<'_>,
    pods: Vec<manifests::StaticPod>,
) -> Result<(), Error> {
    let plan = store::plan_static_pods(&ctx.spec.cluster, &pods, ctx.target.live());
    ctx.target.apply_files(&plan, "writing static pods")?;
    Ok(())
}

/// The API server's, controller manager's and scheduler's static pods.
pub(crate) fn control_plane(ctx: &mut Init<'_>) -> Result<(), Error> {
    let spec = &ctx.spec.cluster;
    let pods = vec![
        manifests::kube_apiserver(spec),
        manifests::kube_controller_manager(spec),
        manifests::kube_scheduler(spec),
    ];
    static_pods(ctx, pods)
}

fn proxy_mode_name(mode: ProxyMode) -> &'static str {
    match mode {
        ProxyMode::Iptables => "iptables",
        ProxyMode::Ipvs => "ipvs",
    }
}

/// This master's kubelet settings.
fn kubelet_params(spec: &ClusterSpec) -> KubeletParams {
    KubeletParams {
        version: spec.node().kubernetes_version.clone(),
        client_ca_file: spec.cert_dir.join("ca.crt").display().to_string(),
        cluster_dns: addons::cluster_dns_ip(spec).to_string(),
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
        in_container: spec.nodes_in_containers,
    }
}

pub(crate) fn kubelet_start(ctx: &mut Init<'_>) -> Result<(), Error> {
    let root = ctx.target.root.clone();
    let os = kprov_provision::facts::detect_os(&root).context(|| format!("reading {root}"))?;
    let plan = kprov_provision::plan::plan_kubelet(
        &os,
        &kubelet_params(&ctx.spec.cluster),
        root.is_live(),
        "init kubelet-start",
        kprov_core::ContainerRuntime::Containerd,
    )
    .map_err(|e| Error::failed(format!("planning the kubelet's configuration: {e}")))?;
    ctx.target.apply_files(&plan, "starting the kubelet")?;
    Ok(())
}

pub(crate) fn wait_control_plane(ctx: &mut Init<'_>) -> Result<(), Error> {
    let client = ctx.client("wait-control-plane")?;
    let url = ctx.server();
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut last_error;
    loop {
        match ctx.target.rt.block_on(kprov_kube::readyz(&client)) {
            Ok(()) => {
                let took = start.elapsed().as_secs_f64();
                ctx.target
                    .note(format!("the API server at {url} is ready ({took:.0} s)"));
                return Ok(());
            }
            Err(e) => last_error = e,
        }
        if ctx.target.dry_run {
            ctx.target.note(format!(
                "the API server at {url} is not ready ({last_error}); a real run would wait up to {} s",
                ctx.spec.timeout.as_secs()
            ));
            return Ok(());
        }
        if start.elapsed() > ctx.spec.timeout {
            break;
        }
        if last_report.elapsed() > PROGRESS_EVERY {
            ctx.target.note(format!(
                "waiting for the API server at {url} ({:.0} s of {} s): {last_error}",
                start.elapsed().as_secs_f64(),
                ctx.spec.timeout.as_secs()
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let node = ctx.spec.cluster.node().node_name.to_string();
    let diagnosis = kprov_controlplane::diagnose::diagnose(
        &format!("the API server at {url}"),
        &last_error,
        &facts::kubelet(ctx.target.runner),
        &facts::components(&ctx.target.root, &manifests::COMPONENTS, &node),
    );
    Err(Error::Failed(diagnosis))
}

fn upload_config(ctx: &mut Init<'_>) -> Result<(), Error> {
    // Joining nodes keep the CA where kubeadm join (and kprov's join)
    // writes it, whatever this master's --cert-dir.
    let params = KubeletParams {
        client_ca_file: kprov_provision::plan::CA_CERT_PATH.into(),
        ..kubelet_params(&ctx.spec.cluster)
    };
    let kubelet_config = kprov_provision::render::kubelet::kubelet_config(&params);
    let existing = cluster_status(ctx, "upload-config")?;
    let plan =
        kubeadm_config::upload_config(&ctx.spec.cluster, &kubelet_config, existing.as_deref())
            .into_plan();
    ctx.apply_api("upload-config", &plan)?;
    Ok(())
}

/// The ClusterStatus kubeadm-config holds (every master's endpoint); None
/// when there is none yet, or, in a dry run, when the API server does not
/// answer.
fn cluster_status(ctx: &mut Init<'_>, phase: &str) -> Result<Option<String>, Error> {
    Ok(kubeadm_config_data(ctx, phase)?.and_then(|mut d| d.remove("ClusterStatus")))
}

/// kubeadm-config's data; None when there is none yet, or, in a dry run,
/// when the API server does not answer.
pub(crate) fn kubeadm_config_data(
    ctx: &mut Init<'_>,
    phase: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, Error> {
    let client = ctx.client(phase)?;
    let read = ctx.target.rt.block_on(kprov_kube::get_config_map(
        &client,
        "kube-system",
        kubeadm_config::KUBEADM_CONFIG,
    ));
    match read {
        Ok(map) => Ok(map.and_then(|m| m.data)),
        Err(e) if ctx.target.dry_run && e.is_unavailable() => Ok(None),
        Err(e) => {
            Err(e).context(|| format!("reading kube-system/{}", kubeadm_config::KUBEADM_CONFIG))
        }
    }
}

/// How long the token of an unchanged upload must still live for the
/// upload to be left alone.
const UPLOAD_MARGIN: Duration = Duration::from_secs(600);

/// Why kubeadm-certs must be (re)written, or None when what is there is
/// what would be written: the same files under the same key (compared
/// decrypted: AES-GCM's random nonces make every upload's bytes new),
/// owned by a token that lives at least [`UPLOAD_MARGIN`] longer.
fn upload_needed(
    ctx: &Init<'_>,
    client: &kprov_kube::Client,
    existing: Option<&k8s_openapi::api::core::v1::Secret>,
    files: &copy_certs::SharedFiles,
) -> Result<Option<String>, Error> {
    let Some(existing) = existing else {
        return Ok(Some("does not exist".into()));
    };
    let Some(key) = &ctx.spec.certificate_key else {
        return Ok(Some("a new certificate key".into()));
    };
    match copy_certs::compare(existing, key, files) {
        Comparison::OtherKey => return Ok(Some("encrypted with another certificate key".into())),
        Comparison::Differs(paths) => return Ok(Some(format!("{} differ", paths.join(", ")))),
        Comparison::Same => {}
    }
    let Some(id) = copy_certs::owner_token_id(existing) else {
        return Ok(Some(
            "owned by no bootstrap token (it would never expire)".into(),
        ));
    };
    let owner = ctx
        .target
        .rt
        .block_on(kprov_kube::get_secret(
            client,
            token::NAMESPACE,
            &token::secret_name(&id),
        ))
        .context(|| "reading the token kubeadm-certs expires with".into())?;
    let now = time::OffsetDateTime::now_utc();
    let lives = owner
        .as_ref()
        .and_then(token::token_info)
        .and_then(|info| info.expires)
        .and_then(|e| {
            time::OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|expires| expires > now + UPLOAD_MARGIN);
    Ok((!lives).then(|| format!("its token {id} is gone or expires within 10 minutes")))
}

fn upload_certs(ctx: &mut Init<'_>) -> Result<(), Error> {
    let files = crate::copy_certs::read_shared_files(&ctx.target.root, &ctx.spec.cluster.cert_dir)?;
    let client = ctx.client("upload-certs")?;
    let read = ctx.target.rt.block_on(kprov_kube::get_secret(
        &client,
        copy_certs::NAMESPACE,
        copy_certs::SECRET_NAME,
    ));
    let (existing, needed) = match read {
        // A dry run with no API server to ask says what it would do.
        Err(e) if ctx.target.dry_run && e.is_unavailable() => {
            (None, Some(format!("not checked: {e}")))
        }
        read => {
            let existing = read.context(|| "reading the uploaded certificates".into())?;
            let needed = upload_needed(ctx, &client, existing.as_ref(), &files)?;
            (existing, needed)
        }
    };
    let id = format!(
        "Secret/{}/{}",
        copy_certs::NAMESPACE,
        copy_certs::SECRET_NAME
    );
    let description = format!(
        "{} encrypted with the certificate key",
        files.paths().join(", ")
    );
    let mut report = Report::new(
        "the shared certificates for joining masters (kubeadm-certs)",
        ctx.server(),
        ctx.target.dry_run,
    );
    let outcome = if existing.is_some() {
        Outcome::Changed
    } else {
        Outcome::Created
    };
    match needed {
        None => report.push(ResourceReport {
            id,
            description,
            outcome: Outcome::Unchanged,
            detail: None,
        }),
        Some(reason) if ctx.target.dry_run => report.push(ResourceReport {
            id,
            description,
            outcome,
            detail: Some(reason),
        }),
        Some(reason) => {
            let key = match &ctx.spec.certificate_key {
                Some(key) => key.clone(),
                None => ctx
                    .generated_certificate_key
                    .get_or_insert_with(CertificateKey::generate)
                    .clone(),
            };
            let now = time::OffsetDateTime::now_utc();
            let spec = copy_certs::token_spec(token::generate());
            let owner = ctx
                .target
                .rt
                .block_on(kprov_kube::create_token(&client, &spec, now))
                .context(|| "creating the token kubeadm-certs expires with".into())?;
            let uid = owner.metadata.uid.clone().ok_or_else(|| {
                Error::failed("the API server gave the new token's Secret no uid")
            })?;
            report.push(ResourceReport {
                id: format!("Secret/kube-system/{}", token::secret_name(spec.token.id())),
                description: format!(
                    "bootstrap token {} that kubeadm-certs expires with (2 h)",
                    spec.token.id()
                ),
                outcome: Outcome::Created,
                detail: None,
            });
            let secret = copy_certs::certs_secret(
                &files,
                &key,
                copy_certs::owner_reference(spec.token.id(), &uid),
            );
            ctx.target
                .rt
                .block_on(kprov_kube::put_secret(&client, &secret))
                .context(|| "storing the shared certificates".into())?;
            report.push(ResourceReport {
                id,
                description,
                outcome,
                detail: Some(reason),
            });
        }
    }
    ctx.target.observer.report(&report);
    ctx.apply_api("upload-certs", &copy_certs::rbac())?;
    Ok(())
}

pub(crate) fn mark_control_plane(ctx: &mut Init<'_>) -> Result<(), Error> {
    let client = ctx.client("mark-control-plane")?;
    let node = ctx.spec.cluster.node().node_name.to_string();
    let version = ctx.spec.cluster.node().kubernetes_version.clone();
    let start = Instant::now();
    loop {
        let marked = ctx
            .target
            .rt
            .block_on(kprov_kube::mark_control_plane(
                &client,
                &node,
                &version,
                ctx.target.dry_run,
            ))
            .context(|| "marking the control-plane node".into())?;
        if let Some(entry) = marked {
            let mut report = Report::new(
                "the control-plane node's labels and taint",
                ctx.server(),
                ctx.target.dry_run,
            );
            report.push(entry);
            ctx.target.observer.report(&report);
            return Ok(());
        }
        if ctx.target.dry_run || start.elapsed() > ctx.spec.timeout {
            let diagnosis = kprov_controlplane::diagnose::diagnose(
                &format!("the Node {node}"),
                "not registered",
                &facts::kubelet(ctx.target.runner),
                &[],
            );
            return Err(Error::Failed(diagnosis));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn bootstrap_token(ctx: &mut Init<'_>) -> Result<(), Error> {
    let spec = &ctx.spec.cluster;
    let ca_path = spec.cert_dir.join("ca.crt");
    let ca_pem = kprov_host::fs::read(&ctx.target.root, &ca_path)
        .context(|| format!("reading {}", ca_path.display()))?
        .ok_or_else(|| {
            Error::failed(format!(
                "{} does not exist: run `kprov init phase certs` first",
                ca_path.display()
            ))
        })?;
    let server = spec.node().control_plane_url();
    let info = bootstrap::cluster_info(&bootstrap::cluster_info_kubeconfig(&server, &ca_pem), &[]);
    let plan = bootstrap::bootstrap_rbac().into_plan(info);
    ctx.apply_api("bootstrap-token", &plan)?;
    Ok(())
}

fn apply_addons(ctx: &mut Init<'_>) -> Result<(), Error> {
    let plan = addons::addons(
        &ctx.spec.cluster,
        proxy_mode_name(ctx.spec.proxy_mode),
        &ctx.spec.flannel_image,
    )
    .into_plan();
    ctx.apply_api("addons", &plan)?;
    Ok(())
}

/// The server and CA pin joining nodes use, from the admin kubeconfig.
fn join_target(ctx: &Init<'_>) -> Result<(String, String), Error> {
    let path = ctx.admin_conf();
    let text = kprov_host::fs::read(&ctx.target.root, &path)
        .context(|| format!("reading {}", path.display()))?
        .unwrap_or_default();
    let creds = kprov_pki::kubeconfig::Kubeconfig::from_yaml(&text)
        .and_then(|k| k.current_credentials())
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    let hash = kprov_pki::ca_cert_hash(&creds.ca_pem)
        .map_err(|e| Error::failed(format!("{}: the CA: {e}", path.display())))?;
    Ok((creds.server, hash))
}

fn join_command(ctx: &mut Init<'_>) -> Result<(), Error> {
    let client = ctx.client("join-command")?;
    let now = time::OffsetDateTime::now_utc();
    let found = ctx
        .target
        .rt
        .block_on(kprov_kube::find_token(&client, INIT_TOKEN_DESCRIPTION, now))
        .context(|| "looking for init's bootstrap token".into())?;
    let mut report = Report::new("the join token", ctx.server(), ctx.target.dry_run);
    let token = match found {
        Some(token) => {
            report.push(token_entry(&token, Outcome::Unchanged));
            Some(token)
        }
        None if ctx.target.dry_run => {
            report.push(ResourceReport {
                id: "Secret/kube-system/bootstrap-token-<new>".into(),
                description: "a new bootstrap token for joining nodes".into(),
                outcome: Outcome::Created,
                detail: None,
            });
            None
        }
        None => {
            let mut spec = token::TokenSpec::for_joining(token::generate());
            spec.description = INIT_TOKEN_DESCRIPTION.into();
            ctx.target
                .rt
                .block_on(kprov_kube::create_token(&client, &spec, now))
                .context(|| "creating the first bootstrap token".into())?;
            report.push(token_entry(&spec.token, Outcome::Created));
            Some(spec.token)
        }
    };
    ctx.target.observer.report(&report);
    if let Some(token) = token {
        let (server, ca_hash) = join_target(ctx)?;
        ctx.join_command = Some(JoinCommand {
            server,
            token,
            ca_hash,
        });
    }
    Ok(())
}

fn token_entry(token: &BootstrapToken, outcome: Outcome) -> ResourceReport {
    let id = format!("Secret/kube-system/{}", token::secret_name(token.id()));
    ResourceReport {
        description: format!("bootstrap token {} for joining nodes", token.id()),
        id,
        outcome,
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_kubeadms_phases_in_kubeadms_order() {
        let names: Vec<&str> = phase_list().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "base",
                "certs",
                "kubeconfig",
                "etcd",
                "control-plane",
                "kubelet-start",
                "wait-control-plane",
                "upload-config",
                "upload-certs",
                "mark-control-plane",
                "bootstrap-token",
                "addons",
                "join-command"
            ]
        );
    }
}
