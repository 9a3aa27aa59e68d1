//! `kprov netboot serve` at the scale of a room of machines: 1,000
//! Machines, each with its MAC, fixed address and user-data, measured
//! against the servers people run for the same job, in one run on the
//! same network setup:
//!
//! - DHCP: DORA exchanges per second from perfdhcp drawing its MACs from
//!   the 1,000 (`-M`), against Kea (`kea-dhcp4`) with the same 1,000 host
//!   reservations; then every machine runs one DORA as iPXE with a client
//!   of our own, which checks that each got its own address (and, from
//!   kprov, its script URL);
//! - HTTP: every machine fetches its iPXE script (with the script token of
//!   its DHCP reply) and then its user-data (with the seed token in that
//!   script) from its own address, all 1,000 at once; against nginx
//!   serving the same documents as static files;
//! - memory: the resident size of the server with the 1,000 Machines from
//!   files, and with 1,000 Machine objects watched on a real v1.20.2 API
//!   server (`--machines kubernetes`).
//!
//! The network: the server's namespace has bridge br0 at 10.70.0.1/24;
//! one client namespace on that bridge holds the relay address
//! 10.70.0.2 (perfdhcp and our DHCP client talk to the server as a relay
//! agent does) and the 1,000 machine addresses (10.70.1.1 to 10.70.4.250),
//! which the server reaches through 10.70.0.2. Routed rather than on the
//! link: IPv4 neighbour entries are counted in one table for every
//! namespace of the host (at most 1,024 by default, and the limit can be
//! raised only in the host's namespace), so 1,000 machines on the link
//! would overflow it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::controlplane::{text, wait_for, ControlPlane};
use common::netns::{Netns, Peer};

/// The server namespace's /24 (its bridge is `.1`).
const PREFIX: &str = "10.70.0";
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
/// The client namespace's address on the bridge: the relay agent, and
/// the next hop to the machines.
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 2);
/// kprov's HTTP port; nginx listens on the next one.
const HTTP_PORT: u16 = 8080;
const MACHINES: usize = 1000;

/// One of the 1,000 machines.
struct Machine {
    name: String,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

impl Machine {
    fn mac_text(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    /// Its user-data: a realistic small cloud-config.
    fn user_data(&self) -> String {
        format!(
            "#cloud-config\nhostname: {0}\nfqdn: {0}.rack.example\nusers:\n  - name: ops\n    \
             ssh_authorized_keys:\n      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4k2d9Xq0mV1z3kprovBenchKey{0} ops@{0}\n\
             write_files:\n  - path: /etc/kprov/machine\n    content: \"{0} {1}\\n\"\n\
             runcmd:\n  - [systemctl, enable, --now, kubelet]\n",
            self.name,
            self.ip
        )
    }

    /// Its Machine resource (a file, or an object on the API server).
    fn resource(&self) -> String {
        let user_data: String = self
            .user_data()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        format!(
            "apiVersion: kprov.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: {0}\nspec:\n  \
             macAddress: {1}\n  ipAddress: {2}\n  hostname: {0}\n  role: worker\n  boot:\n    \
             kernel: vmlinuz\n    initrd: initrd.img\n    cmdline: console=ttyS0\n  userData: |\n{user_data}",
            self.name,
            self.mac_text(),
            self.ip
        )
    }
}

/// The 1,000 machines: m0000 to m0999, MACs 52:54:00:70:00:00 up,
/// addresses 10.70.1.1 to 10.70.4.250.
fn machines() -> Vec<Machine> {
    (0..MACHINES)
        .map(|i| Machine {
            name: format!("m{i:04}"),
            mac: [0x52, 0x54, 0x00, 0x70, (i >> 8) as u8, (i & 0xff) as u8],
            ip: Ipv4Addr::new(10, 70, 1 + (i / 250) as u8, 1 + (i % 250) as u8),
        })
        .collect()
}

/// A server namespace and its client namespace, wired as the module doc
/// says.
fn network(dir: &Path, machines: &[Machine]) -> (Netns, Peer) {
    let ns = Netns::new(PREFIX);
    let peer = ns.add_peer("52:54:00:70:ff:01");
    peer.ip(&["addr", "add", &format!("{RELAY}/24"), "dev", "eth0"]);
    let batch = dir.join(format!("addresses-{}.batch", peer.name));
    let lines: String = machines
        .iter()
        .map(|m| format!("addr add {}/32 dev eth0\n", m.ip))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    common::sh(peer.command("ip").arg("-batch").arg(&batch));
    ns.ip(&["route", "add", "10.70.0.0/16", "via", &RELAY.to_string()]);
    (ns, peer)
}

/// Waits (bounded) until something listens on UDP port 67 in `ns`.
fn wait_dhcp_socket(ns: &Netns, what: &str, log: &Path) {
    let listening = wait_for(Duration::from_secs(20), || {
        let o = ns.command("cat").arg("/proc/net/udp").output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .contains(":0043 ")
            .then_some(())
    });
    assert!(
        listening.is_some(),
        "{what} did not open the DHCP port within 20 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// VmRSS and VmHWM of process `pid`, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{status}"))
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// CPU seconds (user and system) process `pid` has used, with those of
/// its child processes (nginx's workers).
fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are the 12th and 13th fields after the command
    // name, in clock ticks (USER_HZ, 100 on Linux); the ppid the 2nd.
    let stat = |pid: &str| -> Option<(u32, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = text.rsplit(')').next()?.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((fields.get(1)?.parse().ok()?, ticks / 100.0))
    };
    let mut total = stat(&pid.to_string()).map_or(0.0, |(_, s)| s);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((_, secs)) = stat(&name).filter(|(parent, _)| *parent == pid) {
            total += secs;
        }
    }
    total
}

