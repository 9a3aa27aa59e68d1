//! X.509 certificates: issuing them with rcgen the way kubeadm's Go code
//! does, and reading existing ones with x509-parser into [`CertInfo`], the
//! facts the reuse checks and `kprov pki check` look at.
//!
//! What kubeadm v1.20 puts in a certificate, and so what this module does:
//! version 3; a random positive serial; subject `O=...` before `CN=...`,
//! each as a PrintableString when it fits one; key usage (critical)
//! digitalSignature and keyEncipherment, plus keyCertSign for CAs; CAs get
//! basicConstraints CA:TRUE (critical, no path length) and a subject key
//! identifier; leaves get the extended key usages of their table row, the
//! CA's key identifier as authority key identifier, and their SANs (DNS
//! names, then IP addresses); CAs are valid from now for ten years, leaves
//! from their CA's start for one year from now. RSA keys sign with
//! SHA-256, P-256 keys with ECDSA-SHA256.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use crate::keys::{KeyError, PrivateKey, PublicKey};
use crate::table::{AltNames, ExtKeyUsage, Subject, CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS};

/// Why a certificate could not be read or issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// No PEM block in the bytes.
    #[error("not a PEM-encoded certificate")]
    NotPem,
    /// A PEM block that is not a certificate.
    #[error("PEM block is a {label:?}, expected \"CERTIFICATE\"")]
    WrongLabel {
        /// The label found.
        label: String,
    },
    /// A certificate block that does not parse as X.509.
    #[error("does not parse as an X.509 certificate: {reason}")]
    NotX509 {
        /// What the parser said.
        reason: String,
    },
    /// A certificate whose public key kprov cannot read.
    #[error("its public key is not RSA or ECDSA P-256")]
    UnsupportedKey,
    /// A key problem while issuing.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// rcgen refused to build the certificate.
    #[error("building the certificate: {reason}")]
    Build {
        /// What rcgen said.
        reason: String,
    },
}

fn build_err(e: impl std::fmt::Display) -> CertError {
    CertError::Build {
        reason: e.to_string(),
    }
}

/// What kprov reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name and organisations.
    pub subject: Subject,
    /// The whole subject as text, e.g. `CN=kubernetes`.
    pub subject_text: String,
    /// The whole issuer as text.
    pub issuer_text: String,
    /// The SANs, in the certificate's order.
    pub alt_names: AltNames,
    /// The extended key usages kprov knows.
    pub ext_key_usages: Vec<ExtKeyUsage>,
    /// True when the certificate has extended key usages other than
    /// serverAuth and clientAuth.
    pub other_ext_key_usages: bool,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// The key usage allows signing certificates (or is absent).
    pub can_sign_certificates: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The subject public key.
    pub public_key: PublicKey,
}

/// A certificate kprov read or issued: its DER, PEM and facts.
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    pem: String,
    info: CertInfo,
}

impl Certificate {
    /// Reads the first PEM block of `bytes` as a certificate.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, CertError> {
        let pem = Pem::iter_from_buffer(bytes)
            .next()
            .and_then(Result::ok)
            .ok_or(CertError::NotPem)?;
        if pem.label != "CERTIFICATE" {
            return Err(CertError::WrongLabel { label: pem.label });
        }
        Self::from_der(pem.contents)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CertError> {
        let info = {
            let x509 = parse(&der)?;
            info_of(&x509)?
        };
        let pem =
            sec1::der::pem::encode_string("CERTIFICATE", sec1::der::pem::LineEnding::LF, &der)
                .map_err(build_err)?;
        Ok(Self { der, pem, info })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding (one `CERTIFICATE` block), as kubeadm writes it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The facts read from it.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        parse(&self.der)
            .map(|x| x.public_key().raw.to_vec())
            .unwrap_or_default()
    }

    /// True when `ca` issued this certificate: the issuer name is the CA's
    /// subject, byte for byte (as Go's verifier requires), and the
    /// signature verifies with the CA's public key.
    pub fn is_signed_by(&self, ca: &Certificate) -> bool {
        let (Ok(me), Ok(ca)) = (parse(&self.der), parse(&ca.der)) else {
            return false;
        };
        me.issuer().as_raw() == ca.subject().as_raw()
            && me.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// True when `key` is the private key of this certificate.
    pub fn matches_key(&self, key: &PrivateKey) -> bool {
        self.info.public_key == key.public_key()
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, x)| x)
        .map_err(|e| CertError::NotX509 {
            reason: e.to_string(),
        })
}

fn not_x509(e: impl std::fmt::Display) -> CertError {
    CertError::NotX509 {
        reason: e.to_string(),
    }
}

