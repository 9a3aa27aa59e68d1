//! `kprov cluster status` and `check`: what a cluster's machines and
//! nodes are, and its exit criteria (seed 003), each passed, failed
//! (naming the node, object and cause) or skipped with the reason.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::ClusterSpec;
use crate::name::{ClusterName, Role};
use crate::target::{MachineCommand, MachineState, Target};
use crate::workflow::{kubectl, last_lines, node_readiness, not_ready, Error};
use crate::MachineName;

/// One machine in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct MachineStatus {
    /// Its name.
    pub name: String,
    /// `master` or `worker`.
    pub role: String,
    /// Its address.
    pub address: String,
    /// `running` or `stopped`.
    pub state: String,
    /// `Ready`, `NotReady`, `not registered`, or `unknown` when the API
    /// server cannot be asked.
    pub node: String,
}

/// `kprov cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The cluster.
    pub cluster: String,
    /// The target.
    pub target: String,
    /// Its machines, masters first.
    pub machines: Vec<MachineStatus>,
}

/// The status of `cluster`; an error when it has no machine.
pub fn status(target: &dyn Target, cluster: &ClusterName) -> Result<Status, Error> {
    let mut machines = target.list(cluster)?;
    if machines.is_empty() {
        return Err(Error::NoCluster {
            cluster: cluster.clone(),
            target: target.kind(),
        });
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let master = machines
        .iter()
        .find(|m| m.name.role == Role::Master && m.state == MachineState::Running);
    let nodes = master.and_then(|m| node_readiness(target, &m.name).ok());
    Ok(Status {
        cluster: cluster.to_string(),
        target: target.kind().to_string(),
        machines: machines
            .iter()
            .map(|m| MachineStatus {
                name: m.name.to_string(),
                role: m.name.role.to_string(),
                address: m.address.to_string(),
                state: match m.state {
                    MachineState::Running => "running".into(),
                    MachineState::Stopped => "stopped".into(),
                },
                node: match &nodes {
                    None => "unknown".into(),
                    Some(nodes) => match nodes.iter().find(|(n, _, _)| *n == m.name.to_string()) {
                        Some((_, true, _)) => "Ready".into(),
                        Some((_, false, _)) => "NotReady".into(),
                        None => "not registered".into(),
                    },
                },
            })
            .collect(),
    })
}

impl Status {
    /// A table, one line per machine.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "cluster {} on {}\n{:<28} {:<7} {:<15} {:<8} NODE\n",
            self.cluster, self.target, "MACHINE", "ROLE", "ADDRESS", "STATE"
        );
        for m in &self.machines {
            out.push_str(&format!(
                "{:<28} {:<7} {:<15} {:<8} {}\n",
                m.name, m.role, m.address, m.state, m.node
            ));
        }
        out
    }
}

/// The result of one exit criterion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It holds.
    Passed,
    /// It does not.
    Failed,
    /// It could not be checked here; the detail says why.
    Skipped,
}

/// One exit criterion.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    /// The phase it closes: machines, master, nodes, network, daemons,
    /// add-ons.
    pub phase: &'static str,
    /// What must hold.
    pub criterion: String,
    /// Whether it does.
    pub verdict: Verdict,
    /// What was seen: on failure the node, object and cause.
    pub detail: String,
    /// How long checking it took, seconds.
    pub seconds: f64,
}

/// The exit criteria of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The cluster.
    pub cluster: String,
    /// Each criterion, in phase order.
    pub criteria: Vec<Criterion>,
}

impl Check {
    /// True when no criterion failed.
    pub fn passed(&self) -> bool {
        self.criteria.iter().all(|c| c.verdict != Verdict::Failed)
    }

    /// The table printed at the end of `up` and by `check`.
    pub fn render_text(&self) -> String {
        let mut out = format!("exit criteria of cluster {}\n", self.cluster);
        for c in &self.criteria {
            let word = match c.verdict {
                Verdict::Passed => "passed",
                Verdict::Failed => "FAILED",
                Verdict::Skipped => "skipped",
            };
            out.push_str(&format!(
                "  {:<9} {:<8} {:>5.1} s  {}",
                c.phase, word, c.seconds, c.criterion
            ));
            if c.verdict != Verdict::Passed || !c.detail.is_empty() {
                out.push_str(&format!(": {}", c.detail.trim_end()));
            }
            out.push('\n');
        }
        out
    }
}

