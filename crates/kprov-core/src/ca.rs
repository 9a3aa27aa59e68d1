//! The cluster CA certificate a node trusts (`--ca-cert`).
//!
//! Every PEM block of the file is parsed; a block that is not a
//! certificate (a private key pasted along, say) refuses the whole file,
//! naming the block. What kprov writes on a node or into user-data is
//! re-encoded from the parsed certificates only, so nothing else in the
//! file can travel with them.

use x509_parser::pem::Pem;

/// One or more PEM-encoded X.509 certificates that parsed successfully,
/// re-encoded (64-column base64, one block per certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pem: String,
    subject: String,
}

/// Why a CA certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// No PEM block at all, or a block that does not decode.
    #[error("not a PEM-encoded certificate: {reason}")]
    NotPem {
        /// What the PEM parser said.
        reason: String,
    },
    /// A PEM block that is not a certificate.
    #[error("block {index} is {label:?}, expected only CERTIFICATE blocks")]
    WrongLabel {
        /// The 1-based number of the block in the file.
        index: usize,
        /// The label of the block that was found.
        label: String,
    },
    /// A certificate block whose contents do not parse as X.509.
    #[error("block {index}: the certificate does not parse as X.509: {reason}")]
    NotX509 {
        /// The 1-based number of the block in the file.
        index: usize,
        /// What the X.509 parser said.
        reason: String,
    },
}

/// PEM with the base64 body in lines of 64 characters, as OpenSSL and Go
/// write it.
fn encode_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl CaCertificate {
    /// Parses every PEM block of `bytes` as an X.509 certificate; text
    /// outside the blocks is ignored and not kept.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, CaError> {
        let mut pem = String::new();
        let mut subject = None;
        for (i, block) in Pem::iter_from_buffer(bytes).enumerate() {
            let index = i + 1;
            let block = block.map_err(|e| CaError::NotPem {
                reason: format!("block {index}: {e}"),
            })?;
            if block.label != "CERTIFICATE" {
                return Err(CaError::WrongLabel {
                    index,
                    label: block.label,
                });
            }
            let cert = block.parse_x509().map_err(|e| CaError::NotX509 {
                index,
                reason: e.to_string(),
            })?;
            subject.get_or_insert_with(|| cert.subject().to_string());
            pem.push_str(&encode_pem("CERTIFICATE", &block.contents));
        }
        let subject = subject.ok_or_else(|| CaError::NotPem {
            reason: "no \"-----BEGIN CERTIFICATE-----\" block".into(),
        })?;
        Ok(Self { pem, subject })
    }

    /// The certificates, re-encoded as PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The first certificate's subject, e.g. `CN=kubernetes`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed EC certificate (`openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:prime256v1 -days 36500 -subj /CN=kubernetes`).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgDCCASegAwIBAgIUXFr+P+0Q2j4wk3kc6LwvPlcKbs0wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKa3ViZXJuZXRlczAgFw0yNjEyMDExNDUxMDFaGA8yMTI2MTEw
NzE0NTEwMVowFTETMBEGA1UEAwwKa3ViZXJuZXRlczBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABLXKYz5hOjhC26h+4Ta+cQ4MsypBnhMgegZh3FOGo++sGCQ5Z/V7
DsYuU3v3H/y302x5o5axi3yVUA81O4DpY6GjUzBRMB0GA1UdDgQWBBRf2ndc1sgS
QwhchxvhW1dqHA4LHTAfBgNVHSMEGDAWgBRf2ndc1sgSQwhchxvhW1dqHA4LHTAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCICi253Z/xLs8vZt3DMTH
hM5kVJtByZw9x8faz2w2ri1aAiAJJTDMNWZscOPXMsitg70iZH0URkJ6g4MYYr4i
1Daa0g==
-----END CERTIFICATE-----
";

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGZha2Uga2V5IG1hdGVyaWFsIGZvciB0ZXN0cyBvbmx5
-----END PRIVATE KEY-----
";

    #[test]
    fn certificates_are_accepted_and_re_encoded_without_anything_else() {
        for (input, blocks) in [
            (CERT.to_string(), 1),
            (format!("{CERT}{CERT}"), 2),
            (format!("# the cluster CA\n{CERT}\ntrailing words\n"), 1),
            (CERT.replace('\n', "\r\n"), 1),
        ] {
            let ca = CaCertificate::from_pem(input.as_bytes()).unwrap();
            assert_eq!(ca.pem(), CERT.repeat(blocks), "{input}");
            assert_eq!(ca.subject(), "CN=kubernetes");
        }
    }

    #[test]
    fn anything_but_certificates_is_refused_naming_the_block() {
        for (input, error) in [
            (
                format!("{CERT}{KEY}"),
                "block 2 is \"PRIVATE KEY\", expected only CERTIFICATE blocks",
            ),
            (
                format!("{KEY}{CERT}"),
                "block 1 is \"PRIVATE KEY\", expected only CERTIFICATE blocks",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
                "block 1: the certificate does not parse as X.509: ",
            ),
            (
                "just text\n".to_string(),
                "not a PEM-encoded certificate: no \"-----BEGIN CERTIFICATE-----\" block",
            ),
            (
                String::new(),
                "not a PEM-encoded certificate: no \"-----BEGIN CERTIFICATE-----\" block",
            ),
        ] {
            let err = CaCertificate::from_pem(input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(error), "{input:?}: {err}");
        }
    }

    #[test]
    fn pem_encoding_pads_and_wraps_like_openssl() {
        assert_eq!(encode_pem("X", b""), "-----BEGIN X-----\n-----END X-----\n");
        assert_eq!(
            encode_pem("X", b"ab"),
            "-----BEGIN X-----\nYWI=\n-----END X-----\n"
        );
        assert_eq!(
            encode_pem("X", &[0xff; 49]),
            format!(
                "-----BEGIN X-----\n{}\n{}\n-----END X-----\n",
                "/".repeat(64),
                "/w=="
            )
        );
    }
}
