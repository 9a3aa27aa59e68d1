//! A real registry (Debian's docker-registry) on loopback, filled from the
//! harness images with skopeo, and `kprov bundle create` against it: how
//! tests get container images into a bundle without reaching the internet.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kprov_testkit::http::FileServer;

use super::{build_mirror, harness_images, kprov, sh};

/// The image kprov's catalog wants for CoreDNS; Debian has no CoreDNS, so
/// the harness does not build it and bundles leave it out.
pub const COREDNS: &str = "k8s.gcr.io/coredns:1.7.0";

/// The control-plane images the harness builds, in catalog order.
pub const CONTROL_PLANE_IMAGES: [&str; 6] = [
    "k8s.gcr.io/pause:3.2",
    "k8s.gcr.io/kube-apiserver:v1.20.2",
    "k8s.gcr.io/kube-controller-manager:v1.20.2",
    "k8s.gcr.io/kube-scheduler:v1.20.2",
    "k8s.gcr.io/kube-proxy:v1.20.2",
    "k8s.gcr.io/etcd:3.4.13-0",
];

/// A real registry (Debian's docker-registry) on 127.0.0.1, storage in a
/// scratch directory; stopped by PID on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub storage: PathBuf,
}

impl Registry {
    /// Starts a registry; with `htpasswd`, it asks for basic auth.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Self {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        // A free port: bound and released; the registry binds it next.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: kprov-test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            addr,
            storage,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the registry did not listen on {} within 15 s: {}",
                registry.addr,
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// Pushes a harness archive as NAME:TAG (its reference without the
    /// registry host).
    pub fn push(&self, archive: &Path, reference: &str, creds: Option<&str>) {
        let (_, path) = reference.split_once('/').unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        sh(cmd
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{path}", self.addr)));
    }

    /// Pushes every harness image the control-plane bundle needs.
    pub fn push_control_plane(&self) {
        for (archive, reference) in &harness_images().1 {
            if CONTROL_PLANE_IMAGES.contains(&reference.as_str()) {
                self.push(archive, reference, None);
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn harness_archive(reference: &str) -> &'static Path {
    &harness_images()
        .1
        .iter()
        .find(|(_, r)| r == reference)
        .unwrap_or_else(|| panic!("tools/build-images.sh built no {reference}"))
        .0
}

/// The manifest digest named in a harness archive's index.json.
pub fn harness_manifest_digest(reference: &str) -> String {
    let out = sh(Command::new("tar")
        .arg("-xOf")
        .arg(harness_archive(reference))
        .arg("index.json"));
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `kprov bundle create` for v1.20.2/amd64: binaries from `mirror`, images
/// from the registry at `registry`.
pub fn create_bundle(
    mirror: &str,
    registry: &str,
    output: &Path,
    cache: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> super::Run {
    let mut args = vec![
        "bundle",
        "create",
        "--kubernetes-version",
        "v1.20.2",
        "--arch",
        "amd64",
        "--mirror",
        mirror,
        "--registry-mirror",
        registry,
        "--insecure-registry",
        "--output",
        output.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kprov(&args, env)
}

/// A bundle for v1.20.2/amd64 built in `dir` by `kprov bundle create
/// FLAGS`: binaries from a loopback mirror, images pulled from a loopback
/// registry holding every harness image (so FLAGS may name any of them
/// with --image).
pub fn bundle(dir: &Path, flags: &[&str]) -> PathBuf {
    let mirror = dir.join("mirror");
    build_mirror(&mirror);
    let server = FileServer::start(&mirror).unwrap();
    let registry = Registry::start(&dir.join("registry"), None);
    for (archive, reference) in &harness_images().1 {
        registry.push(archive, reference, None);
    }
    let bundle = dir.join("bundle");
    let created = create_bundle(
        &server.url(),
        &registry.addr,
        &bundle,
        &dir.join("cache"),
        flags,
        &[],
    );
    assert!(
        created.ok(),
        "kprov bundle create failed:\n{}",
        created.stderr
    );
    bundle
}

/// [`bundle`] with the control-plane images (`--control-plane`, without
/// CoreDNS) and `extra` flags.
pub fn control_plane_bundle(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut flags = vec!["--control-plane", "--exclude-image", COREDNS];
    flags.extend_from_slice(extra);
    bundle(dir, &flags)
}
