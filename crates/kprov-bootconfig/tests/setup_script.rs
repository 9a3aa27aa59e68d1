//! setup.sh, run for real: the rendered cloud-config's files are written
//! under a scratch directory (KPROV_SETUP_PREFIX) as cloud-init would write
//! them, and setup.sh runs with /bin/sh (dash on Debian) against a real HTTP
//! server on 127.0.0.1 (Python's http.server, tests/fixtures/http_server.py)
//! with real curl, wget, sha256sum and cp.
//!
//! The binary served is a small shell script that stands in for kprov: it
//! records the arguments and environment it was run with, so the tests see
//! exactly how setup.sh ran it (and whether it ran at all).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kprov_bootconfig::cloud_init::CloudConfig;
use kprov_bootconfig::{render, setup, BootSpec, Format};
use sha2::{Digest, Sha256};

/// A real HTTP server on 127.0.0.1, killed (by its PID) when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Serves `dir`, answering the first `fail_first` requests with 503.
    fn start(dir: &Path, fail_first: u32, log: &Path) -> Self {
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .arg(common::dir("fixtures").join("http_server.py"))
            .arg(dir)
            .arg(fail_first.to_string())
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the test HTTP server did not print its port: {line:?}")
        });
        Self {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// One line per request: "STATUS PATH USER-AGENT".
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch world: what is served, the node's files (under the prefix)
/// and the stand-in's records.
struct World {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stderr: String,
}

impl World {
    fn new() -> Self {
        let w = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["serve", "node", "record"] {
            std::fs::create_dir_all(w.path(sub)).unwrap();
        }
        w
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes the stand-in for kprov to serve/`name` and returns its
    /// sha256. It exits with the status in record/exit-status (0 if none).
    fn serve_stand_in(&self, name: &str) -> String {
        let record = self.path("record");
        let script = format!(
            "#!/bin/sh\n\
             # Stands in for kprov in the setup.sh tests: records how it was run.\n\
             printf '%s\\n' \"$@\" >'{r}/args'\n\
             env >'{r}/env'\n\
             echo ran >>'{r}/runs'\n\
             exit \"$(cat '{r}/exit-status' 2>/dev/null || echo 0)\"\n",
            r = record.display()
        );
        let path = self.path("serve").join(name);
        std::fs::write(&path, &script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        hex::encode(Sha256::digest(script.as_bytes()))
    }

    /// Renders `spec` as cloud-config and writes its write_files under
    /// node/, with their modes, as cloud-init would.
    fn install(&self, spec: &BootSpec) {
        let text = String::from_utf8(render(spec, Format::CloudInit, false).unwrap()).unwrap();
        let config: CloudConfig = serde_yaml::from_str(&text).unwrap();
        for f in config.write_files {
            let path = self.path("node").join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mode = u32::from_str_radix(&f.permissions, 8).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .unwrap();
            std::fs::write(&path, f.content).unwrap();
        }
        assert_eq!(config.runcmd, [["/opt/kprov/setup.sh"]]);
    }

    /// Runs node/opt/kprov/setup.sh with /bin/sh, the prefix set, no
    /// delay between attempts, and `env` on top.
    fn run_setup(&self, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(self.path("node/opt/kprov/setup.sh"))
            .env("KPROV_SETUP_PREFIX", self.path("node"))
            .env("KPROV_SETUP_RETRY_DELAY", "0")
            .env_remove("KPROV_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        println!("--- setup.sh stderr:\n{stderr}");
        Run {
            code: out.status.code(),
            stderr,
        }
    }

    fn record(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path("record").join(name)).ok()
    }

    fn runs(&self) -> usize {
        self.record("runs").map_or(0, |r| r.lines().count())
    }

    fn node_file(&self, path: &str) -> PathBuf {
        self.path("node").join(path.trim_start_matches('/'))
    }
}

fn tokenless_worker(source: &str, sha: &str) -> BootSpec {
    let mut spec = common::worker("worker-1", source, sha);
    spec.token = None;
    spec.provision.phase = kprov_core::Phase::Base;
    spec
}

#[test]
fn bin_sh_is_dash_here() {
    let real = std::fs::canonicalize("/bin/sh").unwrap();
    assert!(real.ends_with("dash"), "/bin/sh is {}", real.display());
}

#[test]
fn a_verified_binary_runs_with_the_node_s_flags_and_the_token_only_in_its_environment() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 0, &w.path("requests"));
    let spec = common::worker("worker-1", &server.url("kprov"), &sha);
    w.install(&spec);

    let run = w.run_setup(&[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let args = w.record("args").unwrap();
    let mut want = vec!["provision".to_string()];
    want.extend(spec.provision_flags().iter().flat_map(|f| f.words()));
    assert_eq!(args.lines().collect::<Vec<_>>(), want);
    assert!(!args.contains(common::TOKEN));
    let env = w.record("env").unwrap();
    assert!(
        env.lines()
            .any(|l| l == format!("KPROV_TOKEN={}", common::TOKEN)),
        "{env}"
    );
    assert!(!run.stderr.contains(common::SECRET), "token in the log");

    for step in 1..=5 {
        assert!(
            run.stderr
                .contains(&format!("kprov-setup: step {step}/5: ")),
            "step {step}"
        );
    }
    let bin = w.node_file("/opt/kprov/bin/kprov");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(w.node_file("/var/lib/kprov/setup.done")).unwrap(),
        format!("{sha}\n")
    );
    assert!(!w.node_file("/opt/kprov/bin/.kprov.download").exists());
    assert_eq!(server.requests().len(), 1);
    assert!(server.requests()[0].starts_with("200 /kprov curl/"));
}

#[test]
fn a_binary_with_the_wrong_sha256_is_refused_and_never_runs() {
    let w = World::new();
    let actual = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 0, &w.path("requests"));
    let pinned = "0".repeat(64);
    w.install(&common::worker("worker-1", &server.url("kprov"), &pinned));

    let run = w.run_setup(&[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let url = server.url("kprov");
    assert!(
        run.stderr.contains(&format!(
            "kprov-setup: error: sha256 mismatch for kprov from {url}: expected {pinned}, got {actual}; refusing to run it"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(w.runs(), 0, "the stand-in ran");
    assert!(!run.stderr.contains("step 4/5"));
    assert!(!w.node_file("/opt/kprov/bin/kprov").exists());
    assert!(!w.node_file("/opt/kprov/bin/.kprov.download").exists());
    assert!(!w.node_file("/var/lib/kprov/setup.done").exists());
}

#[test]
fn failed_downloads_are_retried_until_the_server_answers() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 2, &w.path("requests"));
    w.install(&tokenless_worker(&server.url("kprov"), &sha));

    let run = w.run_setup(&[("KPROV_SETUP_ATTEMPTS", "5")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("attempt 1 of 5 failed; retrying in 0s"));
    assert!(run.stderr.contains("attempt 2 of 5 failed; retrying in 0s"));
    assert!(run.stderr.contains("fetched on attempt 3"));
    let statuses: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["503", "503", "200"]);
    assert_eq!(w.runs(), 1);
    // No token file: none in the environment either.
    assert!(!w.record("env").unwrap().contains("KPROV_TOKEN="));
}

#[test]
fn setup_gives_up_after_the_last_attempt_and_says_so() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 100, &w.path("requests"));
    let url = server.url("kprov");
    w.install(&tokenless_worker(&url, &sha));

    let run = w.run_setup(&[("KPROV_SETUP_ATTEMPTS", "3")]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains(&format!(
        "kprov-setup: error: could not fetch kprov from {url} (3 attempts)"
    )));
    assert_eq!(server.requests().len(), 3);
    assert_eq!(w.runs(), 0);
    assert!(!w.node_file("/opt/kprov/bin/.kprov.download").exists());
}

#[test]
fn a_file_url_source_is_copied_and_verified() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let source = format!("file://{}", w.path("serve/kprov").display());
    w.install(&tokenless_worker(&source, &sha));

    let run = w.run_setup(&[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(w.runs(), 1);
    assert!(run
        .stderr
        .contains(&format!("step 2/5: fetching kprov from {source}")));
}

#[test]
fn a_second_run_after_success_does_nothing() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 0, &w.path("requests"));
    w.install(&common::worker("worker-1", &server.url("kprov"), &sha));
    assert_eq!(w.run_setup(&[]).code, Some(0));

    let again = w.run_setup(&[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again
        .stderr
        .contains("setup.done exists: this node was set up already; nothing to do"));
    assert_eq!(w.runs(), 1, "the stand-in ran again");
    assert_eq!(server.requests().len(), 1, "fetched again");
}

#[test]
fn after_a_failed_provision_a_rerun_reuses_the_verified_binary_without_the_server() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    std::fs::write(w.path("record/exit-status"), "3").unwrap();
    let server = Server::start(&w.path("serve"), 0, &w.path("requests"));
    w.install(&common::worker("worker-1", &server.url("kprov"), &sha));

    let first = w.run_setup(&[]);
    assert_eq!(first.code, Some(1));
    assert!(first
        .stderr
        .contains("kprov-setup: error: kprov provision failed with exit status 3"));
    assert!(!w.node_file("/var/lib/kprov/setup.done").exists());

    // The cause is fixed; the server is gone: the binary in place is
    // verified and reused.
    drop(server);
    std::fs::remove_file(w.path("record/exit-status")).unwrap();
    let second = w.run_setup(&[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second
        .stderr
        .contains("is in place with the pinned sha256 already; not fetching it again"));
    assert_eq!(w.runs(), 2);
    assert!(w.node_file("/var/lib/kprov/setup.done").exists());
}

#[test]
fn a_tampered_binary_in_place_is_fetched_again_and_verified() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 0, &w.path("requests"));
    w.install(&tokenless_worker(&server.url("kprov"), &sha));
    let bin = w.node_file("/opt/kprov/bin/kprov");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\necho tampered >&2\nexit 99\n").unwrap();

    let run = w.run_setup(&[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("tampered"));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(w.runs(), 1);
}

/// A directory of symlinks to the tools setup.sh needs, minus `without`.
fn tools_dir(w: &World, without: &[&str]) -> PathBuf {
    let dir = w.path("tools");
    std::fs::create_dir_all(&dir).unwrap();
    for tool in [
        "sha256sum",
        "cp",
        "curl",
        "wget",
        "rm",
        "mkdir",
        "chmod",
        "mv",
        "cat",
        "sleep",
        "env",
    ] {
        if without.contains(&tool) {
            continue;
        }
        let out = Command::new("/bin/sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let found = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{tool} is not installed");
        std::os::unix::fs::symlink(found.trim(), dir.join(tool)).unwrap();
    }
    dir
}

#[test]
fn wget_is_used_where_curl_is_missing() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let server = Server::start(&w.path("serve"), 1, &w.path("requests"));
    w.install(&tokenless_worker(&server.url("kprov"), &sha));
    let path = tools_dir(&w, &["curl"]);

    let run = w.run_setup(&[("PATH", path.to_str().unwrap())]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[1].starts_with("200 /kprov Wget/"), "{requests:?}");
    assert_eq!(w.runs(), 1);
}

