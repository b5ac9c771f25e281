//! Moving bytes between gRPC streams and the blob store without holding whole files in memory:
//! a download reads a blob on a blocking thread into a bounded channel; an upload feeds a
//! bounded channel that a blocking thread hashes and stores through [`artifact::Store::put_reader`].

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use weir_proto::v1;

use weir_data::artifact::{self, Digest};

use crate::server::core::Engine;
use crate::server::error::ApiError;

/// Bytes per streamed chunk (gRPC's default message limit is 4 MiB).
pub const CHUNK: usize = 256 * 1024;

pub type ChunkStream = ReceiverStream<Result<v1::Chunk, Status>>;

/// Streams the blob `digest` from `offset`.
pub fn download(engine: &Arc<Engine>, digest: Digest, offset: u64) -> Result<ChunkStream, ApiError> {
    let mut file = engine.blobs().open_blob(&digest).map_err(|e| match e {
        artifact::Error::NotFound(d) => ApiError::NotFound(format!("no blob {d} is stored")),
        e => e.into(),
    })?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| ApiError::Internal(format!("seek in blob {digest}: {e}")))?;
    let (tx, rx) = mpsc::channel(4);
    let downloaded = engine.metrics.downloaded.clone();
    let left = file.metadata().map_or(CHUNK as u64, |m| m.len().saturating_sub(offset));
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK.min(left as usize).max(1)];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    downloaded.inc_by(n as u64);
                    if tx.blocking_send(Ok(v1::Chunk { data: buf[..n].to_vec() })).is_err() {
                        break; // the client went away
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::from(ApiError::Internal(format!("read blob {digest}: {e}")))));
                    break;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// An upload in progress: push chunks, then `finish` for the digest and size.
pub struct Upload {
    tx: Option<SyncSender<Vec<u8>>>,
    task: tokio::task::JoinHandle<Result<(Digest, u64), artifact::Error>>,
    received: u64,
    limit: u64,
}

impl Upload {
    /// Starts storing a blob of at most `limit` bytes; `what` names it in errors.
    pub fn start(engine: &Arc<Engine>, what: String, limit: u64) -> Upload {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let engine = engine.clone();
        let task = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader { rx, current: Vec::new(), pos: 0 };
            let stored = engine.blobs().put_reader(reader, Path::new(&what));
            if let Ok((_, size)) = &stored {
                engine.metrics.uploaded.inc_by(*size);
            }
            stored
        });
        Upload { tx: Some(tx), task, received: 0, limit }
    }

    pub async fn push(&mut self, chunk: Vec<u8>) -> Result<(), ApiError> {
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(ApiError::Invalid(format!(
                "upload is larger than the {} bytes announced or allowed",
                self.limit
            )));
        }
        let tx = self.tx.clone().expect("push after finish");
        // The blocking send waits only while the storing thread is behind by 4 chunks.
        let sent =
            tokio::task::spawn_blocking(move || tx.send(chunk)).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        if sent.is_err() {
            // The writer stopped: its own error (a full disk, ...) says why.
            return match (&mut self.task).await {
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(_)) => Err(ApiError::Internal("the blob writer stopped early".into())),
                Err(e) => Err(ApiError::Internal(e.to_string())),
            };
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(Digest, u64), ApiError> {
        self.tx = None;
        Ok(self.task.await.map_err(|e| ApiError::Internal(e.to_string()))??)
    }
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.current = next;
                    self.pos = 0;
                }
                Err(_) => return Ok(0), // sender dropped: end of upload
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
