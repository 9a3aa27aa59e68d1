//! Clusters of systemd-nspawn machines for the tests: the cached node
//! image, a site (network namespace, scratch directory, nspawn target),
//! `kprov cluster` on it, commands in machines and their diagnoses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kprov_cluster::target::nspawn::{warm_containerd, NspawnTarget};
use kprov_cluster::{ClusterName, MachineCommand, MachineName, Target};

use super::cluster::BUSYBOX;
use super::netns::Netns;
use super::registry::control_plane_bundle;
use super::{
    bench, debian_root_tarball, debian_ssh_root_tarball, extract, harness_images,
    kprov_release_bin, scratch,
};

/// The node image: the Debian root prebaked by the release kprov from a
/// control-plane bundle (plus busybox), with `--node-in-container`, and
/// the bundle's images imported into its containerd store by one boot
/// (`warm_containerd`); made once per content under the target directory,
/// and older ones removed.
pub fn node_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| make_node_image("node", debian_root_tarball()))
        .clone()
}

/// [`node_image`] with the OpenSSH server (tools/debian-root.sh ssh), for
/// the hosts of the ssh target.
pub fn ssh_node_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| make_node_image("ssh", debian_ssh_root_tarball()))
        .clone()
}

/// The node image of the qemu target: the cloud root (kernel,
/// cloud-init, OpenSSH server) prebaked like [`node_image`] but for a VM
/// (no `--node-in-container`), its containerd store filled the same way
/// (the VMs' first boot then finds their images in place instead of
/// importing them under TCG, which takes minutes).
pub fn vm_node_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| make_node_image("cloud", super::debian_cloud_root_tarball()))
        .clone()
}

