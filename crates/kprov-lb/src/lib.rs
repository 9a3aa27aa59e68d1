//! `kprov lb`: the node-local load balancer in front of every API server.
//!
//! The kubelet, kube-proxy and the node's admin tools talk to
//! `127.0.0.1:PORT`; the balancer forwards each TCP connection to a
//! healthy API server. Pure logic, tested without sockets:
//!
//! - [`backend`]: backend addresses, the health state machine (down after
//!   `fall` failed checks, up after `rise` good ones) and the [`Pool`]
//!   that picks a backend (least connections, round robin on ties);
//! - [`endpoints_file`]: the local file of known backends (parse/render),
//!   so that a restart with every API server down still knows them;
//! - [`discovery`]: backends from the `default/kubernetes` Endpoints,
//!   merged with the seeds;
//! - [`metrics`]: the [`Snapshot`] of the pool, as Prometheus text and as
//!   the JSON `kprov lb status` reads;
//! - [`duration`]: `500ms`/`2s`/`1m` flag values.
//!
//! The thin async layer ([`serve`]) does the I/O: the listener and one
//! copy task per connection, the per-backend registry that aborts every
//! open connection of a backend that goes down, the health checker
//! (HTTPS `GET /readyz`), the discovery loop and the metrics listener;
//! [`status`] is its client.

pub mod backend;
pub mod discovery;
pub mod duration;
pub mod endpoints_file;
pub mod metrics;
pub mod serve;
pub mod status;

pub use backend::{Health, Pool, Thresholds};
pub use metrics::Snapshot;

/// Why the load balancer could not start or a status read failed.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The endpoints file could not be read or written.
    #[error("endpoints file (--endpoints-file) {path}: {reason}")]
    EndpointsFile {
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("--ca-file {path}: {reason}")]
    CaFile {
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("listening on {address} ({what}): {source}")]
    Listen {
        /// The address.
        address: String,
        /// Which listener.
        what: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// No backend at all: no seed, no endpoints file, no discovery.
    #[error("no API server known: give --seed HOST:PORT, an endpoints file that lists some, or --kubeconfig")]
    NoBackends,
    /// The health checker's HTTP client could not be built.
    #[error("building the health checker's client for {backend}: {reason}")]
    Client {
        /// The backend.
        backend: String,
        /// What went wrong.
        reason: String,
    },
    /// The status read from the metrics listener failed.
    #[error("reading the status from http://{address}/status: {reason}")]
    Status {
        /// The metrics address.
        address: String,
        /// What went wrong.
        reason: String,
    },
}
