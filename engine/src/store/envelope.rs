//! The record envelope every stored value wears: `[format version u16 BE][first 16 bytes of the
//! BLAKE3 of the payload][payload]`, the payload being serde_json. [`encode`] wraps, [`decode`]
//! checks length, version and checksum before it parses. It knows nothing of trees or keys
//! beyond naming them in errors.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;

/// The format version written today. A reader refuses any other.
pub const FORMAT_VERSION: u16 = 1;
const SUM_LEN: usize = 16;
const HEADER_LEN: usize = 2 + SUM_LEN;

fn checksum(payload: &[u8]) -> [u8; SUM_LEN] {
    let mut sum = [0u8; SUM_LEN];
    sum.copy_from_slice(&blake3::hash(payload).as_bytes()[..SUM_LEN]);
    sum
}

/// Wraps already-serialized payload bytes.
pub fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&checksum(payload));
    out.extend_from_slice(payload);
    out
}

/// Serializes `value` as JSON and wraps it.
pub fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    let payload = serde_json::to_vec(value).map_err(|e| Error::Encode { tree, reason: e.to_string() })?;
    Ok(wrap(&payload))
}

/// Checks the envelope and returns the payload bytes; `key` only names the record in errors.
pub fn unwrap<'a>(tree: &'static str, key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], Error> {
    let corrupt = |reason: String| Error::Corrupt { tree, key: super::keys::show(key), reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("truncated: {} bytes, the header alone is {HEADER_LEN}", bytes.len())));
    }
    let version = u16::from_be_bytes([bytes[0], bytes[1]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {version} (this engine reads {FORMAT_VERSION})")));
    }
    let payload = &bytes[HEADER_LEN..];
    if bytes[2..HEADER_LEN] != checksum(payload) {
        return Err(corrupt("checksum mismatch".to_string()));
    }
    Ok(payload)
}

/// Checks the envelope and parses the payload.
pub fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    let payload = unwrap(tree, key, bytes)?;
    serde_json::from_slice(payload).map_err(|e| Error::Corrupt {
        tree,
        key: super::keys::show(key),
        reason: format!("payload does not parse: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expect: &str) {
        match decode::<Vec<u32>>("runs", b"r-1", bytes) {
            Err(Error::Corrupt { tree, key, reason }) => {
                assert_eq!((tree, key.as_str()), ("runs", "r-1"));
                assert!(reason.contains(expect), "{reason:?} lacks {expect:?}");
            }
            other => panic!("expected Corrupt({expect}), got {other:?}"),
        }
    }

    #[test]
    fn round_trips_and_detects_every_kind_of_damage() {
        let good = encode("runs", &vec![1u32, 2, 3]).unwrap();
        assert_eq!(decode::<Vec<u32>>("runs", b"r-1", &good).unwrap(), vec![1, 2, 3]);

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        check(&flipped, "checksum mismatch");

        let mut future = good.clone();
        future[..2].copy_from_slice(&7u16.to_be_bytes());
        check(&future, "unknown format version 7");

        check(&good[..good.len() - 2], "checksum mismatch");
        check(&good[..5], "truncated: 5 bytes");
        check(b"", "truncated: 0 bytes");
        check(&wrap(b"{not json"), "does not parse");
    }
}