/// How many connections the listeners of `ns` have dropped because their
/// accept queue was full (TcpExt ListenOverflows of the namespace).
fn listen_overflows(ns: &Netns) -> u64 {
    let o = ns.command("cat").arg("/proc/net/netstat").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let tcp_ext: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = tcp_ext[..] else {
        panic!("no TcpExt lines in /proc/net/netstat:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no ListenOverflows in /proc/net/netstat:\n{text}"))
}

// ---------------------------------------------------------------------
// DHCP: perfdhcp's rate, and one DORA per machine with our own client.

/// One perfdhcp run at `rate` for 3 s from `peer`, as a relay agent,
/// with MACs drawn from `macs`: (achieved DORA/s, loss fraction).
fn perfdhcp(peer: &Peer, macs: &Path, rate: u32) -> (f64, f64) {
    common::netns::perfdhcp(
        peer,
        rate,
        &["-M", macs.to_str().unwrap()],
        &RELAY.to_string(),
        &SERVER.to_string(),
    )
}

/// The best DORA/s at no more than 2.5% loss (as the DHCP benchmark in
/// netboot.rs): a ladder of offered rates, then the midpoint between the
/// last good one and the first bad one.
fn dora_rate(peer: &Peer, macs: &Path, name: &str) -> f64 {
    let mut best = 0.0f64;
    let mut last_good = 0;
    let mut try_rate = |rate: u32| -> bool {
        // One retry per rate: a 3 s sample on a shared machine can lose
        // a few packets to other work.
        let (mut achieved, mut loss) = perfdhcp(peer, macs, rate);
        if loss > 0.025 {
            (achieved, loss) = perfdhcp(peer, macs, rate);
        }
        eprintln!(
            "perfdhcp {name}: offered {rate}/s -> {achieved:.0} DORA/s, loss {:.2}%",
            loss * 100.0
        );
        let good = loss <= 0.025;
        if good {
            best = best.max(achieved);
        }
        good
    };
    for rate in [500, 1000, 2000, 4000, 8000, 16000] {
        if !try_rate(rate) {
            if last_good > 0 {
                try_rate((last_good + rate) / 2);
            }
            break;
        }
        last_good = rate;
    }
    best
}

/// Moves the calling thread into network namespace `name`: the sockets
/// it opens from then on live there.
fn enter_netns(name: &str) {
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("entering network namespace {name}: {e}"));
}

/// Runs `f` on a thread of its own in network namespace `name`.
fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(name);
            f()
        })
        .join()
        .unwrap()
    })
}

