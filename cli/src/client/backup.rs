//! `weir backup FILE`: asks the server (`WeirAdmin.Backup`) for a backup of its store and blobs
//! and saves the stream. It writes FILE.tmp, checks the whole file (every section's checksum,
//! the totals and the digest, with `weir_engine::backup::verify`), fsyncs it and renames it to
//! FILE, so FILE is only ever a whole, checked backup. Progress goes to stderr every few
//! seconds while the stream lasts. What the file holds is the server's decision; this only
//! saves and checks it.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_engine::backup;
use weir_proto::v1;

use super::conn::{AdminClient, Hints, refused};
use super::retention::render::bytes;
use super::{ConnArgs, Failure, print_out};

/// How often a progress line is printed while the stream lasts.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// `weir backup FILE [--force]`.
pub(super) async fn backup(
    client: &mut AdminClient,
    conn: &ConnArgs,
    file: PathBuf,
    force: bool,
) -> Result<(), Failure> {
    if !force && fs::symlink_metadata(&file).is_ok() {
        eprintln!("error: {} already exists", file.display());
        eprintln!("help: pass --force to replace it, or name a new file");
        return Err(Failure::Refused);
    }
    let mut tmp_name = file.clone().into_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = save(client, conn, &tmp).await.and_then(|()| check_and_install(&tmp, &file));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Streams the backup into `tmp`, flushed and fsynced.
async fn save(client: &mut AdminClient, conn: &ConnArgs, tmp: &Path) -> Result<(), Failure> {
    let created = File::create(tmp).map_err(|e| local_error(&format!("cannot create {}", tmp.display()), &e))?;
    let mut out = BufWriter::new(created);
    let mut stream =
        client.backup(v1::BackupRequest {}).await.map_err(|s| refused(&s, conn, Hints::default()))?.into_inner();
    let (start, mut last, mut received) = (Instant::now(), Instant::now(), 0u64);
    loop {
        let chunk = match stream.message().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(s) => {
                eprintln!("error: the backup stopped after {}", bytes(received));
                return Err(refused(&s, conn, Hints::default()));
            }
        };
        out.write_all(&chunk.data).map_err(|e| local_error(&format!("cannot write {}", tmp.display()), &e))?;
        received += chunk.data.len() as u64;
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            eprintln!("backup: {} received in {}s", bytes(received), start.elapsed().as_secs());
        }
    }
    let file = out.into_inner().map_err(|e| local_error(&format!("cannot write {}", tmp.display()), e.error()))?;
    file.sync_all().map_err(|e| local_error(&format!("cannot fsync {}", tmp.display()), &e))
}

/// Checks the saved file end to end, then renames it into place and fsyncs the folder.
fn check_and_install(tmp: &Path, file: &Path) -> Result<(), Failure> {
    let opened = File::open(tmp).map_err(|e| local_error(&format!("cannot read {}", tmp.display()), &e))?;
    let summary = match backup::verify(BufReader::new(opened)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: the backup received does not check out: {e}");
            eprintln!("help: run `weir backup` again; nothing was written to {}", file.display());
            return Err(Failure::Refused);
        }
    };
    fs::rename(tmp, file)
        .map_err(|e| local_error(&format!("cannot rename {} to {}", tmp.display(), file.display()), &e))?;
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Err(e) = File::open(folder).and_then(|d| d.sync_all()) {
        eprintln!("warning: cannot fsync {}: {e}", folder.display());
    }
    let t = &summary.trailer;
    for d in &t.missing {
        eprintln!("warning: blob {d} is named by a record but was not stored on the server: it is not in the backup");
    }
    print_out(&format!(
        "backup {}: {} records, {} blobs ({}), {} in all, taken at {} UTC\n",
        file.display(),
        t.records,
        t.blobs,
        bytes(t.blob_bytes),
        bytes(summary.bytes),
        crate::display::datetime(summary.header.created_at.0),
    ));
    Ok(())
}

fn local_error(what: &str, e: &std::io::Error) -> Failure {
    eprintln!("error: {what}: {e}");
    Failure::Refused
}
