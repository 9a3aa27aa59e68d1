//! Bootstrap tokens as the API server reads them: a Secret
//! `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in
//! kube-system, with its expiry, usages and extra groups. Pure: building,
//! reading and validating; the API calls are in [`crate::api`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kprov_core::BootstrapToken;
use rand_core::{OsRng, RngCore};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The Secret type the API server's token authenticator reads.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace of token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// The group kubeadm gives node-joining tokens, which the bootstrap RBAC
/// binds.
pub const DEFAULT_NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// kubeadm's default token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The name of a token's Secret.
pub fn secret_name(token_id: &str) -> String {
    format!("bootstrap-token-{token_id}")
}

/// The command that joins a node with `token`: the token goes in the
/// environment (`KPROV_TOKEN=...`), where other users cannot see it in the
/// process list, not on kprov's command line.
pub fn join_command_line(server: &str, token: &BootstrapToken, ca_hash: &str) -> String {
    format!(
        "KPROV_TOKEN={} kprov provision --phase all --api-server {server} --discovery-token-ca-cert-hash {ca_hash}",
        token.expose_secret()
    )
}

/// The command that joins a master with `token`, the shared certificates
/// opened with `certificate_key` (kubeadm's `join --control-plane
/// --certificate-key`). Both secrets go in the environment
/// (`KPROV_TOKEN`, `KPROV_CERTIFICATE_KEY`), never on the command line.
pub fn control_plane_join_command_line(
    server: &str,
    token: &BootstrapToken,
    ca_hash: &str,
    certificate_key: &crate::copy_certs::CertificateKey,
) -> String {
    format!(
        "KPROV_TOKEN={} KPROV_CERTIFICATE_KEY={} kprov provision --phase all --api-server {server} --discovery-token-ca-cert-hash {ca_hash} --control-plane",
        token.expose_secret(),
        certificate_key.expose_hex()
    )
}

/// A new random token: 6 + 16 characters of `[a-z0-9]` from the OS's
/// random source.
pub fn generate() -> BootstrapToken {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| {
                // Rejection sampling keeps the choice uniform.
                loop {
                    let b = (OsRng.next_u32() & 0xff) as usize;
                    if b < 252 {
                        return ALPHABET[b % 36] as char;
                    }
                }
            })
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
        .parse()
        .unwrap_or_else(|_| unreachable!("generated tokens have the token shape"))
}

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// Authenticate to the API server as `system:bootstrap:<id>`.
    Authentication,
    /// Sign cluster-info (discovery).
    Signing,
}

impl Usage {
    /// The name in the Secret's `usage-bootstrap-<name>` key.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Authentication => "authentication",
            Usage::Signing => "signing",
        }
    }
}

impl FromStr for Usage {
    type Err = TokenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "authentication" => Ok(Usage::Authentication),
            "signing" => Ok(Usage::Signing),
            other => Err(TokenSpecError::Usage(other.to_string())),
        }
    }
}

/// A token lifetime: a positive duration such as `24h`, `1h30m`, `90s`,
/// at most [`Ttl::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

/// The longest lifetime offered, as it is written in errors.
const MAX_TEXT: &str = "87600h (10 years)";

impl Ttl {
    /// The longest token lifetime: 10 years. A token meant to live longer
    /// is a token meant never to expire, which is not offered; and an
    /// expiry this far ahead still fits every date type on the way.
    pub const MAX: Duration = Duration::from_secs(87_600 * 3600);

