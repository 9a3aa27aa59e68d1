//! SSH public keys for the node's login user (`--ssh-authorized-key`).
//!
//! A key is one authorized_keys line without options: `TYPE BASE64
//! [COMMENT]`. The check is a shape check, enough to catch a private key,
//! a truncated paste or a file of the wrong kind: the type is a known one,
//! the base64 decodes, and the decoded blob starts with the same type name
//! (as every OpenSSH public key blob does).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

/// Key types OpenSSH accepts in authorized_keys (DSA keys are disabled by
/// default since OpenSSH 7.0 and not accepted here).
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A public key line that passed the shape check, with its whitespace
/// normalised to single spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey(String);

/// Why a key was refused. Messages quote the key's type and comment only,
/// never the key material (a private key pasted by mistake must not end up
/// in logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SSH public key: {reason}; expected one authorized_keys line \"TYPE BASE64 [COMMENT]\" with TYPE one of {}", KEY_TYPES.join(", "))]
pub struct SshKeyError {
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for SshPublicKey {
    type Err = SshKeyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| SshKeyError { reason };
        let value = value.trim();
        if value.contains("PRIVATE KEY") {
            return Err(refuse("this is a private key".into()));
        }
        if value.contains(['\n', '\r']) {
            return Err(refuse("it spans several lines".into()));
        }
        let mut fields = value.split_whitespace();
        let Some(kind) = fields.next() else {
            return Err(refuse("it is empty".into()));
        };
        if !KEY_TYPES.contains(&kind) {
            let shown: String = kind.chars().take(40).collect();
            return Err(refuse(format!(
                "unknown key type {shown:?} (authorized_keys options before the type are not supported)"
            )));
        }
        let Some(blob) = fields.next() else {
            return Err(refuse(format!("the {kind} key has no base64 key data")));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| refuse(format!("the {kind} key data is not valid base64")))?;
        let blob_type = decoded
            .get(..4)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .and_then(|len| decoded.get(4..4 + len));
        if blob_type != Some(kind.as_bytes()) {
            return Err(refuse(format!(
                "the key data does not hold a {kind} key (truncated, or a different type)"
            )));
        }
        let comment: Vec<&str> = fields.collect();
        if comment.iter().any(|w| w.chars().any(char::is_control)) {
            return Err(refuse("the comment has control characters".into()));
        }
        let mut line = format!("{kind} {blob}");
        if !comment.is_empty() {
            line.push(' ');
            line.push_str(&comment.join(" "));
        }
        Ok(Self(line))
    }
}

impl SshPublicKey {
    /// The authorized_keys line.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an authorized_keys-style file: one key per line, blank lines
    /// and `#` comments skipped. Errors carry the line number.
    pub fn parse_file(text: &str) -> Result<Vec<Self>, (usize, SshKeyError)> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, l)| l.parse().map_err(|e| (i + 1, e)))
            .collect()
    }
}

impl fmt::Display for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically real key blob of `kind` (length-prefixed type name
    /// followed by filler bytes).
    fn blob(kind: &str) -> String {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 32]);
        b.extend_from_slice(&[7; 32]);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn well_formed_keys_are_accepted_and_normalised() {
        for kind in KEY_TYPES {
            let line = format!("  {kind}\t{}   alice@laptop  2024 \n", blob(kind));
            let key: SshPublicKey = line.parse().unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                key.as_str(),
                format!("{kind} {} alice@laptop 2024", blob(kind))
            );
        }
        let no_comment = format!("ssh-ed25519 {}", blob("ssh-ed25519"));
        assert_eq!(
            no_comment.parse::<SshPublicKey>().unwrap().as_str(),
            no_comment
        );
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let ed = blob("ssh-ed25519");
        for (line, reason) in [
            ("".to_string(), "it is empty"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
                "this is a private key",
            ),
            (format!("ssh-dss {ed}"), "unknown key type \"ssh-dss\""),
            (
                format!("command=\"x\" ssh-ed25519 {ed}"),
                "unknown key type \"command=\\\"x\\\"\" (authorized_keys options",
            ),
            (
                "ssh-ed25519".into(),
                "the ssh-ed25519 key has no base64 key data",
            ),
            (
                "ssh-ed25519 !!!!".into(),
                "the ssh-ed25519 key data is not valid base64",
            ),
            (
                format!("ssh-rsa {ed}"),
                "the key data does not hold a ssh-rsa key",
            ),
            (
                format!("ssh-ed25519 {}", &ed[..8]),
                "the key data does not hold a ssh-ed25519 key",
            ),
            (format!("ssh-ed25519 {ed} a\nb"), "it spans several lines"),
        ] {
            let err = line.parse::<SshPublicKey>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid SSH public key: {reason}")),
                "{line:?}: {err}"
            );
            assert!(!err.contains(&ed), "key material echoed: {err}");
        }
    }

    #[test]
    fn key_files_skip_comments_and_name_the_bad_line() {
        let good = format!("ssh-ed25519 {}", blob("ssh-ed25519"));
        let text = format!("# admins\n{good} a\n\n{good} b\nssh-foo x\n");
        let (line, err) = SshPublicKey::parse_file(&text).unwrap_err();
        assert_eq!(line, 5);
        assert!(err.reason.contains("ssh-foo"));
        let ok = SshPublicKey::parse_file(&format!("{good} a\n# x\n{good} b\n")).unwrap();
        assert_eq!(ok.len(), 2);
    }
}
