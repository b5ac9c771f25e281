//! `WeirClient`'s server-streaming calls: a run's events as they happen (`WatchRun`), step
//! logs, optionally followed (`StreamLogs`), and one output file (`GetArtifact`). Each stream is
//! fed by a task that runs in the call's span, so what it logs names the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use weir_core::run::Millis;
use weir_proto::v1;

use super::super::bounds::bounded;
use super::super::convert as wire;
use super::super::transfer;
use super::Stream;
use crate::server::core::{Engine, Seen};
use crate::server::error::ApiError;
use crate::store::{Change, LogCursor};

pub(super) async fn watch_run(
    engine: &Arc<Engine>,
    req: Request<v1::WatchRunRequest>,
) -> Result<Response<Stream<v1::RunEvent>>, Status> {
    let r = bounded(req)?;
    let engine = engine.clone();
    let mut changes = engine.changes.subscribe();
    let (_, steps, _) = engine.load_run(&r.run_id)?;
    let names: Vec<String> = steps.into_iter().map(|s| s.name).collect();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(
        async move {
            let mut last = r.after_seq;
            // The next event, as its announcement carried it: sent without reading the store.
            let mut next: Option<(u64, Arc<Seen>)> = None;
            loop {
                let mut ended = false;
                if let Some((seq, seen)) = next.take() {
                    last = seq;
                    for change in &seen.changes {
                        ended |= matches!(change, Change::Run { state } if state.is_terminal());
                        if tx.send(Ok(run_event(&names, seq, seen.now, change.clone()))).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let events = match engine.store.events(&r.run_id, last) {
                        Ok(it) => it,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                            return;
                        }
                    };
                    for item in events {
                        let (seq, ev) = match item {
                            Ok(x) => x,
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                                return;
                            }
                        };
                        last = seq;
                        for change in ev.changes {
                            ended |= matches!(&change, Change::Run { state } if state.is_terminal());
                            if tx.send(Ok(run_event(&names, seq, ev.now, change))).await.is_err() {
                                return;
                            }
                        }
                    }
                    if !ended && engine.store.run(&r.run_id).ok().flatten().is_some_and(|rec| rec.state.is_terminal()) {
                        // Finished before this watcher saw the change (or a replayed finish).
                        if !crate::server::runs::has_more(&engine, &r.run_id, last) {
                            return;
                        }
                        continue;
                    }
                }
                if ended {
                    return;
                }
                // Wait for a change of this run; a lag or a quiet minute re-reads the store. The
                // event right after the last one sent, announced with its changes, needs no read.
                let wait = crate::server::core::next_announced(&mut changes, &r.run_id, last);
                tokio::select! {
                    got = wait => next = got,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = tx.closed() => return,
                }
            }
        }
        .in_current_span(),
    );
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// One change of an event as `WatchRun` sends it.
fn run_event(names: &[String], seq: u64, now: Millis, change: Change) -> v1::RunEvent {
    let kind = match change {
        Change::Step { instance, state, attempt, message } => v1::run_event::Kind::Step(v1::StepChanged {
            instance,
            name: names.get(instance as usize).cloned().unwrap_or_default(),
            state: wire::step_state(state) as i32,
            attempt,
            message: message.unwrap_or_default(),
        }),
        Change::Run { state } => {
            v1::run_event::Kind::Run(v1::RunChanged { state: wire::run_state(state) as i32, message: String::new() })
        }
    };
    v1::RunEvent { seq, time: Some(wire::timestamp(now)), kind: Some(kind) }
}

pub(super) async fn stream_logs(
    engine: &Arc<Engine>,
    req: Request<v1::StreamLogsRequest>,
) -> Result<Response<Stream<v1::LogChunk>>, Status> {
    let r = bounded(req)?;
    let engine = engine.clone();
    let chosen = engine.log_instances(&r.run_id, &r.step)?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(
        async move {
            let mut cursors: Vec<Option<LogCursor>> = vec![None; chosen.len()];
            let mut logs = engine.logs.subscribe();
            loop {
                logs.borrow_and_update();
                let finished = engine.store.run(&r.run_id).ok().flatten().is_none_or(|rec| rec.state.is_terminal());
                let mut any = false;
                for (k, (i, name)) in chosen.iter().enumerate() {
                    loop {
                        let batch = match engine.store.logs(&r.run_id, *i, cursors[k], 512) {
                            Ok(b) => b,
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                                return;
                            }
                        };
                        if batch.is_empty() {
                            break;
                        }
                        any = true;
                        for (cursor, chunk) in batch {
                            cursors[k] = Some(cursor);
                            if r.attempt != 0 && cursor.attempt != r.attempt {
                                continue;
                            }
                            let out = v1::LogChunk {
                                time: Some(wire::timestamp(chunk.at)),
                                stream: match chunk.stream {
                                    crate::store::Stream::Stdout => v1::LogStream::Stdout,
                                    crate::store::Stream::Stderr => v1::LogStream::Stderr,
                                } as i32,
                                data: chunk.data,
                                instance_name: name.clone(),
                                attempt: cursor.attempt,
                            };
                            if tx.send(Ok(out)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if !r.follow || (finished && !any) {
                    return;
                }
                tokio::select! {
                    _ = logs.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tx.closed() => return,
                }
            }
        }
        .in_current_span(),
    );
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn get_artifact(
    engine: &Arc<Engine>,
    req: Request<v1::GetArtifactRequest>,
) -> Result<Response<Stream<v1::GetArtifactResponse>>, Status> {
    let r = bounded(req)?;
    let entry = engine.output(&r.run_id, &r.step, &r.path)?;
    let mut chunks = transfer::download(engine, entry.digest, 0)?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(
        async move {
            let head = v1::GetArtifactResponse {
                part: Some(v1::get_artifact_response::Part::Entry(v1::ManifestEntry {
                    path: entry.path.clone(),
                    digest: entry.digest.to_string(),
                    size: entry.size,
                    executable: entry.executable,
                })),
            };
            if tx.send(Ok(head)).await.is_err() {
                return;
            }
            use tokio_stream::StreamExt;
            while let Some(c) = chunks.next().await {
                let msg =
                    c.map(|c| v1::GetArtifactResponse { part: Some(v1::get_artifact_response::Part::Chunk(c.data)) });
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
        .in_current_span(),
    );
    Ok(Response::new(ReceiverStream::new(rx)))
}
