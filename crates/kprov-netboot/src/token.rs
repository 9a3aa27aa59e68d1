//! Per-machine credentials: short-lived tokens that name what they open
//! (a [`Purpose`]), for which MAC, in which token epoch, with a serial
//! number and an expiry, signed with HMAC-SHA256 under the server secret
//! (`stateDir/token-secret`). Pure: time comes in as seconds since the
//! Unix epoch.
//!
//! A token's text is `<expires>-<serial>-<tag>` (lower-case hex; the tag
//! is the first 16 bytes of the HMAC). The MAC and the epoch are not in
//! the text: they come from the request path and the machine's state, so
//! a token of another machine or of an earlier epoch fails the tag check.
//! Nothing but the secret lets anyone make a token, and nothing is stored
//! per token: checking one needs the secret, the MAC, the epoch and the
//! clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::machine::MacAddr;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in a token.
const TAG_LEN: usize = 16;

/// What a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The iPXE script (`/boot/<mac>/<token>.ipxe`): handed out in the
    /// DHCP reply to iPXE.
    Script,
    /// The NoCloud seed (`/machines/<mac>/<token>/...`): put on the
    /// kernel command line by the script.
    Seed,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Script => b"script",
            Purpose::Seed => b"seed",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Its serial number (per machine and epoch; 0 for script tokens).
    pub serial: u64,
    /// When it expires (seconds since the epoch).
    pub expires: u64,
}

/// Why a token was refused. The texts never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<hex>-<hex>-<32 hex>`.
    #[error("malformed token: expected <expiry>-<serial>-<tag> in hex")]
    Malformed,
    /// The tag does not match: another machine's, another purpose's, an
    /// earlier epoch's (rotated) or made up.
    #[error("token not valid for this machine, purpose and epoch")]
    Forged,
    /// Past its expiry.
    #[error("token expired {ago} s ago")]
    Expired {
        /// Seconds since it expired.
        ago: u64,
    },
}

/// Issues and checks tokens under one secret.
#[derive(Clone)]
pub struct Tokens {
    secret: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    /// Tokens under a secret.
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self, purpose: Purpose, mac: &MacAddr, epoch: u32, claims: Claims) -> HmacSha256 {
        // A 32-byte key is always accepted.
        let mut h = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        h.update(b"kprov-netboot-token-v1\0");
        h.update(purpose.label());
        h.update(b"\0");
        h.update(&mac.0);
        h.update(&epoch.to_be_bytes());
        h.update(&claims.serial.to_be_bytes());
        h.update(&claims.expires.to_be_bytes());
        h
    }

    /// A token for `mac` in `epoch` with these claims.
    pub fn issue(&self, purpose: Purpose, mac: &MacAddr, epoch: u32, claims: Claims) -> String {
        let tag = self
            .mac(purpose, mac, epoch, claims)
            .finalize()
            .into_bytes();
        format!(
            "{:x}-{:x}-{}",
            claims.expires,
            claims.serial,
            hex::encode(&tag[..TAG_LEN])
        )
    }

    /// Checks `text` as a `purpose` token of `mac` in `epoch` at `now`
    /// (the tag is compared in constant time).
    pub fn verify(
        &self,
        purpose: Purpose,
        mac: &MacAddr,
        epoch: u32,
        text: &str,
        now: u64,
    ) -> Result<Claims, TokenError> {
        let mut parts = text.split('-');
        let (Some(expires), Some(serial), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let hex_num = |s: &str| {
            (!s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        let (Some(expires), Some(serial)) = (hex_num(expires), hex_num(serial)) else {
            return Err(TokenError::Malformed);
        };
        let tag = match hex::decode(tag) {
            Ok(t) if t.len() == TAG_LEN => t,
            _ => return Err(TokenError::Malformed),
        };
        let claims = Claims { serial, expires };
        self.mac(purpose, mac, epoch, claims)
            .verify_truncated_left(&tag)
            .map_err(|_| TokenError::Forged)?;
        if expires <= now {
            return Err(TokenError::Expired { ago: now - expires });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn claims(serial: u64, expires: u64) -> Claims {
        Claims { serial, expires }
    }

    #[test]
    fn a_token_opens_only_its_machine_purpose_and_epoch_until_it_expires() {
        let t = Tokens::new([7; 32]);
        let tok = t.issue(Purpose::Seed, &A, 3, claims(5, 1000));
        assert_eq!(tok.len(), "3e8-5-".len() + 32);
        assert!(tok.starts_with("3e8-5-"));
        assert_eq!(
            t.verify(Purpose::Seed, &A, 3, &tok, 999),
            Ok(claims(5, 1000))
        );
        let refused = [
            (Purpose::Seed, B, 3, 999, TokenError::Forged),
            (Purpose::Script, A, 3, 999, TokenError::Forged),
            (Purpose::Seed, A, 2, 999, TokenError::Forged),
            (Purpose::Seed, A, 4, 999, TokenError::Forged),
            (Purpose::Seed, A, 3, 1000, TokenError::Expired { ago: 0 }),
            (Purpose::Seed, A, 3, 1060, TokenError::Expired { ago: 60 }),
        ];
        for (purpose, mac, epoch, now, want) in refused {
            assert_eq!(
                t.verify(purpose, &mac, epoch, &tok, now),
                Err(want),
                "{purpose:?} {mac} {epoch} {now}"
            );
        }
        // Another secret, or changed claims, break the tag.
        assert_eq!(
            Tokens::new([8; 32]).verify(Purpose::Seed, &A, 3, &tok, 999),
            Err(TokenError::Forged)
        );
        let longer = tok.replacen("3e8-", "3e9-", 1);
        assert_eq!(
            t.verify(Purpose::Seed, &A, 3, &longer, 999),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_a_tag_check() {
        let t = Tokens::new([7; 32]);
        let good = t.issue(Purpose::Script, &A, 0, claims(0, 50));
        let tag = good.rsplit('-').next().unwrap().to_string();
        for bad in [
            String::new(),
            "x".into(),
            format!("32-0-{tag}-1"),
            format!("32-{tag}"),
            format!("zz-0-{tag}"),
            format!("-0-{tag}"),
            format!("32-0-{}", &tag[..30]),
            format!("32-0-{tag}00"),
            format!("11111111111111111-0-{tag}"),
        ] {
            assert_eq!(
                t.verify(Purpose::Script, &A, 0, &bad, 10),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert!(t.verify(Purpose::Script, &A, 0, &good, 10).is_ok());
    }
}