    /// A lifetime kprov chooses itself (kubeadm-certs' two hours, a
    /// netboot machine's join token).
    pub const fn from_duration(d: Duration) -> Self {
        Self(d)
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Ttl {
    type Err = TokenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| TokenSpecError::Ttl {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.starts_with('-') {
            return Err(err("a token lifetime must be positive"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(err("expected a duration such as 24h, 1h30m or 90s")),
            };
            if digits.is_empty() {
                return Err(err("expected a number before each unit (h, m, s)"));
            }
            // A number too large for u64 is as much too long as any other.
            let n: u64 = digits.parse().unwrap_or(u64::MAX);
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .unwrap_or(u64::MAX);
            digits.clear();
        }
        // Go reads a bare "0" as a zero duration.
        if s.bytes().all(|b| b == b'0') && !s.is_empty() {
            return Err(err(
                "a token lifetime must be positive; a token that never expires is not offered",
            ));
        }
        if !digits.is_empty() || s.is_empty() {
            return Err(err("expected a duration such as 24h, 1h30m or 90s"));
        }
        if total == 0 {
            return Err(err(
                "a token lifetime must be positive; a token that never expires is not offered",
            ));
        }
        let ttl = Duration::from_secs(total);
        if ttl > Self::MAX {
            return Err(err(&format!("longer than the maximum of {MAX_TEXT}")));
        }
        Ok(Ttl(ttl))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

/// Why a token's settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenSpecError {
    /// A bad `--ttl`.
    #[error("--ttl {value}: {reason}")]
    Ttl {
        /// What was given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A bad `--usages` entry.
    #[error("--usages {0}: expected authentication or signing")]
    Usage(String),
    /// A bad `--groups` entry.
    #[error(
        "--groups {0}: expected system:bootstrappers:NAME, NAME of [a-z0-9:-] ending in [a-z0-9]"
    )]
    Group(String),
}

/// An extra group for a token's identity: `system:bootstrappers:…`, the
/// only prefix the API server's token authenticator accepts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenGroup(String);

impl FromStr for TokenGroup {
    type Err = TokenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("system:bootstrappers:")
            .ok_or_else(|| TokenSpecError::Group(s.to_string()))?;
        let ok = !rest.is_empty()
            && rest.len() <= 256
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
            && rest
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(TokenSpecError::Group(s.to_string()))
        }
    }
}

impl TokenGroup {
    /// The group name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything a token Secret says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The token.
    pub token: BootstrapToken,
    /// A note for humans.
    pub description: String,
    /// Its lifetime from creation.
    pub ttl: Ttl,
    /// What it may be used for.
    pub usages: Vec<Usage>,
    /// Extra groups of its identity.
    pub groups: Vec<TokenGroup>,
}

impl TokenSpec {
    /// A node-joining token as kubeadm makes it: both usages, the default
    /// node group, 24 hours.
    pub fn for_joining(token: BootstrapToken) -> Self {
        Self {
            token,
            description: "made by kprov for joining nodes".into(),
            ttl: Ttl(DEFAULT_TTL),
            usages: vec![Usage::Authentication, Usage::Signing],
            groups: vec![TokenGroup(DEFAULT_NODE_GROUP.into())],
        }
    }

