//! Bootstrap tokens (`abcdef.0123456789abcdef`), the secret a node joins with.

use std::fmt;
use std::str::FromStr;

/// A bootstrap token: a public 6-character id and a 16-character secret,
/// both `[a-z0-9]`. `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

/// Why a token was refused. The message never repeats the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}} (e.g. abcdef.0123456789abcdef), got {shape}")]
pub struct TokenError {
    /// A description of the shape of what was given, without its characters.
    shape: String,
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl FromStr for BootstrapToken {
    type Err = TokenError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once('.') {
            Some((id, secret)) if is_token_part(id, 6) && is_token_part(secret, 16) => Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(TokenError {
                shape: describe_shape(value),
            }),
        }
    }
}

/// Describes a rejected token without echoing it: a secret typed in the
/// wrong flag must not end up in logs.
fn describe_shape(value: &str) -> String {
    let parts: Vec<String> = value
        .split('.')
        .map(|p| {
            let kind = if p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                "[a-z0-9]"
            } else {
                "other characters"
            };
            format!("{} {}", p.len(), kind)
        })
        .collect();
    format!(
        "{} part(s) separated by '.': {}",
        parts.len(),
        parts.join(", ")
    )
}

impl BootstrapToken {
    /// The public token id (the part before the dot).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part alone: the HMAC key of cluster-info's signatures.
    /// Callers must keep it out of logs.
    pub fn expose_secret_part(&self) -> &str {
        &self.secret
    }

    /// The whole token, `id.secret`, for writing into files that need it.
    /// Callers must keep it out of logs and write it 0600.
    pub fn expose_secret(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.<redacted>", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_tokens_parse_and_hide_their_secret() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!(t.id(), "abcdef");
        assert_eq!(t.expose_secret(), "abcdef.0123456789abcdef");
        assert_eq!(t.to_string(), "abcdef.<redacted>");
        assert!(!format!("{t:?}").contains("0123456789"));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for (text, shape) in [
            (
                "AAAAAAAAAAAAAAAA",
                "1 part(s) separated by '.': 16 other characters",
            ),
            (
                "zzzzzz.999999999999999",
                "2 part(s) separated by '.': 6 [a-z0-9], 15 [a-z0-9]",
            ),
            (
                "ABCDEF.0123456789abcdef",
                "2 part(s) separated by '.': 6 other characters, 16 [a-z0-9]",
            ),
            ("", "1 part(s) separated by '.': 0 [a-z0-9]"),
        ] {
            let err = text.parse::<BootstrapToken>().unwrap_err().to_string();
            assert!(err.ends_with(shape), "{text}: {err}");
            assert!(err.starts_with("malformed bootstrap token: expected [a-z0-9]{6}.[a-z0-9]{16}"));
            if !text.is_empty() {
                assert!(!err.contains(text));
            }
        }
    }
}
