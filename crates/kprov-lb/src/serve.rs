//! The I/O of `kprov lb run`: the listener with one copy task per client
//! connection, the per-backend registry of open connections (a backend
//! that goes down has them all aborted at once: a client such as
//! client-go would otherwise keep a dead HTTP/2 connection for up to
//! 45 s), one health checker per backend (HTTPS `GET /readyz`), the
//! discovery loop and the metrics listener. Decisions are the pure
//! [`Pool`]'s.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::backend::{Health, Pool, Thresholds, Transition};
use crate::discovery::{backends_from_endpoints, merge};
use crate::metrics::{http_response, Snapshot};
use crate::{endpoints_file, LbError};

/// How `kprov lb run` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect (`127.0.0.1:6443`).
    pub listen: SocketAddr,
    /// The cluster CA the API servers' certificates are checked against.
    pub ca_file: PathBuf,
    /// A kubeconfig for discovery (through the balancer itself or any API
    /// server); None: the backends are the seeds and the file's.
    pub kubeconfig: Option<PathBuf>,
    /// The file of known backends.
    pub endpoints_file: PathBuf,
    /// Backends given on the command line (the join configuration's).
    pub seeds: Vec<SocketAddr>,
    /// Time between two checks of a backend.
    pub check_interval: Duration,
    /// How long a check may take.
    pub check_timeout: Duration,
    /// How long connecting to a backend for a client may take.
    pub connect_timeout: Duration,
    /// Time between two reads of the Endpoints.
    pub discovery_interval: Duration,
    /// The server name checked in the API servers' certificates (their IP
    /// need not be a SAN): `kubernetes` is in every one kubeadm or kprov
    /// makes.
    pub tls_server_name: String,
    /// Where `/metrics` and `/status` are served, if anywhere.
    pub metrics_address: Option<SocketAddr>,
    /// Checks in a row that change a backend's health.
    pub thresholds: Thresholds,
}

struct Shared {
    pool: Pool,
    conns: HashMap<SocketAddr, HashMap<u64, AbortHandle>>,
    next_id: u64,
}

