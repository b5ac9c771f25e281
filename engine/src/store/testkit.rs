//! Fixtures for the store's tests: a fresh database in a temporary folder and small records.
//! Test-only; nothing here is compiled into the engine.

use std::collections::BTreeMap;

use super::{PipelineVersion, RunRecord, StepRecord, Store, Trigger};
use weir_core::run::{Millis, RunState, StepState};
use weir_data::artifact::Digest;

/// A store in a new temporary folder; keep the folder alive as long as the store.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Stores version `h1` of pipeline `train` with `bundle` as its bundle.
pub fn train_with_bundle(store: &Store, bundle: Digest) {
    let version = PipelineVersion {
        name: "train".to_string(),
        yaml: "x: 1\n".to_string(),
        bundle_digest: Some(bundle),
        submitted_at: Millis(3),
        file: None,
    };
    store.put_pipeline_version("h1", &version).unwrap();
}

pub fn run(id: &str, pipeline: &str, state: RunState) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        pipeline: pipeline.to_string(),
        version: "v-hash".to_string(),
        params: BTreeMap::from([("lr".to_string(), serde_json::json!(0.1))]),
        state,
        created_at: Millis(1_000),
        finished_at: state.is_terminal().then_some(Millis(2_000)),
        trigger: Trigger::Manual { user: Some("ada".to_string()) },
        no_cache: false,
        sla_missed_at: None,
    }
}

pub fn step(name: &str, state: StepState) -> StepRecord {
    StepRecord { name: name.to_string(), state, attempts: 1, ..StepRecord::default() }
}

/// Writes `n` runs (`r-0000`, ...) with three step records each into a new store in `dir`, in
/// batches, and closes it: a database of a few hundred KiB over several sled pages.
pub fn filled(dir: &std::path::Path, n: usize) {
    let s = Store::open(dir).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut b = super::Batch::new();
        for r in chunk {
            let id = format!("r-{r:04}");
            b.put_run(&run(&id, "train", RunState::Succeeded)).unwrap();
            for i in 0..3 {
                b.put_step(&id, weir_core::run::InstanceId(i), &step("fit", StepState::Succeeded)).unwrap();
            }
        }
        s.write_batch(b).unwrap();
    }
}

/// A copy of the folder `from` at `to` (sled's files only: no subfolders but `blobs`).
pub fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("blobs")).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Overwrites `len` bytes of `file` at `offset` with `byte`, in place (the same inode, as a
/// disk fault would: an open store reads the damage on its next page-in).
pub fn overwrite(file: &std::path::Path, offset: u64, len: usize, byte: u8) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
    f.sync_all().unwrap();
}

/// Opens `dir` again right after a `Store` on it was dropped: sled's background flusher holds
/// the file lock a moment longer, so `Locked` is retried (for 10 s at most).
pub fn reopen(dir: &std::path::Path) -> Store {
    let start = std::time::Instant::now();
    loop {
        match Store::open(dir) {
            Err(super::Error::Locked { .. }) if start.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
}

/// A tmpfs of `size` mounted at `at` (the tests run as root), unmounted on drop; `None` where
/// mounting is not permitted, except under `CI=true`, where that fails the test.
pub fn tmpfs(at: &std::path::Path, size: &str) -> Option<Mounted> {
    std::fs::create_dir_all(at).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .expect("run mount");
    if out.status.success() {
        return Some(Mounted(at.to_path_buf()));
    }
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(std::env::var("CI").as_deref() != Ok("true"), "this test needs to mount a tmpfs (as root): {why}");
    eprintln!("skipping: cannot mount a tmpfs here ({why}); CI=true makes this a failure");
    None
}

/// A mount point, unmounted on drop.
pub struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the disk is full.
pub fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
}
