//! `weir store check | export | import` on data folders damaged in the test, and `weir runs`
//! from a `weir server` started on one: bad records (a torn run record, a step record whose
//! checksum fails) quarantine their runs while the rest is listed, check names them and exits
//! 1, export and import carry what is readable into a fresh folder, and a database sled cannot
//! open is refused with what to do instead of a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use weir_core::run::{InstanceId, Millis, RunState, StepState};
use weir_engine::store::{RunRecord, StepRecord, Store, Trigger};

mod common;

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        pipeline: "train".to_string(),
        version: "v-hash".to_string(),
        params: BTreeMap::new(),
        state: RunState::Succeeded,
        created_at: Millis(1_000),
        finished_at: Some(Millis(2_000)),
        trigger: Trigger::Manual { user: None },
        no_cache: false,
        sla_missed_at: None,
    }
}

/// A data folder with three finished runs of one step each; returns its export (JSON lines).
fn healthy(data: &Path) -> String {
    let store = Store::open(&data.join("db")).unwrap();
    for id in ["r-1", "r-2", "r-3"] {
        store.put_run(&run(id)).unwrap();
        let step = StepRecord { name: "fit".into(), state: StepState::Succeeded, attempts: 1, ..Default::default() };
        store.put_step(id, InstanceId(0), &step).unwrap();
    }
    let mut dump = Vec::new();
    store.export(&mut dump).unwrap();
    String::from_utf8(dump).unwrap()
}

/// `dump` with r-2's run record torn and r-3's step record failing its checksum.
fn damaged(dump: &str) -> String {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let (r2, r3_step) = (hex("r-2"), format!("{}0000000000", hex("r-3")));
    dump.lines()
        .map(|line| {
            let l: serde_json::Value = serde_json::from_str(line).unwrap();
            let (tree, key) = (l["tree"].as_str().unwrap(), l["key"].as_str().unwrap());
            match (tree, key) {
                ("runs", k) if k == r2 => format!(r#"{{"tree":"runs","key":"{k}","raw":"0001aaaa"}}"#),
                // version 1, a checksum of zeros, a valid JSON payload: fails the checksum
                ("steps", k) if k == r3_step => {
                    format!(r#"{{"tree":"steps","key":"{k}","raw":"0001{}{}"}}"#, "00".repeat(16), hex("{}"))
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_reports_what_is_readable_and_names_the_runs_of_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let dump = healthy(&good);

    let clean = weir(&["store", "check", "--data-dir", good.to_str().unwrap()]);
    let out = text(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{out}{}", text(&clean.stderr));
    assert!(out.contains("       3  runs") && out.contains("       3  step records"), "{out}");
    assert!(out.contains("every record is readable"), "{out}");

    // Restore a damaged export into a fresh folder with the CLI, then check that folder.
    let file = dir.path().join("damaged.jsonl");
    std::fs::write(&file, damaged(&dump)).unwrap();
    let bad = dir.path().join("bad");
    let import = weir(&["store", "import", "--data-dir", bad.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(import.status.code(), Some(0), "{}", text(&import.stderr));
    let again = weir(&["store", "import", "--data-dir", bad.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already holds records"), "{}", text(&again.stderr));

    let check = weir(&["store", "check", "--data-dir", bad.to_str().unwrap()]);
    let out = text(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{out}{}", text(&check.stderr));
    assert!(out.contains("       2  runs") && out.contains("       2  step records"), "{out}");
    assert!(out.contains("2 unreadable records in 2 runs: r-2, r-3"), "{out}");
    assert!(out.contains("runs r-2: truncated") && out.contains("checksum mismatch"), "{out}");
    assert!(out.contains("weir store export --data-dir") && out.contains("weir store import"), "{out}");
    let json = weir(&["store", "check", "--json", "--data-dir", bad.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["bad"].as_array().unwrap().len(), 2, "{report}");

    let exported = dir.path().join("out.jsonl");
    let export = weir(&["store", "export", "--data-dir", bad.to_str().unwrap(), "-o", exported.to_str().unwrap()]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    assert!(text(&export.stderr).contains("exported 6 records"), "{}", text(&export.stderr));
    let missing = weir(&["store", "check", "--data-dir", dir.path().join("none").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no weir store in"), "{}", text(&missing.stderr));
}

#[test]
fn a_database_sled_cannot_open_is_refused_with_what_to_do_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    healthy(&data);
    std::fs::write(
        data.join("db").join("conf"),
        "segment_size: x\nuse_compression: false\nversion: 0.34\nvacuum: no\n",
    )
    .unwrap();
    let check = weir(&["store", "check", "--data-dir", data.to_str().unwrap()]);
    let err = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("cannot open the store in {}", data.join("db").display())), "{err}");
    assert!(err.contains("weir store check --data-dir") && err.contains("weir store import"), "{err}");

    let port = common::free_port().to_string();
    let server = weir(&["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()]);
    let err = text(&server.stderr);
    assert_eq!(server.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot open the store in") && !err.contains("panicked at"), "{err}");
}

#[test]
fn weir_runs_lists_the_readable_runs_and_marks_the_quarantined_ones() {
    let dir = tempfile::tempdir().unwrap();
    let dump = healthy(&dir.path().join("good"));
    let file = dir.path().join("damaged.jsonl");
    std::fs::write(&file, damaged(&dump)).unwrap();
    let data = dir.path().join("data");
    let import = weir(&["store", "import", "--data-dir", data.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(import.status.code(), Some(0), "{}", text(&import.stderr));

    let port = common::free_port();
    let mut server = common::server(&data, port, &[]);
    let runs = weir(&["runs", "--server", &format!("http://127.0.0.1:{port}")]);
    let out = text(&runs.stdout);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(runs.status.code(), Some(0), "{out}{}", text(&runs.stderr));
    let row =
        |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no {id} in {out}")).to_string();
    assert!(row("r-1").contains("succeeded"), "{out}");
    assert!(row("r-2 ").contains("quarantined"), "{out}");
    assert!(row("r-3 ").contains("quarantined"), "{out}");
    assert!(out.contains("r-3: quarantined: ") && out.contains("checksum mismatch"), "{out}");
    assert!(out.contains("weir store check"), "{out}");
}
