//! `kprov provision --phase join --control-plane`: a master joins a
//! running control plane, as `kubeadm join --control-plane` does.
//!
//! It trusts the API server as any joining node does (the join phase's
//! preflight and discovery), reads the cluster's ClusterConfiguration
//! from `kubeadm-config` and opens the shared CAs and keys uploaded to
//! `kubeadm-certs` with the certificate key. Then, as a table of phases
//! ([`phases`]) over `kprov init`'s context, most of them init's own:
//! its certificates and kubeconfigs, etcd membership (added as a
//! learner, one change at a time, promoted once in sync), its static pods
//! (etcd with the whole `--initial-cluster`, the API server on its local
//! etcd member), the kubelet, and the control-plane label and taint.
//!
//! A re-run on a joined master changes nothing. The membership
//! decisions are kprov-controlplane's `etcd` module; kprov-kube sends
//! the requests.

use std::path::Path;
use std::time::{Duration, Instant};

use kprov_controlplane::copy_certs::{CertificateKey, SharedFiles};
use kprov_controlplane::etcd::{self as membership, JoinStep};
use kprov_controlplane::{kubeadm_config, manifests, spec::ClusterSpec};
use kprov_core::BootstrapToken;
use kprov_kube::etcd::{EtcdClient, EtcdError};
use kprov_plan::workflow::{self, Phase, Selection};
use kprov_plan::{Contents, Outcome, Plan, Report, Resource, ResourceReport};

use crate::init::{self, Init, InitSpec};
use crate::join::{Join, JoinSpec};
use crate::{Context, Error, Target};

/// How often the waits say what they wait for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What a master needs to join besides a node's join.
#[derive(Debug, Clone)]
pub struct MasterJoinSpec {
    /// The node's join: API server, token, CA pins, node name, timeout.
    pub join: JoinSpec,
    /// The key the shared certificates were uploaded under.
    pub certificate_key: CertificateKey,
    /// The address this master's API server and etcd member advertise.
    pub advertise_address: kprov_pki::spec::AdvertiseAddress,
}

/// What discovery found, for the phases after it.
#[derive(Debug, Clone)]
pub struct Joining {
    /// The API server the node joins through.
    server: String,
    /// The CA discovery trusts.
    ca_pem: Vec<u8>,
    /// The bootstrap token.
    token: BootstrapToken,
    /// The key of kubeadm-certs.
    key: CertificateKey,
    /// The etcd learner this run added (or found), to promote.
    learner: Option<u64>,
}

/// Runs a master's join on `target`.
pub fn run(spec: MasterJoinSpec, target: Target<'_>) -> Result<(), Error> {
    let mut join = Join::new(spec.join.clone(), target);
    join.run(&Selection::All {
        skip: vec![
            "kubelet-start".into(),
            "wait-node".into(),
            "pod-network".into(),
        ],
    })?;
    let joined = join.has_joined();
    let ca_pem = join
        .trusted_ca()
        .ok_or_else(|| Error::failed("discovery trusted no CA"))?
        .to_vec();
    let mut target = join.into_target();
    let node = &spec.join.node;
    let server = node
        .api_server
        .as_ref()
        .ok_or_else(|| Error::failed("--control-plane needs --api-server"))?
        .to_string();
    let token = node
        .token
        .clone()
        .ok_or_else(|| Error::failed("--control-plane needs a token (KPROV_TOKEN)"))?;
    let name = match &node.node_name {
        Some(n) => n.to_string(),
        None => crate::facts::hostname(&target.root).context(|| "reading the host name".into())?,
    };
    let me = kprov_pki::ControlPlaneNode::new(
        name.parse()
            .map_err(|e| Error::failed(format!("--node-name {name}: {e}")))?,
        spec.advertise_address,
        node.kubelet_version.clone(),
    );
    let config_yaml = cluster_configuration(&mut target, &server, &ca_pem, &token, joined)?;
    let mut cluster = kubeadm_config::joining_spec(&config_yaml, me).map_err(Error::Failed)?;
    cluster.nodes_in_containers = node.in_container;
    cluster
        .validate()
        .map_err(|e| Error::failed(format!("the cluster's configuration: {e}")))?;
    if cluster.node().kubernetes_version != node.kubelet_version {
        target.note(format!(
            "warning: the cluster runs Kubernetes {}, this node's kubelet is {}",
            cluster.node().kubernetes_version,
            node.kubelet_version
        ));
    }
    let init_spec = InitSpec {
        cluster,
        proxy_mode: node.proxy_mode,
        flannel_image: kprov_controlplane::addons::DEFAULT_FLANNEL_IMAGE.into(),
        timeout: spec.join.timeout,
        upload_certs: false,
        certificate_key: Some(spec.certificate_key.clone()),
    };
    let mut init = Init::new(init_spec, None, target);
    init.joining = Some(Joining {
        server,
        ca_pem,
        token,
        key: spec.certificate_key,
        learner: None,
    });
    workflow::run(
        "join-control-plane",
        &phases(),
        &Selection::All { skip: Vec::new() },
        &mut init,
    )?;
    if !init.target.live() {
        init.target.note(
            "the certificates and kubeconfigs are in place; etcd membership and the static pods are made by the join on the running master",
        );
    }
    Ok(())
}

