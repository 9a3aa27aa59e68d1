//! Where setup.sh fetches kprov from (`--provision-source`) and the sha256
//! it must have (`--provision-sha256`).
//!
//! Only what setup.sh can fetch with the tools every node has is accepted:
//! `http://` and `https://` (curl or wget) and `file://` (cp, for a binary
//! on a mounted disk or baked into the image). Anything else, such as
//! `ftp://`, is refused before anything is rendered.

use std::fmt;
use std::str::FromStr;

/// The flag this module's values come from, for error messages.
const SOURCE_FLAG: &str = "--provision-source";

/// A validated `--provision-source` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionSource {
    url: String,
    kind: SourceKind,
}

/// How setup.sh fetches a [`ProvisionSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `http://` or `https://`: curl, or wget where curl is missing.
    Http,
    /// `file://`: a copy of a local file.
    File {
        /// The file's absolute path on the node, percent-decoded.
        path: String,
    },
}

/// Why a `--provision-source` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Not of the form `scheme://...` at all.
    #[error("invalid {SOURCE_FLAG} {value:?}: expected an http://, https:// or file:// URL, e.g. https://example.com/kprov or file:///opt/kprov/kprov")]
    NotAUrl {
        /// The value given.
        value: String,
    },
    /// A scheme setup.sh cannot fetch from.
    #[error("invalid {SOURCE_FLAG} {value:?}: unsupported scheme {scheme:?}; expected an http://, https:// or file:// URL")]
    UnsupportedScheme {
        /// The value given.
        value: String,
        /// Its scheme.
        scheme: String,
    },
    /// User name or password in the URL. The value is not repeated: it
    /// holds a secret.
    #[error("invalid {SOURCE_FLAG}: the URL carries credentials (user@ or user:password@), which would end up in logs and on the node's console; serve kprov without them")]
    Credentials,
    /// Well-formed scheme, bad rest.
    #[error("invalid {SOURCE_FLAG} {value:?}: {reason}")]
    Malformed {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Bytes allowed unescaped in a URL's path and query (RFC 3986 unreserved,
/// sub-delims, `:`, `@`, `/`, `?`); `%` starts an escape.
fn is_url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

impl FromStr for ProvisionSource {
    type Err = SourceError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: String| SourceError::Malformed {
            value: value.to_string(),
            reason,
        };
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(SourceError::NotAUrl {
                value: value.to_string(),
            });
        };
        let scheme_ok = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(SourceError::NotAUrl {
                value: value.to_string(),
            });
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" && scheme != "file" {
            return Err(SourceError::UnsupportedScheme {
                value: value.to_string(),
                scheme,
            });
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(SourceError::Credentials);
        }
        if let Some((i, c)) = path
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii() && (is_url_char(c as u8) || c == '%')))
        {
            let what = match c {
                '#' => "a fragment ('#') is never sent to the server".to_string(),
                c if c.is_whitespace() || c.is_control() => {
                    format!("character {c:?} must be percent-encoded")
                }
                c => format!("character {c:?} must be percent-encoded"),
            };
            return Err(malformed(format!(
                "{what} (at byte {})",
                authority.len() + i + scheme.len() + 3
            )));
        }
        let decoded = percent_decode(path).map_err(malformed)?;
        let file_path = decoded.split('?').next().unwrap_or_default();
        if file_path.is_empty() || file_path == "/" || file_path.ends_with('/') {
            return Err(malformed(
                "expected the URL of the kprov binary itself, not of a directory".to_string(),
            ));
        }
        let kind = if scheme == "file" {
            if !authority.is_empty() && authority != "localhost" {
                return Err(malformed(format!(
                    "a file:// URL names a file on the node itself: expected file:///PATH, got host {authority:?}"
                )));
            }
            if path.contains('?') {
                return Err(malformed("a file:// URL cannot have a query ('?')".into()));
            }
            if decoded.bytes().any(|b| b.is_ascii_control()) {
                return Err(malformed(
                    "the path has control characters once percent-decoded".into(),
                ));
            }
            SourceKind::File { path: decoded }
        } else {
            check_authority(authority).map_err(malformed)?;
            SourceKind::Http
        };
        let url = format!("{scheme}://{rest}");
        Ok(Self { url, kind })
    }
}

