//! Errors of the PKI phases. Each names the file concerned (as a path on
//! the node) and, where the user must act, says what to do.

use std::path::PathBuf;

use kprov_host::HostError;

use crate::cert::CertError;
use crate::keys::KeyError;
use crate::kubeconfig::KubeconfigError;

/// Why the PKI or the kubeconfigs could not be made, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read (other than not existing).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: HostError,
    },
    /// The phase's files could not be written.
    #[error("writing in {dir}: {source}")]
    Apply {
        /// The directory.
        dir: PathBuf,
        /// What failed, and for which file.
        source: kprov_plan::ApplyError,
    },
    /// An existing certificate file that is not a readable certificate.
    #[error("existing certificate {path}: {source}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CertError,
    },
    /// An existing key file that is not a readable key.
    #[error("existing key {path}: {source}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// An existing kubeconfig that does not parse.
    #[error("existing kubeconfig {path}: {source}")]
    BadKubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KubeconfigError,
    },
    /// Half of a pair exists and the missing half cannot be made from it.
    #[error("{path} exists but {missing} does not: {advice}")]
    Orphan {
        /// The file that exists.
        path: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
        /// What the user can do.
        advice: &'static str,
    },
    /// An existing file that differs from what kprov would make.
    #[error(
        "existing {what} {path} cannot be reused: {}. kprov never replaces an existing {what}: {advice}",
        problems.join("; ")
    )]
    Conflict {
        /// "certificate", "CA certificate", "key pair" or "kubeconfig".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Each difference, e.g. "its SANs lack DNS:cp.example.test".
        problems: Vec<String>,
        /// What the user can do.
        advice: String,
    },
    /// A certificate must be issued but the CA's key is not there.
    #[error("{ca_key} does not exist, so {what} cannot be signed: put the CA's key there, or provide {what} signed by {ca_cert} yourself")]
    CaKeyMissing {
        /// The CA key file expected.
        ca_key: PathBuf,
        /// The CA certificate.
        ca_cert: PathBuf,
        /// What needed signing.
        what: PathBuf,
    },
    /// The cluster CA is needed (kubeconfigs, CA hash) but does not exist.
    #[error("{path} does not exist: run `kprov pki` first to make the cluster CA")]
    NoCa {
        /// The CA certificate expected.
        path: PathBuf,
    },
    /// Generating a key failed.
    #[error("generating a key: {0}")]
    Generate(#[source] KeyError),
    /// Issuing or encoding a certificate failed.
    #[error("issuing {what}: {source}")]
    Issue {
        /// The certificate concerned.
        what: PathBuf,
        /// What failed.
        source: CertError,
    },
    /// Encoding a key or kubeconfig failed.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// The file concerned.
        what: PathBuf,
        /// What failed.
        reason: String,
    },
}
