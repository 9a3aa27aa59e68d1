//! The thin side-effect layer: sockets, files and the clock. DHCP (67,
//! and 4011 in proxy mode) on UDP sockets, TFTP ([`crate::tftp_serve`]),
//! HTTP through hyper ([`crate::http::http_loop`]), a one-second poll that
//! reloads the machines directory and the token epochs when they change,
//! and one-second flushes of the lease table and the machine state.
//!
//! Every one of these runs as a supervised task: when one ends (a panic,
//! or a loop that returns), the server logs which and why and [`serve`]
//! returns an error, so the process exits non-zero and its supervisor
//! (systemd, the kubelet) restarts it from the state on disk. Restarting
//! a task in place could loop on the same fault with shared state left
//! half-changed (a poisoned lock), so the server does not try.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::MessageType;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::{check_roots, Config, Mode};
use crate::dhcp::{handle_datagram, Decision, Listener, ReplyTo, View};
use crate::leases::LeaseTable;
use crate::limits::{caps, raise_fd_limit, Caps};
use crate::machine::{load_dir, machine_files, MacAddr, Machine, MachineError, Profile, Registry};
use crate::metrics::{add, Metrics};
use crate::state::{phase_of, script_token, Ask, Binding, Phase, Policy, Record, States};
use crate::token::Tokens;

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
    /// A served root contains private state (seen through symlinks).
    #[error("{field}: {reason} (after following symlinks)")]
    Overlap {
        /// The key of the served root.
        field: String,
        /// What it contains.
        reason: String,
    },
    /// Machines come from files, and the config names no directory.
    #[error("machinesDir is not set: Machines come from its files unless `--machines kubernetes` is given")]
    NoMachines,
    /// The config has a `join` section, and Machines come from files.
    #[error("join: netboot makes join data from the cluster it serves: it needs `--machines kubernetes`")]
    JoinWithoutCluster,
    /// A server task stopped: it panicked or its loop ended.
    #[error("the {task} task {reason}")]
    TaskStopped {
        /// Which task.
        task: &'static str,
        /// How it ended.
        reason: String,
    },
}

/// State shared by the servers.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    machines: RwLock<Arc<Registry>>,
    /// Machine objects refused (by name), from the API server.
    refused: RwLock<Arc<BTreeMap<String, MachineError>>>,
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
    states: Mutex<States>,
    states_dirty: AtomicBool,
    /// Whether this replica answers DHCP (always, unless a Lease decides).
    leading: AtomicBool,
    epochs: RwLock<Arc<BTreeMap<MacAddr, u32>>>,
    /// User-data netboot made (the `join` section), by Machine name.
    made_user_data: RwLock<Arc<BTreeMap<String, String>>>,
    /// Token lifetime and user-data window.
    pub policy: Policy,
    /// The caps in force.
    pub caps: Caps,
}

/// What the HTTP side needs of the machine a request names: a Machine,
/// or the default profile for an unknown MAC.
#[derive(Debug, Clone)]
pub struct MachineView {
    /// The Machine's name, or `default`.
    pub name: String,
    /// Its NoCloud instance id.
    pub instance: String,
    /// Its host name.
    pub hostname: Option<String>,
    /// What it boots and its user-data.
    pub profile: Profile,
    /// Its fixed address.
    pub fixed: Option<Ipv4Addr>,
    /// Netboot makes its user-data and has not yet: its NoCloud
    /// documents wait (503) rather than serve an empty one.
    pub awaits_join_data: bool,
}

