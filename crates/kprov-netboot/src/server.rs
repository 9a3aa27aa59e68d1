//! The thin side-effect layer: sockets, files and the clock. DHCP (67,
//! and 4011 in proxy mode) and TFTP (69) on UDP sockets, HTTP through
//! hyper, a one-second poll that reloads the machines directory when a
//! file changes, and a one-second flush of the lease table.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::MessageType;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::{Config, Mode};
use crate::dhcp::{handle_datagram, Decision, Listener, ReplyTo, View};
use crate::ipxe::Tokens;
use crate::leases::LeaseTable;
use crate::machine::{load_dir, machine_files, Registry};
use crate::metrics::{add, Metrics};
use crate::paths::{resolve_under, ResolveError};
use crate::tftp::{code, encode_data, negotiate, Packet, Sender};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A directory or file of the configuration is unusable.
    #[error("{what} {}: {source}", path.display())]
    Path {
        /// What it is (e.g. "TFTP root").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A socket could not be opened.
    #[error("{what} on {addr}: {source}")]
    Socket {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// State shared by the servers.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    machines: RwLock<Arc<Registry>>,
    leases: Mutex<LeaseTable>,
    leases_dirty: AtomicBool,
    /// Per-machine tokens.
    pub tokens: Tokens,
    /// Counters.
    pub metrics: Metrics,
    /// The canonical TFTP root.
    pub tftp_root: PathBuf,
    /// The canonical HTTP root.
    pub http_root: PathBuf,
}

impl Shared {
    /// The machines as loaded last.
    pub fn machines(&self) -> Arc<Registry> {
        self.machines
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn canonical(what: &'static str, path: &Path) -> Result<PathBuf, ServeError> {
    path.canonicalize().map_err(|source| ServeError::Path {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The token secret from the state directory, made (0600) on first start.
fn load_secret(state_dir: &Path) -> Result<[u8; 32], ServeError> {
    let path = state_dir.join("token-secret");
    let err = |source| ServeError::Path {
        what: "token secret",
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut s = [0u8; 32];
            s.copy_from_slice(&bytes);
            return Ok(s);
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected 32 bytes",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut secret, 0))
        .map_err(err)?;
    kprov_host::fs::write_file_atomic(&path, &secret, 0o600)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    Ok(secret)
}

/// Writes a state file (the lease table) with kprov-host's atomic write.
fn write_state_file(path: &Path, bytes: &[u8]) -> Result<(), kprov_host::HostError> {
    kprov_host::fs::write_file_atomic(path, bytes, 0o644)
}

/// Loads the machines directory, logging each refused file.
fn reload(config: &Config) -> Option<Registry> {
    match load_dir(&config.machines_dir, config.subnet.as_ref()) {
        Ok((reg, errors)) => {
            for e in errors {
                tracing::error!(file = %e.file.display(), field = %e.field, "machine refused: {}", e.reason);
            }
            tracing::info!(machines = reg.len(), dir = %config.machines_dir.display(), "machines loaded");
            Some(reg)
        }
        Err(e) => {
            tracing::error!(dir = %config.machines_dir.display(), "cannot read the machines directory: {e}");
            None
        }
    }
}

/// What the machines directory looks like (names, sizes, mtimes).
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    machine_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = m.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}

/// Runs every server until an error stops one of them.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| ServeError::Path {
        what: "state directory",
        path: config.state_dir.clone(),
        source,
    })?;
    let tftp_root = canonical("TFTP root", &config.tftp_root)?;
    let http_root = canonical("HTTP root", &config.http_root)?;
    canonical("machines directory", &config.machines_dir)?;
    let secret = load_secret(&config.state_dir)?;
    let lease_path = config.state_dir.join("leases.json");
    let leases = match std::fs::read_to_string(&lease_path) {
        Ok(text) => LeaseTable::from_json(&text).unwrap_or_else(|e| {
            tracing::error!(file = %lease_path.display(), "lease table unreadable, starting empty: {e}");
            LeaseTable::default()
        }),
        Err(_) => LeaseTable::default(),
    };
    let registry = reload(&config).unwrap_or_default();
    let shared = Arc::new(Shared {
        machines: RwLock::new(Arc::new(registry)),
        leases: Mutex::new(leases),
        leases_dirty: AtomicBool::new(false),
        tokens: Tokens::new(secret),
        metrics: Metrics::default(),
        tftp_root,
        http_root,
        config,
    });
    let c = &shared.config;

    // Open every socket before serving, so that a port in use is an error
    // at start.
    let dhcp = udp(c, c.ports.dhcp, true, "DHCP").await?;
    let proxy = if c.mode == Mode::Proxy {
        Some(udp(c, c.ports.proxy, true, "proxyDHCP boot server").await?)
    } else {
        None
    };
    let tftp_addr = SocketAddrV4::new(c.server_address, c.ports.tftp);
    let tftp = UdpSocket::bind(tftp_addr)
        .await
        .map_err(|source| ServeError::Socket {
            what: "TFTP",
            addr: tftp_addr.to_string(),
            source,
        })?;
    let http_addr = SocketAddrV4::new(c.server_address, c.ports.http);
    let http = TcpListener::bind(http_addr)
        .await
        .map_err(|source| ServeError::Socket {
            what: "HTTP",
            addr: http_addr.to_string(),
            source,
        })?;
    tracing::info!(mode = ?c.mode, interface = %c.interface, server = %c.server_address, "netboot serving: DHCP :{}, TFTP {tftp_addr}, HTTP {http_addr}", c.ports.dhcp);

    tokio::spawn(reload_loop(shared.clone()));
    tokio::spawn(lease_flush_loop(shared.clone(), lease_path));
    tokio::spawn(dhcp_loop(shared.clone(), Arc::new(dhcp), Listener::Dhcp));
    if let Some(p) = proxy {
        tokio::spawn(dhcp_loop(shared.clone(), Arc::new(p), Listener::ProxyBoot));
    }
    tokio::spawn(tftp_loop(shared.clone(), tftp));
    if c.ipv6_ra_lifetime_zero {
        let interface = c.interface.clone();
        std::thread::spawn(move || ra_loop(&interface));
    }
    http_loop(shared, http).await;
    Ok(())
}

async fn udp(
    c: &Config,
    port: u16,
    broadcast: bool,
    what: &'static str,
) -> Result<UdpSocket, ServeError> {
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let err = |source| ServeError::Socket {
        what,
        addr: format!("{addr} ({})", c.interface),
        source,
    };
    let s = UdpSocket::bind(addr).await.map_err(err)?;
    // Bound to the interface: broadcasts go out (and are taken in) there only.
    s.bind_device(Some(c.interface.as_bytes())).map_err(err)?;
    s.set_broadcast(broadcast).map_err(err)?;
    Ok(s)
}

/// Sends a lifetime-0 router advertisement to all nodes on `interface`
/// every 2 s. Failures (e.g. no IPv6 link-local address yet) are retried.
fn ra_loop(interface: &str) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let open = || -> std::io::Result<(Socket, SockAddr)> {
        let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex"))?
            .trim()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        sock.bind_device(Some(interface.as_bytes()))?;
        // RFC 4861: hosts drop advertisements with another hop limit.
        sock.set_multicast_hops_v6(255)?;
        sock.set_multicast_if_v6(index)?;
        let all_nodes = std::net::SocketAddrV6::new(
            std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            0,
            0,
            index,
        );
        Ok((sock, SockAddr::from(all_nodes)))
    };
    let packet = crate::ra::lifetime_zero_advertisement();
    let mut warned = false;
    loop {
        match open().and_then(|(sock, to)| loop {
            sock.send_to(&packet, &to)?;
            std::thread::sleep(Duration::from_secs(2));
        }) {
            Ok(()) => {}
            Err(e) => {
                if !warned {
                    tracing::warn!(interface, "IPv6 router advertisement: {e} (retrying)");
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

async fn reload_loop(shared: Arc<Shared>) {
    let dir = shared.config.machines_dir.clone();
    let mut seen = fingerprint(&dir);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fingerprint(&dir);
        if now != seen {
            seen = now;
            if let Some(reg) = reload(&shared.config) {
                if let Ok(mut g) = shared.machines.write() {
                    *g = Arc::new(reg);
                }
            }
        }
    }
}

async fn lease_flush_loop(shared: Arc<Shared>, path: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if shared.leases_dirty.swap(false, Ordering::AcqRel) {
            let json = match shared.leases.lock() {
                Ok(t) => t.to_json(),
                Err(_) => continue,
            };
            let path = path.clone();
            let r =
                tokio::task::spawn_blocking(move || write_state_file(&path, json.as_bytes())).await;
            if let Ok(Err(e)) = r {
                tracing::error!("saving the lease table: {e}");
                shared.leases_dirty.store(true, Ordering::Release);
            }
        }
    }
}

async fn dhcp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>, listener: Listener) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("DHCP receive: {e}");
                continue;
            }
        };
        let machines = shared.machines();
        let view = View {
            config: &shared.config,
            machines: &machines,
        };
        let (decision, out) = {
            let Ok(mut leases) = shared.leases.lock() else {
                continue;
            };
            let before = leases.len();
            let r = handle_datagram(&buf[..n], listener, &view, &mut leases, now());
            if matches!(r.0, Decision::Reply(_)) || leases.len() != before {
                shared.leases_dirty.store(true, Ordering::Release);
            }
            r
        };
        match decision {
            Decision::Ignore { mac, reason } => {
                add(&shared.metrics.dhcp_ignored, 1);
                match mac {
                    Some(mac) => tracing::info!(mac = %mac, from = %from, "DHCP ignored: {reason}"),
                    None => tracing::debug!(from = %from, "DHCP ignored: {reason}"),
                }
            }
            Decision::Reply(r) => {
                let Some(bytes) = out else { continue };
                let to: SocketAddr = match r.to {
                    ReplyTo::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68).into(),
                    ReplyTo::Client(ip) => SocketAddrV4::new(ip, 68).into(),
                    ReplyTo::Relay(ip) => SocketAddrV4::new(ip, 67).into(),
                    ReplyTo::Sender => from,
                };
                match r.kind {
                    MessageType::Offer => add(&shared.metrics.dhcp_offers, 1),
                    MessageType::Ack => add(&shared.metrics.dhcp_acks, 1),
                    _ => add(&shared.metrics.dhcp_naks, 1),
                }
                tracing::info!(mac = %r.mac, machine = %r.machine, to = %to, address = ?r.address, boot_file = ?r.boot_file, "DHCP {:?}", r.kind);
                if let Err(e) = sock.send_to(&bytes, to).await {
                    tracing::warn!(mac = %r.mac, "DHCP send to {to}: {e}");
                }
            }
        }
    }
}