fn info_of(x509: &X509Certificate<'_>) -> Result<CertInfo, CertError> {
    let subject = Subject {
        common_name: x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        organizations: x509
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
    };
    let mut alt_names = AltNames::default();
    if let Some(san) = x509.subject_alternative_name().map_err(not_x509)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => alt_names.dns.push(d.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        alt_names.ips.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let mut ext_key_usages = Vec::new();
    let mut other_ext_key_usages = false;
    if let Some(eku) = x509.extended_key_usage().map_err(not_x509)? {
        let eku = eku.value;
        if eku.server_auth {
            ext_key_usages.push(ExtKeyUsage::ServerAuth);
        }
        if eku.client_auth {
            ext_key_usages.push(ExtKeyUsage::ClientAuth);
        }
        other_ext_key_usages = eku.any
            || eku.code_signing
            || eku.email_protection
            || eku.time_stamping
            || eku.ocsp_signing
            || !eku.other.is_empty();
    }
    let is_ca = x509
        .basic_constraints()
        .map_err(not_x509)?
        .is_some_and(|bc| bc.value.ca);
    let can_sign_certificates = x509
        .key_usage()
        .map_err(not_x509)?
        .is_none_or(|ku| ku.value.key_cert_sign());
    let public_key =
        PublicKey::from_spki_der(x509.public_key().raw).map_err(|_| CertError::UnsupportedKey)?;
    Ok(CertInfo {
        subject,
        subject_text: x509.subject().to_string(),
        issuer_text: x509.issuer().to_string(),
        alt_names,
        ext_key_usages,
        other_ext_key_usages,
        is_ca,
        can_sign_certificates,
        not_before: x509.validity().not_before.to_datetime(),
        not_after: x509.validity().not_after.to_datetime(),
        public_key,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| crate::spec::canonical_ip(IpAddr::from(b))),
        _ => None,
    }
}

/// True for text Go would encode as an ASN.1 PrintableString.
fn is_printable(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b) || b == b'*' || b == b'&'
    })
}

fn dn_value(s: &str) -> DnValue {
    if is_printable(s) {
        if let Ok(p) = rcgen::PrintableString::try_from(s) {
            return DnValue::PrintableString(p);
        }
    }
    DnValue::Utf8String(s.to_string())
}

fn distinguished_name(subject: &Subject) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    // rcgen holds one value per attribute type; kubeadm's subjects have at
    // most one organisation.
    if let Some(o) = subject.organizations.first() {
        dn.push(DnType::OrganizationName, dn_value(o));
    }
    dn.push(DnType::CommonName, dn_value(&subject.common_name));
    dn
}

/// A random serial number below 2^63, as Go's kubeadm draws them.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes[0] &= 0x7f;
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

/// Whole seconds: certificates carry no fractions.
fn seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A CA that can sign: its certificate, its key, and rcgen's view of it.
pub struct Signer {
    cert: Certificate,
    key: PrivateKey,
    issuer: rcgen::Certificate,
    issuer_key: rcgen::KeyPair,
    has_key_identifier: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.cert.info.subject_text)
    }
}

