//! Detached JWS signatures (RFC 7515, HS256) over cluster-info's
//! kubeconfig, as the controller manager's bootstrapsigner writes them into
//! `jws-kubeconfig-<token-id>`: the HMAC key is the token's secret, the
//! protected header names the token id, and the payload is left out
//! (`header..signature`). A joining node recomputes the signature with
//! the token it was given, which proves the API server it talks to knows
//! that token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use kprov_core::BootstrapToken;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The protected header, byte for byte as go-jose serializes it (keys in
/// order), so kubeadm and kprov compute the same string.
fn header(token_id: &str) -> String {
    format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#)
}

fn mac_over(encoded_header: &str, content: &str, token: &BootstrapToken) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(token.expose_secret_part().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(encoded_header.as_bytes());
    mac.update(b".");
    mac.update(B64.encode(content).as_bytes());
    mac
}

/// The detached signature of `content` with `token`.
pub fn sign_detached(content: &str, token: &BootstrapToken) -> String {
    let encoded_header = B64.encode(header(token.id()));
    let signature = mac_over(&encoded_header, content, token)
        .finalize()
        .into_bytes();
    format!("{encoded_header}..{}", B64.encode(signature))
}

/// Whether `detached` is the signature of `content` with `token`. The
/// signature bytes are compared in constant time.
pub fn verify_detached(detached: &str, content: &str, token: &BootstrapToken) -> bool {
    let Some((encoded_header, signature)) = detached.split_once("..") else {
        return false;
    };
    if encoded_header != B64.encode(header(token.id())) {
        return false;
    }
    let Ok(signature) = B64.decode(signature) else {
        return false;
    };
    mac_over(encoded_header, content, token)
        .verify_slice(&signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> BootstrapToken {
        s.parse().unwrap()
    }

    #[test]
    fn signature_is_detached_and_names_the_token() {
        let sig = sign_detached("content", &token("abcdef.0123456789abcdef"));
        let (h, rest) = sig.split_once("..").unwrap();
        assert_eq!(
            String::from_utf8(B64.decode(h).unwrap()).unwrap(),
            r#"{"alg":"HS256","kid":"abcdef"}"#
        );
        assert_eq!(B64.decode(rest).unwrap().len(), 32);
    }

    #[test]
    fn verifies_only_with_the_same_token_and_content() {
        let t = token("abcdef.0123456789abcdef");
        let sig = sign_detached("kubeconfig text", &t);
        assert!(verify_detached(&sig, "kubeconfig text", &t));
        assert!(!verify_detached(&sig, "kubeconfig text!", &t));
        assert!(!verify_detached(
            &sig,
            "kubeconfig text",
            &token("abcdef.0123456789abcdee")
        ));
        assert!(!verify_detached(
            &sig,
            "kubeconfig text",
            &token("abcdeg.0123456789abcdef")
        ));
        assert!(!verify_detached("garbage", "kubeconfig text", &t));
    }

    /// RFC 7515 appendix A.1's HS256 computation, reproduced with the
    /// same primitives: HMAC-SHA256 over `b64(header) . b64(payload)`.
    #[test]
    fn matches_an_independent_hmac() {
        let t = token("abcdef.0123456789abcdef");
        let sig = sign_detached("x", &t);
        let h = B64.encode(r#"{"alg":"HS256","kid":"abcdef"}"#);
        let mut mac = HmacSha256::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(format!("{h}.{}", B64.encode("x")).as_bytes());
        assert_eq!(
            sig,
            format!("{h}..{}", B64.encode(mac.finalize().into_bytes()))
        );
    }
}