/// Host (a DNS name, an IPv4 address or a bracketed IPv6 address) and an
/// optional port.
fn check_authority(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("expected a host after the scheme, e.g. https://example.com/kprov".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("unterminated IPv6 address in {authority:?}"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return Err(format!("unexpected {p:?} after the IPv6 address")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if !host_ok {
        return Err(format!(
            "{host:?} is not a host name or address (letters, digits, '.' and '-')"
        ));
    }
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !ok {
            return Err(format!("port {port:?} is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => return Err(format!("bad percent-escape at byte {i} of the path")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 once percent-decoded".to_string())
}

impl ProvisionSource {
    /// The URL, with its scheme in lower case.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How setup.sh fetches it.
    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }
}

impl fmt::Display for ProvisionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The sha256 of the kprov binary, pinned in the rendered config: 64
/// lower-case hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Digest(String);

/// Why a sha256 was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --provision-sha256 {value:?}: expected 64 hexadecimal digits (as printed by sha256sum)")]
pub struct DigestError {
    /// The value given.
    pub value: String,
}

impl FromStr for Sha256Digest {
    type Err = DigestError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(DigestError {
                value: value.to_string(),
            })
        }
    }
}

impl Sha256Digest {
    /// The digest as 64 lower-case hexadecimal digits.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_urls_are_accepted() {
        for (text, url, kind) in [
            (
                "https://example.com/kprov",
                "https://example.com/kprov",
                SourceKind::Http,
            ),
            (
                "HTTP://10.0.0.1:8080/bin/kprov-v1?arch=amd64",
                "http://10.0.0.1:8080/bin/kprov-v1?arch=amd64",
                SourceKind::Http,
            ),
            (
                "http://[fd00::1]:80/kprov",
                "http://[fd00::1]:80/kprov",
                SourceKind::Http,
            ),
            (
                "file:///opt/kprov/kprov",
                "file:///opt/kprov/kprov",
                SourceKind::File {
                    path: "/opt/kprov/kprov".into(),
                },
            ),
            (
                "file://localhost/mnt/my%20disk/kprov",
                "file://localhost/mnt/my%20disk/kprov",
                SourceKind::File {
                    path: "/mnt/my disk/kprov".into(),
                },
            ),
        ] {
            let s: ProvisionSource = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.url(), url, "{text}");
            assert_eq!(s.kind(), &kind, "{text}");
        }
    }

    #[test]
    fn ftp_is_refused_naming_the_value_and_what_is_expected() {
        let err = "ftp://example.com/kprov"
            .parse::<ProvisionSource>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --provision-source \"ftp://example.com/kprov\": unsupported scheme \"ftp\"; expected an http://, https:// or file:// URL"
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_the_reason() {
        for (text, want) in [
            ("kprov", "expected an http://, https:// or file:// URL"),
            (
                "/opt/kprov/kprov",
                "expected an http://, https:// or file:// URL",
            ),
            ("s3://bucket/kprov", "unsupported scheme \"s3\""),
            ("https://", "expected the URL of the kprov binary itself"),
            ("https:///kprov", "expected a host after the scheme"),
            (
                "https://example.com/",
                "expected the URL of the kprov binary itself, not of a directory",
            ),
            (
                "https://example.com",
                "expected the URL of the kprov binary itself",
            ),
            (
                "https://example.com:99999/kprov",
                "port \"99999\" is not a number from 1 to 65535",
            ),
            (
                "https://exa mple.com/kprov",
                "\"exa mple.com\" is not a host name or address",
            ),
            (
                "https://example.com/k prov",
                "character ' ' must be percent-encoded (at byte 21)",
            ),
            (
                "https://example.com/kprov#x",
                "a fragment ('#') is never sent to the server",
            ),
            ("https://example.com/k%zzprov", "bad percent-escape"),
            (
                "file://server/kprov",
                "expected file:///PATH, got host \"server\"",
            ),
            ("file:///opt/kprov%0a", "control characters"),
            ("http://[fd00::zz]/kprov", "is not an IPv6 address"),
        ] {
            let err = text.parse::<ProvisionSource>().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(
                err.starts_with("invalid --provision-source"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn credentials_are_refused_without_repeating_them() {
        let err = "https://admin:hunter2@example.com/kprov"
            .parse::<ProvisionSource>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("carries credentials"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn digests_are_64_hex_digits_in_lower_case() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(
            upper.parse::<Sha256Digest>().unwrap().as_hex(),
            upper.to_ascii_lowercase()
        );
        for bad in ["", "abc", &format!("{upper}0"), &upper.replace('E', "g")] {
            assert_eq!(
                bad.parse::<Sha256Digest>().unwrap_err().to_string(),
                format!("invalid --provision-sha256 {bad:?}: expected 64 hexadecimal digits (as printed by sha256sum)")
            );
        }
    }
}