#[test]
fn without_curl_or_wget_setup_says_so() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    let url = "http://127.0.0.1:9/kprov";
    w.install(&tokenless_worker(url, &sha));
    let path = tools_dir(&w, &["curl", "wget"]);

    let run = w.run_setup(&[("PATH", path.to_str().unwrap())]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains(&format!(
        "kprov-setup: error: neither curl nor wget is installed: cannot fetch {url}"
    )));
    assert_eq!(w.runs(), 0);
}

#[test]
fn bad_overrides_are_refused_before_anything_happens() {
    let w = World::new();
    let sha = w.serve_stand_in("kprov");
    w.install(&tokenless_worker("http://127.0.0.1:9/kprov", &sha));
    for (env, want) in [
        (
            ("KPROV_SETUP_ATTEMPTS", "many"),
            "KPROV_SETUP_ATTEMPTS=many: expected a whole number of at least 1",
        ),
        (
            ("KPROV_SETUP_ATTEMPTS", "0"),
            "KPROV_SETUP_ATTEMPTS=0: expected a whole number of at least 1",
        ),
        (
            ("KPROV_SETUP_RETRY_DELAY", "1m"),
            "KPROV_SETUP_RETRY_DELAY=1m: expected a whole number of seconds",
        ),
    ] {
        let run = w.run_setup(&[env]);
        assert_eq!(run.code, Some(1));
        assert!(run.stderr.contains(want), "{}", run.stderr);
        assert!(!run.stderr.contains("step 1/5"));
    }
}

#[test]
#[ignore = "needs shellcheck (tools/install-deps.sh test); run by tools/test.sh"]
fn shellcheck_finds_nothing_in_any_rendered_setup_sh() {
    let dir = tempfile::tempdir().unwrap();
    for c in common::cases() {
        let path = dir.path().join(format!("{}.sh", c.name));
        std::fs::write(&path, setup::render(&c.spec)).unwrap();
        let out = Command::new("shellcheck")
            .args(["--shell=sh", "--severity=style"])
            .arg(&path)
            .output()
            .expect("shellcheck is not installed: apt-get install shellcheck");
        assert!(
            out.status.success(),
            "{}:\n{}",
            c.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // And it does find things: a script with an unquoted expansion.
    let bad = dir.path().join("bad.sh");
    std::fs::write(&bad, "#!/bin/sh\nrm -f $1\n").unwrap();
    let out = Command::new("shellcheck").arg(&bad).output().unwrap();
    assert!(!out.status.success());
}
