//! A cluster seen from the host and the worker VMs that join it: kubectl
//! with an admin kubeconfig inside the test's network namespace, join
//! tokens, and a worker disk (Debian's cloud root prebaked by
//! `kprov provision --phase base --root` from a bundle that also ships
//! kube-proxy and busybox) configured by `kprov userdata` over NoCloud.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::controlplane::{run_in, text, wait_for};
use super::netns::Netns;
use super::registry::bundle;
use super::vm::{install_boot_script, make_disk, VmDisk};
use super::{debian_cloud_root_tarball, extract, kprov_bin, kprov_release_bin, kubernetes_bin, sh};

/// The workload image the harness builds from Debian's busybox-static.
pub const BUSYBOX: &str = "docker.io/library/busybox:1.35.0";
/// kube-proxy, which a worker runs beside its kubelet.
pub const KUBE_PROXY: &str = "k8s.gcr.io/kube-proxy:v1.20.2";

/// The console lines of the setup script `kprov userdata` renders: it
/// finished, it failed, and it starts `kprov provision` (the join).
pub const SETUP_DONE: &str = "kprov-setup: done";
pub const SETUP_FAILED: &str = "kprov-setup: error:";
pub const JOIN_STARTS: &str = "kprov-setup: step 4/5: running kprov provision";

/// What `kprov token create --print-join-command` printed.
pub struct JoinCommand {
    pub api_server: String,
    pub token: String,
    pub ca_hash: String,
}

impl JoinCommand {
    /// Reads a printed join line: `KPROV_TOKEN=<token> kprov provision
    /// --phase all --api-server URL --discovery-token-ca-cert-hash HASH`
    /// (the token in the environment, never on kprov's command line).
    pub fn parse(line: &str) -> Self {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            let at = words.iter().position(|w| *w == flag);
            at.map(|i| words[i + 1].to_string())
                .unwrap_or_else(|| panic!("no {flag} in the join command {line:?}"))
        };
        assert!(
            !words.contains(&"--token"),
            "the join command puts the token on kprov's command line: {line:?}"
        );
        let token = words
            .first()
            .and_then(|w| w.strip_prefix("KPROV_TOKEN="))
            .unwrap_or_else(|| {
                panic!("the join command does not start with KPROV_TOKEN=: {line:?}")
            });
        JoinCommand {
            api_server: after("--api-server"),
            token: token.to_string(),
            ca_hash: after("--discovery-token-ca-cert-hash"),
        }
    }
}

/// A cluster's admin: kubectl and kprov with `kubeconfig`, run in `ns`.
pub struct Admin<'a> {
    pub ns: &'a Netns,
    pub kubeconfig: PathBuf,
}

impl Admin<'_> {
    /// kubectl of the cluster's release, each request bounded.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let kubectl = kubernetes_bin().join("kubectl");
        let mut all = vec![
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--request-timeout",
            "20s",
        ];
        all.extend_from_slice(args);
        run_in(self.ns, kubectl.to_str().unwrap(), &all)
    }

    /// A new bootstrap token (`ttl`) and the join command's parts.
    pub fn new_token(&self, ttl: &str) -> JoinCommand {
        let o = run_in(
            self.ns,
            kprov_bin().to_str().unwrap(),
            &[
                "token",
                "create",
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--ttl",
                ttl,
                "--print-join-command",
            ],
        );
        assert!(o.status.success(), "token create: {}", text(&o));
        JoinCommand::parse(String::from_utf8_lossy(&o.stdout).trim())
    }

    /// Whether `node`'s Ready condition is True.
    pub fn node_ready(&self, node: &str) -> bool {
        let o = self.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "True"
    }

    /// Polls until `node` is Ready; panics after `limit` with the nodes
    /// and `context()` (consoles, logs).
    pub fn wait_ready(&self, node: &str, limit: Duration, context: &dyn Fn() -> String) {
        if wait_for(limit, || self.node_ready(node).then_some(())).is_none() {
            let nodes = self.kubectl(&["get", "nodes", "-o", "yaml"]);
            panic!(
                "{node} was not Ready within {limit:?}\nnodes: {}\n{}",
                text(&nodes),
                context()
            );
        }
    }

    /// `kubectl get nodes -o wide`.
    pub fn nodes(&self) -> String {
        String::from_utf8_lossy(&self.kubectl(&["get", "nodes", "-o", "wide"]).stdout).into_owned()
    }
}