impl Signer {
    /// A signer from a CA certificate and its key (which the caller has
    /// checked belong together). The issuer name written into leaves is
    /// the CA's subject as encoded in its certificate, and the authority
    /// key identifier its subject key identifier, so that chains build for
    /// CAs made by kubeadm too.
    pub fn new(cert: Certificate, key: PrivateKey) -> Result<Self, CertError> {
        let params =
            CertificateParams::from_ca_cert_der(&cert.der().to_vec().into()).map_err(build_err)?;
        // Without a subject key identifier there is nothing for an
        // authority key identifier to refer to (Go then writes none).
        let has_key_identifier = parse(cert.der())?
            .iter_extensions()
            .any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER);
        let issuer_key = key.signer()?;
        let issuer = params.self_signed(&issuer_key).map_err(build_err)?;
        Ok(Self {
            cert,
            key,
            issuer,
            issuer_key,
            has_key_identifier,
        })
    }

    /// The CA certificate.
    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    /// The CA key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Issues a leaf certificate for `public_key` (the public half of
    /// `key`).
    pub fn issue(
        &self,
        subject: &Subject,
        alt_names: &AltNames,
        ext_key_usages: &[ExtKeyUsage],
        key: &PrivateKey,
        now: OffsetDateTime,
    ) -> Result<Certificate, CertError> {
        let mut params = CertificateParams::default();
        params.serial_number = Some(random_serial());
        params.distinguished_name = distinguished_name(subject);
        params.not_before = self.cert.info.not_before;
        params.not_after = seconds(now) + Duration::days(LEAF_VALIDITY_DAYS);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = ext_key_usages
            .iter()
            .map(|u| match u {
                ExtKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                ExtKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        params.subject_alt_names = alt_names
            .dns
            .iter()
            .map(|d| {
                rcgen::Ia5String::try_from(d.as_str())
                    .map(SanType::DnsName)
                    .map_err(build_err)
            })
            .chain(alt_names.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, _>>()?;
        params.use_authority_key_identifier_extension = self.has_key_identifier;
        let subject_key = key.signer()?;
        let cert = params
            .signed_by(&subject_key, &self.issuer, &self.issuer_key)
            .map_err(build_err)?;
        Certificate::from_der(cert.der().to_vec())
    }
}

/// Issues a self-signed CA certificate for `key`.
pub fn issue_ca(
    subject: &Subject,
    key: &PrivateKey,
    now: OffsetDateTime,
) -> Result<Certificate, CertError> {
    let now = seconds(now);
    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial());
    params.distinguished_name = distinguished_name(subject);
    params.not_before = now;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let signer = key.signer()?;
    let cert = params.self_signed(&signer).map_err(build_err)?;
    Certificate::from_der(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::KeyType;

    fn subject(cn: &str, orgs: &[&str]) -> Subject {
        Subject {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn a_ca_signs_a_leaf_that_carries_what_was_asked() {
        for key_type in [KeyType::Rsa, KeyType::Ecdsa] {
            let now = OffsetDateTime::now_utc();
            let ca_key = PrivateKey::generate(key_type).unwrap();
            let ca = issue_ca(&subject("kubernetes", &[]), &ca_key, now).unwrap();
            assert!(ca.info().is_ca && ca.info().can_sign_certificates);
            assert!(ca.is_signed_by(&ca));
            assert_eq!(
                ca.info().not_after - ca.info().not_before,
                Duration::days(3650)
            );
            let signer = Signer::new(ca.clone(), ca_key).unwrap();
            let key = PrivateKey::generate(key_type).unwrap();
            let alt_names = AltNames {
                dns: vec!["kubernetes".into(), "master-1".into()],
                ips: vec!["10.96.0.1".parse().unwrap(), "::1".parse().unwrap()],
            };
            let leaf = signer
                .issue(
                    &subject("kube-apiserver-kubelet-client", &["system:masters"]),
                    &alt_names,
                    &[ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth],
                    &key,
                    now,
                )
                .unwrap();
            let info = leaf.info();
            assert_eq!(
                info.subject.to_string(),
                "O = system:masters, CN = kube-apiserver-kubelet-client"
            );
            assert_eq!(info.alt_names, alt_names);
            assert_eq!(
                info.ext_key_usages,
                vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
            );
            assert!(!info.is_ca);
            assert_eq!(info.not_before, ca.info().not_before);
            assert_eq!(info.not_after, seconds(now) + Duration::days(365));
            assert!(leaf.is_signed_by(&ca));
            assert!(leaf.matches_key(&key));
            assert!(!leaf.matches_key(signer.key()));
            // Round trip through PEM.
            let back = Certificate::from_pem(leaf.pem().as_bytes()).unwrap();
            assert_eq!(back.der(), leaf.der());
        }
    }

    #[test]
    fn a_leaf_of_another_ca_with_the_same_name_is_not_signed_by_this_one() {
        let now = OffsetDateTime::now_utc();
        let make = || {
            let key = PrivateKey::generate(KeyType::Ecdsa).unwrap();
            let ca = issue_ca(&subject("kubernetes", &[]), &key, now).unwrap();
            Signer::new(ca, key).unwrap()
        };
        let (a, b) = (make(), make());
        let key = PrivateKey::generate(KeyType::Ecdsa).unwrap();
        let leaf = a
            .issue(
                &subject("x", &[]),
                &AltNames::default(),
                &[ExtKeyUsage::ClientAuth],
                &key,
                now,
            )
            .unwrap();
        assert!(leaf.is_signed_by(a.cert()));
        assert!(!leaf.is_signed_by(b.cert()));
    }

    #[test]
    fn subjects_use_printable_strings_where_go_does() {
        assert!(is_printable("system:masters"));
        assert!(is_printable("kube-apiserver"));
        assert!(!is_printable("grüße"));
        assert!(!is_printable("under_score"));
    }

    #[test]
    fn bad_certificate_files_are_refused_with_what_was_found() {
        for (bytes, message) in [
            (
                &b"nothing here"[..],
                "not a PEM-encoded certificate".to_string(),
            ),
            (
                &b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"[..],
                "PEM block is a \"PUBLIC KEY\", expected \"CERTIFICATE\"".to_string(),
            ),
        ] {
            assert_eq!(
                Certificate::from_pem(bytes).unwrap_err().to_string(),
                message
            );
        }
        let err = Certificate::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("does not parse as an X.509 certificate: "),
            "{err}"
        );
    }
}
