//! The worker's side of the wire: `weir.v1` messages to and from the data-plane types it uses
//! (manifests, durations, times, attempt references). The engine's side is
//! `weir_engine::api::convert`; the `tests` crate checks that the two agree (`tests/wire.rs`).
//! The rules that matter (which names and digests a manifest may hold) live once, in
//! `weir_data::artifact::Manifest::new` and `Digest`'s parser. Pure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_data::artifact::{Digest, Entry, Manifest};
use weir_proto::v1;

/// What was wrong with a message from the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadField {
    pub field: &'static str,
    pub reason: String,
}

impl BadField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> BadField {
        BadField { field, reason: reason.into() }
    }
}

/// The run id, instance and attempt number of a reference; all must be set.
pub fn from_attempt_ref(r: Option<&v1::AttemptRef>) -> Result<(String, u32, u32), BadField> {
    let r = r.ok_or_else(|| BadField::new("attempt", "is required"))?;
    if r.run_id.is_empty() {
        return Err(BadField::new("attempt.run_id", "is required"));
    }
    let a = r.attempt.as_ref().ok_or_else(|| BadField::new("attempt.attempt", "is required"))?;
    if a.number == 0 {
        return Err(BadField::new("attempt.attempt.number", "attempts are numbered from 1"));
    }
    Ok((r.run_id.clone(), a.instance, a.number))
}

pub fn manifest(m: &Manifest) -> v1::Manifest {
    v1::Manifest {
        files: m
            .entries()
            .iter()
            .map(|e| v1::ManifestEntry {
                path: e.path.clone(),
                digest: e.digest.to_string(),
                size: e.size,
                executable: e.executable,
            })
            .collect(),
    }
}

/// A manifest from the wire, with every name and digest checked.
pub fn from_manifest(m: Option<&v1::Manifest>) -> Result<Manifest, BadField> {
    let Some(m) = m else { return Ok(Manifest::default()) };
    let mut files = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let digest: Digest =
            f.digest.parse().map_err(|e| BadField::new("outputs.files.digest", format!("{}: {e}", f.path)))?;
        files.push(Entry { path: f.path.clone(), digest, size: f.size, executable: f.executable });
    }
    Manifest::new(files).map_err(|e| BadField::new("outputs.files.path", e.to_string()))
}

pub fn system_time(at: SystemTime) -> prost_types::Timestamp {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: (d.subsec_millis() * 1_000_000) as i32 }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A wire duration; negative or unset is `None`.
pub fn from_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_refs_and_manifests_are_checked() {
        let r = v1::AttemptRef { run_id: "r1".into(), attempt: Some(v1::AttemptId { instance: 7, number: 2 }) };
        assert_eq!(from_attempt_ref(Some(&r)), Ok(("r1".to_string(), 7, 2)));
        assert_eq!(from_attempt_ref(None).unwrap_err().field, "attempt");
        let zero = v1::AttemptRef { run_id: "r".into(), attempt: Some(v1::AttemptId { instance: 0, number: 0 }) };
        assert_eq!(from_attempt_ref(Some(&zero)).unwrap_err().field, "attempt.attempt.number");

        let m =
            Manifest::new(vec![Entry { path: "a/b.txt".into(), digest: Digest::of(b"x"), size: 1, executable: true }])
                .unwrap();
        assert_eq!(from_manifest(Some(&manifest(&m))).unwrap(), m);
        let mut evil = manifest(&m);
        evil.files[0].path = "../escape".into();
        assert_eq!(from_manifest(Some(&evil)).unwrap_err().field, "outputs.files.path");
        evil.files[0].path = "ok".into();
        evil.files[0].digest = "zz".into();
        assert_eq!(from_manifest(Some(&evil)).unwrap_err().field, "outputs.files.digest");
    }

    #[test]
    fn durations_round_trip_and_negative_is_none() {
        assert_eq!(from_duration(Some(&duration(Duration::from_millis(1500)))), Some(Duration::from_millis(1500)));
        assert_eq!(from_duration(Some(&prost_types::Duration { seconds: -1, nanos: 0 })), None);
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(system_time(t), prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 });
    }
}