struct Lb {
    shared: Mutex<Shared>,
    checkers: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
    config: Config,
    ca: Vec<reqwest::Certificate>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lb {
    fn snapshot(&self) -> Snapshot {
        Snapshot::of(&lock(&self.shared).pool)
    }

    /// Records a result for `addr`; a backend that went down has every
    /// open connection aborted.
    fn record(&self, addr: SocketAddr, result: Result<(), String>) {
        let reason = result.as_ref().err().cloned();
        let mut shared = lock(&self.shared);
        match shared.pool.record(&addr, result) {
            Transition::WentDown => {
                let open = shared.conns.remove(&addr).unwrap_or_default();
                drop(shared);
                tracing::warn!(
                    backend = %addr,
                    closing = open.len(),
                    "backend down: {}",
                    reason.unwrap_or_default()
                );
                for handle in open.values() {
                    handle.abort();
                }
            }
            Transition::WentUp => tracing::info!(backend = %addr, "backend up"),
            Transition::None => {}
        }
    }

    /// Makes `set` the backends: removed ones lose their connections and
    /// checker, new ones get a checker. Whether the set changed.
    fn set_backends(self: &Arc<Self>, set: &BTreeSet<SocketAddr>) -> bool {
        let mut shared = lock(&self.shared);
        if shared.pool.addresses() == *set {
            return false;
        }
        let removed = shared.pool.set_backends(set);
        let mut aborted = Vec::new();
        for addr in &removed {
            aborted.extend(shared.conns.remove(addr).unwrap_or_default().into_values());
        }
        drop(shared);
        for handle in aborted {
            handle.abort();
        }
        let mut checkers = lock(&self.checkers);
        for addr in &removed {
            if let Some(task) = checkers.remove(addr) {
                task.abort();
            }
        }
        for addr in set {
            if !checkers.contains_key(addr) {
                let lb = Arc::clone(self);
                let addr = *addr;
                checkers.insert(addr, tokio::spawn(async move { lb.check_loop(addr).await }));
            }
        }
        tracing::info!(backends = ?set, "backends");
        true
    }

    /// Checks `addr` every interval until aborted.
    async fn check_loop(self: Arc<Self>, addr: SocketAddr) {
        let client = match self.check_client(addr) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!("{e}");
                self.record(addr, Err(e.to_string()));
                return;
            }
        };
        let url = format!(
            "https://{}:{}/readyz",
            self.config.tls_server_name,
            addr.port()
        );
        let mut tick = tokio::time::interval(self.config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A check starts every interval even while an earlier one waits on
        // a hung backend: in turn, each check's timeout would add to the
        // time until it is found down. Dropped with this task (abort).
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let check = client.get(&url).send();
                    running.spawn(async move {
                        match check.await {
                            Ok(answer) if answer.status() == reqwest::StatusCode::OK => Ok(()),
                            Ok(answer) => Err(format!("/readyz answered {}", answer.status())),
                            Err(e) => Err(format!("/readyz: {}", innermost(&e))),
                        }
                    });
                }
                Some(Ok(result)) = running.join_next() => self.record(addr, result),
            }
        }
    }

    /// A client that connects to `addr` whatever the URL's host, verifies
    /// the certificate against the CA and the server name, and opens a new
    /// connection for every check (a check tests the way in, too).
    fn check_client(&self, addr: SocketAddr) -> Result<reqwest::Client, LbError> {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .resolve(&self.config.tls_server_name, addr)
            .timeout(self.config.check_timeout)
            .connect_timeout(self.config.check_timeout)
            .pool_max_idle_per_host(0)
            .no_proxy();
        for cert in &self.ca {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder.build().map_err(|e| LbError::Client {
            backend: addr.to_string(),
            reason: innermost(&e),
        })
    }

    /// Forwards one client connection to a usable backend, trying the
    /// others if connecting fails; closes it at once if none is usable.
    async fn forward(self: Arc<Self>, client: TcpStream) {
        let mut tried = Vec::new();
        let (addr, upstream) = loop {
            let picked = {
                let mut shared = lock(&self.shared);
                let picked = shared.pool.pick(&tried);
                if picked.is_none() {
                    shared.pool.refuse();
                }
                picked
            };
            let Some(addr) = picked else {
                tracing::debug!("no usable backend: connection refused");
                return;
            };
            let reason =
                match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(stream)) => break (addr, stream),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                };
            self.record(addr, Err(format!("connecting: {reason}")));
            tried.push(addr);
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let copy = tokio::spawn(async move {
            let (mut client, mut upstream) = (client, upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        let id = {
            let mut shared = lock(&self.shared);
            let id = shared.next_id;
            shared.next_id += 1;
            shared.pool.opened(&addr);
            // Down (or removed) since it was picked: no connection to it.
            if shared
                .pool
                .get(&addr)
                .is_none_or(|s| s.health == Health::Down)
            {
                copy.abort();
            } else {
                shared
                    .conns
                    .entry(addr)
                    .or_default()
                    .insert(id, copy.abort_handle());
            }
            id
        };
        let aborted = matches!(&copy.await, Err(e) if e.is_cancelled());
        let mut shared = lock(&self.shared);
        if let Some(open) = shared.conns.get_mut(&addr) {
            open.remove(&id);
        }
        shared.pool.closed(&addr, aborted);
    }

    /// Reads the Endpoints every interval; a new set is used and written
    /// to the endpoints file.
    async fn discovery_loop(self: Arc<Self>, kubeconfig: PathBuf) {
        let mut client = None;
        loop {
            if client.is_none() {
                match kprov_kube::client(&kubeconfig).await {
                    Ok(c) => client = Some(c),
                    Err(e) => tracing::warn!("discovery: {e}"),
                }
            }
            if let Some(c) = &client {
                match kprov_kube::kubernetes_endpoints(c).await {
                    Ok(endpoints) => {
                        let found = backends_from_endpoints(&endpoints);
                        if found.is_empty() {
                            tracing::warn!(
                                "discovery: the Endpoints default/kubernetes list no API server"
                            );
                        } else {
                            let set = merge(&found, &self.config.seeds);
                            if self.set_backends(&set) {
                                if let Err(e) =
                                    write_endpoints_file(&self.config.endpoints_file, &set)
                                {
                                    tracing::warn!("{e}");
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!("discovery: {e}"),
                }
            }
            tokio::time::sleep(self.config.discovery_interval).await;
        }
    }
}

/// The innermost cause of an error (reqwest's own text names only the
/// URL).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The backends of the endpoints file; none when it does not exist.
pub fn read_endpoints_file(path: &Path) -> Result<BTreeSet<SocketAddr>, LbError> {
    let err = |reason: String| LbError::EndpointsFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => endpoints_file::parse(&text).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes the endpoints file atomically (temporary file, fsync, rename),
/// making its directory if needed.
pub fn write_endpoints_file(path: &Path, set: &BTreeSet<SocketAddr>) -> Result<(), LbError> {
    let err = |reason: String| LbError::EndpointsFile {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("making its directory: {e}")))?;
    }
    kprov_host::fs::write_file_atomic(path, endpoints_file::render(set).as_bytes(), 0o644)
        .map_err(|e| err(e.to_string()))
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, LbError> {
    let err = |reason: String| LbError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(innermost(&e)))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Serves `/metrics` and `/status`, one request per connection.
async fn metrics_loop(lb: Arc<Lb>, listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let lb = Arc::clone(&lb);
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let response = http_response(&String::from_utf8_lossy(&head), &lb.snapshot());
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Runs the balancer until its listener fails: backends from the
/// endpoints file and the seeds, then discovery.
pub async fn run(config: Config) -> Result<(), LbError> {
    let ca = read_ca(&config.ca_file)?;
    let known = match read_endpoints_file(&config.endpoints_file) {
        Ok(known) => known,
        // A broken file must not keep the node from its API servers.
        Err(e) => {
            tracing::warn!("{e}; starting from the seeds");
            BTreeSet::new()
        }
    };
    let initial = merge(&known, &config.seeds);
    if initial.is_empty() && config.kubeconfig.is_none() {
        return Err(LbError::NoBackends);
    }
    if initial != known {
        if let Err(e) = write_endpoints_file(&config.endpoints_file, &initial) {
            tracing::warn!("{e}");
        }
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| LbError::Listen {
            address: config.listen.to_string(),
            what: "--listen",
            source,
        })?;
    let metrics = match config.metrics_address {
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| LbError::Listen {
                        address: address.to_string(),
                        what: "--metrics-address",
                        source,
                    })?,
            )
        }
        None => None,
    };
    let thresholds = config.thresholds;
    let lb = Arc::new(Lb {
        shared: Mutex::new(Shared {
            pool: Pool::new(&BTreeSet::new(), thresholds),
            conns: HashMap::new(),
            next_id: 0,
        }),
        checkers: Mutex::new(HashMap::new()),
        ca,
        config,
    });
    lb.set_backends(&initial);
    if let Some(listener) = metrics {
        tokio::spawn(metrics_loop(Arc::clone(&lb), listener));
    }
    if let Some(kubeconfig) = lb.config.kubeconfig.clone() {
        tokio::spawn(Arc::clone(&lb).discovery_loop(kubeconfig));
    }
    tracing::info!(listen = %lb.config.listen, "kprov lb serving");
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(Arc::clone(&lb).forward(client));
            }
            Err(e) => {
                // Out of descriptors and the like: wait, then go on.
                tracing::warn!("accepting on {}: {e}", lb.config.listen);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