impl Shared {
    /// The machines as loaded last.
    pub fn machines(&self) -> Arc<Registry> {
        self.machines
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Machine objects refused, by name (empty for files: their errors
    /// are logged).
    pub fn refused(&self) -> Arc<BTreeMap<String, MachineError>> {
        self.refused
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Swaps in a new set of machines.
    pub fn set_machines(&self, registry: Registry, refused: BTreeMap<String, MachineError>) {
        if let Ok(mut g) = self.machines.write() {
            *g = Arc::new(registry);
        }
        if let Ok(mut g) = self.refused.write() {
            *g = Arc::new(refused);
        }
    }

    /// Whether this replica answers DHCP and writes Machine status.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Sets whether this replica holds the Lease.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }

    /// The phase gauges of `/metrics`: every Machine's phase and how
    /// long it has been in it (a refused Machine object is Failed).
    pub fn phase_metrics(&self) -> String {
        let machines = self.machines();
        let mut phases: Vec<crate::metrics::MachinePhase> = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            machines
                .iter()
                .map(|m| {
                    let (phase, since) = phase_of(states.get(&m.mac), m.profile.installed, m.node);
                    crate::metrics::MachinePhase {
                        name: m.name.clone(),
                        phase,
                        since,
                    }
                })
                .collect()
        };
        phases.extend(
            self.refused()
                .keys()
                .map(|name| crate::metrics::MachinePhase {
                    name: name.clone(),
                    phase: Phase::Failed,
                    since: None,
                }),
        );
        crate::metrics::render_phases(&phases, now())
    }

    /// What the server has seen of `mac`.
    pub fn record(&self, mac: &MacAddr) -> Option<Record> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(mac).cloned()
    }

    /// The machine `mac` names: its Machine, else the default profile,
    /// else None.
    pub fn machine_view(&self, mac: &MacAddr) -> Option<MachineView> {
        let machines = self.machines();
        match machines.get(mac) {
            Some(m) => {
                let makes = self.config.join.is_some() && crate::join::wants_join_data(m);
                let made = if makes {
                    self.made_user_data().get(&m.name).cloned()
                } else {
                    None
                };
                Some(MachineView {
                    name: m.name.clone(),
                    instance: m.name.clone(),
                    hostname: m.hostname.clone(),
                    awaits_join_data: makes && made.is_none(),
                    profile: Profile {
                        installed: m.served_as_installed(),
                        user_data: m.profile.user_data.clone().or(made),
                        ..m.profile.clone()
                    },
                    fixed: m.ip,
                })
            }
            None => self.config.default_profile.as_ref().map(|p| MachineView {
                name: "default".into(),
                instance: format!("default-{}", mac.dashed()),
                hostname: None,
                profile: p.clone(),
                fixed: None,
                awaits_join_data: false,
            }),
        }
    }

    /// The user-data netboot made, by Machine name.
    fn made_user_data(&self) -> Arc<BTreeMap<String, String>> {
        self.made_user_data
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the user-data netboot made.
    pub fn set_made_user_data(&self, made: BTreeMap<String, String>) {
        if let Ok(mut g) = self.made_user_data.write() {
            *g = Arc::new(made);
        }
    }

    /// The token epoch of `mac`.
    pub fn epoch(&self, mac: &MacAddr) -> u32 {
        let epochs = self
            .epochs
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        epochs.get(mac).copied().unwrap_or(0)
    }

    /// A request for `mac`'s data from `peer` with `token`, now: its epoch
    /// and where it may ask from (`fixed`, else its bound lease).
    pub fn ask<'a>(
        &self,
        mac: &MacAddr,
        fixed: Option<Ipv4Addr>,
        peer: SocketAddr,
        token: &'a str,
    ) -> Ask<'a> {
        let now = now();
        let lease = match fixed {
            Some(_) => None,
            None => self.leases.lock().ok().and_then(|l| l.bound(mac, now)),
        };
        let peer = match peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        Ask {
            mac: *mac,
            epoch: self.epoch(mac),
            peer,
            token,
            binding: Binding { fixed, lease },
            now,
        }
    }