/// kubeadm-config's ClusterConfiguration, read with the token; on a
/// master that has joined already (whose token may have expired since),
/// with its admin credentials.
fn cluster_configuration(
    target: &mut Target<'_>,
    server: &str,
    ca_pem: &[u8],
    token: &BootstrapToken,
    joined: bool,
) -> Result<String, Error> {
    let name = kubeadm_config::KUBEADM_CONFIG;
    let admin = target
        .root
        .resolve(Path::new("/etc/kubernetes/admin.conf"))
        .ok()
        .filter(|p| joined && p.exists());
    let read = match admin {
        Some(admin) => target.rt.block_on(async {
            let client = kprov_kube::client_at(&admin, server).await?;
            kprov_kube::get_config_map(&client, "kube-system", name).await
        }),
        None => target.rt.block_on(kprov_kube::get_config_map_with_token(
            server,
            ca_pem,
            token,
            "kube-system",
            name,
        )),
    };
    let map = read
        .context(|| format!("reading kube-system/{name}"))?
        .ok_or_else(|| {
            Error::failed(format!(
                "kube-system/{name} does not exist: the first master must upload its configuration (`kprov init phase upload-config`)"
            ))
        })?;
    map.data
        .and_then(|d| d.get("ClusterConfiguration").cloned())
        .ok_or_else(|| Error::failed(format!("kube-system/{name} has no ClusterConfiguration")))
}

/// The phases of a master's join after discovery, in order.
pub fn phases<'a>() -> Vec<Phase<Init<'a>, Error>> {
    vec![
        Phase {
            name: "download-certs",
            description: "fetch kubeadm-certs with the token and open it with the certificate key: the shared CAs and service-account keys",
            run_if: workflow::always,
            run: download_certs,
        },
        Phase {
            name: "certs",
            description: "make this master's own certificates, signed by the shared CAs",
            run_if: workflow::always,
            run: init::certs,
        },
        Phase {
            name: "kubeconfig",
            description: "make the admin, controller-manager, scheduler and kubelet kubeconfigs",
            run_if: workflow::always,
            run: init::kubeconfig,
        },
        Phase {
            name: "etcd-join",
            description: "add this master to etcd as a learner (replacing a stale member of its own) and write etcd's static pod with every member",
            run_if: on_the_node,
            run: etcd_join,
        },
        Phase {
            name: "control-plane",
            description: "write the API server's (on the local etcd member), controller manager's and scheduler's static pods",
            run_if: on_the_node,
            run: init::control_plane,
        },
        Phase {
            name: "kubelet-start",
            description: "write the kubelet's configuration and (re)start it",
            run_if: on_the_node,
            run: init::kubelet_start,
        },
        Phase {
            name: "etcd-promote",
            description: "wait for the local etcd member to catch up and promote it to a voting member",
            run_if: live_change,
            run: etcd_promote,
        },
        Phase {
            name: "wait-control-plane",
            description: "wait for the local API server to be ready",
            run_if: live_change,
            run: init::wait_control_plane,
        },
        Phase {
            name: "mark-control-plane",
            description: "label and taint this node as a control-plane node",
            run_if: live_change,
            run: init::mark_control_plane,
        },
        Phase {
            name: "update-status",
            description: "add this master's API endpoint to kubeadm-config's ClusterStatus (kubeadm before v1.22 reads it)",
            run_if: live_change,
            run: update_status,
        },
    ]
}