/// A DHCP request as a relay agent forwards it (giaddr = [`RELAY`]).
/// `as_ipxe`: with iPXE's vendor class, architecture and user class.
fn dhcp_request(m: &Machine, msg_type: u8, as_ipxe: bool, asked: Option<&Reply>) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[..4].copy_from_slice(&[1, 1, 6, 1]);
    p[4..8].copy_from_slice(&xid(m).to_be_bytes());
    p[24..28].copy_from_slice(&RELAY.octets());
    p[28..34].copy_from_slice(&m.mac);
    p.extend([99, 130, 83, 99, 53, 1, msg_type, 61, 7, 1]);
    p.extend(m.mac);
    if let Some(offer) = asked {
        p.extend([50, 4]);
        p.extend(offer.yiaddr.octets());
        p.extend([54, 4]);
        p.extend(offer.server_id.octets());
    }
    if as_ipxe {
        let vendor = b"PXEClient:Arch:00000:UNDI:002001";
        p.extend([60, vendor.len() as u8]);
        p.extend(vendor);
        p.extend([93, 2, 0, 0, 77, 4]);
        p.extend(b"iPXE");
    }
    p.push(255);
    p.resize(p.len().max(300), 0);
    p
}

fn xid(m: &Machine) -> u32 {
    0x7000_0000 | (u32::from(m.mac[4]) << 8) | u32::from(m.mac[5])
}

/// What a DHCP reply said.
#[derive(Clone, Debug)]
struct Reply {
    xid: u32,
    msg_type: u8,
    yiaddr: Ipv4Addr,
    server_id: Ipv4Addr,
    boot_file: String,
}

fn parse_reply(b: &[u8]) -> Option<Reply> {
    if b.len() < 240 || b[0] != 2 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let ip = |s: &[u8]| Ipv4Addr::new(s[0], s[1], s[2], s[3]);
    let mut reply = Reply {
        xid: u32::from_be_bytes(b[4..8].try_into().ok()?),
        msg_type: 0,
        yiaddr: ip(&b[16..20]),
        server_id: Ipv4Addr::UNSPECIFIED,
        boot_file: String::from_utf8_lossy(&b[108..236])
            .trim_end_matches('\0')
            .to_string(),
    };
    let mut i = 240;
    while i + 1 < b.len() && b[i] != 255 {
        if b[i] == 0 {
            i += 1;
            continue;
        }
        let (code, len) = (b[i], usize::from(b[i + 1]));
        let value = b.get(i + 2..i + 2 + len)?;
        match code {
            53 if len == 1 => reply.msg_type = value[0],
            54 if len == 4 => reply.server_id = ip(value),
            67 => reply.boot_file = String::from_utf8_lossy(value).to_string(),
            _ => {}
        }
        i += 2 + len;
    }
    Some(reply)
}

/// Sends each machine's `request` and collects the replies of
/// `want_type`, 50 machines in flight at a time, asking again (up to
/// four times) those that got none.
fn exchange(
    sock: &UdpSocket,
    machines: &[Machine],
    want_type: u8,
    request: impl Fn(usize) -> Vec<u8>,
) -> Vec<Reply> {
    let mut got: Vec<Option<Reply>> = vec![None; machines.len()];
    let index = |xid: u32| (xid & 0xffff) as usize;
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        let missing: Vec<usize> = (0..machines.len()).filter(|i| got[*i].is_none()).collect();
        for chunk in missing.chunks(50) {
            for &i in chunk {
                sock.send_to(&request(i), (SERVER, 67)).unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline && chunk.iter().any(|i| got[*i].is_none()) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(r) = parse_reply(&buf[..n]) {
                    let i = index(r.xid);
                    if r.msg_type == want_type && i < machines.len() && r.xid == xid(&machines[i]) {
                        got[i] = Some(r);
                    }
                }
            }
        }
    }
    got.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("{}: no DHCP reply", machines[i].name)))
        .collect()
}

