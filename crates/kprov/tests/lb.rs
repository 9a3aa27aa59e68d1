#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! `kprov lb` in front of three real v1.20.2 API servers (one etcd, the
//! same certificates) in a network namespace: discovery from one seed,
//! health, a hung and a dead master (marked down, its open connections
//! closed), the endpoints file across a restart with every API server
//! down; and the failover benchmark against kubespray's nginx and HAProxy.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::controlplane::{run_in, text, ControlPlane};
use common::netns::Netns;
use common::{bench, kprov_bin, kprov_bin_for_benchmarks};

const PREFIX: &str = "10.83.0";
const METRICS: &str = "127.0.0.1:9443";

/// A copy of admin.conf that reaches the API at `server`, checking the
/// certificate for the name `kubernetes` (no 127.0.0.1 SAN).
fn kubeconfig_via(cp: &ControlPlane, path: &Path, server: &str) {
    let text = std::fs::read_to_string(&cp.admin).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let cluster = &mut config["clusters"][0]["cluster"];
    cluster["server"] = server.into();
    cluster["tls-server-name"] = "kubernetes".into();
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
}

/// A running `kprov lb run`.
struct Lb {
    pid: u32,
    log: PathBuf,
}

fn start_lb(ns: &mut Netns, bin: &Path, args: &[&str], log: &Path) -> Lb {
    let mut all = vec!["lb", "run", "--metrics-address", METRICS];
    all.extend_from_slice(args);
    let pid = ns.spawn_logged_env(bin, &all, log, &[("KPROV_LOG", "kprov_lb=debug,info")]);
    Lb {
        pid,
        log: log.to_path_buf(),
    }
}

impl Lb {
    fn log(&self) -> String {
        let body = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = body.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// `kprov lb status --output json`: address -> (health, active
/// connections, closed because down).
fn status(ns: &Netns) -> Option<Vec<(String, String, u64, u64)>> {
    let o = run_in(
        ns,
        kprov_bin().to_str().unwrap(),
        &[
            "lb",
            "status",
            "--metrics-address",
            METRICS,
            "--output",
            "json",
        ],
    );
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    Some(
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["address"].as_str().unwrap().to_string(),
                    b["health"].as_str().unwrap().to_string(),
                    b["activeConnections"].as_u64().unwrap(),
                    b["closedOnDown"].as_u64().unwrap(),
                )
            })
            .collect(),
    )
}