    /// Whether cluster-info must carry a signature for this token.
    pub fn signs(&self) -> bool {
        self.usages.contains(&Usage::Signing)
    }
}

/// The Secret for `spec`, expiring `spec.ttl` after `now`.
pub fn secret(spec: &TokenSpec, now: OffsetDateTime) -> Secret {
    let expiry = (now + spec.ttl.duration())
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_else(|_| unreachable!("RFC 3339 formats every UTC time"));
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    data.insert("token-id".into(), spec.token.id().into());
    data.insert(
        "token-secret".into(),
        spec.token.expose_secret_part().into(),
    );
    data.insert("description".into(), spec.description.clone());
    data.insert("expiration".into(), expiry);
    for usage in &spec.usages {
        data.insert(format!("usage-bootstrap-{}", usage.name()), "true".into());
    }
    if !spec.groups.is_empty() {
        let groups: Vec<&str> = spec.groups.iter().map(TokenGroup::as_str).collect();
        data.insert("auth-extra-groups".into(), groups.join(","));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(spec.token.id())),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// What `kprov token list` shows of a token: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// The token id.
    pub id: String,
    /// When it expires (RFC 3339), if it does.
    pub expires: Option<String>,
    /// Its usages.
    pub usages: Vec<String>,
    /// Its extra groups.
    pub groups: Vec<String>,
    /// Its description.
    pub description: String,
}

/// Reads a token Secret; `None` for other Secrets.
pub fn token_info(secret: &Secret) -> Option<TokenInfo> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let field = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let id = field("token-id")?;
    let usages = data
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("usage-bootstrap-")?;
            (v.0 == b"true").then(|| name.to_string())
        })
        .collect();
    let groups = field("auth-extra-groups")
        .map(|g| g.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    Some(TokenInfo {
        id,
        expires: field("expiration"),
        usages,
        groups,
        description: field("description").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_command_passes_the_token_in_the_environment() {
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!(
            join_command_line("https://10.0.0.1:6443", &token, "sha256:00ff"),
            "KPROV_TOKEN=abcdef.0123456789abcdef kprov provision --phase all \
             --api-server https://10.0.0.1:6443 --discovery-token-ca-cert-hash sha256:00ff"
        );
    }

    #[test]
    fn the_master_join_command_passes_both_secrets_in_the_environment() {
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let key: crate::copy_certs::CertificateKey = "ab".repeat(32).parse().unwrap();
        assert_eq!(
            control_plane_join_command_line("https://10.0.0.1:6443", &token, "sha256:00ff", &key),
            format!(
                "KPROV_TOKEN=abcdef.0123456789abcdef KPROV_CERTIFICATE_KEY={} kprov provision \
                 --phase all --api-server https://10.0.0.1:6443 \
                 --discovery-token-ca-cert-hash sha256:00ff --control-plane",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn ttl_parses_go_style_durations_and_refuses_zero_and_negative() {
        assert_eq!("24h".parse::<Ttl>().unwrap().duration().as_secs(), 86400);
        assert_eq!("1h30m".parse::<Ttl>().unwrap().duration().as_secs(), 5400);
        assert_eq!("90s".parse::<Ttl>().unwrap().duration().as_secs(), 90);
        for bad in ["0", "0s", "0h0m", "-1h", "", "10", "1d", "h"] {
            let e = bad.parse::<Ttl>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("--ttl {bad}:")), "{bad}: {e}");
        }
        assert!("0s"
            .parse::<Ttl>()
            .unwrap_err()
            .to_string()
            .contains("positive"));
        assert!("-5m"
            .parse::<Ttl>()
            .unwrap_err()
            .to_string()
            .contains("positive"));
    }

    #[test]
    fn ttl_has_a_maximum_of_ten_years() {
        assert_eq!("87600h".parse::<Ttl>().unwrap().duration(), Ttl::MAX);
        for (bad, error) in [
            (
                "87600h1s",
                "--ttl 87600h1s: longer than the maximum of 87600h (10 years)",
            ),
            (
                "100000000h",
                "--ttl 100000000h: longer than the maximum of 87600h (10 years)",
            ),
            (
                "99999999999999999999999h",
                "--ttl 99999999999999999999999h: longer than the maximum of 87600h (10 years)",
            ),
            (
                "5124095576030431h",
                "--ttl 5124095576030431h: longer than the maximum of 87600h (10 years)",
            ),
            (
                "h1s",
                "--ttl h1s: expected a number before each unit (h, m, s)",
            ),
        ] {
            assert_eq!(bad.parse::<Ttl>().unwrap_err().to_string(), error);
        }
    }

    #[test]
    fn generated_tokens_are_well_formed_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 23);
    }

    #[test]
    fn secret_round_trips_through_token_info() {
        let spec = TokenSpec::for_joining("abcdef.0123456789abcdef".parse().unwrap());
        let now = OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        let s = secret(&spec, now);
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
        let info = token_info(&s).unwrap();
        assert_eq!(info.id, "abcdef");
        assert_eq!(info.expires.as_deref(), Some("2020-09-14T12:26:40Z"));
        assert_eq!(info.usages, vec!["authentication", "signing"]);
        assert_eq!(info.groups, vec![DEFAULT_NODE_GROUP]);
        let shown = serde_json::to_string(&info).unwrap();
        assert!(!shown.contains("0123456789abcdef"));
    }

    #[test]
    fn groups_must_be_bootstrappers() {
        assert!("system:bootstrappers:kubeadm:default-node-token"
            .parse::<TokenGroup>()
            .is_ok());
        for bad in [
            "system:masters",
            "system:bootstrappers:",
            "system:bootstrappers:a-",
        ] {
            assert!(bad.parse::<TokenGroup>().is_err(), "{bad}");
        }
    }
}