/// One DORA per machine, relayed from the client namespace `peer`: the
/// ACKs, in the machines' order. Each must give the machine its own
/// address.
fn dora_each(peer: &Peer, machines: &[Machine], as_ipxe: bool) -> Vec<Reply> {
    let acks = in_netns(&peer.name, || {
        let sock = UdpSocket::bind((RELAY, 67)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let offers = exchange(&sock, machines, 2, |i| {
            dhcp_request(&machines[i], 1, as_ipxe, None)
        });
        exchange(&sock, machines, 5, |i| {
            dhcp_request(&machines[i], 3, as_ipxe, Some(&offers[i]))
        })
    });
    for (m, ack) in machines.iter().zip(&acks) {
        assert_eq!(ack.yiaddr, m.ip, "{} got another machine's address", m.name);
    }
    acks
}

// ---------------------------------------------------------------------
// HTTP: each machine fetches its script, then its user-data.

/// The path of an `http://host:port/path` URL.
fn url_path(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// GET `path` from `server` on a new connection from `local`, as iPXE and
/// cloud-init do: (status, body). HTTP/1.1 written and read by hand, a
/// request per connection (`Connection: close`): the client does as
/// little as it can, so that the two servers, not this process (an
/// unoptimised build), are what is measured.
async fn get(local: Ipv4Addr, server: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{local} GET {path}: {what}: {e}");
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| fail("socket", &e))?;
    socket
        .bind(SocketAddr::new(local.into(), 0))
        .map_err(|e| fail("bind", &e))?;
    let mut stream = socket
        .connect(server)
        .await
        .map_err(|e| fail("connect", &e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: iPXE/1.21.1\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail("send", &e))?;
    let mut response = Vec::with_capacity(4096);
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| fail("receive", &e))?;
    let bad = |why: &str| {
        fail(
            "response",
            &format!("{why}: {}", String::from_utf8_lossy(&response)),
        )
    };
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_string();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad("no status"))?;
    let body = response[head_end + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    if length != Some(body.len()) {
        return Err(bad(&format!(
            "Content-Length {length:?}, {} bytes of body",
            body.len()
        )));
    }
    Ok((status, body))
}

/// One machine's boot: its script from the URL of its DHCP reply, then
/// the user-data of the seed in that script (on `server`, whatever the
/// seed URL's host). Returns the script.
async fn boot(
    server: SocketAddr,
    local: Ipv4Addr,
    script_path: &str,
    want_user_data: &str,
) -> Result<String, String> {
    let (code, script) = get(local, server, script_path).await?;
    let script = String::from_utf8_lossy(&script).to_string();
    if code != 200 {
        return Err(format!("{local} GET {script_path}: {code} {script}"));
    }
    let seed = script
        .split("kprov.seed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| format!("{local}: no seed in the script:\n{script}"))?;
    let user_data_path = format!("{}user-data", url_path(seed));
    let (code, user_data) = get(local, server, &user_data_path).await?;
    if code != 200 || user_data != want_user_data.as_bytes() {
        return Err(format!(
            "{local} GET {user_data_path}: {code} {}",
            String::from_utf8_lossy(&user_data)
        ));
    }
    Ok(script)
}

/// What one machine asks for: from where, its script's path, and the
/// user-data it must get.
#[derive(Clone)]
struct Ask {
    local: Ipv4Addr,
    script_path: String,
    user_data: String,
}

/// Every machine boots at once from the client namespace `peer`: the
/// seconds it took and the scripts served. Any failure fails the test.
fn boot_storm(peer: &Peer, server: SocketAddr, asks: &[Ask]) -> (f64, Vec<String>) {
    let asks: Arc<Vec<Ask>> = Arc::new(asks.to_vec());
    let (secs, results) = in_netns(&peer.name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..asks.len() {
                let asks = asks.clone();
                set.spawn(async move {
                    let a = &asks[i];
                    let r = tokio::time::timeout(
                        Duration::from_secs(30),
                        boot(server, a.local, &a.script_path, &a.user_data),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!("{}: no answer within 30 s", a.local)));
                    (i, r)
                });
            }
            let mut results = vec![Err("not run".to_string()); asks.len()];
            while let Some(done) = set.join_next().await {
                let (i, r) = done.unwrap();
                results[i] = r;
            }
            (start.elapsed().as_secs_f64(), results)
        })
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} machines failed to boot from {server}; the first: {:?}",
        failed.len(),
        asks.len(),
        &failed[..failed.len().min(5)]
    );
    (secs, results.into_iter().map(Result::unwrap).collect())
}

/// Writes what kprov served each machine (its script at its script path,
/// its user-data at its seed's path) under `root`, for nginx.
fn static_copy(root: &Path, asks: &[Ask], scripts: &[String]) {
    for (a, script) in asks.iter().zip(scripts) {
        let seed = script
            .split("kprov.seed=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap();
        for (path, body) in [
            (a.script_path.clone(), script.as_str()),
            (format!("{}user-data", url_path(seed)), a.user_data.as_str()),
        ] {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, body).unwrap();
        }
    }
}

// ---------------------------------------------------------------------
// Memory with the Machines on a real API server.

