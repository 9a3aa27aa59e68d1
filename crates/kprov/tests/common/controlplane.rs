//! A real control plane from kprov's files: `kprov init` writes the
//! certificates, kubeconfigs and static pod manifests into a scratch root,
//! then Debian's etcd and the v1.20.2 kube-apiserver,
//! kube-controller-manager and kube-scheduler (built from Debian's source
//! by tools/build-kubernetes.sh) run as processes in a network namespace
//! with the command lines of those manifests. Ready in about 30 s; gone
//! when dropped (the namespace kills its processes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::{kprov_bin, kubernetes_bin_dir, scratch};

/// The Kubernetes release of the control plane.
pub const VERSION: &str = "v1.20.2";

/// The processes' logs, printed when a test fails.
pub struct Logs(pub Vec<PathBuf>);

impl Logs {
    /// Each log's cause of a crash, or its last lines.
    pub fn dump(&self) -> String {
        let mut text = String::new();
        for log in &self.0 {
            let body = std::fs::read_to_string(log).unwrap_or_default();
            // A Go crash ends in goroutine dumps; its cause comes first.
            if let Some(at) = body.find("panic:").or_else(|| body.find("fatal error:")) {
                let cause: String = body[at..].lines().take(40).collect::<Vec<_>>().join("\n");
                text.push_str(&format!("==== {} crashed:\n{cause}\n", log.display()));
                continue;
            }
            let tail: Vec<&str> = body.lines().rev().take(25).collect();
            text.push_str(&format!("==== {} (last lines)\n", log.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// Runs `program` in the namespace, without a token in its environment.
pub fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Output {
    ns.command(program)
        .args(args)
        .env_remove("KPROV_TOKEN")
        .output()
        .unwrap()
}

/// Runs kprov in the namespace.
pub fn kprov_in(ns: &Netns, args: &[&str]) -> Output {
    run_in(ns, kprov_bin().to_str().unwrap(), args)
}

/// An output's status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `check` every half second until it returns Some or `limit`
/// passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = check() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// Starts each static pod's command as a process: the binary of the same
/// name, every host path of the pod mapped under `root`.
fn start_static_pods(
    ns: &mut Netns,
    root: &Path,
    logs_dir: &Path,
    apiserver_ips: &[String],
) -> (Logs, Vec<ApiServer>) {
    let manifests = root.join("etc/kubernetes/manifests");
    let mut logs = Vec::new();
    let mut apiservers = Vec::new();
    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let text = std::fs::read_to_string(manifests.join(format!("{component}.yaml"))).unwrap();
        let pod: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let command: Vec<String> = pod["spec"]["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let host_paths: Vec<String> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["hostPath"]["path"].as_str().unwrap().to_string())
            .filter(|p| p.starts_with("/etc/kubernetes") || p.starts_with("/var/lib/etcd"))
            .collect();
        let args: Vec<String> = command[1..]
            .iter()
            .map(|arg| {
                let (flag, value) = arg.split_once('=').unwrap();
                let mapped = host_paths
                    .iter()
                    .find(|p| value.starts_with(p.as_str()))
                    .map(|_| format!("{}{value}", root.display()))
                    .unwrap_or_else(|| value.to_string());
                format!("{flag}={mapped}")
            })
            .collect();
        let binary = if component == "etcd" {
            "/usr/bin/etcd".to_string()
        } else {
            kubernetes_bin_dir().join(component).display().to_string()
        };
        if component == "kube-apiserver" && apiserver_ips.len() > 1 {
            // One per address, each bound to its own and advertising it.
            for (i, ip) in apiserver_ips.iter().enumerate() {
                let mut args: Vec<String> = args
                    .iter()
                    .filter(|a| !a.starts_with("--advertise-address="))
                    .cloned()
                    .collect();
                args.push(format!("--advertise-address={ip}"));
                args.push(format!("--bind-address={ip}"));
                let log = logs_dir.join(format!("{component}-{}.log", i + 1));
                let mut server = ApiServer {
                    ip: ip.clone(),
                    binary: binary.clone(),
                    args,
                    log: log.clone(),
                    pid: 0,
                };
                server.start(ns);
                apiservers.push(server);
                logs.push(log);
            }
            continue;
        }
        let mut args = args;
        if component == "kube-controller-manager"
            && !args.iter().any(|a| a.starts_with("--allocate-node-cidrs="))
        {
            // kprov gives a bridge cluster's pod ranges from its masters'
            // kprov-pod-network.service; this control plane runs as bare
            // processes with no such node, so the controller manager's
            // own allocator stands in.
            args.push("--allocate-node-cidrs=true".into());
            args.push(format!(
                "--cluster-cidr={}",
                kprov_controlplane::spec::DEFAULT_POD_CIDR
            ));
        }
        let log = logs_dir.join(format!("{component}.log"));
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn_logged(Path::new(&binary), &arg_refs, &log);
        logs.push(log);
    }
    (Logs(logs), apiservers)
}

/// One of several API servers started by [`ControlPlane::start_ha`]:
/// stopped and started again by the tests.
pub struct ApiServer {
    /// Its address (bind and advertise).
    pub ip: String,
    binary: String,
    args: Vec<String>,
    log: PathBuf,
    /// Its process (0 when not running).
    pub pid: u32,
}

impl ApiServer {
    /// Starts it (again), its log appended to.
    pub fn start(&mut self, ns: &mut Netns) {
        let arg_refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.pid = ns.spawn_logged(Path::new(&self.binary), &arg_refs, &self.log);
    }

    /// Kills it with SIGKILL: a master that dies.
    pub fn kill(&mut self, ns: &mut Netns) {
        ns.kill(self.pid);
        self.pid = 0;
    }

    /// Sends it `signal` (STOP: a master that hangs; CONT).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    /// Its URL.
    pub fn server(&self) -> String {
        format!("https://{}:6443", self.ip)
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// Its namespace (dropped first: it kills the processes).
    pub ns: Netns,
    /// The API server's address, `<prefix>.1`.
    pub address: String,
    /// The root kprov init wrote into.
    pub root: PathBuf,
    /// The processes' logs.
    pub logs: Logs,
    /// kubectl of the same release.
    pub kubectl_bin: String,
    /// admin.conf.
    pub admin: String,
    /// The API servers of [`ControlPlane::start_ha`] (empty otherwise:
    /// the one API server binds every address).
    pub apiservers: Vec<ApiServer>,
    /// Scratch space (root, logs); removed last.
    pub dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Writes the files with `kprov init` and starts the processes in a
    /// new namespace `<prefix>.0/24`; returns once /readyz says ok.
    pub fn start(prefix: &str) -> Self {
        Self::start_ha(prefix, 1)
    }

    /// [`ControlPlane::start`] with `apiservers` API servers at
    /// `<prefix>.1`, `.2`, ... sharing etcd and the certificates (which
    /// carry every address); returns once the first is ready.
    pub fn start_ha(prefix: &str, apiservers: usize) -> Self {
        let dir = scratch("controlplane-");
        let ips: Vec<String> = (1..=apiservers).map(|i| format!("{prefix}.{i}")).collect();
        let extra_sans: Vec<String> = ips[1..].iter().map(|ip| format!("--san={ip}")).collect();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let address = format!("{prefix}.1");
        let o = Command::new(kprov_bin())
            .args(["init", "--skip-phases", "base,kubelet-start", "--root"])
            .arg(&root)
            .args([
                "--node-name",
                "master-1",
                "--advertise-address",
                &address,
                "--kubernetes-version",
                VERSION,
                "--pod-network",
                "bridge",
            ])
            .args(&extra_sans)
            .output()
            .unwrap();
        assert!(o.status.success(), "kprov init: {}", text(&o));

        let mut ns = Netns::new(prefix);
        for ip in &ips[1..] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        }
        let logs_dir = dir.path().join("logs");
        std::fs::create_dir_all(&logs_dir).unwrap();
        let (logs, apiservers) = start_static_pods(&mut ns, &root, &logs_dir, &ips);
        let kubectl = kubernetes_bin_dir().join("kubectl").display().to_string();
        let admin = root.join("etc/kubernetes/admin.conf").display().to_string();
        let started = Instant::now();
        let ready = wait_for(Duration::from_secs(180), || {
            let o = run_in(
                &ns,
                &kubectl,
                &["--kubeconfig", &admin, "get", "--raw", "/readyz"],
            );
            (o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok").then_some(())
        });
        assert!(
            ready.is_some(),
            "the API server never became ready\n{}",
            logs.dump()
        );
        println!(
            "API server ready {:.1} s after start",
            started.elapsed().as_secs_f64()
        );
        Self {
            ns,
            address,
            root,
            logs,
            kubectl_bin: kubectl,
            admin,
            apiservers,
            dir,
        }
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://{}:6443", self.address)
    }

    /// The cluster CA's path.
    pub fn ca(&self) -> PathBuf {
        self.root.join("etc/kubernetes/pki/ca.crt")
    }

    /// Writes a kubeconfig at `path` that reaches the API server (trusting
    /// its CA) with the bearer `token`, through kubectl.
    pub fn token_kubeconfig(&self, path: &Path, token: &str) {
        let server = self.server();
        let ca = self.ca();
        for args in [
            vec![
                "config",
                "set-cluster",
                "k",
                "--server",
                &server,
                "--certificate-authority",
                ca.to_str().unwrap(),
            ],
            vec!["config", "set-credentials", "t", "--token", token],
            vec![
                "config",
                "set-context",
                "c",
                "--cluster",
                "k",
                "--user",
                "t",
            ],
            vec!["config", "use-context", "c"],
        ] {
            let o = Command::new(&self.kubectl_bin)
                .arg("--kubeconfig")
                .arg(path)
                .args(&args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
    }

    /// Runs `kprov init phase NAME` against the running API server.
    pub fn init_phase(&self, name: &str) -> Output {
        self.init_phase_with(name, &[])
    }

    /// Runs `kprov init phase NAME` with `extra` flags.
    pub fn init_phase_with(&self, name: &str, extra: &[&str]) -> Output {
        let cert_dir = self.root.join("etc/kubernetes/pki").display().to_string();
        let k8s_dir = self.root.join("etc/kubernetes").display().to_string();
        kprov_in(
            &self.ns,
            &[
                "init",
                "phase",
                name,
                "--cert-dir",
                &cert_dir,
                "--kubernetes-dir",
                &k8s_dir,
                "--node-name",
                "master-1",
                "--advertise-address",
                &self.address,
                "--kubernetes-version",
                VERSION,
                "--pod-network",
                "bridge",
            ]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>(),
        )
    }

    /// Creates a token (with `ttl`) and returns it with the CA hash of the
    /// join command `kprov token create` prints.
    pub fn new_token(&self, ttl: &str) -> (String, String) {
        let join = self.admin().new_token(ttl);
        assert_eq!(join.api_server, self.server());
        (join.token, join.ca_hash)
    }

    /// The cluster's admin (admin.conf in the namespace).
    pub fn admin(&self) -> super::cluster::Admin<'_> {
        super::cluster::Admin {
            ns: &self.ns,
            kubeconfig: PathBuf::from(&self.admin),
        }
    }

    /// Applies the definition `kprov netboot crd` prints and waits
    /// (bounded) until the API server serves it.
    pub fn install_machine_crd(&self) {
        use std::io::Write;
        let crd = kprov_in(&self.ns, &["netboot", "crd"]);
        assert!(crd.status.success(), "{}", text(&crd));
        let mut child = self
            .ns
            .command(&self.kubectl_bin)
            .args(["--kubeconfig", &self.admin, "apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&crd.stdout).unwrap();
        let applied = child.wait_with_output().unwrap();
        assert!(
            applied.status.success(),
            "{}\n{}",
            text(&applied),
            self.logs.dump()
        );
        let established = wait_for(Duration::from_secs(30), || {
            let o = self.kubectl(&[
                "get",
                "crd",
                "machines.kprov.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ]);
            (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
        });
        assert!(
            established.is_some(),
            "machines.kprov.dev never Established"
        );
    }

    /// Starts `BIN --log-level info netboot serve --config CONFIG
    /// --machines kubernetes --kubeconfig admin.conf` in the namespace,
    /// logging to `log`; its PID.
    pub fn serve_netboot_watching(&mut self, bin: &Path, config: &Path, log: &Path) -> u32 {
        let admin = self.admin.clone();
        self.ns.spawn_logged(
            bin,
            &[
                "--log-level",
                "info",
                "netboot",
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--machines",
                "kubernetes",
                "--kubeconfig",
                &admin,
            ],
            log,
        )
    }

    /// Runs kubectl with admin.conf in the namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--kubeconfig", &self.admin];
        all.extend_from_slice(args);
        run_in(&self.ns, &self.kubectl_bin, &all)
    }
}