/// What a criterion's check found: passed with a detail, failed with the
/// cause, or skipped with the reason.
type Found = (Verdict, String);

fn measure(
    criteria: &mut Vec<Criterion>,
    phase: &'static str,
    criterion: &str,
    check: impl FnOnce() -> Found,
) {
    let t = Instant::now();
    let (verdict, detail) = check();
    criteria.push(Criterion {
        phase,
        criterion: criterion.to_string(),
        verdict,
        detail,
        seconds: t.elapsed().as_secs_f64(),
    });
}

/// Runs a command in the first master; its stdout or why it failed.
fn in_master(
    target: &dyn Target,
    spec: &ClusterSpec,
    command: &MachineCommand,
) -> Result<String, String> {
    let master = &spec.first_master().name;
    match target.run(master, command) {
        Ok(out) if out.success() => Ok(out.stdout_text()),
        Ok(out) => Err(format!(
            "`{}` in {master} exited {:?}: {}",
            command.argv.join(" "),
            out.code,
            out.stderr_text().trim_end()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// How long one pod-to-pod request is retried.
const POD_TO_POD_WAIT: Duration = Duration::from_secs(30);

/// Polls `probe` every 2 s until it returns `Ok`, or `limit` passes (its
/// last error).
fn poll(
    limit: Duration,
    mut probe: impl FnMut() -> Result<String, String>,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// Checks the exit criteria of `spec`'s cluster, waiting up to `limit`
/// for each that converges (a Deployment's pods, DaemonSets).
pub fn check(target: &dyn Target, spec: &ClusterSpec, limit: Duration) -> Check {
    let mut criteria = Vec::new();
    let listed = target.list(&spec.name).unwrap_or_default();

    measure(
        &mut criteria,
        "machines",
        "every machine runs and has booted",
        || {
            for m in &spec.machines {
                match listed.iter().find(|l| l.name == m.name) {
                    None => {
                        return (
                            Verdict::Failed,
                            format!("machine {}: does not exist", m.name),
                        )
                    }
                    Some(l) if l.state != MachineState::Running => {
                        return (Verdict::Failed, format!("machine {}: not running", m.name))
                    }
                    Some(_) => {}
                }
                if let Err(e) = target.wait_booted(&m.name, limit) {
                    return (Verdict::Failed, e.to_string());
                }
            }
            (Verdict::Passed, format!("{} machines", spec.machines.len()))
        },
    );

    measure(&mut criteria, "master", "the API server is ready, and a Deployment gets its pod (scheduler and controller manager at work)", || {
        if let Err(e) = in_master(target, spec, &kubectl(&["get", "--raw", "/readyz"])) {
            return (Verdict::Failed, format!("/readyz: {e}"));
        }
        // The pause image is on every node (containerd's sandbox image).
        let pause = match in_master(target, spec, &MachineCommand::new(["sh", "-c", "sed -n 's/^ *sandbox_image *= *\"\\(.*\\)\"/\\1/p' /etc/containerd/config.toml"])) {
            Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
            Ok(_) => return (Verdict::Failed, "no sandbox_image in the master's /etc/containerd/config.toml".into()),
            Err(e) => return (Verdict::Failed, e),
        };
        let name = "kprov-check";
        let _ = in_master(target, spec, &kubectl(&["delete", "deployment", name, "--ignore-not-found", "--wait=true"]));
        // Tolerating every taint, as the network probes do: a cluster of
        // masters only (no worker) schedules it too.
        let labels = serde_json::json!({"app": name});
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "pause", "image": pause, "imagePullPolicy": "IfNotPresent"}]
                    }
                }
            }
        });
        let mut create = kubectl(&["create", "-f", "-"]);
        create.stdin = Some(deployment.to_string().into_bytes());
        if let Err(e) = in_master(target, spec, &create) {
            return (Verdict::Failed, format!("Deployment {name}: {e}"));
        }
        let available = poll(limit, || {
            let n = in_master(target, spec, &kubectl(&["get", "deployment", name, "-o", "jsonpath={.status.availableReplicas}"]))?;
            if n.trim() == "1" { Ok(n) } else { Err(format!("Deployment {name} has {:?} available pods", n.trim())) }
        });
        let pods = in_master(target, spec, &kubectl(&["get", "pods", "-l", &format!("app={name}"), "-o", "wide", "--no-headers"])).unwrap_or_default();
        let deleted = in_master(target, spec, &kubectl(&["delete", "deployment", name, "--wait=true"]));
        match (available, deleted) {
            (Err(e), _) => {
                let cm = in_master(target, spec, &kubectl(&["-n", "kube-system", "get", "pods", "--no-headers"])).unwrap_or_default();
                (Verdict::Failed, format!("{e}\n{pods}\n-- kube-system pods:\n{cm}"))
            }
            (Ok(_), Err(e)) => (Verdict::Failed, format!("deleting Deployment {name}: {e}")),
            (Ok(_), Ok(_)) => (Verdict::Passed, format!("pod {}", pods.split_whitespace().next().unwrap_or("?"))),
        }
    });

    measure(
        &mut criteria,
        "nodes",
        "every machine is a registered, Ready node",
        || {
            let nodes = match node_readiness(target, &spec.first_master().name) {
                Ok(n) => n,
                Err(e) => return (Verdict::Failed, e.to_string()),
            };
            let bad: Vec<String> = not_ready(spec, &nodes)
                .into_iter()
                .map(|(name, why)| format!("node {name}: {why}"))
                .collect();
            if bad.is_empty() {
                (Verdict::Passed, format!("{} Ready", nodes.len()))
            } else {
                (Verdict::Failed, bad.join("; "))
            }
        },
    );

    let probes = Probes::new(target, spec, limit);
    measure(
        &mut criteria,
        "network",
        "a pod on every node reaches the pod on every other node",
        || {
            probes
                .start()
                .and_then(|pods| probes.pod_to_pod(&pods))
                .unwrap_or_else(|f| f)
        },
    );

    measure(
        &mut criteria,
        "daemons",
        "kube-proxy runs on every node",
        || {
            let want = spec.machines.len().to_string();
            match poll(limit, || {
                let n = in_master(
                    target,
                    spec,
                    &kubectl(&[
                        "-n",
                        "kube-system",
                        "get",
                        "daemonset",
                        "kube-proxy",
                        "-o",
                        "jsonpath={.status.numberReady}",
                    ]),
                )?;
                if n.trim() == want {
                    Ok(n)
                } else {
                    Err(format!(
                        "DaemonSet kube-system/kube-proxy: {} of {want} ready",
                        n.trim()
                    ))
                }
            }) {
                Ok(_) => (Verdict::Passed, format!("{want} of {want} ready")),
                Err(e) => (Verdict::Failed, e),
            }
        },
    );

    measure(
        &mut criteria,
        "daemons",
        "a ClusterIP Service answers from every node and from a pod",
        || probes.service().unwrap_or_else(|f| f),
    );
    probes.clean_up();

    measure(
        &mut criteria,
        "add-ons",
        "the DNS add-on (CoreDNS) is rolled out",
        || {
            let image = match in_master(
                target,
                spec,
                &kubectl(&[
                    "-n",
                    "kube-system",
                    "get",
                    "deployment",
                    "coredns",
                    "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}",
                ]),
            ) {
                Ok(i) => i.trim().to_string(),
                Err(e) => {
                    return (
                        Verdict::Failed,
                        format!("Deployment kube-system/coredns: {e}"),
                    )
                }
            };
            let present = in_master(
                target,
                spec,
                &MachineCommand::new(["ctr", "-n", "k8s.io", "images", "ls", "-q"]),
            )
            .map(|list| list.lines().any(|l| l.trim() == image))
            .unwrap_or(false);
            if !present {
                return (
                    Verdict::Skipped,
                    format!("image {image} not available on the nodes"),
                );
            }
            match in_master(
                target,
                spec,
                &kubectl(&[
                    "-n",
                    "kube-system",
                    "rollout",
                    "status",
                    "deployment/coredns",
                    &format!("--timeout={}s", limit.as_secs()),
                ])
                .timeout(limit + Duration::from_secs(30)),
            ) {
                Ok(_) => (Verdict::Passed, String::new()),
                Err(e) => (Verdict::Failed, e),
            }
        },
    );

    measure(
        &mut criteria,
        "ha",
        "etcd has a started, voting member on every master",
        || {
            poll(limit, || etcd_voters(target, spec))
                .map_or_else(|e| (Verdict::Failed, e), |d| (Verdict::Passed, d))
        },
    );
    measure(
        &mut criteria,
        "ha",
        "every worker's kprov lb sees every API server up",
        || {
            poll(limit, || lb_backends(target, spec))
                .map_or_else(|e| (Verdict::Failed, e), |d| (Verdict::Passed, d))
        },
    );

    Check {
        cluster: spec.name.to_string(),
        criteria,
    }
}