/// A node image made once per content from `tarball` (the Debian root of
/// `variant`); the cloud variant's is for VMs, the others' for nspawn.
pub fn make_node_image(variant: &str, tarball: &Path) -> PathBuf {
    let in_container = variant != "cloud";
    let kprov = kprov_release_bin();
    let file_digest = |p: &Path| super::sha256_hex(p);
    let images_dir = &harness_images().0;
    let key = kprov_cluster::image::content_key([
        "kprov nspawn node image v2: base --node-in-container, control-plane bundle + busybox, containerd warmed"
            .to_string(),
        variant.to_string(),
        tarball.display().to_string(),
        std::fs::metadata(tarball).unwrap().len().to_string(),
        std::fs::read_to_string(images_dir.join("SHA256SUMS")).unwrap(),
        std::fs::read_to_string(super::kubernetes_bin_dir().join("../SHA256SUMS"))
            .unwrap_or_default(),
        std::fs::read_to_string(super::artifacts_dir().join("SHA256SUMS")).unwrap(),
        file_digest(kprov),
    ]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(match variant {
        "node" => "nspawn-node-images".to_string(),
        _ => format!("nspawn-node-images-{variant}"),
    });
    let started = Instant::now();
    let mut made = false;
    let image = kprov_cluster::image::cached(&cache, &key, |dir| {
        made = true;
        let work = scratch("node-image-");
        let bundle = control_plane_bundle(work.path(), &["--image", BUSYBOX]);
        extract(tarball, dir);
        let out = Command::new(kprov)
            .args(["provision", "--phase", "base", "--root"])
            .arg(dir)
            .args(["--kubelet-version", "v1.20.2", "--arch", "amd64"])
            .arg("--bundle")
            .arg(&bundle)
            .args(in_container.then_some("--node-in-container"))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // The images imported once, here, rather than by every machine.
        let ns = Netns::new("10.86.0");
        let warmer = NspawnTarget::new(work.path().join("machines"))
            .map_err(|e| e.to_string())?
            .with_netns(format!("/run/netns/{}", ns.name));
        warmer.prepare_host().map_err(|e| e.to_string())?;
        warm_containerd(
            &warmer,
            dir,
            "10.86.1.1/24".parse().unwrap(),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())
    })
    .unwrap();
    if made {
        bench(&format!(
            "nspawn node image {variant} (bundle + prebake, once per content): {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    // Images of older builds: never used again by this checkout.
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        if entry.file_name().to_string_lossy() != key {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    image
}

/// What each test here starts with: a network namespace of its own
/// (`PREFIX.0/24` on its bridge br0), a scratch directory, and an nspawn
/// target keeping its machines in `DIR/machines` and its cluster bridges
/// in that namespace. Bound in this order, they are dropped in reverse:
/// the target first, the namespace last.
pub fn site(
    prefix: &str,
    scratch_prefix: &str,
) -> (Netns, tempfile::TempDir, PathBuf, NspawnTarget) {
    let ns = Netns::new(prefix);
    let dir = scratch(scratch_prefix);
    let machines_dir = dir.path().join("machines");
    let target = NspawnTarget::new(&machines_dir)
        .unwrap()
        .with_netns(format!("/run/netns/{}", ns.name));
    (ns, dir, machines_dir, target)
}

/// Destroys what is left of the cluster when the test ends, passed or
/// not (the machines outlive this process otherwise).
pub struct Teardown<'a> {
    /// The target.
    pub target: &'a dyn Target,
    /// The cluster.
    pub cluster: ClusterName,
    /// Whether to destroy (false once the test took it down itself).
    pub armed: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for m in self.target.list(&self.cluster).unwrap_or_default() {
            if let Err(e) = self.target.destroy(&m.name) {
                eprintln!("teardown: destroying {}: {e}", m.name);
            }
        }
        if let Err(e) = self.target.destroy_network(&self.cluster) {
            eprintln!("teardown: {e}");
        }
    }
}

/// Runs `argv` in `machine`, failing with its output and the machine's
/// log when it fails.
pub fn run_ok(target: &NspawnTarget, machine: &MachineName, command: &MachineCommand) -> String {
    let out = target.run(machine, command).unwrap();
    // kprov's progress (its stderr never holds a secret), for the timings.
    if command.argv.first().is_some_and(|p| p == "kprov") {
        eprintln!(
            "==== {machine}: {}\n{}",
            command.argv[..2].join(" "),
            out.stderr_text()
        );
    }
    assert!(
        out.success(),
        "{:?} in {machine} exited {:?}{}\nstdout:\n{}\nstderr:\n{}\n{}",
        command.argv,
        out.code,
        if out.timed_out { " (timed out)" } else { "" },
        out.stdout_text(),
        out.stderr_text(),
        diagnose(target, machine)
    );
    out.stdout_text()
}

/// A machine's last console and kubelet lines, for failures.
pub fn diagnose(target: &NspawnTarget, machine: &MachineName) -> String {
    let console = target.logs(machine, 25).unwrap_or_else(|e| e.to_string());
    let journal = target
        .run(
            machine,
            &MachineCommand::new([
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-n",
                "25",
                "-u",
                "kubelet",
                "-u",
                "containerd",
            ])
            .timeout(Duration::from_secs(20)),
        )
        .map(|o| o.stdout_text())
        .unwrap_or_else(|e| e.to_string());
    format!("==== {machine} console (last lines)\n{console}\n==== {machine} kubelet and containerd (last lines)\n{journal}")
}

/// `kprov cluster VERB` with the flags every call of a test shares.
pub struct ClusterCli {
    /// The shared flags.
    pub args: Vec<String>,
}

impl ClusterCli {
    /// The flags of cluster `cluster` with its machines in `machines_dir`,
    /// its bridge on `network` in the namespace `netns`, its kubeconfig
    /// written to `kubeconfig`, and 300 s for each wait.
    pub fn new(
        cluster: &ClusterName,
        machines_dir: &Path,
        netns: &str,
        network: &str,
        kubeconfig: &Path,
    ) -> Self {
        Self {
            args: vec![
                "--name".into(),
                cluster.to_string(),
                "--machines-dir".into(),
                machines_dir.display().to_string(),
                "--netns".into(),
                netns.into(),
                "--network".into(),
                network.into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--timeout".into(),
                "300".into(),
            ],
        }
    }

    /// `up` with one master and no worker from `image`, which must
    /// succeed; the master and its address.
    pub fn up_one_master(
        &self,
        target: &NspawnTarget,
        cluster: &ClusterName,
        image: &Path,
    ) -> (MachineName, String) {
        let image = image.display().to_string();
        let up = self.run(
            "up",
            &["--masters", "1", "--workers", "0", "--image", &image],
        );
        assert_eq!(up.code, Some(0), "{}", up.stderr);
        let master = MachineName::new(cluster, kprov_cluster::Role::Master, 1).unwrap();
        let address = target.address(&master).unwrap().to_string();
        (master, address)
    }

    /// Runs `kprov cluster VERB FLAGS MORE` (the release binary).
    pub fn run(&self, verb: &str, more: &[&str]) -> super::Run {
        let mut args: Vec<&str> = vec!["cluster", verb];
        args.extend(self.args.iter().map(String::as_str));
        args.extend_from_slice(more);
        let run = super::kprov_release(&args, &[]);
        eprintln!(
            "==== kprov cluster {verb} {}: exit {:?}\n{}",
            more.join(" "),
            run.code,
            run.stderr
        );
        run
    }
}

/// Waits up to `limit` for `done` to give a value, polling every 2 s.
pub fn poll<T>(limit: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = done() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The netboot image the tests deploy: the static release kprov.
pub const KPROV_IMAGE: &str = "kprov.dev/kprov:test";

/// Writes [`KPROV_IMAGE`] (tools/oci-image.py, the static release kprov
/// at /usr/local/bin/kprov) under `dir` and imports it into `machine`'s
/// containerd.
pub fn import_kprov_image(target: &NspawnTarget, machine: &MachineName, dir: &Path) {
    let layer = dir.join("kprov-layer/usr/local/bin");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::copy(kprov_release_bin(), layer.join("kprov")).unwrap();
    let archive = dir.join("kprov-image.tar");
    super::sh(
        Command::new("python3")
            .arg(super::repo_root().join("tools/oci-image.py"))
            .args(["--ref", KPROV_IMAGE, "--out"])
            .arg(&archive)
            .arg("--layer")
            .arg(dir.join("kprov-layer"))
            .args(["--entrypoint", "/usr/local/bin/kprov"]),
    );
    target
        .copy_in(machine, &archive, Path::new("/root/kprov-image.tar"), 0o600)
        .unwrap();
    run_ok(
        target,
        machine,
        &MachineCommand::new([
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "import",
            "/root/kprov-image.tar",
        ])
        .timeout(Duration::from_secs(120)),
    );
}

/// `kprov netboot deploy --config CONFIG --image KPROV_IMAGE` (the
/// release binary, in `ns`, where the cluster's network is), which must
/// succeed; its output.
pub fn netboot_deploy(ns: &Netns, config: &Path, kubeconfig: &Path) -> String {
    let o = ns
        .command(kprov_release_bin().to_str().unwrap())
        .args(["netboot", "deploy", "--config"])
        .arg(config)
        .args(["--image", KPROV_IMAGE, "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "kprov netboot deploy: {text}");
    text
}

/// The last lines of the netboot pods' logs.
pub fn netboot_logs(target: &NspawnTarget, master: &MachineName) -> String {
    use kprov_cluster::workflow::kubectl;
    target
        .run(
            master,
            &kubectl(&[
                "-n",
                "kube-system",
                "logs",
                "-l",
                "app=kprov-netboot",
                "--tail",
                "80",
            ]),
        )
        .map(|o| o.stdout_text() + &o.stderr_text())
        .unwrap_or_else(|e| e.to_string())
}

/// Waits (bounded) until netboot's pod is ready; fails with its
/// description and logs.
pub fn wait_netboot_ready(target: &NspawnTarget, master: &MachineName) {
    use kprov_cluster::workflow::kubectl;
    let ready = poll(Duration::from_secs(120), || {
        let out = target
            .run(
                master,
                &kubectl(&[
                    "-n",
                    "kube-system",
                    "get",
                    "pods",
                    "-l",
                    "app=kprov-netboot",
                    "-o",
                    "jsonpath={.items[0].status.containerStatuses[0].ready}",
                ]),
            )
            .ok()?;
        (out.stdout_text() == "true").then_some(())
    });
    if ready.is_none() {
        let describe = target
            .run(
                master,
                &kubectl(&[
                    "-n",
                    "kube-system",
                    "describe",
                    "pods",
                    "-l",
                    "app=kprov-netboot",
                ]),
            )
            .map(|o| o.stdout_text())
            .unwrap_or_default();
        panic!(
            "netboot's pod never became ready:\n{describe}\n{}\n{}",
            netboot_logs(target, master),
            diagnose(target, master)
        );
    }
}

/// The descriptions of the cluster's bootstrap tokens (base64, as the
/// Secrets hold them), read on `master`.
pub fn token_descriptions(target: &NspawnTarget, master: &MachineName) -> String {
    run_ok(
        target,
        master,
        &kprov_cluster::workflow::kubectl(&[
            "-n",
            "kube-system",
            "get",
            "secrets",
            "--field-selector",
            "type=bootstrap.kubernetes.io/token",
            "-o",
            "jsonpath={.items[*].data.description}",
        ]),
    )
}

/// The value after `marker` on the first line of `text` holding it (a
/// figure in kprov's output, such as the time to Ready).
pub fn figure<'a>(text: &'a str, marker: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, r)| r))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"))
}