/// Polls `check` every 100 ms for up to `limit`: its value and when.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = check() {
            return Some((v, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn health_of(ns: &Netns, ip: &str) -> Option<(String, u64, u64)> {
    let want = format!("{ip}:6443");
    status(ns)?
        .into_iter()
        .find(|b| b.0 == want)
        .map(|b| (b.1, b.2, b.3))
}

fn all_up(ns: &Netns, n: usize) -> bool {
    status(ns).is_some_and(|s| s.len() == n && s.iter().all(|b| b.1 == "up"))
}

#[test]
#[ignore = "starts etcd and three v1.20.2 API servers in a network namespace"]
fn kprov_lb_discovers_checks_closes_connections_of_dead_masters_and_remembers_them() {
    let mut cp = ControlPlane::start_ha(PREFIX, 3);
    let dir = cp.dir.path().to_path_buf();
    let lb_conf = dir.join("lb.conf");
    kubeconfig_via(&cp, &lb_conf, "https://127.0.0.1:6443");
    let lb_conf_s = lb_conf.display().to_string();
    let endpoints = dir.join("lb/endpoints.json");
    let ca = cp.ca().display().to_string();
    let seed = format!("{PREFIX}.1:6443");
    let args = [
        "--listen",
        "127.0.0.1:6443",
        "--ca-file",
        &ca,
        "--seed",
        &seed,
        "--kubeconfig",
        &lb_conf_s,
        "--endpoints-file",
        endpoints.to_str().unwrap(),
        "--discovery-interval",
        "1s",
    ];
    let lb = start_lb(&mut cp.ns, &kprov_bin(), &args, &dir.join("lb.log"));
    let fail = |what: &str, cp: &ControlPlane, lb: &Lb| -> ! {
        panic!(
            "{what}\nstatus: {:?}\n==== kprov lb:\n{}\n{}",
            status(&cp.ns),
            lb.log(),
            cp.logs.dump()
        )
    };

    // One seed; discovery through the balancer itself finds the others.
    let found = poll(Duration::from_secs(30), || all_up(&cp.ns, 3).then_some(()));
    if found.is_none() {
        fail("kprov lb never listed 3 healthy backends", &cp, &lb);
    }
    println!("3 healthy backends after {:?}", found.unwrap().1);
    let o = run_in(
        &cp.ns,
        kprov_bin().to_str().unwrap(),
        &["lb", "status", "--metrics-address", METRICS],
    );
    println!("{}", String::from_utf8_lossy(&o.stdout));
    let file = std::fs::read_to_string(&endpoints).unwrap();
    for i in 1..=3 {
        assert!(file.contains(&format!("\"{PREFIX}.{i}:6443\"")), "{file}");
    }
    // kubectl through 127.0.0.1 with tls-server-name.
    let o = run_in(
        &cp.ns,
        &cp.kubectl_bin,
        &["--kubeconfig", &lb_conf_s, "get", "--raw", "/readyz"],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        text(&o)
    );
    let metrics = run_in(
        &cp.ns,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains(&format!(
            "kprov_lb_backend_up{{backend=\"{PREFIX}.2:6443\"}} 1"
        )),
        "{metrics}"
    );

    // A hung master (SIGSTOP: no FIN, no RST): a watch through the
    // balancer on it is closed once the checks time out.
    let mut hung_tested = false;
    for round in 0..6 {
        let before = status(&cp.ns).unwrap();
        let mut watch = cp
            .ns
            .command(&cp.kubectl_bin)
            .args(["--kubeconfig", &lb_conf_s, "get", "namespaces", "--watch"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        // The watch's backend: the one with one more open connection than
        // before it started (discovery holds one too).
        let after = status(&cp.ns).unwrap();
        let Some(busier) = after.iter().find(|b| {
            before
                .iter()
                .find(|o| o.0 == b.0)
                .is_some_and(|o| b.2 > o.2)
        }) else {
            let _ = watch.kill();
            let _ = watch.wait();
            continue;
        };
        let ip = busier.0.trim_end_matches(":6443").to_string();
        if ip == format!("{PREFIX}.1") && round < 5 {
            // Keep the first master (controller manager, scheduler) running.
            let _ = watch.kill();
            let _ = watch.wait();
            continue;
        }
        let index = cp.apiservers.iter().position(|a| a.ip == ip).unwrap();
        cp.apiservers[index].signal("STOP");
        let closed = poll(Duration::from_secs(8), || {
            let (health, active, closed) = health_of(&cp.ns, &ip)?;
            let exited = watch.try_wait().unwrap().is_some();
            (health == "down" && active == 0 && closed >= 1 && exited).then_some(())
        });
        cp.apiservers[index].signal("CONT");
        let _ = watch.kill();
        let _ = watch.wait();
        match closed {
            Some((_, after)) => println!("hung {ip}: down and its watch closed after {after:?}"),
            None => fail(
                &format!("hung {ip}: not down with its watch closed within 8 s"),
                &cp,
                &lb,
            ),
        }
        let back = poll(Duration::from_secs(15), || all_up(&cp.ns, 3).then_some(()));
        if back.is_none() {
            fail(
                &format!("{ip} did not come back up after SIGCONT"),
                &cp,
                &lb,
            );
        }
        hung_tested = true;
        break;
    }
    assert!(
        hung_tested,
        "no watch landed on a master other than the first"
    );

    // A dead master: down within 2 s; requests through the balancer go on.
    cp.apiservers[1].kill(&mut cp.ns);
    let ip2 = cp.apiservers[1].ip.clone();
    let down = poll(Duration::from_secs(5), || {
        (health_of(&cp.ns, &ip2)?.0 == "down").then_some(())
    });
    match down {
        Some((_, after)) => {
            println!("killed {ip2}: down after {after:?}");
            assert!(after <= Duration::from_secs(2), "down only after {after:?}");
        }
        None => fail(&format!("killed {ip2}: never marked down"), &cp, &lb),
    }
    for _ in 0..10 {
        let o = run_in(
            &cp.ns,
            &cp.kubectl_bin,
            &["--kubeconfig", &lb_conf_s, "get", "--raw", "/readyz"],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    cp.apiservers[1].start(&mut cp.ns);
    if poll(Duration::from_secs(60), || all_up(&cp.ns, 3).then_some(())).is_none() {
        fail(&format!("{ip2} did not come back up"), &cp, &lb);
    }

    // Every API server dies, kprov lb restarts with its one seed: the
    // file still names all three, and they serve again once back.
    for i in 0..3 {
        cp.apiservers[i].kill(&mut cp.ns);
    }
    cp.ns.stop(lb.pid);
    let lb = start_lb(
        &mut cp.ns,
        &kprov_bin(),
        &args,
        &dir.join("lb-restarted.log"),
    );
    let known = poll(Duration::from_secs(10), || {
        let s = status(&cp.ns)?;
        (s.len() == 3 && s.iter().all(|b| b.1 != "up")).then_some(s)
    });
    if known.is_none() {
        fail(
            "after the restart kprov lb did not list 3 backends, none up",
            &cp,
            &lb,
        );
    }
    for i in 0..3 {
        cp.apiservers[i].start(&mut cp.ns);
    }
    if poll(Duration::from_secs(90), || all_up(&cp.ns, 3).then_some(())).is_none() {
        fail(
            "the API servers did not come back up behind the restarted kprov lb",
            &cp,
            &lb,
        );
    }
}

/// The benchmark's client: requests `GET /readyz` every 50 ms through
/// `127.0.0.1:PORT` (checking the certificate for `kubernetes`), each on
/// a fresh connection (`fresh`) or all on one kept-alive connection,
/// reconnecting after a failure (`keepalive`); each request may take 2 s.
/// Prints `START END OK` per request (seconds since the epoch).
const CLIENT: &str = r#"
import http.client, socket, ssl, sys, time
port, ca, mode, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
class Conn(http.client.HTTPSConnection):
    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname="kubernetes")
end = time.time() + seconds
conn = None
while time.time() < end:
    start = time.time()
    ok = False
    try:
        if conn is None:
            conn = Conn("127.0.0.1", port, context=ctx, timeout=2)
        conn.request("GET", "/readyz")
        r = conn.getresponse()
        ok = r.status == 200 and r.read().strip() == b"ok"
    except Exception:
        ok = False
    if mode == "fresh" or not ok:
        try:
            conn.close()
        except Exception:
            pass
        conn = None
    print(f"{start:.3f} {time.time():.3f} {int(ok)}", flush=True)
    time.sleep(0.05)
"#;

/// Runs one fresh-connection client and three kept-alive ones (least
/// connections puts one on each master) through `port`; after 5 s the
/// second master dies (`hang`: SIGSTOP, a master that stops answering
/// without closing anything, as a powered-off host; else SIGKILL, whose
/// connections the kernel resets). The failover window: from the start of
/// the first failed request to the end of the last one, over all clients.
fn failover_window(
    cp: &mut ControlPlane,
    port: u16,
    seconds: u32,
    dir: &Path,
    hang: bool,
) -> Window {
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let ca = cp.ca().display().to_string();
    let mut clients = Vec::new();
    for mode in ["fresh", "keepalive", "keepalive", "keepalive"] {
        let child = cp
            .ns
            .command("python3")
            .arg(&script)
            .args([&port.to_string(), &ca, mode, &seconds.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        clients.push(child);
    }
    std::thread::sleep(Duration::from_secs(5));
    if hang {
        cp.apiservers[1].signal("STOP");
    } else {
        cp.apiservers[1].kill(&mut cp.ns);
    }
    let mut failed: Vec<(f64, f64)> = Vec::new();
    let mut requests = 0;
    let mut last_end = 0.0f64;
    for child in clients {
        let out = child.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            requests += 1;
            last_end = last_end.max(f[1]);
            if f[2] == 0.0 {
                failed.push((f[0], f[1]));
            }
        }
    }
    if hang {
        cp.apiservers[1].signal("CONT");
    }
    assert!(requests > 100, "the clients made only {requests} requests");
    let (window, open) = match (
        failed.iter().map(|f| f.0).reduce(f64::min),
        failed.iter().map(|f| f.1).reduce(f64::max),
    ) {
        // Still failing within the last second: the window is at least this.
        (Some(first), Some(last)) => (last - first, last > last_end - 1.0),
        _ => (0.0, false),
    };
    Window {
        seconds: window,
        failed: failed.len(),
        open,
    }
}

/// Failover as the clients saw it.
struct Window {
    /// From the first failed request's start to the last one's end.
    seconds: f64,
    /// Failed requests.
    failed: usize,
    /// Requests were still failing when the clients stopped: the window
    /// is longer than measured.
    open: bool,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.open {
            write!(f, ">= {:.1} s (still failing at the end)", self.seconds)
        } else {
            write!(f, "{:.1} s", self.seconds)
        }
    }
}

/// Brings the killed master back (a hung one runs again already) and
/// waits until it is ready.
fn revive(cp: &mut ControlPlane, hang: bool) {
    if !hang {
        cp.apiservers[1].start(&mut cp.ns);
    }
    let server = cp.apiservers[1].server();
    let ready = poll(Duration::from_secs(90), || {
        let o = run_in(
            &cp.ns,
            &cp.kubectl_bin,
            &[
                "--kubeconfig",
                &cp.admin,
                "--server",
                &server,
                "get",
                "--raw",
                "/readyz",
            ],
        );
        o.status.success().then_some(())
    });
    assert!(
        ready.is_some(),
        "{server} did not come back\n{}",
        cp.logs.dump()
    );
}

fn wait_serving(cp: &ControlPlane, port: u16, what: &str, log: &Path) {
    let conf = cp.dir.path().join(format!("via-{port}.conf"));
    kubeconfig_via(cp, &conf, &format!("https://127.0.0.1:{port}"));
    let ok = poll(Duration::from_secs(30), || {
        let o = run_in(
            &cp.ns,
            &cp.kubectl_bin,
            &[
                "--kubeconfig",
                conf.to_str().unwrap(),
                "get",
                "--raw",
                "/readyz",
            ],
        );
        o.status.success().then_some(())
    });
    assert!(
        ok.is_some(),
        "{what} does not serve\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
#[ignore = "starts etcd, three v1.20.2 API servers, kprov lb, nginx and HAProxy in a network namespace"]
fn benchmark_lb_failover() {
    let mut cp = ControlPlane::start_ha("10.84.0", 3);
    let backends: Vec<String> = cp
        .apiservers
        .iter()
        .map(|a| format!("{}:6443", a.ip))
        .collect();
    // Long enough for kprov lb's and HAProxy's windows (about 2 and 4 s
    // here); nginx's passive check has not recovered by the end.
    let seconds = 20;
    // A hung master (SIGSTOP, as a powered-off host) only: a killed one's
    // connections are reset by the kernel at once and every balancer
    // retries elsewhere (all three measured 0.0 s here); tests/lb.rs
    // checks kprov lb on a kill.
    let (kprov, nginx, haproxy) = one_round(&mut cp, &backends, seconds, true);
    bench(&format!(
        "lb failover window: kprov {kprov}, nginx {nginx}, haproxy {haproxy} \
         (SIGSTOP (hang) of one of 3 masters, {seconds} s of clients; 1 fresh-connection + \
         3 kept-alive clients, GET /readyz every 50 ms, 2 s timeout; failed requests {}/{}/{})",
        kprov.failed, nginx.failed, haproxy.failed
    ));
    // A figure, not a verdict: the goal is printed beside it.
    let below = |peer: &Window| peer.open || kprov.seconds <= peer.seconds;
    bench(&format!(
        "lb failover goal (kprov lb <= 2 s, below both peers): {kprov}, {}",
        if !kprov.open && kprov.seconds <= 2.0 && below(&nginx) && below(&haproxy) {
            "met"
        } else {
            "missed"
        }
    ));
}

/// kprov lb, nginx and HAProxy in turn in front of the same masters:
/// each one's (window, failed requests).
fn one_round(
    cp: &mut ControlPlane,
    backends: &[String],
    seconds: u32,
    hang: bool,
) -> (Window, Window, Window) {
    let dir = cp.dir.path().join(if hang { "hang" } else { "kill" });
    std::fs::create_dir_all(&dir).unwrap();

    // kprov lb, the seeds only (no discovery: the same backends as the peers).
    let ca = cp.ca().display().to_string();
    let seeds = backends.join(",");
    let log = dir.join("kprov-lb.log");
    let lb = start_lb(
        &mut cp.ns,
        &kprov_bin_for_benchmarks(),
        &[
            "--listen",
            "127.0.0.1:7443",
            "--ca-file",
            &ca,
            "--seed",
            &seeds,
            "--endpoints-file",
            dir.join("endpoints.json").to_str().unwrap(),
        ],
        &log,
    );
    assert!(
        poll(Duration::from_secs(60), || all_up(&cp.ns, 3).then_some(())).is_some(),
        "kprov lb: backends not up\n{}",
        lb.log()
    );
    wait_serving(cp, 7443, "kprov lb", &log);
    let kprov = failover_window(cp, 7443, seconds, &dir, hang);
    cp.ns.stop(lb.pid);
    revive(cp, hang);

    // nginx as kubespray configures it: least_conn, passive health
    // (default max_fails=1 fail_timeout=10s), connect timeout 1 s.
    let servers: String = backends
        .iter()
        .map(|b| format!("    server {b};\n"))
        .collect();
    let nginx_conf = dir.join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             daemon off;\nerror_log stderr notice;\npid {}/nginx.pid;\n\
             worker_processes 2;\nevents {{ worker_connections 16384; }}\n\
             stream {{\n  upstream kube_apiserver {{\n    least_conn;\n{servers}  }}\n\
             \x20 server {{\n    listen 127.0.0.1:7444;\n    proxy_pass kube_apiserver;\n\
             \x20   proxy_timeout 10m;\n    proxy_connect_timeout 1s;\n  }}\n}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("nginx.log");
    let nginx_pid = cp.ns.spawn_logged(
        Path::new("/usr/sbin/nginx"),
        &[
            "-c",
            nginx_conf.to_str().unwrap(),
            "-p",
            dir.to_str().unwrap(),
        ],
        &log,
    );
    wait_serving(cp, 7444, "nginx", &log);
    let nginx = failover_window(cp, 7444, seconds, &dir, hang);
    cp.ns.stop(nginx_pid);
    revive(cp, hang);

    // HAProxy as kubespray configures it: leastconn, httpchk GET /healthz,
    // inter 15s downinter 15s rise 2 fall 2.
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server m{i} {b} check check-ssl verify none\n"))
        .collect();
    let haproxy_conf = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_conf,
        format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode tcp\n  option redispatch\n  retries 5\n  timeout queue 5m\n\
             \x20 timeout connect 30s\n  timeout client 15m\n  timeout server 15m\n  timeout check 30s\n  maxconn 4000\n\
             frontend kube_api_frontend\n  bind 127.0.0.1:7445\n  default_backend kube_api_backend\n\
             backend kube_api_backend\n  balance leastconn\n\
             \x20 default-server inter 15s downinter 15s rise 2 fall 2 slowstart 60s maxconn 1000 maxqueue 256 weight 100\n\
             \x20 option httpchk GET /healthz\n  http-check expect status 200\n{servers}"
        ),
    )
    .unwrap();
    let log = dir.join("haproxy.log");
    let haproxy_pid = cp.ns.spawn_logged(
        Path::new("/usr/sbin/haproxy"),
        &["-db", "-f", haproxy_conf.to_str().unwrap()],
        &log,
    );
    wait_serving(cp, 7445, "haproxy", &log);
    let haproxy = failover_window(cp, 7445, seconds, &dir, hang);
    cp.ns.stop(haproxy_pid);
    revive(cp, hang);
    (kprov, nginx, haproxy)
}
