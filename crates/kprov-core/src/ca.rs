//! The cluster CA certificate a node trusts (`--ca-cert`).

use x509_parser::pem::parse_x509_pem;

/// A PEM-encoded X.509 certificate that parsed successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pem: String,
    subject: String,
}

/// Why a CA certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The bytes are not a PEM block.
    #[error("not a PEM-encoded certificate: {reason}")]
    NotPem {
        /// What the PEM parser said.
        reason: String,
    },
    /// A PEM block, but not a certificate.
    #[error("PEM block is a {label:?}, expected \"CERTIFICATE\"")]
    WrongLabel {
        /// The label of the block that was found.
        label: String,
    },
    /// A certificate block whose contents do not parse as X.509.
    #[error("PEM certificate does not parse as X.509: {reason}")]
    NotX509 {
        /// What the X.509 parser said.
        reason: String,
    },
}

impl CaCertificate {
    /// Parses the first PEM block of `bytes` as an X.509 certificate.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, CaError> {
        let (_, pem) = parse_x509_pem(bytes).map_err(|e| CaError::NotPem {
            reason: e.to_string(),
        })?;
        if pem.label != "CERTIFICATE" {
            return Err(CaError::WrongLabel { label: pem.label });
        }
        let cert = pem.parse_x509().map_err(|e| CaError::NotX509 {
            reason: e.to_string(),
        })?;
        let subject = cert.subject().to_string();
        Ok(Self {
            pem: String::from_utf8_lossy(bytes).into_owned(),
            subject,
        })
    }

    /// The PEM text as given.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The certificate's subject, e.g. `CN=kubernetes`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}
