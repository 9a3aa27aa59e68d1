//! Container image references, in the grammar of the distribution project
//! (what Docker, containerd and the kubelet accept), and image registries
//! (`--image-registry`: where images are named, without a tag).
//!
//! ```text
//! reference  := name [":" tag] ["@" digest]
//! name       := [domain "/"] path            (at most 255 characters)
//! domain     := host [":" port]              host: dot-separated components of
//!                                            [A-Za-z0-9-], or [IPv6]
//! path       := component ("/" component)*   component: [a-z0-9]+ joined by
//!                                            ".", "_", "__" or "-"+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex            algorithm: [A-Za-z][A-Za-z0-9]* joined
//!                                            by [+._-]; hex: 32 or more hex digits
//! ```
//!
//! The first component of a name is its domain when it holds a `.` or a
//! `:`, is `localhost`, or has an upper-case letter, as Docker decides.
//! Nothing else (spaces, newlines, `%`, quotes) can be in a valid
//! reference, so one can be written into a unit file or a manifest as is.

use std::fmt;
use std::str::FromStr;

/// Why a reference or registry was refused; callers name the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Not an image reference.
    #[error("not an image reference: {reason}; expected NAME[:TAG][@DIGEST] such as registry.k8s.io/pause:3.9")]
    Reference {
        /// What is wrong.
        reason: String,
    },
    /// Not a registry (with an optional path).
    #[error("expected a registry host with an optional path, such as registry.example.com:5000/mirror (no tag or digest): {reason}")]
    Registry {
        /// What is wrong.
        reason: String,
    },
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: runs of `[a-z0-9]` joined by `.`, `_`, `__` or
/// one or more `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    let bytes = c.as_bytes();
    let bad = || {
        format!("path component {c:?} is not lower-case letters and digits joined by '.', '_', '__' or '-'")
    };
    if bytes.is_empty() {
        return Err("it has an empty path component".into());
    }
    if !is_alnum_lower(bytes[0]) || !is_alnum_lower(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum_lower(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum_lower(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    path.split('/').try_for_each(check_path_component)
}

/// `host[:port]`: a domain name or a bracketed IPv6 address, and digits.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || format!("registry {domain:?} is not HOST[:PORT]");
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not 1 to 128 of [A-Za-z0-9_.-] starting with a letter, digit or '_'"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || format!("digest {digest:?} is not ALGORITHM:HEX such as sha256:<64 hex digits>");
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if algorithm_ok && hex_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Splits `name` into its domain (if its first component is one) and
/// its path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// A valid image reference, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    text: String,
    domain_len: Option<usize>,
    name_len: usize,
    tag: Option<(usize, usize)>,
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| ImageRefError::Reference { reason };
        if value.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if let Some(c) = value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(refuse(format!("it has {c:?}")));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (value, None),
        };
        // A ':' after the last '/' starts the tag (an earlier one is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if name.len() > 255 {
            return Err(refuse(format!(
                "its name has {} characters, at most 255 are allowed",
                name.len()
            )));
        }
        let (domain, path) = split_domain(name);
        if let Some(domain) = domain {
            check_domain(domain).map_err(refuse)?;
        }
        check_path(path).map_err(refuse)?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(refuse)?;
        }
        if let Some(digest) = digest {
            check_digest(digest).map_err(refuse)?;
        }
        Ok(Self {
            text: value.to_string(),
            domain_len: domain.map(str::len),
            name_len: name.len(),
            tag: tag.map(|t| (name.len() + 1, t.len())),
        })
    }
}

impl ImageRef {
    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The registry part (`registry.k8s.io`, `localhost:5000`), if the
    /// reference names one.
    pub fn domain(&self) -> Option<&str> {
        self.domain_len.map(|n| &self.text[..n])
    }

    /// The repository path (`coredns/coredns`).
    pub fn path(&self) -> &str {
        let start = self.domain_len.map_or(0, |n| n + 1);
        &self.text[start..self.name_len]
    }

    /// The tag (`v1.8.0`), if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.map(|(at, len)| &self.text[at..at + len])
    }

    /// The digest (`sha256:...`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.text.split_once('@').map(|(_, d)| d)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where images are named (`--image-registry`): a registry host with an
/// optional port and path, no tag or digest (`registry.example.com:5000/k8s`).
/// A trailing `/` is dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRegistry(String);

impl FromStr for ImageRegistry {
    type Err = ImageRefError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| ImageRefError::Registry { reason };
        let trimmed = value.strip_suffix('/').unwrap_or(value);
        if trimmed.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if let Some(c) = trimmed
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(refuse(format!("it has {c:?}")));
        }
        if trimmed.contains('@') {
            return Err(refuse("it has a digest".into()));
        }
        let (domain, path) = match trimmed.split_once('/') {
            Some((d, p)) => (d, Some(p)),
            None => (trimmed, None),
        };
        check_domain(domain).map_err(refuse)?;
        if let Some(path) = path {
            if path.contains(':') {
                return Err(refuse("it has a tag".into()));
            }
            check_path(path).map_err(refuse)?;
        }
        if trimmed.len() > 200 {
            return Err(refuse(format!(
                "it has {} characters, which leaves no room for image names",
                trimmed.len()
            )));
        }
        Ok(Self(trimmed.to_string()))
    }
}

