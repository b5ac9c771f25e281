//! The backup file end to end on real stores: written, verified, restored into a fresh folder
//! with the same records and blobs; every truncation and every flipped byte refused with a
//! message naming what is wrong, and a refused restore writing nothing.

use std::path::Path;

use weir_core::run::{Millis, RunState};
use weir_data::artifact::{self, Digest};

use super::*;
use crate::store::Store;

/// The key of the step secret every fixture holds, sealed, and its value.
fn secrets_key() -> crate::secrets::SecretsKey {
    crate::secrets::SecretsKey::from_bytes(&[9u8; 32], Path::new("key")).unwrap()
}
const SECRET_VALUE: &str = "backed-up-secret-value-0d9f";

/// A data folder with two runs, a pipeline whose bundle is a blob, a sealed step secret and
/// `blobs` output blobs; returns the backup file's bytes.
fn backup_of(dir: &Path, blobs: &[&[u8]]) -> Vec<u8> {
    let store = Store::open(&dir.join("db")).unwrap();
    let art = artifact::Store::open(&dir.join("artifacts")).unwrap();
    let bundle = art.put_bytes(b"bundle bytes").unwrap();
    crate::store::testkit::train_with_bundle(&store, bundle);
    store.put_run(&crate::store::testkit::run("r-1", "train", RunState::Succeeded)).unwrap();
    store.put_run(&crate::store::testkit::run("r-2", "train", RunState::Running)).unwrap();
    store.put_secret("DB_PASSWORD", &secrets_key().seal("DB_PASSWORD", SECRET_VALUE, Millis(1), Millis(2))).unwrap();
    let mut digests: Vec<Digest> = blobs.iter().map(|b| art.put_bytes(b).unwrap()).collect();
    digests.push(bundle);
    let mut records = Vec::new();
    let exported = store.export(&mut records).unwrap();
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let trailer = write(
        &mut out,
        Contents {
            header: Header::new(Millis(42)),
            records: &mut &records[..],
            record_bytes: records.len() as u64,
            record_count: exported.records as u64,
            blobs: &art,
            digests: &digests,
        },
        &mut |p| seen.push(p.blobs_done),
    )
    .unwrap();
    assert_eq!((trailer.blobs, trailer.records), (digests.len() as u64, exported.records as u64));
    assert_eq!(seen.last(), Some(&(digests.len() as u64)), "progress reaches every blob");
    out
}

#[test]
fn a_backup_restores_into_a_fresh_folder_with_every_record_and_blob() {
    let src = tempfile::tempdir().unwrap();
    let file = backup_of(src.path(), &[b"model weights", b"", b"metrics"]);
    let summary = verify(&file[..]).unwrap();
    assert_eq!(summary.header.format, FORMAT);
    assert_eq!(summary.header.created_at, Millis(42));
    assert_eq!(summary.bytes, file.len() as u64);
    assert_eq!(summary.trailer.blobs, 4);

    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("weir.backup");
    std::fs::write(&path, &file).unwrap();
    let target = base.path().join("restored");
    let restored = restore(&path, &target, &mut |_| {}).unwrap();
    assert_eq!(restored.records as u64, summary.trailer.records);
    let (a, b) = (Store::open(&src.path().join("db")).unwrap(), Store::open(&target.join("db")).unwrap());
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    a.export(&mut ea).unwrap();
    b.export(&mut eb).unwrap();
    assert_eq!(String::from_utf8(ea).unwrap(), String::from_utf8(eb).unwrap());
    let art = artifact::Store::open(&target.join("artifacts")).unwrap();
    for content in [&b"model weights"[..], b"", b"metrics", b"bundle bytes"] {
        let d = Digest::of(content);
        art.verify(&d).unwrap();
    }
    assert!(!target.join("restore-records.tmp").exists());
    // Step secrets travel sealed and open again under the same key file.
    assert!(!file.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()), "plaintext in the backup");
    let sealed = b.secret("DB_PASSWORD").unwrap().expect("the secret is restored");
    assert_eq!(secrets_key().open("DB_PASSWORD", &sealed).unwrap(), SECRET_VALUE);
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused_by_name() {
    let src = tempfile::tempdir().unwrap();
    let file = backup_of(src.path(), &[b"weights", b"logs"]);
    for len in 0..file.len() {
        let err = verify(&file[..len]).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::NotABackup | Error::Truncated { .. } | Error::NoTrailer { .. }),
            "cut at {len}: {text}"
        );
        if len >= MAGIC.len() {
            assert!(text.contains("truncated"), "cut at {len}: {text}");
        }
    }
    for at in 0..file.len() {
        let mut bad = file.clone();
        bad[at] ^= 0x20;
        let err = verify(&bad[..]).expect_err(&format!("byte {at} flipped was accepted"));
        // A flipped length may also read as a truncation; never anything accepted.
        let text = err.to_string();
        assert!(
            text.contains("damaged") || text.contains("truncated") || text.contains("not a weir backup"),
            "byte {at}: {text}"
        );
    }
    let mut longer = file.clone();
    longer.push(b'x');
    assert!(verify(&longer[..]).unwrap_err().to_string().contains("bytes follow the trailer"));
}

#[test]
fn a_flipped_blob_byte_names_the_blob_and_restore_writes_nothing() {
    let src = tempfile::tempdir().unwrap();
    let file = backup_of(src.path(), &[b"some unusual payload"]);
    let at = file.windows(20).position(|w| w == b"some unusual payload").unwrap();
    let mut bad = file.clone();
    bad[at + 3] ^= 1;
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("bad.backup");
    std::fs::write(&path, &bad).unwrap();
    let target = base.path().join("restored");
    let text = restore(&path, &target, &mut |_| {}).unwrap_err().to_string();
    let digest = Digest::of(b"some unusual payload");
    assert!(text.contains(&format!("blob {digest}")) && text.contains("checksum"), "{text}");
    assert!(!target.exists(), "nothing was written");
}

#[test]
fn restore_refuses_a_folder_that_holds_anything_and_a_file_that_is_not_a_backup() {
    let src = tempfile::tempdir().unwrap();
    let file = backup_of(src.path(), &[]);
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("weir.backup");
    std::fs::write(&path, &file).unwrap();
    let target = base.path().join("used");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("notes.txt"), b"mine").unwrap();
    let text = restore(&path, &target, &mut |_| {}).unwrap_err().to_string();
    assert!(text.contains("is not empty") && text.contains("notes.txt"), "{text}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
    std::fs::write(&path, b"{\"tree\":\"runs\"}\n").unwrap();
    let text = restore(&path, &base.path().join("new"), &mut |_| {}).unwrap_err().to_string();
    assert!(text.contains("not a weir backup"), "{text}");
}

#[test]
fn a_newer_format_is_refused_with_what_to_do() {
    let header = serde_json::to_vec(&Header { format: FORMAT + 1, ..Header::new(Millis(1)) }).unwrap();
    let mut w = frame::FrameWriter::new(Vec::new()).unwrap();
    w.section(Kind::Header, "header", header.len() as u64, &header[..]).unwrap();
    let file = w.finish().unwrap();
    let text = verify(&file[..]).unwrap_err().to_string();
    assert!(text.contains("newer weir") && text.contains(&format!("format {}", FORMAT + 1)), "{text}");
}