fn update_status(ctx: &mut Init<'_>) -> Result<(), Error> {
    let Some(data) = init::kubeadm_config_data(ctx, "update-status")? else {
        return Err(Error::failed(format!(
            "kube-system/{} is gone: the first master's upload-config phase makes it",
            kubeadm_config::KUBEADM_CONFIG
        )));
    };
    let existing = data.get("ClusterStatus").map(String::as_str);
    if let Some(status) = kubeadm_config::cluster_status(&ctx.spec.cluster, existing) {
        ctx.apply_api(
            "update-status",
            &kubeadm_config::with_cluster_status(data, status),
        )?;
    }
    Ok(())
}

/// Phases that need the running master (etcd, its static pods, the
/// kubelet): into a root (`--root`), a master's join prepares the shared
/// and own certificates and the kubeconfigs only.
fn on_the_node(ctx: &Init<'_>) -> bool {
    ctx.target.live()
}

fn live_change(ctx: &Init<'_>) -> bool {
    ctx.target.live() && !ctx.target.dry_run
}

fn joining<'c>(ctx: &'c Init<'_>) -> &'c Joining {
    ctx.joining
        .as_ref()
        .unwrap_or_else(|| unreachable!("join_control_plane::run sets the joining state"))
}

/// The shared files in place already: every one kubeadm-certs holds,
/// with this cluster's CA.
fn shared_files_in_place(ctx: &Init<'_>) -> Result<bool, Error> {
    let dir = &ctx.spec.cluster.cert_dir;
    let ca = kprov_host::fs::read(&ctx.target.root, &dir.join("ca.crt"))
        .context(|| format!("reading {}", dir.join("ca.crt").display()))?;
    if ca.as_deref() != Some(joining(ctx).ca_pem.as_slice()) {
        return Ok(false);
    }
    for path in kprov_controlplane::copy_certs::SHARED_FILES {
        let p = dir.join(path);
        if !ctx.target.root.resolve(&p).is_ok_and(|p| p.exists()) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn download_certs(ctx: &mut Init<'_>) -> Result<(), Error> {
    if shared_files_in_place(ctx)? {
        ctx.target
            .note("the shared CAs and keys are in place; nothing downloaded");
        return Ok(());
    }
    let j = joining(ctx).clone();
    let files =
        crate::copy_certs::download(&ctx.target.rt, &j.server, &j.ca_pem, &j.token, &j.key)?;
    if files.get("ca.crt") != Some(j.ca_pem.as_slice()) {
        return Err(Error::failed(
            "kubeadm-certs holds another CA than the one discovery trusts: refusing to install it",
        ));
    }
    let plan = shared_files_plan(&ctx.spec.cluster, &files, ctx.target.live());
    ctx.target
        .apply_files(&plan, "writing the shared CAs and keys")?;
    Ok(())
}

/// The downloaded files under the certificate directory: keys (and the
/// service-account public key) 0600, certificates 0644, as kubeadm and
/// the certs phase write them.
fn shared_files_plan(spec: &ClusterSpec, files: &SharedFiles, live: bool) -> Plan {
    let resources = files
        .iter()
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(path, bytes)| {
            let secret = path.ends_with(".key");
            let private = secret || path.ends_with(".pub");
            Resource::File {
                path: spec.cert_dir.join(path).display().to_string(),
                mode: if private { 0o600 } else { 0o644 },
                contents: if secret {
                    Contents::Secret(bytes.to_vec())
                } else {
                    Contents::Text(String::from_utf8_lossy(bytes).into_owned())
                },
            }
        })
        .collect();
    Plan::new(
        format!("the shared CAs and keys in {}", spec.cert_dir.display()),
        live,
        resources,
    )
}

/// An etcd client with the API server's etcd client certificate.
fn etcd_client(ctx: &Init<'_>, endpoints: Vec<String>) -> Result<EtcdClient, Error> {
    crate::etcd::client(&ctx.target.root, &ctx.spec.cluster.cert_dir, endpoints)
}

fn etcd_failed(e: EtcdError) -> Error {
    Error::Failed(e.to_string())
}

/// The client URLs of the running etcd members, from their static pods,
/// read with this master's admin credentials through the API server it
/// joins through (its own is not running yet).
fn etcd_endpoints(ctx: &Init<'_>) -> Result<Vec<String>, Error> {
    let admin = ctx
        .target
        .root
        .resolve(ctx.admin_conf())
        .context(|| "the admin kubeconfig".into())?;
    let server = joining(ctx).server.clone();
    let rt = ctx.target.rt.clone();
    let urls = rt
        .block_on(async {
            let client = kprov_kube::client_at(&admin, &server).await?;
            kprov_kube::etcd_client_urls(&client).await
        })
        .context(|| format!("finding etcd's members through {server}"))?;
    let own = membership::client_url(ctx.spec.cluster.node().advertise_address.ip());
    let urls: Vec<String> = urls.into_iter().filter(|u| *u != own).collect();
    if urls.is_empty() {
        return Err(Error::failed(format!(
            "no etcd member found through {server}: no etcd static pod in kube-system carries the {} annotation, and default/kubernetes lists no other API server",
            membership::CLIENT_URLS_ANNOTATION
        )));
    }
    Ok(urls)
}

fn etcd_join(ctx: &mut Init<'_>) -> Result<(), Error> {
    let spec = ctx.spec.cluster.clone();
    let node = spec.node();
    let name = node.node_name.to_string();
    let peer_url = membership::peer_url(node.advertise_address.ip());
    let data = spec.etcd_data_dir.join("member");
    let has_data = ctx.target.root.resolve(&data).is_ok_and(|p| p.exists());
    if ctx.target.dry_run
        && !ctx
            .target
            .root
            .resolve(ctx.admin_conf())
            .is_ok_and(|p| p.exists())
    {
        ctx.target.note(format!(
            "would add {name} ({peer_url}) to etcd as a learner once its certificates exist"
        ));
        return Ok(());
    }
    let endpoints = if has_data {
        // A re-run on a joined master: its own member answers as well as
        // any, whatever the API shows of the others.
        let mut endpoints = vec![membership::client_url(node.advertise_address.ip())];
        endpoints.extend(etcd_endpoints(ctx).unwrap_or_default());
        endpoints
    } else {
        etcd_endpoints(ctx)?
    };
    let etcd = etcd_client(ctx, endpoints)?;
    let rt = ctx.target.rt.clone();
    let members = rt.block_on(etcd.members()).map_err(etcd_failed)?;
    let step = membership::join_step(&members, &name, &peer_url, has_data)
        .map_err(|e| Error::Failed(e.to_string()))?;
    let healthy = crate::etcd::healthy(&rt, &etcd, &members);
    let mut report = Report::new(
        "etcd's members",
        etcd.endpoints().join(","),
        ctx.target.dry_run,
    );
    let id = format!("etcd member {name} ({peer_url})");
    let mut kept_initial = None;
    let members = match step {
        JoinStep::Member(m) => {
            report.push(ResourceReport {
                id,
                description: "this master's etcd member".into(),
                outcome: Outcome::Unchanged,
                detail: m.is_learner.then(|| "a learner, to be promoted".into()),
            });
            ctx.joining_mut().learner = m.is_learner.then_some(m.id);
            kept_initial = existing_initial_cluster(ctx)?;
            members
        }
        JoinStep::Add | JoinStep::ReplaceStale(_) => {
            membership::check_quorum(&members, &healthy)
                .map_err(|e| Error::Failed(e.to_string()))?;
            let mut members = members;
            if let JoinStep::ReplaceStale(stale) = &step {
                report.push(ResourceReport {
                    id: format!("etcd member {}", stale.describe()),
                    description:
                        "a stale member of this master's name, left from before it was re-imaged"
                            .into(),
                    outcome: Outcome::Removed,
                    detail: None,
                });
                if !ctx.target.dry_run {
                    membership::check_removal(&members, stale, &healthy)
                        .map_err(|e| Error::Failed(e.to_string()))?;
                    rt.block_on(etcd.remove(stale.id)).map_err(etcd_failed)?;
                    members.retain(|m| m.id != stale.id);
                }
            }
            report.push(ResourceReport {
                id,
                description: "this master's etcd member, as a learner".into(),
                outcome: Outcome::Created,
                detail: None,
            });
            if !ctx.target.dry_run {
                let (added, after) = add_learner(ctx, &etcd, &peer_url)?;
                ctx.joining_mut().learner = Some(added.id);
                members = after;
            }
            members
        }
    };
    ctx.target.observer.report(&report);
    let initial =
        kept_initial.unwrap_or_else(|| membership::initial_cluster(&members, &name, &peer_url));
    init::static_pods(ctx, vec![manifests::etcd_joining(&spec, &initial)])
}

/// The `--initial-cluster` of the etcd manifest this master has already.
fn existing_initial_cluster(ctx: &Init<'_>) -> Result<Option<String>, Error> {
    let path = ctx.spec.cluster.kubernetes_dir.join("manifests/etcd.yaml");
    let manifest = kprov_host::fs::read(&ctx.target.root, &path)
        .context(|| format!("reading {}", path.display()))?;
    Ok(manifest.and_then(|m| membership::manifest_initial_cluster(&String::from_utf8_lossy(&m))))
}

/// Adds this master as a learner, trying again while etcd refuses for
/// now, within the join's timeout. The member that takes the request
/// checks that it is connected to every voting member; one whose peer
/// came back from a restart may answer "unhealthy cluster" for long
/// after, while another answers yes: each endpoint is asked in turn.
fn add_learner(
    ctx: &mut Init<'_>,
    etcd: &EtcdClient,
    peer_url: &str,
) -> Result<(membership::Member, Vec<membership::Member>), Error> {
    let rt = ctx.target.rt.clone();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let endpoints = etcd.endpoints().to_vec();
    let mut attempt = 0usize;
    loop {
        let Some(endpoint) = endpoints.get(attempt % endpoints.len().max(1)) else {
            return Err(Error::failed("no etcd endpoint to add this master through"));
        };
        let one = etcd.with_endpoints(vec![endpoint.clone()]);
        attempt += 1;
        match rt.block_on(one.add(peer_url, true)) {
            Ok(added) => return Ok(added),
            Err(e) if e.is_transient() && started.elapsed() < ctx.spec.timeout => {
                if last_report.elapsed() >= PROGRESS_EVERY {
                    ctx.target.note(format!(
                        "waiting for etcd to accept a new member ({:.0} s of {} s): {e}",
                        started.elapsed().as_secs_f64(),
                        ctx.spec.timeout.as_secs()
                    ));
                    last_report = Instant::now();
                }
                if attempt % endpoints.len() == 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Err(e) => return Err(etcd_failed(e)),
        }
    }
}

fn etcd_promote(ctx: &mut Init<'_>) -> Result<(), Error> {
    let Some(learner) = joining(ctx).learner else {
        ctx.target
            .note("this master's etcd member votes already; nothing to promote");
        return Ok(());
    };
    let local = membership::client_url(ctx.spec.cluster.node().advertise_address.ip());
    let mut endpoints = etcd_endpoints(ctx)?;
    endpoints.push(local.clone());
    let etcd = etcd_client(ctx, endpoints)?;
    let rt = ctx.target.rt.clone();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let timeout = ctx.spec.timeout;
    loop {
        let waiting_for = match rt.block_on(etcd.promote(learner)) {
            Ok(()) => break,
            Err(e) if e.learner_not_ready() => "the local etcd member to catch up".to_string(),
            Err(e @ EtcdError::Unreachable { .. }) => format!("etcd to answer: {e}"),
            Err(e) => return Err(etcd_failed(e)),
        };
        if started.elapsed() > timeout {
            let up = rt.block_on(etcd.status_of(&local)).is_some();
            return Err(Error::failed(format!(
                "etcd learner {learner:x} was not promoted within {} s: {waiting_for}; the local member {}",
                timeout.as_secs(),
                if up { "answers at ".to_string() + &local } else { format!("does not answer at {local}: see the etcd container's log (crictl logs)") }
            )));
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            ctx.target.note(format!(
                "waiting for {waiting_for} ({:.0} s of {} s)",
                started.elapsed().as_secs_f64(),
                timeout.as_secs()
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut report = Report::new("etcd's members", local, false);
    report.push(ResourceReport {
        id: format!("etcd member {}", ctx.spec.cluster.node().node_name),
        description: "this master's etcd member, promoted to a voting member".into(),
        outcome: Outcome::Changed,
        detail: Some(format!(
            "in sync after {:.0} s",
            started.elapsed().as_secs_f64()
        )),
    });
    ctx.target.observer.report(&report);
    ctx.joining_mut().learner = None;
    Ok(())
}

impl Init<'_> {
    fn joining_mut(&mut self) -> &mut Joining {
        self.joining
            .as_mut()
            .unwrap_or_else(|| unreachable!("join_control_plane::run sets the joining state"))
    }
}