/// The worker's disk: Debian's cloud root, the base phase from a bundle
/// with kube-proxy and busybox (by the kprov that is measured, which
/// installs itself), kubeadm for the benchmarks, and `script` (a name and
/// a boot script run after cloud-init), if any.
pub fn worker_disk(dir: &Path, script: Option<(&str, &str)>) -> VmDisk {
    let root = worker_root(dir, script);
    let disk_dir = dir.join("worker-disk");
    std::fs::create_dir_all(&disk_dir).unwrap();
    let vm = make_disk(&root, &disk_dir, "6G");
    std::fs::remove_dir_all(&root).unwrap();
    vm
}

/// The worker's root, `dir/worker-root`: the cloud root prebaked from a
/// bundle with kube-proxy and busybox, kubeadm beside kprov, and `script`
/// (name, text) run at boot after cloud-init when given.
pub fn worker_root(dir: &Path, script: Option<(&str, &str)>) -> PathBuf {
    let work = dir.join("worker-bundle-work");
    let bundle = bundle(&work, &["--image", KUBE_PROXY, "--image", BUSYBOX]);
    let root = dir.join("worker-root");
    extract(debian_cloud_root_tarball(), &root);
    prebake(&root, &bundle, "worker");
    std::fs::remove_dir_all(&work).unwrap();
    std::fs::copy(
        kubernetes_bin().join("kubeadm"),
        root.join("usr/local/bin/kubeadm"),
    )
    .unwrap();
    if let Some((name, script)) = script {
        install_boot_script(&root, name, script, "cloud-final.service");
    }
    root
}

/// The base phase into `root` from `bundle`, by the static release binary
/// (which installs itself into the root, so the VM runs it); `what` names
/// the node in a failure.
pub fn prebake(root: &Path, bundle: &Path, what: &str) {
    let out = Command::new(kprov_release_bin())
        .args(["provision", "--phase", "base", "--root"])
        .arg(root)
        .args([
            "--kubelet-version",
            "v1.20.2",
            "--arch",
            "amd64",
            "--bundle",
        ])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "prebaking the {what}: {}", text(&out));
    super::assert_release_binary_installed(root);
}

/// Writes the NoCloud directory `site/name/`: meta-data with `name` as
/// instance id and hostname, an empty vendor-data, and `user_data`.
pub fn nocloud(site: &Path, name: &str, user_data: &str) {
    let dir = site.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: {name}\nlocal-hostname: {name}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("vendor-data"), "").unwrap();
    std::fs::write(dir.join("user-data"), user_data).unwrap();
}

/// `kprov userdata` for a worker named `hostname`: join with the token and
/// the pinned CA hash, with the kprov already in the image (pinned by its
/// sha256). Scratch files (an SSH key, the output) go to `dir`.
pub fn kprov_user_data(join: &JoinCommand, hostname: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("id_ed25519");
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kprov-test", "-f"])
        .arg(&key));
    let out = dir.join("user-data");
    let run = Command::new(kprov_bin())
        .args(["userdata", "--format", "cloud-init", "--hostname", hostname])
        .arg("--ssh-authorized-keys-file")
        .arg(key.with_extension("pub"))
        .args(["--provision-source", "file:///usr/local/bin/kprov"])
        .arg("--provision-binary")
        .arg(kprov_release_bin())
        .args(["--phase", "join", "--kubelet-version", "v1.20.2"])
        .args(["--api-server", &join.api_server])
        .args(["--discovery-token-ca-cert-hash", &join.ca_hash])
        .arg("--output")
        .arg(&out)
        .env("KPROV_TOKEN", &join.token)
        .output()
        .unwrap();
    assert!(run.status.success(), "kprov userdata: {}", text(&run));
    std::fs::read_to_string(out).unwrap()
}