/// Starts a control plane, installs the Machine definition, creates the
/// 1,000 Machines with one `kubectl apply -f`, then starts the server
/// watching them; once it has loaded the 1,000 and written their status,
/// its VmRSS and VmHWM (MiB).
fn memory_with_machines_from_the_api_server(dir: &Path, machines: &[Machine]) -> (f64, f64) {
    let mut cp = ControlPlane::start(PREFIX);
    cp.install_machine_crd();

    let all = dir.join("machines.yaml");
    let docs: Vec<String> = machines.iter().map(Machine::resource).collect();
    std::fs::write(&all, docs.join("---\n")).unwrap();
    let started = Instant::now();
    let applied = cp.kubectl(&["apply", "-f", all.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    eprintln!(
        "kubectl apply of {} Machines: {:.1} s",
        machines.len(),
        started.elapsed().as_secs_f64()
    );

    let root = dir.join("kube");
    for sub in ["tftp", "http", "state"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let config = root.join("netboot.yaml");
    std::fs::write(&config, netboot_config(None)).unwrap();
    let log = root.join("server.log");
    // At info: the log says when the Machines are loaded and each status
    // written.
    let pid = cp.serve_netboot_watching(&common::kprov_bin_for_benchmarks(), &config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    let want = format!(
        "machines loaded from the API server machines={}",
        machines.len()
    );
    let loaded = wait_for(Duration::from_secs(60), || {
        log_text().contains(&want).then_some(())
    });
    assert!(
        loaded.is_some(),
        "the server never loaded the Machines:\n{}",
        {
            let t = log_text();
            t[t.len().saturating_sub(4000)..].to_string()
        }
    );
    eprintln!(
        "netboot loaded {} Machines from the API server in {:.1} s",
        machines.len(),
        started.elapsed().as_secs_f64()
    );
    // Steady state: each Machine's status (Pending) written once.
    let written = wait_for(Duration::from_secs(60), || {
        (log_text().matches("status written").count() >= machines.len()).then_some(())
    });
    assert!(
        written.is_some(),
        "the server wrote {} statuses in 60 s",
        log_text().matches("status written").count()
    );
    eprintln!(
        "and wrote their status {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    let memory = memory_mib(pid);
    cp.ns.stop(pid);
    memory
}

/// The server's configuration: full mode on br0, the machines' /16, the
/// machines directory if any.
fn netboot_config(machines_dir: Option<&str>) -> String {
    let dir = machines_dir
        .map(|d| format!("machinesDir: {d}\n"))
        .unwrap_or_default();
    format!(
        "mode: full\ninterface: br0\nserverAddress: {SERVER}\nsubnet: 10.70.0.0/16\n\
         router: {SERVER}\n{dir}tftpRoot: tftp\nhttpRoot: http\nstateDir: state\n\
         ports: {{http: {HTTP_PORT}}}\n"
    )
}

/// Kea's configuration: the same subnet, router and lease time as
/// kprov's, one reservation per machine, leases in a memfile (Kea's
/// default backend) under `dir`, Kea's other defaults (2.2: one thread).
fn kea_config(dir: &Path, machines: &[Machine]) -> String {
    let reservations: Vec<serde_json::Value> = machines
        .iter()
        .map(|m| serde_json::json!({"hw-address": m.mac_text(), "ip-address": m.ip.to_string()}))
        .collect();
    serde_json::json!({"Dhcp4": {
        "interfaces-config": {"interfaces": ["br0"], "dhcp-socket-type": "udp"},
        "lease-database": {
            "type": "memfile",
            "persist": true,
            "name": dir.join("kea-leases4.csv"),
            "lfc-interval": 0,
        },
        "valid-lifetime": 3600,
        "subnet4": [{
            "id": 1,
            "subnet": "10.70.0.0/16",
            "option-data": [{"name": "routers", "data": SERVER.to_string()}],
            "reservations": reservations,
        }],
        "loggers": [{
            "name": "kea-dhcp4",
            "output_options": [{"output": "stdout"}],
            "severity": "WARN",
        }],
    }})
    .to_string()
}

#[test]
#[ignore = "needs root, network namespaces, perfdhcp, kea-dhcp4, nginx, etcd and the Kubernetes v1.20.2 build"]
fn benchmark_netboot_1000_machines_against_kea_and_nginx() {
    // The release binary first (tools/test.sh builds it before; alone,
    // this may build it): the clock starts after.
    let bin = common::kprov_bin_for_benchmarks();
    let test_start = Instant::now();
    let phase = |what: &str| eprintln!("== {what} at {:.0} s", test_start.elapsed().as_secs_f64());
    // 1,000 connections at once from this process.
    kprov_netboot::limits::raise_fd_limit();
    let machines = machines();
    let dir = common::scratch("netboot-scale-");
    let d = dir.path();
    for sub in ["machines", "tftp", "http", "state", "nginx"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    for m in &machines {
        std::fs::write(
            d.join("machines").join(format!("{}.yaml", m.name)),
            m.resource(),
        )
        .unwrap();
    }
    let macs = d.join("macs.txt");
    let list: String = machines.iter().map(|m| m.mac_text() + "\n").collect();
    std::fs::write(&macs, list).unwrap();
    std::fs::write(d.join("netboot.yaml"), netboot_config(Some("machines"))).unwrap();

    // kprov with the Machines from files (warn: as the other benchmarks,
    // no line per request).
    let (mut ns, peer) = network(d, &machines);
    let log = d.join("server.log");
    let config = d.join("netboot.yaml");
    let pid = ns.spawn_logged(
        &bin,
        &[
            "--log-level",
            "warn",
            "netboot",
            "serve",
            "--config",
            config.to_str().unwrap(),
        ],
        &log,
    );
    let metrics = || {
        let o = ns
            .command("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("http://{SERVER}:{HTTP_PORT}/metrics"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let loaded = wait_for(Duration::from_secs(20), || {
        metrics()
            .contains(&format!("kprov_netboot_machines {MACHINES}\n"))
            .then_some(())
    });
    assert!(
        loaded.is_some(),
        "kprov did not load the {MACHINES} Machines within 20 s:\n{}\n{}",
        metrics(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (files_rss, _) = memory_mib(pid);

    // DHCP: kprov, then Kea in a namespace pair of its own, alike.
    phase("DHCP");
    let kprov_dora = dora_rate(&peer, &macs, "kprov");
    let acks = dora_each(&peer, &machines, true);
    let kea_dora = {
        let (mut kea_ns, kea_peer) = network(d, &machines);
        let kea_conf = d.join("kea-dhcp4.json");
        std::fs::write(&kea_conf, kea_config(d, &machines)).unwrap();
        let kea_log = d.join("kea.log");
        let run_dir = d.to_str().unwrap();
        let kea = kea_ns.spawn_logged_env(
            Path::new("kea-dhcp4"),
            &["-c", kea_conf.to_str().unwrap()],
            &kea_log,
            &[("KEA_PIDFILE_DIR", run_dir), ("KEA_LOCKFILE_DIR", run_dir)],
        );
        wait_dhcp_socket(&kea_ns, "kea-dhcp4", &kea_log);
        let rate = dora_rate(&kea_peer, &macs, "kea");
        dora_each(&kea_peer, &machines, false);
        kea_ns.stop(kea);
        rate
    };
    assert!(
        kprov_dora > 0.0 && kea_dora > 0.0,
        "a DHCP server answered nothing at the lowest rate"
    );
    common::bench(&format!(
        "netboot_1000_machines_dhcp_dora_per_s kprov={kprov_dora:.0} kea={kea_dora:.0} ratio={:.2} \
         (<=2.5% loss, perfdhcp -M over {MACHINES} MACs with host reservations; then one DORA each, every machine its own address)",
        kprov_dora / kea_dora
    ));

    phase("HTTP");
    // HTTP: every machine boots from the script URL of its DHCP reply.
    let asks: Vec<Ask> = machines
        .iter()
        .zip(&acks)
        .map(|(m, ack)| {
            let dashed = m.mac_text().replace(':', "-");
            assert!(
                ack.boot_file
                    .starts_with(&format!("http://{SERVER}:{HTTP_PORT}/boot/{dashed}/"))
                    && ack.boot_file.ends_with(".ipxe"),
                "{}: boot file {:?}",
                m.name,
                ack.boot_file
            );
            Ask {
                local: m.ip,
                script_path: url_path(&ack.boot_file).to_string(),
                user_data: m.user_data(),
            }
        })
        .collect();
    let kprov_addr = SocketAddr::from((SERVER, HTTP_PORT));
    let nginx_addr = SocketAddr::from((SERVER, HTTP_PORT + 1));
    let (first, scripts) = boot_storm(&peer, kprov_addr, &asks);
    eprintln!("kprov: {MACHINES} machines booted in {first:.2} s (first storm)");
    let nginx_root = d.join("nginx");
    static_copy(&nginx_root, &asks, &scripts);
    let nginx_conf = d.join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        format!(
            "daemon off;\nuser root;\nworker_processes 2;\nworker_rlimit_nofile 8192;\npid {0}/nginx.pid;\nerror_log {0}/nginx.err;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; default_type text/plain;\n\
             client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n\
             server {{ listen {nginx_addr}; root {1}; }} }}\n",
            d.display(),
            nginx_root.display()
        ),
    )
    .unwrap();
    let nginx = ns.spawn("nginx", &["-c", nginx_conf.to_str().unwrap()]);
    // nginx is stopped (SIGTERM) whatever happens: killed, as the
    // namespace kills what is left when dropped, its master would leave
    // its workers running.
    let measured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let up = wait_for(Duration::from_secs(10), || {
            let o = ns
                .command("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg(format!("http://{nginx_addr}{}", asks[0].script_path))
                .output()
                .unwrap();
            (String::from_utf8_lossy(&o.stdout) == "200").then_some(())
        });
        assert!(
            up.is_some(),
            "nginx did not serve within 10 s:\n{}",
            std::fs::read_to_string(d.join("nginx.err")).unwrap_or_default()
        );
        // Alternate, best of five storms each, against noise from other
        // work on the machine; and the slowest storm, the connections
        // each server's listener dropped (its accept queue full: the
        // machine tries again a second later) and the CPU time each
        // spent (this process's client takes a core of the two,
        // whichever server).
        let servers = [("kprov", kprov_addr, pid), ("nginx", nginx_addr, nginx)];
        let (mut best, mut slowest) = ([f64::MAX; 2], [0.0f64; 2]);
        let (mut cpu, mut dropped) = ([0.0; 2], [0; 2]);
        for _ in 0..5 {
            for (k, (name, addr, server_pid)) in servers.iter().enumerate() {
                let (cpu_before, dropped_before) =
                    (cpu_seconds(*server_pid), listen_overflows(&ns));
                let (secs, _) = boot_storm(&peer, *addr, &asks);
                cpu[k] += cpu_seconds(*server_pid) - cpu_before;
                dropped[k] += listen_overflows(&ns) - dropped_before;
                best[k] = best[k].min(secs);
                slowest[k] = slowest[k].max(secs);
                eprintln!("boot storm: {name} {secs:.3} s");
            }
        }
        (best, slowest, cpu, dropped)
    }));
    ns.stop(nginx);
    let (best, slowest, cpu, dropped) = match measured {
        Ok(figures) => figures,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let requests = (2 * MACHINES) as f64;
    let rps = best.map(|secs| requests / secs);
    let us_per_request = cpu.map(|secs| secs * 1e6 / (5.0 * requests));
    common::bench(&format!(
        "netboot_1000_machines_http_req_per_s kprov={:.0} nginx={:.0} ratio={:.2} \
         (best of 5 storms; slowest storm kprov={:.2} s nginx={:.2} s; connections dropped by a full accept queue \
         kprov={} nginx={}; server CPU per request kprov={:.0} us nginx={:.0} us; each machine from its own address \
         its iPXE script then its user-data, all {MACHINES} at once, a connection per request, no failures)",
        rps[0],
        rps[1],
        rps[0] / rps[1],
        slowest[0],
        slowest[1],
        dropped[0],
        dropped[1],
        us_per_request[0],
        us_per_request[1],
    ));
    let (_, files_hwm) = memory_mib(pid);
    ns.stop(pid);
    drop(peer);
    drop(ns);

    // Memory with the same Machines watched on a real API server.
    phase("Machines on the API server");
    let (kube_rss, kube_hwm) = memory_with_machines_from_the_api_server(d, &machines);
    common::bench(&format!(
        "netboot_1000_machines_memory_mib files={files_rss:.1} kubernetes={kube_rss:.1} \
         (VmRSS: files once loaded, kubernetes once loaded and {MACHINES} statuses written; \
         VmHWM files={files_hwm:.1} after the DHCP and HTTP load, kubernetes={kube_hwm:.1})"
    ));
    eprintln!(
        "benchmark_netboot_1000_machines_against_kea_and_nginx: {:.0} s",
        test_start.elapsed().as_secs_f64()
    );
}