    /// Runs `f` on the machine state (and marks it for saving).
    pub fn with_states<T>(&self, f: impl FnOnce(&mut States) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut states);
        self.states_dirty.store(true, Ordering::Release);
        r
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> u64 {
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
fn reload(config: &Config, dir: &Path) -> Option<Registry> {
    match load_dir(dir, config.subnet.as_ref()) {
        Ok((reg, errors)) => {
            for e in errors {
                tracing::error!(file = %e.file.display(), field = %e.field, "machine refused: {}", e.reason);
            }
            tracing::info!(machines = reg.len(), dir = %dir.display(), "machines loaded");
            Some(reg)
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot read the machines directory: {e}");
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

/// A supervised task: its name and how it ended.
type Task = Pin<Box<dyn Future<Output = (&'static str, String)> + Send>>;

/// The text of a panic payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Spawns `fut` and watches it.
fn supervise(name: &'static str, fut: impl Future<Output = ()> + Send + 'static) -> Task {
    let handle = tokio::spawn(fut);
    Box::pin(async move {
        let how = match handle.await {
            Ok(()) => "stopped".to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
            Err(e) => format!("was cancelled: {e}"),
        };
        (name, how)
    })
}

/// Where Machines come from.
pub enum MachineSource {
    /// The config's `machinesDir` (reloaded when a file changes).
    Files,
    /// `machines.kprov.dev` objects; the server writes their status.
    Kubernetes {
        /// The client.
        client: kube::Client,
        /// The namespace of the Lease replicas share.
        lease_namespace: String,
        /// This replica's identity in the Lease.
        identity: String,
    },
}

/// Runs every server until one of them stops; then returns why.
pub async fn serve(config: Config, source: MachineSource) -> Result<(), ServeError> {
    let files = match (&source, &config.machines_dir) {
        (MachineSource::Files, Some(dir)) => Some(dir.clone()),
        (MachineSource::Files, None) => return Err(ServeError::NoMachines),
        (MachineSource::Kubernetes { .. }, _) => None,
    };
    if files.is_some() && config.join.is_some() {
        return Err(ServeError::JoinWithoutCluster);
    }
    std::fs::create_dir_all(&config.state_dir).map_err(|source| ServeError::Path {
        what: "state directory",
        path: config.state_dir.clone(),
        source,
    })?;
    let tftp_root = canonical("TFTP root", &config.tftp_root)?;
    let http_root = canonical("HTTP root", &config.http_root)?;
    let state_dir = canonical("state directory", &config.state_dir)?;
    let mut private = vec![("stateDir", config.state_dir.clone(), state_dir)];
    if let Some(dir) = &files {
        private.push((
            "machinesDir",
            dir.clone(),
            canonical("machines directory", dir)?,
        ));
    }
    let private: Vec<(&str, &Path, &Path)> = private
        .iter()
        .map(|(k, written, real)| (*k, written.as_path(), real.as_path()))
        .collect();
    // The config was checked as written; symlinks may still join them.
    check_roots(
        &[
            ("httpRoot", &config.http_root, &http_root),
            ("tftpRoot", &config.tftp_root, &tftp_root),
        ],
        &private,
    )
    .map_err(|(field, reason)| ServeError::Overlap { field, reason })?;
    let secret = load_secret(&config.state_dir)?;
    let lease_path = config.state_dir.join("leases.json");
    let leases = match std::fs::read_to_string(&lease_path) {
        Ok(text) => LeaseTable::from_json(&text).unwrap_or_else(|e| {
            tracing::error!(file = %lease_path.display(), "lease table unreadable, starting empty: {e}");
            LeaseTable::default()
        }),
        Err(_) => LeaseTable::default(),
    };
    let states_path = config.state_dir.join("machines.json");
    let states = match std::fs::read_to_string(&states_path) {
        Ok(text) => States::from_json(&text).unwrap_or_else(|e| {
            tracing::error!(file = %states_path.display(), "machine state unreadable, starting empty: {e}");
            States::default()
        }),
        Err(_) => States::default(),
    };
    let registry = files
        .as_deref()
        .and_then(|dir| reload(&config, dir))
        .unwrap_or_default();
    let epochs = reload_epochs(&config.state_dir);
    let fds = raise_fd_limit();
    let caps = caps(&config.limits, fds);
    tracing::info!(
        fds,
        http_connections = caps.http_connections,
        http_per_address = caps.http_per_address,
        tftp_transfers = caps.tftp_transfers,
        tftp_pending = caps.tftp_pending,
        "limits"
    );
    let shared = Arc::new(Shared {
        machines: RwLock::new(Arc::new(registry)),
        refused: RwLock::new(Arc::new(BTreeMap::new())),
        leases: Mutex::new(leases),
        leases_dirty: AtomicBool::new(false),
        tokens: Tokens::new(secret),
        metrics: Metrics::default(),
        tftp_root,
        http_root,
        states: Mutex::new(states),
        states_dirty: AtomicBool::new(false),
        // Replicas watching the cluster wait for the Lease.
        leading: AtomicBool::new(files.is_some()),
        epochs: RwLock::new(Arc::new(epochs)),
        made_user_data: RwLock::new(Arc::new(BTreeMap::new())),
        policy: Policy {
            token_ttl: config.token_ttl_seconds,
            user_data_window: config.user_data_window_seconds,
        },
        caps,
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
    let http = http_listener(http_addr).map_err(|source| ServeError::Socket {
        what: "HTTP",
        addr: http_addr.to_string(),
        source,
    })?;
    tracing::info!(mode = ?c.mode, interface = %c.interface, server = %c.server_address, "netboot serving: DHCP :{}, TFTP {tftp_addr}, HTTP {http_addr}", c.ports.dhcp);

    let mut tasks = vec![
        supervise("reload", reload_loop(shared.clone(), files)),
        supervise("lease flush", lease_flush_loop(shared.clone(), lease_path)),
        supervise("state flush", state_flush_loop(shared.clone(), states_path)),
        supervise(
            "DHCP",
            dhcp_loop(shared.clone(), Arc::new(dhcp), Listener::Dhcp),
        ),
        supervise("TFTP", crate::tftp_serve::tftp_loop(shared.clone(), tftp)),
        supervise("HTTP", crate::http::http_loop(shared.clone(), http)),
    ];
    if let MachineSource::Kubernetes {
        client,
        lease_namespace,
        identity,
    } = source
    {
        tasks.push(supervise(
            "Lease",
            crate::leader::lead_loop(shared.clone(), client.clone(), lease_namespace, identity),
        ));
        let (watched, writers) = crate::kube_source::stores();
        tasks.push(supervise(
            "Machine watch",
            crate::kube_source::watch_loop(
                shared.clone(),
                client.clone(),
                watched.clone(),
                writers,
            ),
        ));
        if shared.config.join.is_some() {
            tasks.push(supervise(
                "join data",
                crate::kube_join::join_loop(shared.clone(), client.clone()),
            ));
        }
        tasks.push(supervise(
            "Machine status",
            crate::kube_source::status_loop(shared.clone(), client, watched),
        ));
    }
    if let Some(p) = proxy {
        tasks.push(supervise(
            "proxyDHCP boot server",
            dhcp_loop(shared.clone(), Arc::new(p), Listener::ProxyBoot),
        ));
    }
    if c.ipv6_ra_lifetime_zero {
        // A plain thread (it blocks); it reports how it ended.
        let interface = c.interface.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ra_loop(&interface)));
            let _ = tx.send(match r {
                Ok(()) => "stopped".to_string(),
                Err(p) => format!("panicked: {}", panic_text(p)),
            });
        });
        tasks.push(Box::pin(async move {
            (
                "IPv6 router advertisement",
                rx.await.unwrap_or_else(|_| "stopped".into()),
            )
        }));
    }
    let ((task, reason), _, _) = futures_util::future::select_all(tasks).await;
    tracing::error!("{task} task {reason}: stopping the server");
    Err(ServeError::TaskStopped { task, reason })
}

/// Connections the kernel holds for the HTTP server before it accepts
/// them: machines powered on together (a rack, 1,000 in the benchmark)
/// connect at once, and tokio's default of 128 dropped some of them
/// (their clients retried a second later).
const HTTP_BACKLOG: u32 = 1024;

/// The HTTP listening socket, with [`HTTP_BACKLOG`].
fn http_listener(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.into())?;
    socket.listen(HTTP_BACKLOG)
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

/// The token epochs of the state directory, with bad files logged.
fn reload_epochs(state_dir: &Path) -> BTreeMap<MacAddr, u32> {
    let (epochs, problems) = crate::epochs::read_all(state_dir);
    for p in problems {
        tracing::error!(dir = %crate::epochs::dir(state_dir).display(), "token epoch file skipped: {p}");
    }
    epochs
}

/// Reloads the machines directory (when Machines come from files) and
/// the token epochs when they change.
async fn reload_loop(shared: Arc<Shared>, files: Option<PathBuf>) {
    let state_dir = shared.config.state_dir.clone();
    let mut seen = files.as_deref().map(fingerprint);
    let mut seen_epochs = crate::epochs::fingerprint(&state_dir);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(dir) = &files {
            let now = Some(fingerprint(dir));
            if now != seen {
                seen = now;
                if let Some(reg) = reload(&shared.config, dir) {
                    if let Ok(mut g) = shared.machines.write() {
                        *g = Arc::new(reg);
                    }
                }
            }
        }
        let now = crate::epochs::fingerprint(&state_dir);
        if now != seen_epochs {
            seen_epochs = now;
            let epochs = reload_epochs(&state_dir);
            tracing::info!(machines = epochs.len(), "token epochs loaded");
            if let Ok(mut g) = shared.epochs.write() {
                *g = Arc::new(epochs);
            }
        }
    }
}

/// Saves the machine state when it changed (at most once a second), and
/// prunes records of MACs that are not Machines once a minute.
async fn state_flush_loop(shared: Arc<Shared>, path: PathBuf) {
    /// Records kept for MACs that are not Machines (default profile).
    const MAX_UNKNOWN: usize = 4096;
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ticks += 1;
        let machines = shared.machines();
        if ticks % 60 == 0 {
            let c = &shared.config;
            let keep = c
                .token_ttl_seconds
                .max(c.user_data_window_seconds)
                .max(u64::from(c.lease_seconds));
            let stale_before = now().saturating_sub(keep);
            let pruned = shared
                .states
                .lock()
                .map(|mut s| {
                    s.prune(
                        &|mac| machines.get(mac).is_some(),
                        stale_before,
                        MAX_UNKNOWN,
                    )
                })
                .unwrap_or(false);
            if pruned {
                shared.states_dirty.store(true, Ordering::Release);
            }
        }
        if !shared.states_dirty.swap(false, Ordering::AcqRel) {
            continue;
        }
        let installed = |mac: &MacAddr| machines.get(mac).is_some_and(Machine::served_as_installed);
        let json = match shared.states.lock() {
            Ok(s) => s.to_json(&installed),
            Err(_) => continue,
        };
        let path = path.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::epochs::write_private(&path, json.as_bytes())
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::error!("saving the machine state: {e}");
            shared.states_dirty.store(true, Ordering::Release);
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
        kprov_host::failpoint::hit("netboot.dhcp.datagram");
        if !shared.leading() {
            add(&shared.metrics.dhcp_ignored, 1);
            tracing::debug!(from = %from, "DHCP left to the Lease holder");
            continue;
        }
        let machines = shared.machines();
        let now = now();
        let (decision, out) = {
            let script = |mac: &MacAddr| {
                script_token(&shared.tokens, mac, shared.epoch(mac), &shared.policy, now)
            };
            let view = View {
                config: &shared.config,
                machines: &machines,
                script_token: &script,
            };
            let Ok(mut leases) = shared.leases.lock() else {
                continue;
            };
            let before = leases.len();
            let r = handle_datagram(&buf[..n], listener, &view, &mut leases, now);
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
                note_reply(&shared, &machines, &r, listener, from, now);
                // The script URL carries a token: log only that it was given.
                let boot_file = r.boot_file.as_deref().map(|f| {
                    if f.contains("/boot/") {
                        "(its iPXE script URL)"
                    } else {
                        f
                    }
                });
                tracing::info!(mac = %r.mac, machine = %r.machine, to = %to, address = ?r.address, boot_file = ?boot_file, "DHCP {:?}", r.kind);
                if let Err(e) = sock.send_to(&bytes, to).await {
                    tracing::warn!(mac = %r.mac, "DHCP send to {to}: {e}");
                }
            }
        }
    }
}

/// Notes a reply in the machine state: the address a Machine got, or
/// (proxy mode) the address its PXE boot request came from, which binds
/// its script and NoCloud data to it for a lease time.
fn note_reply(
    shared: &Shared,
    machines: &Registry,
    r: &crate::dhcp::Reply,
    listener: Listener,
    from: SocketAddr,
    now: u64,
) {
    if r.kind == MessageType::Nak {
        return;
    }
    let epoch = shared.epoch(&r.mac);
    let boot_address = match from.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => Some(r.message.ciaddr()).filter(|ip| !ip.is_unspecified()),
    };
    shared.with_states(|s| match (listener, boot_address) {
        (Listener::ProxyBoot, Some(ip)) => s.seen_boot_request(
            &r.mac,
            epoch,
            ip,
            now + u64::from(shared.config.lease_seconds),
            now,
        ),
        _ => s.seen_dhcp(
            &r.mac,
            epoch,
            machines.get(&r.mac).is_some(),
            r.address.filter(|_| r.kind == MessageType::Ack),
            now,
        ),
    });
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
