//! Shared test harness: the real kprov binary, scratch roots, the cached
//! Debian root and artifact directory built by the scripts in tools/, and
//! tree snapshots for comparing end states.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub mod cluster;
pub mod controlplane;
pub mod image;
pub mod netns;
pub mod nspawn;
pub mod registry;
pub mod vm;

/// Runs a script from tools/ and returns the path it prints on stdout.
fn dev_script(name: &str, args: &[&str]) -> PathBuf {
    let script = repo_root().join("tools").join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().unwrap_or_default().trim())
}

/// The cached Debian 12 root tarball (tools/debian-root.sh).
pub fn debian_root_tarball() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("debian-root.sh", &["node"]))
}

/// The cached Debian 12 root with the OpenSSH server (no host keys,
/// sshd disabled), for hosts of the ssh target (tools/debian-root.sh ssh).
pub fn debian_ssh_root_tarball() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("debian-root.sh", &["ssh"]))
}

/// The cached Debian 12 root with a kernel and cloud-init, for VMs that
/// boot with user-data (tools/debian-root.sh cloud).
pub fn debian_cloud_root_tarball() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("debian-root.sh", &["cloud"]))
}

/// Reports a benchmark figure: on stderr, and appended to the file named
/// by KPROV_BENCH_LOG (tools/test.sh prints it at the end).
pub fn bench(line: &str) {
    eprintln!("BENCH {line}");
    if let Ok(path) = std::env::var("KPROV_BENCH_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "BENCH {line}");
        }
    }
}

/// The cached Debian 12 root with a kernel, for VMs (tools/debian-root.sh vm).
pub fn debian_vm_root_tarball() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("debian-root.sh", &["vm"]))
}

/// The directory of the Kubernetes v1.20.2 binaries (kubeadm, kubectl,
/// kube-apiserver, ...) built from Debian's source
/// (tools/build-kubernetes.sh).
pub fn kubernetes_bin_dir() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("build-kubernetes.sh", &[]))
}

/// The cached artifact directory with the v1.20.2 kubelet and kubectl
/// built from Debian's source and Debian's CNI plugins
/// (tools/artifacts-dir.sh).
pub fn artifacts_dir() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("artifacts-dir.sh", &[]))
}

/// A scratch directory on disk (not tmpfs: roots are hundreds of MB).
/// It lives under a directory named after this test process; scratch
/// dirs held in statics are never dropped, so each process first removes
/// what processes that have exited left behind.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    let run_dir = RUN_DIR.get_or_init(|| {
        let base = Path::new("/var/tmp/kprov-tests");
        std::fs::create_dir_all(base).unwrap();
        for entry in std::fs::read_dir(base).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let exited = match name.strip_prefix("run-") {
                Some(pid) => !Path::new("/proc").join(pid).exists(),
                // Older layouts: only when clearly stale, another checkout's
                // tests may be using it.
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(6 * 3600)),
            };
            if exited {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(run_dir)
        .unwrap()
}

/// Waits for `child` to exit. If it is still running after `limit`, calls
/// `stop` on it, reaps it and returns false.
pub fn wait_bounded(child: &mut Child, limit: Duration, stop: impl FnOnce(&mut Child)) -> bool {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            stop(child);
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// Runs a command and panics with its output if it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Extracts the cached Debian root into `dest`.
pub fn extract_debian_root(dest: &Path) {
    extract(debian_root_tarball(), dest);
}

/// Extracts a root tarball into `dest`.
pub fn extract(tarball: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    sh(Command::new("tar")
        .arg("-C")
        .arg(dest)
        .arg("-xf")
        .arg(tarball));
}

/// Copies a root, preserving everything.
pub fn copy_tree(from: &Path, to: &Path) {
    sh(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Copies a root as hard links: fast, and safe as long as only kprov runs
/// on the copy, because kprov never writes a file in place (it renames new
/// files over old ones), so the original's files are never modified.
pub fn link_tree(from: &Path, to: &Path) {
    sh(Command::new("cp").arg("-al").arg(from).arg(to));
}

/// The cached Kubernetes v1.20.2 binaries built from Debian's source
/// (tools/build-kubernetes.sh).
pub fn kubernetes_bin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| dev_script("build-kubernetes.sh", &[]))
}

/// The kprov binary benchmarks measure: the static release binary.
pub fn kprov_bin_for_benchmarks() -> PathBuf {
    kprov_release_bin().to_path_buf()
}

/// The kprov binary under test (the build `cargo test` made: a debug
/// build, static like every build, see .cargo/config.toml).
pub fn kprov_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kprov"))
}

