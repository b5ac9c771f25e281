//! Key layout of every tree (see the table in `store`): the run id's bytes, a NUL separator,
//! then big-endian numbers, so keys sort by run, then numerically, and range scans page. Also
//! the printable form of a key for errors and the hex form used by page tokens and exports.

use super::Error;
use weir_core::run::InstanceId;

/// The `runs` key of `run`: its bytes, after checking it can be separated from a suffix.
pub fn run(run: &str) -> Result<Vec<u8>, Error> {
    if run.is_empty() || run.as_bytes().contains(&0) {
        return Err(Error::BadRunId(run.to_string()));
    }
    Ok(run.as_bytes().to_vec())
}

/// The prefix of every per-run key: the run's bytes and the NUL separator.
pub fn prefix(r: &str) -> Result<Vec<u8>, Error> {
    let mut k = run(r)?;
    k.push(0);
    Ok(k)
}

/// `run · instance` (steps, artifacts).
pub fn instance(r: &str, i: InstanceId) -> Result<Vec<u8>, Error> {
    let mut k = prefix(r)?;
    k.extend_from_slice(&i.0.to_be_bytes());
    Ok(k)
}

/// `run · seq` (events).
pub fn event(r: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = prefix(r)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// `run · instance · attempt · seq` (logs).
pub fn log(r: &str, i: InstanceId, attempt: u32, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = instance(r, i)?;
    k.extend_from_slice(&attempt.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// `created_at · run` (the `runs_by_time` index): creation order, then run id within one
/// millisecond, so a scan backwards lists newest first in an order that never changes.
pub fn by_time(created_at: u64, r: &str) -> Result<Vec<u8>, Error> {
    let mut k = created_at.to_be_bytes().to_vec();
    k.extend_from_slice(&run(r)?);
    Ok(k)
}

/// The run id and creation time of a `runs_by_time` key.
pub fn split_by_time(key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, id) = key.split_at_checked(8)?;
    Some((u64::from_be_bytes(at.try_into().ok()?), id))
}

/// The big-endian number ending at `end` bytes from the end of `key`, if the key is long enough.
pub fn tail_u64(key: &[u8], end: usize) -> Option<u64> {
    let stop = key.len().checked_sub(end)?;
    Some(u64::from_be_bytes(key.get(stop.checked_sub(8)?..stop)?.try_into().ok()?))
}

pub fn tail_u32(key: &[u8], end: usize) -> Option<u32> {
    let stop = key.len().checked_sub(end)?;
    Some(u32::from_be_bytes(key.get(stop.checked_sub(4)?..stop)?.try_into().ok()?))
}

/// A key as people read it in an error: ASCII kept, everything else escaped.
pub fn show(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_run_then_number_and_never_interleave() {
        let mut keys = [
            event("r-10", 1).unwrap(),
            event("r-1", 256).unwrap(),
            event("r-1", 2).unwrap(),
            event("r-1", 10).unwrap(),
        ];
        keys.sort();
        let seqs: Vec<u64> = keys.iter().map(|k| tail_u64(k, 0).unwrap()).collect();
        assert_eq!(seqs, [2, 10, 256, 1]);
        assert!(!event("r-10", 1).unwrap().starts_with(&prefix("r-1").unwrap()));
        let l = log("r", InstanceId(3), 2, 9).unwrap();
        assert_eq!((tail_u32(&l, 12), tail_u32(&l, 8), tail_u64(&l, 0)), (Some(3), Some(2), Some(9)));
        assert!(matches!(run(""), Err(Error::BadRunId(_))));
        assert!(matches!(run("a\0b"), Err(Error::BadRunId(_))));
        assert_eq!(show(&instance("r", InstanceId(1)).unwrap()), "r\\x00\\x00\\x00\\x00\\x01");
        assert_eq!(from_hex(&to_hex(b"r-1\0\xff")).unwrap(), b"r-1\0\xff");
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