async fn tftp_loop(shared: Arc<Shared>, sock: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("TFTP receive: {e}");
                continue;
            }
        };
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Read {
                file,
                mode,
                options,
            }) => {
                tokio::spawn(tftp_transfer(shared.clone(), peer, file, mode, options));
            }
            Ok(Packet::Write) => {
                add(&shared.metrics.tftp_errors, 1);
                tracing::warn!(peer = %peer, "TFTP write refused");
                let e = Packet::Error {
                    code: code::ACCESS,
                    message: "read-only server".into(),
                };
                let _ = sock.send_to(&e.encode(), peer).await;
            }
            Ok(_) | Err(_) => {
                tracing::debug!(peer = %peer, "TFTP: not a request on port {}", shared.config.ports.tftp);
            }
        }
    }
}

async fn tftp_transfer(
    shared: Arc<Shared>,
    peer: SocketAddr,
    file: String,
    mode: String,
    options: Vec<(String, String)>,
) {
    // A transfer is a strict send/wait loop: a blocking thread with a
    // plain socket costs three system calls per block and no wakeups of
    // the async runtime, which keeps parallel transfers fast on few cores.
    let s = shared.clone();
    let name = file.clone();
    let result = tokio::task::spawn_blocking(move || tftp_send(&s, peer, &name, &mode, &options))
        .await
        .unwrap_or_else(|e| Err(format!("transfer task: {e}")));
    match result {
        Ok(bytes) => {
            add(&shared.metrics.tftp_transfers, 1);
            tracing::info!(peer = %peer, file = %file, bytes, "TFTP sent");
        }
        Err(e) => {
            add(&shared.metrics.tftp_errors, 1);
            tracing::warn!(peer = %peer, file = %file, "TFTP: {e}");
        }
    }
}