/// The static release binary, as shipped (`cargo build --release`): every
/// VM and nspawn test runs it, benchmarks measure it. KPROV_RELEASE_BIN
/// names it (tools/test.sh builds it first); otherwise this test process
/// builds it once with cargo (a no-op when it is up to date).
pub fn kprov_release_bin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        if let Some(given) = std::env::var_os("KPROV_RELEASE_BIN") {
            return PathBuf::from(given);
        }
        // target/<triple>/debug/kprov -> target/<triple>/release/kprov
        let bin = Path::new(env!("CARGO_BIN_EXE_kprov"));
        let release = bin
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("release/kprov");
        if release != bin {
            sh(Command::new(env!("CARGO"))
                .args(["build", "--release", "--locked", "-p", "kprov"])
                .current_dir(repo_root()));
        }
        release
    })
}

/// A finished kprov run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Parses stdout as the JSON report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs kprov with `args` and extra environment variables.
pub fn kprov(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_kprov(&kprov_bin(), args, env)
}

/// [`kprov`] with the static release binary, for runs whose result boots
/// in a VM or a container (the base phase installs the running binary).
pub fn kprov_release(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_kprov(kprov_release_bin(), args, env)
}

fn run_kprov(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("KPROV_TOKEN")
        .env_remove("KPROV_CERTIFICATE_KEY")
        .env_remove("KPROV_FAILPOINTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

/// Runs kprov in a new network namespace with no interfaces, not even
/// loopback up, so any connection attempt fails.
pub fn kprov_offline(args: &[&str]) -> Run {
    run_offline(&kprov_bin(), args)
}

/// [`kprov_offline`] with the static release binary.
pub fn kprov_release_offline(args: &[&str]) -> Run {
    run_offline(kprov_release_bin(), args)
}

fn run_offline(bin: &Path, args: &[&str]) -> Run {
    let out = Command::new("unshare")
        .arg("--net")
        .arg(bin)
        .args(args)
        .output()
        .unwrap();
    Run::from(out)
}

/// Asserts that the kprov installed in `root` is the static release
/// binary: what a VM or container test boots is what ships.
pub fn assert_release_binary_installed(root: &Path) {
    let installed = root.join("usr/local/bin/kprov");
    assert_eq!(
        sha256_hex(&installed),
        sha256_hex(kprov_release_bin()),
        "{} is not the static release binary {}",
        installed.display(),
        kprov_release_bin().display()
    );
}

/// The arguments of a base-phase prebake of `root` from `artifacts`.
pub fn base_args<'a>(root: &'a str, artifacts: &'a str) -> Vec<&'a str> {
    vec![
        "provision",
        "--phase",
        "base",
        "--root",
        root,
        "--artifacts-dir",
        artifacts,
        "--kubelet-version",
        "v1.20.2",
        "--arch",
        "amd64",
    ]
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        content: String,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
    Other {
        mode: u32,
    },
}

/// Every path under `dir` with its type, owner, mode and content
/// (timestamps ignored). `/proc`, `/sys`, `/dev`, `/run` and `/tmp` are
/// skipped. A file with several links is identified by its inode instead
/// of hashed: in trees made with [`link_tree`] from one base, a file still
/// shared with the base is the base's file, and anything kprov wrote is a
/// new single-link file that gets hashed.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    // The engine's cache of large files' sums is keyed by inode: two
    // roots provisioned alike hold different ones, and a run may refresh
    // it without changing the node.
    out.remove("var/lib/kprov/file-sums");
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ["proc", "sys", "dev", "run", "tmp"].contains(&rel.as_str()) {
            continue;
        }
        let meta = path.symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let entry = if meta.file_type().is_symlink() {
            Entry::Symlink {
                target: std::fs::read_link(&path).unwrap(),
            }
        } else if meta.is_dir() {
            walk(base, &path, out);
            Entry::Dir {
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
            }
        } else if meta.is_file() {
            let content = if meta.nlink() > 1 {
                format!("inode {}", meta.ino())
            } else {
                let mut hasher = Sha256::new();
                std::io::copy(&mut std::fs::File::open(&path).unwrap(), &mut hasher).unwrap();
                format!("sha256 {}", hex::encode(hasher.finalize()))
            };
            Entry::File {
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                content,
            }
        } else {
            Entry::Other { mode }
        };
        out.insert(rel, entry);
    }
}

