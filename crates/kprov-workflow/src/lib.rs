//! What kprov does to a node, phase by phase.
//!
//! Each workflow is a table of [`kprov_plan::workflow::Phase`]s over a
//! context that owns its inputs (validated specs), the target
//! ([`kprov_host::Root`], [`kprov_host::Runner`]), the command's one async
//! runtime (a [`tokio::runtime::Handle`]; phase bodies block on it) and an
//! [`Observer`] that hears about phases, plans, reports and progress.
//! Host changes are kprov-plan plans; objects sent to the API server are
//! kprov-controlplane API plans applied by kprov-kube; both report with
//! one `Outcome`.
//!
//! - [`init`]: `kprov init`, the first master (kubeadm init's phases);
//! - [`join`]: the join phase of `kprov provision` (trust, kubelet,
//!   TLS bootstrap, Node);
//! - [`join_control_plane`]: a master that joins (`--control-plane`):
//!   the shared certificates, etcd membership, its static pods;
//! - [`reset`]: `kprov reset`;
//! - [`etcd`]: a client of stacked etcd with a master's certificates, and
//!   its members (`kprov etcd members`);
//! - [`copy_certs`]: the shared CAs and keys read for upload-certs, and
//!   downloaded and opened for a joining master;
//! - [`pod_network`]: `kprov pod-network sync`, the bridge network's
//!   node side;
//! - [`facts`]: what the diagnoses read from a node (the kubelet's state
//!   and journal, the static pods' logs, the host name), through the root
//!   and the runner so that tests can supply them.
//!
//! kprov's CLI turns flags into the specs here and prints what the
//! observer hears; `kprov cluster`, control-plane join and stage2 call the
//! same workflows as library code.

pub mod copy_certs;
pub mod etcd;
pub mod facts;
pub mod init;
pub mod join;
pub mod join_control_plane;
pub mod pod_network;
pub mod reset;
mod target;

pub use kprov_plan::workflow::{Observer, Quiet, Selection};
pub use target::Target;

/// Why a workflow failed. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A phase name that the workflow does not have.
    #[error(transparent)]
    UnknownPhase(#[from] kprov_plan::workflow::UnknownPhase),
    /// A host plan could not be applied.
    #[error("{context}: {source}")]
    Apply {
        /// What was being done.
        context: String,
        /// The engine's error (it names the resource).
        source: Box<kprov_plan::ApplyError>,
    },
    /// The PKI could not be made.
    #[error("{context}: {source}")]
    Pki {
        /// What was being done.
        context: String,
        /// The failure.
        source: Box<kprov_pki::PkiError>,
    },
    /// A call to the API server failed.
    #[error("{context}: {source}")]
    Api {
        /// What was being done.
        context: String,
        /// The failure.
        source: Box<kprov_kube::ApiError>,
    },
    /// The node could not be read or changed.
    #[error("{context}: {source}")]
    Host {
        /// What was being done.
        context: String,
        /// The failure.
        source: Box<kprov_host::HostError>,
    },
    /// The shared certificates could not be sealed or opened (a wrong
    /// certificate key, no upload).
    #[error(transparent)]
    CopyCerts(#[from] kprov_controlplane::copy_certs::CopyCertsError),
    /// The workflow stopped, for the reason given (a diagnosis, a
    /// refusal, a timeout).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// Adds what was being done to lower-level errors.
pub(crate) trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

macro_rules! context_for {
    ($source:ty, $variant:ident) => {
        impl<T> Context<T> for Result<T, $source> {
            fn context(self, context: impl FnOnce() -> String) -> Result<T, Error> {
                self.map_err(|source| Error::$variant {
                    context: context(),
                    source: Box::new(source),
                })
            }
        }
    };
}
context_for!(kprov_plan::ApplyError, Apply);
context_for!(kprov_pki::PkiError, Pki);
context_for!(kprov_kube::ApiError, Api);
context_for!(kprov_host::HostError, Host);

impl<T> Context<T> for Result<T, kprov_provision::facts::FactsError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::Failed(format!("{}: {e}", context())))
    }
}
