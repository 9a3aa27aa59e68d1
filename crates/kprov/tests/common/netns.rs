//! A network namespace for tests: a bridge with an address, tap devices
//! for VMs, and processes started inside it. No uplink, no NAT: traffic
//! stays between the namespace's own addresses. Everything is removed on
//! drop (processes killed by PID, then the namespace deleted, which takes
//! its devices with it).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::sh;

/// A namespace with bridge `br0` at `<prefix>.1/24`.
pub struct Netns {
    pub name: String,
    pub prefix: String,
    children: Vec<Child>,
}

impl Netns {
    /// Creates the namespace, its loopback and bridge; `prefix` is the
    /// first three octets of its /24, e.g. `10.77.0`.
    pub fn new(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kprov-t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self {
            name,
            prefix: prefix.to_string(),
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        ns
    }

    /// The bridge's address.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.name, "ip"])
            .args(args));
    }

    /// Adds a tap device on the bridge, for a VM.
    pub fn add_tap(&self, tap: &str) {
        self.add_tap_on("br0", tap);
    }

    /// [`Netns::add_tap`] on another bridge of this namespace.
    pub fn add_tap_on(&self, bridge: &str, tap: &str) {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        self.ip(&["link", "set", tap, "master", bridge]);
        self.ip(&["link", "set", tap, "up"]);
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts a long-running process inside the namespace; it is killed
    /// when the namespace is dropped.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        self.spawn_with(program, args, Stdio::null(), Stdio::null())
    }

    fn spawn_with(&mut self, program: &str, args: &[&str], stdout: Stdio, stderr: Stdio) -> u32 {
        self.spawn_env(program, args, &[], stdout, stderr)
    }

    fn spawn_env(
        &mut self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> u32 {
        let child = self
            .command(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", self.name));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts a long-running process inside the namespace with its stdout
    /// and stderr appended to `log`; killed when the namespace is dropped.
    pub fn spawn_logged(
        &mut self,
        program: &std::path::Path,
        args: &[&str],
        log: &std::path::Path,
    ) -> u32 {
        self.spawn_logged_env(program, args, log, &[])
    }

    /// [`Netns::spawn_logged`] with environment variables added.
    pub fn spawn_logged_env(
        &mut self,
        program: &std::path::Path,
        args: &[&str],
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> u32 {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let stdout = Stdio::from(out.try_clone().unwrap());
        self.spawn_env(
            program.to_str().unwrap(),
            args,
            env,
            stdout,
            Stdio::from(out),
        )
    }

    /// Waits up to `limit` for a process started with `spawn`/
    /// `spawn_logged` to exit by itself: its exit status, or None if it
    /// still runs.
    pub fn wait_exit(
        &mut self,
        pid: u32,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops (SIGTERM, then SIGKILL after 5 s) a process started with
    /// `spawn`/`spawn_logged`, by its PID.
    pub fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(i);
            // It may have exited already.
            let _ = Command::new("kill")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
            if !super::wait_bounded(&mut child, std::time::Duration::from_secs(5), |c| {
                let _ = c.kill();
            }) {
                eprintln!("process {pid} needed SIGKILL");
            }
        }
    }

    /// Kills (SIGKILL) a process started with `spawn`/`spawn_logged`, by
    /// its PID, and reaps it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A second namespace attached to this one's bridge through a veth
    /// pair: its end is `eth0` (up, with `mac`, without an address), the
    /// other end is on `br0`. For client programs (DHCP, TFTP) that must
    /// run on their own link.
    pub fn add_peer(&self, mac: &str) -> Peer {
        self.add_peer_on("br0", mac)
    }

    /// [`Netns::add_peer`] on another bridge of this namespace (a
    /// cluster's, say).
    pub fn add_peer_on(&self, bridge: &str, mac: &str) -> Peer {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-p{n}", self.name);
        sh(Command::new("ip").args(["netns", "add", &name]));
        let host_end = format!("vp{n}");
        self.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        self.ip(&["link", "set", &host_end, "master", bridge]);
        self.ip(&["link", "set", &host_end, "up"]);
        let peer = Peer {
            name,
            children: Vec::new(),
        };
        peer.ip(&["link", "set", "lo", "up"]);
        peer.ip(&["link", "set", "eth0", "address", mac]);
        peer.ip(&["link", "set", "eth0", "up"]);
        peer
    }

    /// Starts `kprov netboot serve --config CONFIG` (the static release
    /// binary) with its log in `log`, and waits (bounded) until it serves.
    pub fn serve_netboot(&mut self, config: &std::path::Path, log: &std::path::Path) -> u32 {
        let pid = self.spawn_logged(
            super::kprov_release_bin(),
            &["netboot", "serve", "--config", config.to_str().unwrap()],
            log,
        );
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("netboot serving") {
                return pid;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(15),
                "kprov netboot serve did not start within 15 s:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Serves `dir` over HTTP on `<gateway>:port` (Python's http.server).
    pub fn serve_http(&mut self, dir: &std::path::Path, port: u16) {
        let bind = self.gateway();
        let port = port.to_string();
        self.spawn(
            "python3",
            &[
                "-m",
                "http.server",
                &port,
                "--bind",
                &bind,
                "--directory",
                dir.to_str().unwrap(),
            ],
        );
        // Wait until it accepts connections (bounded).
        for _ in 0..100 {
            let ok = self
                .command("python3")
                .args([
                    "-c",
                    &format!("import socket; socket.create_connection(('{bind}', {port}), 1)"),
                ])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the HTTP server on {bind}:{port} in {} did not start",
            self.name
        );
    }

    /// Runs dnsmasq as the DHCP server of the bridge (no DNS, no ping
    /// check), handing out `<prefix>.50`-`.99`.
    pub fn serve_dhcp(&mut self, lease_file: &std::path::Path) {
        let range = format!("--dhcp-range={0}.50,{0}.99,255.255.255.0,1h", self.prefix);
        let leases = format!("--dhcp-leasefile={}", lease_file.display());
        self.spawn(
            "dnsmasq",
            &[
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=br0",
                "--bind-interfaces",
                "--no-ping",
                &range,
                &leases,
            ],
        );
    }
}

/// A client namespace made by [`Netns::add_peer`]; deleted on drop,
/// which removes its veth pair too.
pub struct Peer {
    pub name: String,
    children: Vec<Child>,
}

impl Peer {
    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.name, "ip"])
            .args(args));
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts a long-running process inside the namespace; killed on drop.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", self.name));
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One perfdhcp run at `rate` DORA/s for 3 s from `peer`, as a relay
/// agent at `relay` towards `server`, its clients chosen by `clients`
/// (`-R N`, `-M FILE`): (achieved DORA/s, loss fraction: sent DISCOVERs
/// against received ACKs).
pub fn perfdhcp(peer: &Peer, rate: u32, clients: &[&str], relay: &str, server: &str) -> (f64, f64) {
    let out = peer
        .command("timeout")
        .args(["30", "perfdhcp", "-4", "-r", &rate.to_string(), "-p", "3"])
        .args(clients)
        .args(["-l", relay, server])
        .output()
        .unwrap();
    // The rate is on stdout, the per-exchange statistics on stderr.
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let achieved = text
        .lines()
        .find_map(|l| l.strip_prefix("Rate: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("perfdhcp printed no rate:\n{text}"));
    let (mut sent, mut acked, mut section) = (0.0, 0.0, "");
    for l in text.lines() {
        if l.contains("Statistics for: ") {
            section = if l.contains("DISCOVER-OFFER") {
                "do"
            } else if l.contains("REQUEST-ACK") {
                "ra"
            } else {
                ""
            };
        }
        let num = |p: &str| l.strip_prefix(p).and_then(|v| v.trim().parse::<f64>().ok());
        match (section, num("sent packets: "), num("received packets: ")) {
            ("do", Some(v), _) => sent = v,
            ("ra", _, Some(v)) => acked = v,
            _ => {}
        }
    }
    let loss = if sent > 0.0 { 1.0 - acked / sent } else { 1.0 };
    (achieved, loss.max(0.0))
}
