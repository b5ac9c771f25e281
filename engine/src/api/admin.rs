//! The `WeirAdmin` gRPC service: `Backup` streams the backup file the engine writes
//! (`server/backup.rs`) in chunks. The snapshot and the file are written on a blocking thread
//! into a bounded channel, so a slow client slows the copy of blobs, never the store's writes
//! (they wait only while the records are read). A client that goes away ends the copy and
//! releases the blobs it held against the sweep. An error after the first chunk ends the
//! stream with its status: the client's file then lacks its trailer and is refused by restore.

use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weir_proto::v1;
use weir_proto::v1::weir_admin_server::WeirAdmin;

use super::bounds::bounded;
use super::transfer::CHUNK;
use crate::server::core::Engine;

pub struct AdminApi(pub Arc<Engine>);

type Chunks = ReceiverStream<Result<v1::Chunk, Status>>;

#[tonic::async_trait]
impl WeirAdmin for AdminApi {
    type BackupStream = Chunks;

    async fn backup(&self, req: Request<v1::BackupRequest>) -> Result<Response<Chunks>, Status> {
        bounded(req)?;
        let engine = self.0.clone();
        let snapshot = tokio::task::spawn_blocking({
            let engine = engine.clone();
            move || engine.snapshot()
        })
        .await
        .map_err(|e| Status::internal(format!("backup: {e}")))??;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let out = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
            if let Err(e) = engine.write_backup(snapshot, out, &mut |_| {}) {
                // A client that went away needs no status; anyone else hears why.
                if tx.is_closed() {
                    tracing::info!("backup abandoned: the client went away");
                } else {
                    let _ = tx.blocking_send(Err(Status::from(e)));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends what is written as chunks of [`CHUNK`] bytes; a closed channel is a write error.
struct ChunkWriter {
    tx: mpsc::Sender<Result<v1::Chunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(v1::Chunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