fn tftp_send(
    shared: &Shared,
    peer: SocketAddr,
    file: &str,
    mode: &str,
    options: &[(String, String)],
) -> Result<u64, String> {
    let sock = std::net::UdpSocket::bind(SocketAddrV4::new(shared.config.server_address, 0))
        .map_err(|e| format!("socket: {e}"))?;
    sock.connect(peer).map_err(|e| format!("connect: {e}"))?;
    let sock = &sock;
    let refuse = |code: u16, message: String| {
        let _ = sock.send(
            &Packet::Error {
                code,
                message: message.clone(),
            }
            .encode(),
        );
        Err::<u64, String>(message)
    };
    if mode != "octet" && mode != "netascii" {
        return refuse(code::ILLEGAL, format!("unsupported mode {mode:?}"));
    }
    let path = match resolve_under(&shared.tftp_root, file) {
        Ok(p) => p,
        Err(e @ ResolveError::NotFound(_)) => return refuse(code::NOT_FOUND, e.to_string()),
        Err(e) => return refuse(code::ACCESS, e.to_string()),
    };
    let f = std::fs::File::open(&path).map_err(|e| format!("open: {e}"))?;
    let size = f
        .metadata()
        .map(|m| m.len())
        .map_err(|e| format!("stat: {e}"))?;
    let n = negotiate(options, size);
    let send = |bytes: &[u8]| {
        sock.send(bytes)
            .map(|_| ())
            .map_err(|e| format!("send: {e}"))
    };
    let mut recv = vec![0u8; 1024];
    if !n.accepted.is_empty() {
        // OACK, then wait for ACK 0.
        let oack = Packet::OptionAck {
            options: n.accepted.clone(),
        }
        .encode();
        let mut tries = 0;
        loop {
            send(&oack)?;
            match recv_packet(sock, &mut recv, n.timeout) {
                Some(Packet::Ack { block: 0 }) => break,
                Some(Packet::Error { message, .. }) => {
                    return Err(format!("client ended the transfer: {message}"))
                }
                Some(_) => {}
                None => {
                    tries += 1;
                    if tries > 5 {
                        return Err("no ACK of the option acknowledgement".into());
                    }
                }
            }
        }
    }
    let mut sender = Sender::new(size, n.blksize, n.windowsize);
    let mut block = vec![0u8; n.blksize];
    let mut packet = Vec::with_capacity(n.blksize + 4);
    let mut tries = 0;
    while !sender.done() {
        let window: Vec<_> = sender.window(size).collect();
        for (b, offset, len) in window {
            f.read_exact_at(&mut block[..len], offset)
                .map_err(|e| format!("read: {e}"))?;
            encode_data(&mut packet, b as u16, &block[..len]);
            send(&packet)?;
        }
        // Wait for an ACK that moves the window (duplicates are ignored).
        let deadline = std::time::Instant::now() + n.timeout;
        let advanced = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match recv_packet(sock, &mut recv, left) {
                Some(Packet::Ack { block }) => {
                    if sender.ack(block) {
                        break true;
                    }
                }
                Some(Packet::Error { message, .. }) => {
                    return Err(format!("client ended the transfer: {message}"))
                }
                Some(_) => {}
                None => break false,
            }
        };
        if advanced {
            tries = 0;
        } else {
            tries += 1;
            if tries > 5 {
                return Err("client stopped acknowledging".into());
            }
        }
    }
    add(&shared.metrics.tftp_bytes, size);
    Ok(size)
}

