//! HMAC-SHA256 signatures over `timestamp + "." + body`, the scheme GitHub and Stripe use:
//! the header value `sha256=HEX`, a timestamp in Unix seconds that a receiver refuses when too
//! old (against replays), and a constant-time comparison. Webhook deliveries to the engine are
//! checked with it; anything weir sends signed should sign with it too. It reads no clock
//! (callers pass `now`) and never logs or returns a secret.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a signed timestamp may be from `now`, either way, before it is refused.
pub const MAX_SKEW_SECS: i64 = 300;

/// The header value signing `body` sent at `timestamp` (Unix seconds) under `secret`:
/// `sha256=` and the lowercase hex of HMAC-SHA256(secret, "TIMESTAMP.BODY").
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Why a signed delivery is refused. The messages name what is wrong, never the secret or the
/// expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("missing signature header")]
    NoSignature,
    #[error("missing timestamp header")]
    NoTimestamp,
    #[error("the timestamp is not a whole number of seconds since the Unix epoch")]
    BadTimestamp,
    #[error(
        "the timestamp is {0} s away from the server's time (at most {MAX_SKEW_SECS} s): a stale or replayed delivery"
    )]
    Stale(i64),
    #[error(
        "the signature does not match the body (expected `sha256=` and 64 hex digits of HMAC-SHA256 over `TIMESTAMP.BODY`)"
    )]
    Mismatch,
}

/// Checks `signature` (`sha256=HEX`) and `timestamp` (Unix seconds, as text) of `body` under
/// `secret` at `now` (Unix seconds). The comparison takes the same time wherever it differs.
pub fn verify(
    secret: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Refused> {
    let signature = signature.ok_or(Refused::NoSignature)?;
    let timestamp = timestamp.ok_or(Refused::NoTimestamp)?;
    let ts: i64 = timestamp.trim().parse().map_err(|_| Refused::BadTimestamp)?;
    let skew = now.saturating_sub(ts);
    if skew.abs() > MAX_SKEW_SECS {
        return Err(Refused::Stale(skew));
    }
    let hex = signature.trim().strip_prefix("sha256=").ok_or(Refused::Mismatch)?;
    let Some(tag) = decode_hex(hex) else { return Err(Refused::Mismatch) };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&tag).map_err(|_| Refused::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_is_refused() {
        let (secret, body, ts) = (b"s3cret".as_slice(), br#"{"rows": 5}"#.as_slice(), 1_700_000_000);
        let sig = sign(secret, ts, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 71, "{sig}");
        let t = ts.to_string();
        assert_eq!(verify(secret, Some(&sig), Some(&t), body, ts + 10), Ok(()));
        assert_eq!(verify(secret, Some(&sig), Some(&t), b"{\"rows\": 6}", ts), Err(Refused::Mismatch));
        assert_eq!(verify(b"other", Some(&sig), Some(&t), body, ts), Err(Refused::Mismatch));
        let later = (ts + 1).to_string();
        assert_eq!(verify(secret, Some(&sig), Some(&later), body, ts), Err(Refused::Mismatch), "the time is signed");
        assert_eq!(verify(secret, Some(&sig), Some(&t), body, ts + 301), Err(Refused::Stale(301)));
        assert_eq!(verify(secret, Some(&sig), Some(&t), body, ts - 301), Err(Refused::Stale(-301)));
        assert_eq!(verify(secret, None, Some(&t), body, ts), Err(Refused::NoSignature));
        assert_eq!(verify(secret, Some(&sig), None, body, ts), Err(Refused::NoTimestamp));
        assert_eq!(verify(secret, Some(&sig), Some("soon"), body, ts), Err(Refused::BadTimestamp));
        assert_eq!(verify(secret, Some("sha256=zz"), Some(&t), body, ts), Err(Refused::Mismatch));
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"1.body",hashlib.sha256).hexdigest())'
        assert_eq!(sign(b"key", 1, b"body"), format!("sha256={}", KNOWN));
    }
    const KNOWN: &str = "91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5";
}
