//! The CA public-key hash that pins trust in the API server on join, as
//! kubeadm computes `--discovery-token-ca-cert-hash`: `sha256:` and the
//! lower-case hex of SHA-256 over the CA certificate's DER
//! SubjectPublicKeyInfo.

use sha2::{Digest, Sha256};

use crate::cert::{CertError, Certificate};

/// The hash of the CA certificate in `ca_pem` (its first PEM block).
pub fn ca_cert_hash(ca_pem: &[u8]) -> Result<String, CertError> {
    let cert = Certificate::from_pem(ca_pem)?;
    Ok(spki_hash(&cert.spki_der()))
}

/// `sha256:<hex>` of a DER SubjectPublicKeyInfo.
pub fn spki_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    use crate::cert::issue_ca;
    use crate::keys::PrivateKey;
    use crate::spec::KeyType;
    use crate::table::Subject;

    /// What the Kubernetes documentation prescribes to compute the hash:
    /// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
    /// sha256sum`.
    fn openssl_hash(pem: &str) -> String {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        format!("sha256:{}", text.split_whitespace().next().unwrap())
    }

    #[test]
    fn the_hash_is_what_openssl_computes_over_the_public_key() {
        for key_type in [KeyType::Rsa, KeyType::Ecdsa] {
            let key = PrivateKey::generate(key_type).unwrap();
            let subject = Subject {
                common_name: "kubernetes".into(),
                organizations: vec![],
            };
            let ca = issue_ca(&subject, &key, time::OffsetDateTime::now_utc()).unwrap();
            let hash = ca_cert_hash(ca.pem().as_bytes()).unwrap();
            assert_eq!(hash, openssl_hash(ca.pem()), "{key_type}");
            assert_eq!(hash.len(), "sha256:".len() + 64);
        }
    }

    #[test]
    fn the_hash_of_a_non_certificate_is_an_error() {
        assert_eq!(
            ca_cert_hash(b"hello").unwrap_err().to_string(),
            "not a PEM-encoded certificate"
        );
    }
}