/// `snapshot` without the node lock a run takes before it changes
/// anything (an empty file, /var/lib/kprov/node.lock) and the directories
/// made only for it: what a run that failed before its first change may
/// leave.
pub fn without_node_lock(mut snapshot: BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    if let Some(Entry::File { content, .. }) = snapshot.get("var/lib/kprov/node.lock") {
        // Hard-linked copies of a root share the lock file (its contents
        // show as its inode).
        let empty = format!("sha256 {}", hex::encode(Sha256::digest(b"")));
        assert!(
            *content == empty || content.starts_with("inode "),
            "the node lock has contents: {content}"
        );
        snapshot.remove("var/lib/kprov/node.lock");
        for dir in ["var/lib/kprov", "var/lib", "var"] {
            let prefix = format!("{dir}/");
            if snapshot.keys().any(|k| k.starts_with(&prefix)) {
                break;
            }
            snapshot.remove(dir);
        }
    }
    snapshot
}

/// Describes the differences between two snapshots (empty when equal).
pub fn diff(want: &BTreeMap<String, Entry>, got: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => d.push(format!("missing: {k}")),
            Some(g) if g != v => d.push(format!("differs: {k}: want {v:?}, got {g:?}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        d.push(format!("extra: {k}"));
    }
    d
}

/// A Debian root in which kprov has run only its first resource (the
/// package install), shared by the tests that start after the packages.
pub fn root_with_packages() -> &'static Path {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ROOT
        .get_or_init(|| {
            let dir = scratch("with-packages-");
            let root = dir.path().join("root");
            extract_debian_root(&root);
            let run = kprov(
                &base_args(
                    &root.display().to_string(),
                    &artifacts_dir().display().to_string(),
                ),
                &[("KPROV_FAILPOINTS", "resource.applied=1")],
            );
            assert_eq!(
                run.code,
                Some(86),
                "the failpoint after the packages did not fire:\n{}",
                run.stderr
            );
            (dir, root)
        })
        .1
}

pub fn sha256_hex(path: &Path) -> String {
    let out = sh(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Builds a mirror with upstream's layout for v1.20.2/amd64 under `dir`:
/// the Kubernetes binaries built from Debian's source with their .sha256
/// files, and the CNI plugins tarball. The CNI tarball holds Debian's plugins
/// (v1.1.1) under the file name the catalog expects for v1.20 (v0.8.7).
pub fn build_mirror(dir: &Path) {
    let release = dir.join("release/v1.20.2/bin/linux/amd64");
    std::fs::create_dir_all(&release).unwrap();
    for bin in ["kubelet", "kubectl", "kubeadm"] {
        let dest = release.join(bin);
        std::fs::hard_link(kubernetes_bin().join(bin), &dest).unwrap();
        std::fs::write(release.join(format!("{bin}.sha256")), sha256_hex(&dest)).unwrap();
    }
    let cni = dir.join("containernetworking/plugins/releases/download/v0.8.7");
    std::fs::create_dir_all(&cni).unwrap();
    let tgz = cni.join("cni-plugins-linux-amd64-v0.8.7.tgz");
    std::fs::hard_link(artifacts_dir().join("cni-plugins.tgz"), &tgz).unwrap();
    std::fs::write(
        cni.join("cni-plugins-linux-amd64-v0.8.7.tgz.sha256"),
        format!("{}  cni-plugins-linux-amd64-v0.8.7.tgz\n", sha256_hex(&tgz)),
    )
    .unwrap();
}

/// Boots `root` with systemd-nspawn until it powers itself off; returns
/// the console output. Panics, printing the console, after `limit`.
pub fn boot_nspawn(root: &Path, limit: Duration) -> String {
    let log = root.with_extension("console.log");
    let mut child = Command::new("script")
        .args(["-qfec"])
        .arg(format!(
            "systemd-nspawn -b -D {} --register=no --keep-unit -q",
            root.display()
        ))
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGTERM, not SIGKILL: nspawn then shuts the container down.
    let stopped_in_time = wait_bounded(&mut child, limit, |c| {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    });
    if !stopped_in_time {
        let console = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("the container did not power off within {limit:?}; console:\n{console}");
    }
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// The container image archives built by tools/build-images.sh, and their
/// references (the INDEX file: "FILE REFERENCE" per line).
pub fn harness_images() -> &'static (PathBuf, Vec<(PathBuf, String)>) {
    static P: OnceLock<(PathBuf, Vec<(PathBuf, String)>)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = dev_script("build-images.sh", &[]);
        let index = std::fs::read_to_string(dir.join("INDEX")).unwrap();
        let images = index
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(f, r)| (dir.join(f), r.to_string()))
            .collect();
        (dir, images)
    })
}

/// A self-signed EC CA certificate made by openssl, written to `path`.
pub fn openssl_ca(path: &Path) {
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kubernetes",
            "-keyout",
            "/dev/null",
            "-out",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl req: {made:?}");
}