/// The next parseable packet within `wait`, or None on timeout.
fn recv_packet(sock: &std::net::UdpSocket, buf: &mut [u8], wait: Duration) -> Option<Packet> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match sock.recv(buf) {
            Ok(n) => {
                if let Ok(p) = Packet::parse(&buf[..n]) {
                    return Some(p);
                }
            }
            Err(_) => return None,
        }
    }
}

async fn http_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            // Plain file downloads go to the sendfile path; a peek that
            // sees too little to tell leaves the request to hyper.
            let mut first = [0u8; 11];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), stream.peek(&mut first)).await
            {
                if crate::http::is_file_download(&first[..n]) {
                    crate::http::serve_file_connection(shared, stream, peer).await;
                    return;
                }
            }
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                crate::http::handle(shared.clone(), peer, req)
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(peer = %peer, "HTTP connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn symlinks_planted_at_temporary_names_do_not_redirect_the_state_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious\n").unwrap();
        // The names older kprov versions wrote through.
        for name in ["leases.tmp", ".token-secret.tmp", ".leases.json.kprov-tmp"] {
            std::os::unix::fs::symlink(&outside, state.join(name)).unwrap();
        }

        let secret = load_secret(&state).unwrap();
        write_state_file(&state.join("leases.json"), b"{}").unwrap();

        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
        assert_eq!(std::fs::read(state.join("token-secret")).unwrap(), secret);
        assert_eq!(std::fs::read(state.join("leases.json")).unwrap(), b"{}");
        for (name, mode) in [("token-secret", 0o600), ("leases.json", 0o644)] {
            let meta = std::fs::symlink_metadata(state.join(name)).unwrap();
            assert!(meta.file_type().is_file(), "{name}");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
    }
}