/// etcd's members as `master`'s own member lists them (`kprov etcd
/// members` in the machine).
pub fn etcd_members(
    target: &dyn Target,
    master: &MachineName,
) -> Result<Vec<kprov_controlplane::etcd::Member>, String> {
    // Not etcdctl in the etcd pod: the kubelet may make its mirror pod
    // only at its next sync, a minute after etcd started.
    let command = MachineCommand::new(["kprov", "etcd", "members", "--output", "json"])
        .timeout(std::time::Duration::from_secs(60));
    let out = match target.run(master, &command) {
        Ok(out) if out.success() => out.stdout_text(),
        Ok(out) => {
            return Err(format!(
                "kprov etcd members in {master} exited {:?}: {}",
                out.code,
                out.stderr_text().trim_end()
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    #[derive(serde::Deserialize)]
    struct List {
        members: Vec<kprov_controlplane::etcd::Member>,
    }
    let list: List = serde_json::from_str(&out).map_err(|e| format!("kprov etcd members: {e}"))?;
    Ok(list.members)
}

/// etcd's members as the first master lists them: every master a started
/// voting member and no other member.
fn etcd_voters(target: &dyn Target, spec: &ClusterSpec) -> Result<String, String> {
    let members = etcd_members(target, &spec.first_master().name)?;
    let masters: Vec<String> = spec
        .machines
        .iter()
        .filter(|m| m.name.role == Role::Master)
        .map(|m| m.name.to_string())
        .collect();
    let voters: Vec<&str> = members
        .iter()
        .filter(|m| m.started() && !m.is_learner)
        .map(|m| m.name.as_str())
        .collect();
    let all: Vec<String> = members.iter().map(|m| m.describe()).collect();
    if members.len() == masters.len() && masters.iter().all(|m| voters.contains(&m.as_str())) {
        Ok(format!("{} voting members", voters.len()))
    } else {
        Err(format!(
            "etcd's members are {}; expected one started voting member per master ({})",
            all.join(", "),
            masters.join(", ")
        ))
    }
}

/// Each worker's balancer (`kprov lb status`): every master's API server
/// a backend that is up.
fn lb_backends(target: &dyn Target, spec: &ClusterSpec) -> Result<String, String> {
    let want: Vec<String> = spec
        .machines
        .iter()
        .filter(|m| m.name.role == Role::Master)
        .map(|m| format!("{}:6443", m.address))
        .collect();
    let workers: Vec<_> = spec
        .machines
        .iter()
        .filter(|m| m.name.role == Role::Worker)
        .collect();
    for w in &workers {
        let command = MachineCommand::new(["kprov", "lb", "status", "--output", "json"]);
        let out = match target.run(&w.name, &command) {
            Ok(out) if out.success() => out.stdout_text(),
            Ok(out) => {
                return Err(format!(
                    "{}: kprov lb status: {}",
                    w.name,
                    last_lines(&out.stderr_text(), 3)
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("{}: kprov lb status: {e}", w.name))?;
        let up: Vec<&str> = doc["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["health"] == "up")
            .filter_map(|b| b["address"].as_str())
            .collect();
        let missing: Vec<&String> = want.iter().filter(|a| !up.contains(&a.as_str())).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: kprov lb has no healthy backend for {} (up: {})",
                w.name,
                missing
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if up.is_empty() {
                    "none".to_string()
                } else {
                    up.join(", ")
                }
            ));
        }
    }
    Ok(format!(
        "{} workers, each with {} API servers up",
        workers.len(),
        want.len()
    ))
}

/// The pods of the network and Service criteria: one busybox httpd per
/// node serving its own name, and a Service in front of them.
struct Probes<'a> {
    target: &'a dyn Target,
    spec: &'a ClusterSpec,
    limit: Duration,
    /// Set when the pods run: (node, pod, pod IP).
    pods: std::cell::RefCell<Option<Result<ProbePods, Found>>>,
}

/// The running probe pods: (node, pod, pod IP).
type ProbePods = Vec<(String, String, String)>;

const PROBE_LABEL: &str = "kprov-probe";

impl<'a> Probes<'a> {
    fn new(target: &'a dyn Target, spec: &'a ClusterSpec, limit: Duration) -> Self {
        Self {
            target,
            spec,
            limit,
            pods: std::cell::RefCell::new(None),
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        in_master(self.target, self.spec, &kubectl(args))
    }

    /// Starts a probe pod on every node (once) and waits for their
    /// addresses; skipped when the image is not on every node.
    fn start(&self) -> Result<ProbePods, Found> {
        if let Some(done) = self.pods.borrow().as_ref() {
            return done.clone();
        }
        let result = self.start_pods();
        *self.pods.borrow_mut() = Some(result.clone());
        result
    }

    fn start_pods(&self) -> Result<ProbePods, Found> {
        let image = self.spec.check_image.as_str();
        for m in &self.spec.machines {
            let listed = self
                .target
                .run(
                    &m.name,
                    &MachineCommand::new(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
                        .timeout(Duration::from_secs(30)),
                )
                .map(|o| o.stdout_text())
                .unwrap_or_default();
            if !listed.lines().any(|l| l.trim() == image) {
                return Err((
                    Verdict::Skipped,
                    format!("image {image} not available on {} (--check-image)", m.name),
                ));
            }
        }
        let _ = self.kubectl(&[
            "delete",
            "pods,services",
            "-l",
            &format!("app={PROBE_LABEL}"),
            "--wait=true",
        ]);
        let mut pods = Vec::new();
        for m in &self.spec.machines {
            let node = m.name.to_string();
            let pod = format!("{PROBE_LABEL}-{node}");
            let manifest = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "labels": {"app": PROBE_LABEL}},
                "spec": {
                    "nodeName": node,
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "httpd",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}]
                    }]
                }
            });
            let mut apply = kubectl(&["apply", "-f", "-"]);
            apply.stdin = Some(manifest.to_string().into_bytes());
            in_master(self.target, self.spec, &apply)
                .map_err(|e| (Verdict::Failed, format!("pod {pod} on node {node}: {e}")))?;
            pods.push((node, pod));
        }
        let mut running = Vec::new();
        for (node, pod) in pods {
            let ip = poll(self.limit, || {
                let out = self.kubectl(&[
                    "get",
                    "pod",
                    &pod,
                    "-o",
                    "jsonpath={.status.phase} {.status.podIP}",
                ])?;
                match out.split_whitespace().collect::<Vec<_>>()[..] {
                    ["Running", ip] => Ok(ip.to_string()),
                    _ => Err(format!("pod {pod} on node {node} is {:?}", out.trim())),
                }
            })
            .map_err(|e| {
                let events = self
                    .kubectl(&[
                        "get",
                        "events",
                        "--field-selector",
                        &format!("involvedObject.name={pod}"),
                        "--no-headers",
                    ])
                    .unwrap_or_default();
                (Verdict::Failed, format!("{e}\n{}", last_lines(&events, 5)))
            })?;
            running.push((node, pod, ip));
        }
        Ok(running)
    }

    /// From each probe pod, a request to every other pod's address
    /// answers with that pod's name. A pair is asked again for up to
    /// [`POD_TO_POD_WAIT`]: a node that has just joined gets its routes
    /// from the others' next pod-network sync.
    fn pod_to_pod(&self, pods: &[(String, String, String)]) -> Result<Found, Found> {
        let mut checked = 0;
        for (from_node, from_pod, _) in pods {
            for (to_node, to_pod, to_ip) in pods.iter().filter(|p| p.1 != *from_pod) {
                poll(POD_TO_POD_WAIT.min(self.limit), || {
                    let got = self.get_from_pod(from_pod, to_ip, 8080).map_err(|e| {
                        format!("node {from_node}: pod {from_pod} cannot reach pod {to_pod} on node {to_node} ({to_ip}): {e}")
                    })?;
                    if got.trim() != to_pod {
                        return Err(format!("node {from_node}: {to_ip}:8080 answered {:?}, not pod {to_pod} of node {to_node}", got.trim()));
                    }
                    Ok(String::new())
                })
                .map_err(|e| (Verdict::Failed, e))?;
                checked += 1;
            }
        }
        if pods.len() < 2 {
            return Ok((Verdict::Skipped, "one node: no other node to reach".into()));
        }
        Ok((
            Verdict::Passed,
            format!("{checked} pod-to-pod requests across {} nodes", pods.len()),
        ))
    }

    /// A ClusterIP Service in front of the probe pods answers from every
    /// node (through kube-proxy's rules there) and from a pod.
    fn service(&self) -> Result<Found, Found> {
        let pods = self.start()?;
        let manifest = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": PROBE_LABEL, "labels": {"app": PROBE_LABEL}},
            "spec": {"selector": {"app": PROBE_LABEL}, "ports": [{"port": 80, "targetPort": 8080}]}
        });
        let mut apply = kubectl(&["apply", "-f", "-"]);
        apply.stdin = Some(manifest.to_string().into_bytes());
        in_master(self.target, self.spec, &apply)
            .map_err(|e| (Verdict::Failed, format!("Service {PROBE_LABEL}: {e}")))?;
        let ip = self
            .kubectl(&[
                "get",
                "service",
                PROBE_LABEL,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])
            .map_err(|e| (Verdict::Failed, format!("Service {PROBE_LABEL}: {e}")))?;
        let ip = ip.trim().to_string();
        let names: Vec<&str> = pods.iter().map(|p| p.1.as_str()).collect();
        // kube-proxy writes its rules for a new Service within seconds.
        let limit = self.limit;
        for m in &self.spec.machines {
            let script = format!(
                "exec 3<>/dev/tcp/{ip}/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && tail -n 1 <&3"
            );
            poll(limit, || {
                let out = self
                    .target
                    .run(
                        &m.name,
                        &MachineCommand::new(["timeout", "5", "bash", "-c", &script])
                            .timeout(Duration::from_secs(10)),
                    )
                    .map_err(|e| e.to_string())?;
                let body = out.stdout_text();
                if out.success() && names.contains(&body.trim()) {
                    Ok(body)
                } else {
                    Err(format!(
                        "exit {:?}, answer {:?} {}",
                        out.code,
                        body.trim(),
                        out.stderr_text().trim()
                    ))
                }
            })
            .map_err(|e| {
                (
                    Verdict::Failed,
                    format!("node {}: Service {PROBE_LABEL} ({ip}:80): {e}", m.name),
                )
            })?;
        }
        let (_, from_pod, _) = &pods[0];
        poll(limit, || {
            let got = self.get_from_pod(from_pod, &ip, 80)?;
            if names.contains(&got.trim()) {
                Ok(got)
            } else {
                Err(format!("answered {:?}", got.trim()))
            }
        })
        .map_err(|e| {
            (
                Verdict::Failed,
                format!("pod {from_pod}: Service {PROBE_LABEL} ({ip}:80): {e}"),
            )
        })?;
        Ok((
            Verdict::Passed,
            format!(
                "{ip}:80 from {} nodes and from pod {from_pod}",
                self.spec.machines.len()
            ),
        ))
    }

    /// The body `http://IP:PORT/` answers with, fetched in `pod` with
    /// busybox's nc (Debian's static busybox `wget` crashes in a root
    /// without glibc's NSS modules).
    fn get_from_pod(&self, pod: &str, ip: &str, port: u16) -> Result<String, String> {
        let script =
            format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port} | tail -n 1");
        self.kubectl(&["exec", pod, "--", "sh", "-c", &script])
    }

    /// Removes the probe pods and Service.
    fn clean_up(&self) {
        let _ = self.kubectl(&[
            "delete",
            "pods,services",
            "-l",
            &format!("app={PROBE_LABEL}"),
            "--wait=false",
        ]);
    }
}
