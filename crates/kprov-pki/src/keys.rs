//! Private keys: generating them, reading them in the formats Kubernetes
//! writes (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, PKCS#8
//! `PRIVATE KEY`), and writing them as kubeadm does (PKCS#1 for RSA, SEC1
//! with the named curve for ECDSA), so that every Kubernetes component and
//! kubeadm itself reads them.
//!
//! Key material never appears in `Debug` output or error messages.
//!
//! RSA keys are generated and encoded with the RustCrypto `rsa` crate
//! (ring cannot generate RSA keys); all signing is done by ring through
//! rcgen. The `rsa` crate's timing advisory (RUSTSEC-2023-0071) concerns
//! its private-key decryption and signing, which kprov does not use.

use std::fmt;

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sec1::der::pem::LineEnding;
use sec1::der::Encode;
use x509_parser::pem::Pem;

use crate::spec::KeyType;

/// RSA modulus size kubeadm generates.
pub const RSA_BITS: usize = 2048;

/// Why a key could not be generated or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No PEM block in the bytes.
    #[error("not a PEM-encoded private key")]
    NotPem,
    /// A PEM block with a label that is not a private key.
    #[error("PEM block is a {label:?}, expected \"RSA PRIVATE KEY\", \"EC PRIVATE KEY\" or \"PRIVATE KEY\"")]
    WrongLabel {
        /// The label found.
        label: String,
    },
    /// A private-key block whose contents do not parse as an RSA or
    /// P-256 key.
    #[error("{label} block does not hold an RSA or ECDSA P-256 key")]
    Unsupported {
        /// The label of the block.
        label: String,
    },
    /// A public-key block that does not parse.
    #[error("not a PEM-encoded RSA or ECDSA P-256 public key")]
    BadPublicKey,
    /// Generating or encoding failed (not expected to happen).
    #[error("{action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// What the library said.
        reason: String,
    },
}

fn crypto(action: &'static str) -> impl Fn(&dyn fmt::Display) -> KeyError {
    move |e| KeyError::Crypto {
        action,
        reason: e.to_string(),
    }
}

/// A private key kprov can sign with.
#[derive(Clone)]
pub enum PrivateKey {
    /// An RSA key.
    Rsa(Box<RsaPrivateKey>),
    /// An ECDSA key on NIST P-256.
    EcdsaP256(p256::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.describe())
    }
}

/// A public key, to compare with a certificate's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA public key.
    Rsa(RsaPublicKey),
    /// An ECDSA P-256 public key.
    EcdsaP256(p256::PublicKey),
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo (as found in a certificate).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(k) = RsaPublicKey::from_public_key_der(der) {
            return Ok(Self::Rsa(k));
        }
        p256::PublicKey::from_public_key_der(der)
            .map(Self::EcdsaP256)
            .map_err(|_| KeyError::BadPublicKey)
    }

    /// Parses a PEM `PUBLIC KEY` block (`sa.pub`).
    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        let pem = first_pem(bytes).ok_or(KeyError::BadPublicKey)?;
        if pem.label != "PUBLIC KEY" {
            return Err(KeyError::BadPublicKey);
        }
        Self::from_spki_der(&pem.contents)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match self {
            Self::Rsa(k) => k.to_public_key_der(),
            Self::EcdsaP256(k) => k.to_public_key_der(),
        }
        .map_err(|e| crypto("encoding a public key")(&e))?;
        Ok(doc.as_bytes().to_vec())
    }

    /// The PEM `PUBLIC KEY` block, as kubeadm writes `sa.pub`.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let der = self.to_spki_der()?;
        sec1::der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &der)
            .map_err(|e| crypto("encoding a public key")(&e))
    }
}

fn first_pem(bytes: &[u8]) -> Option<Pem> {
    Pem::iter_from_buffer(bytes).next().and_then(Result::ok)
}

