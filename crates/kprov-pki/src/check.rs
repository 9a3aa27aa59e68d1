//! `kprov pki check`: every certificate of the table (and the client
//! certificates embedded in the kubeconfigs) with subject, expiry and the
//! time left, computed from file contents and the time, without side
//! effects.

use time::{Duration, OffsetDateTime};

use crate::cert::Certificate;
use crate::generate::{rfc3339, Found, KUBECONFIG_FILES};
use crate::kubeconfig::Kubeconfig;
use crate::table::{cert_def, CERTIFICATES};

/// The state of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CertState {
    /// The file does not exist.
    Missing,
    /// The file exists but cannot be used.
    Invalid {
        /// Why.
        reason: String,
    },
    /// A readable certificate.
    Present {
        /// Its subject.
        subject: String,
        /// When it expires (RFC 3339).
        not_after: String,
        /// Seconds until it expires; negative once expired.
        remaining_seconds: i64,
        /// True once expired.
        expired: bool,
    },
}

/// One row of the check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertStatus {
    /// kubeadm's name for it (`apiserver`, `admin.conf`).
    pub name: String,
    /// Its file, relative to the cert dir or the kubeconfig dir.
    pub file: String,
    /// The name of the CA that should have signed it; empty for CAs.
    pub ca: String,
    /// What was found.
    #[serde(flatten)]
    pub state: CertState,
}

impl CertStatus {
    /// True when the certificate exists and is expired or unusable: what
    /// makes `kprov pki check` fail.
    pub fn is_bad(&self) -> bool {
        match &self.state {
            CertState::Missing => false,
            CertState::Invalid { .. } => true,
            CertState::Present { expired, .. } => *expired,
        }
    }
}

fn present(cert: &Certificate, now: OffsetDateTime) -> CertState {
    let info = cert.info();
    let remaining: Duration = info.not_after - now;
    CertState::Present {
        subject: info.subject_text.clone(),
        not_after: rfc3339(info.not_after),
        remaining_seconds: remaining.whole_seconds(),
        expired: remaining <= Duration::ZERO,
    }
}

/// Checks the cert dir's certificates (CAs included) and, when
/// `kubeconfigs` is given, the kubeconfigs' client certificates. The CA
/// that should have signed each one is read from `certs` and its
/// signature verified.
pub fn check(certs: &Found, kubeconfigs: Option<&Found>, now: OffsetDateTime) -> Vec<CertStatus> {
    let ca_of = |name: &str| {
        cert_def(name)
            .and_then(|d| certs.get(&d.cert_file()))
            .and_then(|b| Certificate::from_pem(b).ok())
    };
    let judge = |cert: Result<Certificate, String>, ca_name: Option<&str>| match cert {
        Err(reason) => CertState::Invalid { reason },
        Ok(cert) => match ca_name.map(|n| (n, ca_of(n))) {
            Some((n, Some(ca))) if !cert.is_signed_by(&ca) => CertState::Invalid {
                reason: format!("not signed by {n} ({})", cert.info().issuer_text),
            },
            _ => present(&cert, now),
        },
    };
    let mut rows = Vec::new();
    for def in CERTIFICATES {
        let file = def.cert_file();
        let state = match certs.get(&file) {
            None => CertState::Missing,
            Some(bytes) => judge(
                Certificate::from_pem(bytes).map_err(|e| e.to_string()),
                def.ca,
            ),
        };
        rows.push(CertStatus {
            name: def.name.to_string(),
            file,
            ca: def.ca.unwrap_or_default().to_string(),
            state,
        });
    }
    if let Some(kubeconfigs) = kubeconfigs {
        for file in KUBECONFIG_FILES {
            let Some(bytes) = kubeconfigs.get(file) else {
                // super-admin.conf exists from v1.29 only; kubelet.conf may
                // be elsewhere: neither is an error when absent.
                if !matches!(*file, "super-admin.conf" | "kubelet.conf") {
                    rows.push(CertStatus {
                        name: file.to_string(),
                        file: file.to_string(),
                        ca: "ca".into(),
                        state: CertState::Missing,
                    });
                }
                continue;
            };
            let cert = Kubeconfig::from_yaml(bytes)
                .and_then(|k| k.current_credentials())
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    Certificate::from_pem(&c.client_cert_pem)
                        .map_err(|e| format!("client certificate: {e}"))
                });
            // A kubelet.conf that points at rotated certificate files
            // instead of embedding one is the kubelet's business.
            if *file == "kubelet.conf" && cert.is_err() {
                continue;
            }
            rows.push(CertStatus {
                name: file.to_string(),
                file: file.to_string(),
                ca: "ca".into(),
                state: judge(cert, Some("ca")),
            });
        }
    }
    rows
}

/// A short human form of a duration, as kubeadm's `RESIDUAL TIME`:
/// `9y`, `364d`, `23h`, `59m`, or `expired`.
pub fn short_duration(seconds: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const YEAR: i64 = 365 * DAY;
    match seconds {
        s if s <= 0 => "expired".to_string(),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < 2 * DAY => format!("{}h", s / HOUR),
        s if s < 2 * YEAR => format!("{}d", s / DAY),
        s => format!("{}y", s / YEAR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubeadms_residual_time() {
        for (seconds, text) in [
            (-5, "expired"),
            (0, "expired"),
            (59, "0m"),
            (3599, "59m"),
            (3600, "1h"),
            (47 * 3600, "47h"),
            (2 * 86400, "2d"),
            (364 * 86400 + 3600, "364d"),
            (3649 * 86400, "9y"),
        ] {
            assert_eq!(short_duration(seconds), text, "{seconds}");
        }
    }
}
