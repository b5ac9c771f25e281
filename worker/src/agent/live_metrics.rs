//! Streaming a step's live metrics while it runs: [`tail`] reads the file `$WEIR_METRICS` names
//! every [`POLL`] (and once more when the step has ended), parses it with
//! [`metrics_file`](super::metrics_file), and uploads the points in UploadMetrics batches for
//! the attempt. What goes wrong is the step's to read, in its own log: each malformed line (the
//! first [`SHOWN`] of them, then a count), points the engine refused past its per-attempt
//! bound, a file that shrank. Nothing here can fail the step: a refused or abandoned upload
//! only stops the uploads.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_proto::v1;

use super::metrics_file::{Parsed, Parser};
use super::session::{CallError, Key, NotFound, Session};
use crate::runtime::{LogLine, Stream};
use crate::wire;

/// How often the file is read while the step runs.
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// The most bytes read at once.
const READ: u64 = 1 << 20;
/// The most points one UploadMetrics request carries (the engine's bound).
const BATCH: usize = 1000;
/// How many malformed lines are reported one by one in the step's log.
const SHOWN: u64 = 20;

/// What the tail knows between reads.
struct Tail {
    path: PathBuf,
    offset: u64,
    parser: Parser,
    malformed: u64,
    /// Malformed lines not yet counted in an upload.
    unsent_malformed: u32,
    points: Vec<v1::LiveMetricPoint>,
    /// The engine refused a batch, or the attempt is gone: read on, upload nothing more.
    stopped: bool,
    /// The bound's message is in the log already.
    told_full: bool,
}

/// Tails `path` for `key` until `done` fires (the step ended), then reads it to its end and
/// uploads what is left. Notes for the step go to `logs` as stderr lines.
pub(crate) async fn tail(
    session: &Session,
    key: &Key,
    path: PathBuf,
    logs: mpsc::Sender<LogLine>,
    done: CancellationToken,
) {
    let mut t = Tail {
        path,
        offset: 0,
        parser: Parser::default(),
        malformed: 0,
        unsent_malformed: 0,
        points: Vec::new(),
        stopped: false,
        told_full: false,
    };
    loop {
        let last = tokio::select! {
            () = done.cancelled() => true,
            () = tokio::time::sleep(POLL) => false,
        };
        // Read to the end (a step may have written more than one read holds).
        loop {
            let (bytes, note) = read(&t.path, t.offset).await;
            if let Some(note) = note {
                t.offset = 0;
                t.parser = Parser::default();
                say(&logs, note).await;
            }
            let Some(bytes) = bytes else { break };
            t.offset += bytes.len() as u64;
            let parsed = t.parser.feed(&bytes);
            take(&mut t, parsed, &logs).await;
            upload_full_batches(session, key, &mut t, &logs).await;
            if (bytes.len() as u64) < READ {
                break;
            }
        }
        if last {
            let parsed = t.parser.finish();
            take(&mut t, parsed, &logs).await;
            while !t.points.is_empty() || t.unsent_malformed > 0 {
                if !send(session, key, &mut t, &logs).await {
                    break;
                }
            }
            if t.malformed > SHOWN {
                say(&logs, format!("{} lines of $WEIR_METRICS were not metric points in all", t.malformed)).await;
            }
            return;
        }
        if !t.points.is_empty() || t.unsent_malformed > 0 {
            send(session, key, &mut t, &logs).await;
        }
    }
}

/// Adds parsed lines to the tail: points to send, malformed lines to the log.
async fn take(t: &mut Tail, parsed: Vec<Parsed>, logs: &mpsc::Sender<LogLine>) {
    for p in parsed {
        match p {
            Parsed::Point(p) => t.points.push(v1::LiveMetricPoint {
                name: p.name,
                value: p.value,
                step: p.step,
                time: Some(wire::system_time(p.at.unwrap_or_else(crate::clock::wall))),
            }),
            Parsed::Malformed { line, reason } => {
                t.malformed += 1;
                t.unsent_malformed = t.unsent_malformed.saturating_add(1);
                if t.malformed <= SHOWN {
                    say(logs, format!("$WEIR_METRICS line {line} is not a metric point, ignored: {reason}")).await;
                }
                if t.malformed == SHOWN + 1 {
                    say(logs, "more lines of $WEIR_METRICS are not metric points: counted, not shown".into()).await;
                }
            }
        }
    }
}

async fn upload_full_batches(session: &Session, key: &Key, t: &mut Tail, logs: &mpsc::Sender<LogLine>) {
    while t.points.len() >= BATCH && !t.stopped {
        send(session, key, t, logs).await;
    }
}

/// Sends one batch (at most [`BATCH`] points); false when nothing more will be sent.
async fn send(session: &Session, key: &Key, t: &mut Tail, logs: &mpsc::Sender<LogLine>) -> bool {
    if t.stopped {
        t.points.clear();
        return false;
    }
    let n = t.points.len().min(BATCH);
    let points: Vec<v1::LiveMetricPoint> = t.points.drain(..n).collect();
    let malformed = std::mem::take(&mut t.unsent_malformed);
    let answer = session
        .call("upload metrics", NotFound::Reregister, |mut client, id| {
            let request = v1::UploadMetricsRequest {
                worker_id: id.to_string(),
                attempt: Some(key.to_ref()),
                points: points.clone(),
                malformed,
            };
            async move { client.upload_metrics(request).await.map(tonic::Response::into_inner) }
        })
        .await;
    match answer {
        Ok(a) => {
            if a.refused > 0 && !a.message.is_empty() && !t.told_full {
                t.told_full = true;
                say(logs, a.message).await;
            }
            true
        }
        Err(CallError::Refused(status)) => {
            tracing::info!(attempt = %key, code = ?status.code(), error = status.message(), "the engine refused live metrics, sending no more");
            if status.code() != tonic::Code::FailedPrecondition {
                say(logs, format!("live metrics refused by the engine, no more are sent: {}", status.message())).await;
            }
            t.stopped = true;
            t.points.clear();
            false
        }
        Err(CallError::Abandoned) => {
            t.stopped = true;
            t.points.clear();
            false
        }
    }
}

/// A note for the step's log, as a stderr line.
async fn say(logs: &mpsc::Sender<LogLine>, text: String) {
    let line =
        LogLine { stream: Stream::Stderr, at: crate::clock::wall(), line: format!("weir-worker: {text}").into_bytes() };
    let _ = logs.send(line).await;
}

/// The bytes of `path` from `offset` (at most [`READ`]); `None` when there are none (or no
/// file yet). A note when the file is now shorter than `offset`: it is read again from its
/// start.
async fn read(path: &std::path::Path, offset: u64) -> (Option<Vec<u8>>, Option<String>) {
    // No file yet, or nothing new in it (every poll of most steps, and the last one of a
    // short step): one `stat` tells, here rather than on the blocking pool.
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Ok(m) if m.len() == offset => return (None, None),
        _ => {}
    }
    let path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Option<Vec<u8>>, Option<String>)> {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let (from, note) = if len < offset {
            (
                0,
                Some(
                    "$WEIR_METRICS shrank (rewritten?): reading it again from its start; append to it instead"
                        .to_string(),
                ),
            )
        } else {
            (offset, None)
        };
        file.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        file.take(READ).read_to_end(&mut buf)?;
        Ok(((!buf.is_empty()).then_some(buf), note))
    })
    .await;
    match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the live metrics file");
            (None, None)
        }
        Err(_) => (None, None),
    }
}