impl PrivateKey {
    /// Generates a new key of `key_type` from the operating system's
    /// random source.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let mut rng = rand_core::OsRng;
        Ok(match key_type {
            KeyType::Rsa => Self::Rsa(Box::new(
                RsaPrivateKey::new(&mut rng, RSA_BITS)
                    .map_err(|e| crypto("generating an RSA key")(&e))?,
            )),
            KeyType::Ecdsa => Self::EcdsaP256(p256::SecretKey::random(&mut rng)),
        })
    }

    /// Reads the first PEM block of `bytes` as a private key.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        let pem = first_pem(bytes).ok_or(KeyError::NotPem)?;
        let unsupported = || KeyError::Unsupported {
            label: pem.label.clone(),
        };
        match pem.label.as_str() {
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(&pem.contents)
                .map(|k| Self::Rsa(Box::new(k)))
                .map_err(|_| unsupported()),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&pem.contents)
                .map(Self::EcdsaP256)
                .map_err(|_| unsupported()),
            "PRIVATE KEY" => {
                if let Ok(k) = RsaPrivateKey::from_pkcs8_der(&pem.contents) {
                    return Ok(Self::Rsa(Box::new(k)));
                }
                p256::SecretKey::from_pkcs8_der(&pem.contents)
                    .map(Self::EcdsaP256)
                    .map_err(|_| unsupported())
            }
            other => Err(KeyError::WrongLabel {
                label: other.to_string(),
            }),
        }
    }

    /// The key as kubeadm writes it: PKCS#1 `RSA PRIVATE KEY`, or SEC1
    /// `EC PRIVATE KEY` naming the curve (Go's parser needs the curve
    /// there).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        match self {
            Self::Rsa(k) => k
                .to_pkcs1_pem(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| crypto("encoding an RSA key")(&e)),
            Self::EcdsaP256(k) => {
                let scalar = k.to_bytes();
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                );
                let der = sec1::EcPrivateKey {
                    private_key: &scalar,
                    parameters: Some(sec1::EcParameters::NamedCurve(
                        <p256::NistP256 as p256::elliptic_curve::pkcs8::AssociatedOid>::OID,
                    )),
                    public_key: Some(point.as_bytes()),
                }
                .to_der()
                .map_err(|e| crypto("encoding an ECDSA key")(&e))?;
                sec1::der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &der)
                    .map_err(|e| crypto("encoding an ECDSA key")(&e))
            }
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            Self::EcdsaP256(k) => PublicKey::EcdsaP256(k.public_key()),
        }
    }

    /// What kind of key this is, e.g. `RSA 2048`.
    pub fn describe(&self) -> String {
        match self {
            Self::Rsa(k) => format!("RSA {}", rsa::traits::PublicKeyParts::n(k.as_ref()).bits()),
            Self::EcdsaP256(_) => "ECDSA P-256".to_string(),
        }
    }

    /// The key as an rcgen signer (RSA keys sign with SHA-256 and
    /// PKCS#1 v1.5, P-256 keys with ECDSA and SHA-256, as Go does).
    pub(crate) fn signer(&self) -> Result<rcgen::KeyPair, KeyError> {
        let der = match self {
            Self::Rsa(k) => k.to_pkcs8_der(),
            Self::EcdsaP256(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| crypto("encoding a key for signing")(&e))?;
        rcgen::KeyPair::try_from(der.as_bytes())
            .map_err(|e| crypto("loading a key for signing")(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_kubeadms_pem_formats() {
        for (key_type, label, describe) in [
            (KeyType::Rsa, "RSA PRIVATE KEY", "RSA 2048"),
            (KeyType::Ecdsa, "EC PRIVATE KEY", "ECDSA P-256"),
        ] {
            let key = PrivateKey::generate(key_type).unwrap();
            assert_eq!(key.describe(), describe);
            let pem = key.to_pem().unwrap();
            assert!(
                pem.starts_with(&format!("-----BEGIN {label}-----\n")),
                "{label}"
            );
            let back = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(back.public_key(), key.public_key());
            // rcgen (ring) accepts it for signing.
            key.signer().unwrap();
            let public = key.public_key().to_pem().unwrap();
            assert_eq!(
                PublicKey::from_pem(public.as_bytes()).unwrap(),
                key.public_key()
            );
        }
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = PrivateKey::generate(KeyType::Ecdsa).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(ECDSA P-256)");
    }

    #[test]
    fn bad_key_files_are_refused_with_what_was_found() {
        for (bytes, message) in [
            (&b"garbage"[..], "not a PEM-encoded private key"),
            (
                &b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"[..],
                "PEM block is a \"CERTIFICATE\", expected \"RSA PRIVATE KEY\", \"EC PRIVATE KEY\" or \"PRIVATE KEY\"",
            ),
            (
                &b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"[..],
                "RSA PRIVATE KEY block does not hold an RSA or ECDSA P-256 key",
            ),
        ] {
            assert_eq!(PrivateKey::from_pem(bytes).unwrap_err().to_string(), message);
        }
    }
}