impl ImageRegistry {
    /// The registry and path, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_split_into_their_parts() {
        let with_digest = format!("registry.k8s.io/pause:3.9@{DIGEST}");
        let only_digest = format!("busybox@{DIGEST}");
        for (text, domain, path, tag, digest) in [
            (
                "registry.k8s.io/pause:3.9",
                Some("registry.k8s.io"),
                "pause",
                Some("3.9"),
                None,
            ),
            (
                "k8s.gcr.io/coredns/coredns:v1.8.0",
                Some("k8s.gcr.io"),
                "coredns/coredns",
                Some("v1.8.0"),
                None,
            ),
            (
                "localhost:5000/pause",
                Some("localhost:5000"),
                "pause",
                None,
                None,
            ),
            (
                "localhost/pause:1",
                Some("localhost"),
                "pause",
                Some("1"),
                None,
            ),
            (
                "[::1]:5000/a/b:c",
                Some("[::1]:5000"),
                "a/b",
                Some("c"),
                None,
            ),
            ("Registry/pause", Some("Registry"), "pause", None, None),
            ("busybox", None, "busybox", None, None),
            (
                "library/busybox:1.35.0",
                None,
                "library/busybox",
                Some("1.35.0"),
                None,
            ),
            (
                "x/a__b.c-d---e/f_g:_T.a-g",
                None,
                "x/a__b.c-d---e/f_g",
                Some("_T.a-g"),
                None,
            ),
            (
                &with_digest,
                Some("registry.k8s.io"),
                "pause",
                Some("3.9"),
                Some(DIGEST),
            ),
            (&only_digest, None, "busybox", None, Some(DIGEST)),
        ] {
            let r: ImageRef = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (r.domain(), r.path(), r.tag(), r.digest()),
                (domain, path, tag, digest),
                "{text}"
            );
            assert_eq!(r.to_string(), text);
        }
    }

    #[test]
    fn anything_else_is_refused_naming_what_is_wrong() {
        let long = format!("{}:1", "a".repeat(256));
        let long_tag = format!("pause:{}", "t".repeat(129));
        for (text, reason) in [
            ("", "it is empty"),
            ("k8s.gcr.io/pause:3.2\nExecStartPre=/bin/touch /pwned", "it has '\\n'"),
            ("pause:3.2 --privileged", "it has ' '"),
            ("k8s.gcr.io/Pause:3.2", "path component \"Pause\" is not lower-case letters and digits joined by '.', '_', '__' or '-'"),
            ("docker.io/Flannel:v1", "path component \"Flannel\" is not lower-case letters and digits joined by '.', '_', '__' or '-'"),
            ("a//b", "it has an empty path component"),
            ("a/", "it has an empty path component"),
            ("-a", "path component \"-a\" is not lower-case letters and digits joined by '.', '_', '__' or '-'"),
            ("a___b", "path component \"a___b\" is not lower-case letters and digits joined by '.', '_', '__' or '-'"),
            ("a..b", "path component \"a..b\" is not lower-case letters and digits joined by '.', '_', '__' or '-'"),
            ("pause:", "tag \"\" is not 1 to 128 of [A-Za-z0-9_.-] starting with a letter, digit or '_'"),
            ("pause:.x", "tag \".x\" is not 1 to 128 of [A-Za-z0-9_.-] starting with a letter, digit or '_'"),
            (&long_tag, "is not 1 to 128"),
            ("pause@sha256:abc", "digest \"sha256:abc\" is not ALGORITHM:HEX such as sha256:<64 hex digits>"),
            ("pause@md5", "digest \"md5\" is not ALGORITHM:HEX"),
            ("reg.io:port/pause", "registry \"reg.io:port\" is not HOST[:PORT]"),
            ("-reg.io/pause", "registry \"-reg.io\" is not HOST[:PORT]"),
            ("[::1/pause", "registry \"[::1\" is not HOST[:PORT]"),
            ("%h.io/pause", "registry \"%h.io\" is not HOST[:PORT]"),
            (&long, "its name has 256 characters, at most 255 are allowed"),
        ] {
            let err = text.parse::<ImageRef>().unwrap_err().to_string();
            assert!(
                err.starts_with("not an image reference: ") && err.contains(reason),
                "{text:?}: {err}"
            );
            assert!(err.ends_with("; expected NAME[:TAG][@DIGEST] such as registry.k8s.io/pause:3.9"));
        }
    }

    #[test]
    fn registries_are_hosts_with_an_optional_path_and_nothing_more() {
        for (text, kept) in [
            ("k8s.gcr.io", "k8s.gcr.io"),
            (
                "registry.example.com:5000/mirror",
                "registry.example.com:5000/mirror",
            ),
            ("registry.example.com/k8s/", "registry.example.com/k8s"),
            ("localhost:5000", "localhost:5000"),
            ("myregistry", "myregistry"),
            ("[fd00::1]:5000/k8s", "[fd00::1]:5000/k8s"),
        ] {
            assert_eq!(
                text.parse::<ImageRegistry>().unwrap().as_str(),
                kept,
                "{text}"
            );
        }
        for (text, reason) in [
            ("bad registry", "it has ' '"),
            ("registry.example.com/k8s:v1", "it has a tag"),
            ("registry.example.com/k8s@sha256:00", "it has a digest"),
            (
                "registry.example.com/K8s",
                "path component \"K8s\" is not lower-case letters and digits joined by '.', '_', '__' or '-'",
            ),
            ("reg:istry/x", "registry \"reg:istry\" is not HOST[:PORT]"),
            ("", "it is empty"),
            ("/", "it is empty"),
            ("a\nb", "it has '\\n'"),
        ] {
            assert_eq!(
                text.parse::<ImageRegistry>().unwrap_err().to_string(),
                format!("expected a registry host with an optional path, such as registry.example.com:5000/mirror (no tag or digest): {reason}"),
                "{text:?}"
            );
        }
    }
}
