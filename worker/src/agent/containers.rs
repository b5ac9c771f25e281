//! What a worker needs to pick up a Docker step again after it restarted: a container outlives
//! a killed worker, and the engine still counts its attempt as running until the lease timeout.
//! Before starting a container the agent writes the attempt's assignment into the attempt
//! folder (`assignment.pb`) and a record `containers/<container name>` naming that folder. On
//! start, a container with a record is resumed (its outcome reported as if nothing happened: the
//! engine re-adopts the attempt through the next heartbeat, or orders it stopped when it is no
//! longer live); one without a record (the work folder was wiped) is removed. The record goes
//! once the attempt has reported. A process step needs none of this: the reaper kills it with
//! its worker.
//!
//! Two workers may share one Docker engine (two `weir-worker`s on a host), so containers carry
//! their worker's [`owner`] identity and a worker only ever touches its own.

use std::io;
use std::path::{Path, PathBuf};

use prost::Message;
use weir_proto::v1;

/// The file in an attempt folder that holds its encoded assignment.
const ASSIGNMENT: &str = "assignment.pb";
/// The file in an attempt folder that lists the GPU indices its container was given.
const GPUS: &str = "gpus";

/// A stable identity for the worker using `work_dir` on this host: the same after a restart,
/// different for a second worker with another work folder. 16 hex digits of BLAKE3.
pub(crate) fn owner(host: &str, work_dir: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update(host.as_bytes());
    h.update(&[0]);
    h.update(work_dir.as_os_str().as_encoded_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// Where the records live.
pub(crate) fn records_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("containers")
}

/// Records that container `name` runs the attempt of `assignment` in the attempt folder `slot`
/// with the GPUs `gpus`. The record is written last, so a record always names a complete folder.
pub(crate) fn remember(
    records: &Path,
    name: &str,
    slot: &Path,
    assignment: &v1::Assignment,
    gpus: &[u32],
) -> io::Result<()> {
    std::fs::write(slot.join(ASSIGNMENT), assignment.encode_to_vec())?;
    let list: Vec<String> = gpus.iter().map(u32::to_string).collect();
    std::fs::write(slot.join(GPUS), list.join(","))?;
    std::fs::create_dir_all(records)?;
    let tmp = records.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, slot.as_os_str().as_encoded_bytes())?;
    std::fs::rename(tmp, records.join(name))
}

/// What was recorded for container `name`, if it is intact.
pub(crate) struct Recalled {
    pub slot: PathBuf,
    pub assignment: v1::Assignment,
    pub gpus: Vec<u32>,
}

/// The attempt folder, assignment and GPUs recorded for container `name`, if all are intact.
pub(crate) fn recall(records: &Path, name: &str) -> Option<Recalled> {
    if !valid_name(name) {
        return None;
    }
    let slot = PathBuf::from(std::fs::read_to_string(records.join(name)).ok()?);
    let bytes = std::fs::read(slot.join(ASSIGNMENT)).ok()?;
    let assignment = v1::Assignment::decode(bytes.as_slice()).ok()?;
    let gpus = std::fs::read_to_string(slot.join(GPUS)).ok()?;
    let gpus = gpus.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<Vec<u32>, _>>().ok()?;
    Some(Recalled { slot, assignment, gpus })
}

/// Drops the record of container `name`; nothing happens when there is none.
pub(crate) fn forget(records: &Path, name: &str) {
    if valid_name(name) {
        let _ = std::fs::remove_file(records.join(name));
    }
}

/// The names of every record (temporary files excluded).
pub(crate) fn recorded(records: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(records) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| valid_name(n)).collect()
}

/// A container name as Docker allows it, so it can never climb out of the records folder.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("attempts/3");
        std::fs::create_dir_all(&slot).unwrap();
        let records = records_dir(dir.path());
        let a = v1::Assignment { step: "train".into(), image: "img:1".into(), ..Default::default() };
        remember(&records, "weir-r-0-1", &slot, &a, &[1, 3]).unwrap();
        assert_eq!(recorded(&records), vec!["weir-r-0-1".to_string()]);
        let got = recall(&records, "weir-r-0-1").unwrap();
        assert_eq!((got.slot, got.assignment, got.gpus), (slot.clone(), a.clone(), vec![1, 3]));
        remember(&records, "weir-r-0-1", &slot, &a, &[]).unwrap();
        assert!(recall(&records, "weir-r-0-1").unwrap().gpus.is_empty());
        // A damaged assignment is no record at all.
        std::fs::write(slot.join(ASSIGNMENT), b"\xff\xff\xff").unwrap();
        assert!(recall(&records, "weir-r-0-1").is_none());
        forget(&records, "weir-r-0-1");
        assert!(recorded(&records).is_empty());
        // Names that could leave the folder are never read.
        assert!(recall(&records, "../etc").is_none());
    }

    #[test]
    fn owners_differ_by_work_folder_and_stay_the_same() {
        let a = owner("host", Path::new("/w/1"));
        assert_eq!(a, owner("host", Path::new("/w/1")));
        assert_ne!(a, owner("host", Path::new("/w/2")));
        assert_ne!(a, owner("other", Path::new("/w/1")));
        assert_eq!(a.len(), 16);
    }
}
