//! Forwarding a step's output to the engine: the runtime's [`LogLine`]s become `LogChunk`s
//! (`line + "\n"`), gathered into batches flushed every [`FLUSH_EVERY`] or at [`FLUSH_BYTES`],
//! each batch one UploadLogs call retried until the engine takes it. Lines are always read from
//! the runtime at once, so a slow or absent engine never blocks the step: past [`MAX_PENDING`]
//! bytes waiting, lines are dropped and a note saying how much is put in their place. It never
//! reorders lines and returns only when every line is uploaded (or refused). The attempt's
//! secret values are masked (`mask`) per stream before a byte is queued, so none is ever
//! uploaded, held for upload, or counted in a note.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::wire;
use tokio::sync::{Notify, mpsc};
use tonic::codegen::tokio_stream;
use weir_proto::v1;

use super::mask::Masker;
use super::session::{CallError, Key, NotFound, Session};
use crate::runtime::{LogLine, Stream};

/// How long a line may wait before it is sent.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(150);
/// A batch this large is sent at once; also the most one UploadLogs message carries.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;
/// The most output held while the engine is away; more is dropped, with a note.
pub(crate) const MAX_PENDING: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    chunks: VecDeque<v1::LogChunk>,
    bytes: usize,
    /// Bytes dropped since the last kept chunk.
    dropped: u64,
    closed: bool,
    /// The engine refused the logs (the attempt is no longer live): discard the rest.
    refused: bool,
}

impl Pending {
    fn push(&mut self, chunk: v1::LogChunk) {
        if self.refused {
            return;
        }
        if self.bytes + chunk.data.len() > MAX_PENDING {
            self.dropped += chunk.data.len() as u64;
            return;
        }
        if self.dropped > 0 {
            let note = format!("[weir-worker: {} bytes of output dropped while the engine was away]\n", self.dropped);
            self.dropped = 0;
            self.push_kept(v1::LogChunk { data: note.into_bytes(), ..chunk.clone() });
        }
        self.push_kept(chunk);
    }

    fn push_kept(&mut self, chunk: v1::LogChunk) {
        self.bytes += chunk.data.len();
        self.chunks.push_back(chunk);
    }

    /// Takes everything waiting, as UploadLogs messages of at most [`FLUSH_BYTES`] each
    /// (a longer single chunk travels alone).
    fn take(&mut self) -> Vec<Vec<v1::LogChunk>> {
        let mut messages: Vec<Vec<v1::LogChunk>> = Vec::new();
        let mut size = 0;
        for chunk in self.chunks.drain(..) {
            match messages.last_mut() {
                Some(last) if size + chunk.data.len() <= FLUSH_BYTES => {
                    size += chunk.data.len();
                    last.push(chunk);
                }
                _ => {
                    size = chunk.data.len();
                    messages.push(vec![chunk]);
                }
            }
        }
        self.bytes = 0;
        messages
    }
}

fn chunk(line: LogLine) -> v1::LogChunk {
    let mut data = line.line;
    data.push(b'\n');
    bytes_chunk(line.stream, line.at, data)
}

fn bytes_chunk(stream: Stream, at: std::time::SystemTime, data: Vec<u8>) -> v1::LogChunk {
    let stream = match stream {
        Stream::Stdout => v1::LogStream::Stdout,
        Stream::Stderr => v1::LogStream::Stderr,
    };
    v1::LogChunk {
        time: Some(wire::system_time(at)),
        stream: stream as i32,
        data,
        instance_name: String::new(),
        attempt: 0,
    }
}

/// Uploads every line from `lines` for the attempt `key`; returns once `lines` is closed and
/// all it carried is uploaded, refused, or abandoned. Every occurrence of one of `secrets`
/// (the attempt's secret values) is replaced with `***` first.
pub(crate) async fn forward(session: &Session, key: &Key, mut lines: mpsc::Receiver<LogLine>, secrets: &[String]) {
    let pending = Mutex::new(Pending::default());
    let wake = Notify::new();
    let collect = async {
        let mut masks = Masks::new(secrets);
        while let Some(line) = lines.recv().await {
            let Some(chunk) = masks.chunk(line) else { continue };
            let mut p = pending.lock().expect("pending lock");
            p.push(chunk);
            if p.bytes >= FLUSH_BYTES {
                wake.notify_one();
            }
        }
        let mut p = pending.lock().expect("pending lock");
        for chunk in masks.finish() {
            p.push(chunk);
        }
        p.closed = true;
        drop(p);
        wake.notify_one();
    };
    let upload = async {
        loop {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            let (messages, closed) = {
                let mut p = pending.lock().expect("pending lock");
                (p.take(), p.closed)
            };
            if !messages.is_empty() {
                match upload(session, key, messages).await {
                    Ok(()) => {}
                    Err(CallError::Refused(status)) => {
                        tracing::info!(attempt = %key, code = ?status.code(), error = status.message(), "the engine refused the logs, dropping the rest");
                        let mut p = pending.lock().expect("pending lock");
                        p.refused = true;
                        p.chunks.clear();
                        p.bytes = 0;
                    }
                    Err(CallError::Abandoned) => {
                        let mut p = pending.lock().expect("pending lock");
                        p.refused = true;
                        p.chunks.clear();
                        p.bytes = 0;
                    }
                }
            }
            // `closed` was read with the batch: everything sent before the close is uploaded.
            if closed {
                let p = pending.lock().expect("pending lock");
                if p.chunks.is_empty() {
                    return;
                }
            }
        }
    };
    tokio::join!(collect, upload);
}

/// One [`Masker`] per stream: a value split across two lines of one stream is masked too.
struct Masks {
    stdout: Masker,
    stderr: Masker,
}

impl Masks {
    fn new(secrets: &[String]) -> Masks {
        let m = Masker::new(secrets.iter().map(String::as_str));
        Masks { stdout: m.clone(), stderr: m }
    }

    /// `line` as a chunk, masked; `None` when all of it is held back for now.
    fn chunk(&mut self, line: LogLine) -> Option<v1::LogChunk> {
        let m = match line.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        if m.is_empty() {
            return Some(chunk(line));
        }
        let mut data = line.line;
        data.push(b'\n');
        let data = m.push(&data);
        (!data.is_empty()).then(|| bytes_chunk(line.stream, line.at, data))
    }

    /// What each stream held back at its end.
    fn finish(&mut self) -> Vec<v1::LogChunk> {
        let at = crate::clock::wall();
        [(Stream::Stdout, self.stdout.finish()), (Stream::Stderr, self.stderr.finish())]
            .into_iter()
            .filter(|(_, data)| !data.is_empty())
            .map(|(stream, data)| bytes_chunk(stream, at, data))
            .collect()
    }
}

async fn upload(session: &Session, key: &Key, messages: Vec<Vec<v1::LogChunk>>) -> Result<(), CallError> {
    session
        .call("upload logs", NotFound::Reregister, |mut client, id| {
            let requests: Vec<v1::UploadLogsRequest> = messages
                .iter()
                .map(|chunks| v1::UploadLogsRequest {
                    worker_id: id.to_string(),
                    attempt: Some(key.to_ref()),
                    chunks: chunks.clone(),
                })
                .collect();
            async move { client.upload_logs(tokio_stream::iter(requests)).await.map(drop) }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: Stream, text: &str) -> LogLine {
        LogLine { stream, at: crate::clock::wall(), line: text.as_bytes().to_vec() }
    }

    #[test]
    fn batches_keep_order_and_cap_message_size() {
        let mut p = Pending::default();
        let big = "x".repeat(FLUSH_BYTES / 2);
        for text in ["a", &big, &big, "b"] {
            p.push(chunk(line(Stream::Stdout, text)));
        }
        let messages = p.take();
        let sizes: Vec<Vec<usize>> = messages.iter().map(|m| m.iter().map(|c| c.data.len()).collect()).collect();
        assert_eq!(sizes, [vec![2, FLUSH_BYTES / 2 + 1], vec![FLUSH_BYTES / 2 + 1, 2]]);
        assert_eq!(messages[0][0].data, b"a\n");
        assert_eq!(messages[0][0].stream, v1::LogStream::Stdout as i32);
        assert_eq!(p.bytes, 0);
    }

    #[test]
    fn each_stream_is_masked_apart_and_what_is_held_comes_out_at_the_end() {
        let mut m = Masks::new(&["hunter2".to_string()]);
        let texts = |chunks: Vec<v1::LogChunk>| -> Vec<(i32, String)> {
            chunks.into_iter().map(|c| (c.stream, String::from_utf8(c.data).unwrap())).collect()
        };
        let mut out = Vec::new();
        for (stream, text) in [(Stream::Stdout, "pw hunter2"), (Stream::Stderr, "err hun"), (Stream::Stdout, "tail")] {
            out.extend(m.chunk(line(stream, text)));
        }
        out.extend(m.finish());
        let (o, e) = (v1::LogStream::Stdout as i32, v1::LogStream::Stderr as i32);
        assert_eq!(texts(out), [(o, "pw ***\n".to_string()), (e, "err hun\n".to_string()), (o, "tail\n".to_string())]);
    }

    #[test]
    fn overflow_drops_lines_and_says_so() {
        let mut p = Pending::default();
        let big = "y".repeat(MAX_PENDING - 10);
        p.push(chunk(line(Stream::Stderr, &big)));
        p.push(chunk(line(Stream::Stderr, "this line does not fit")));
        assert_eq!(p.take().concat().len(), 1);
        p.push(chunk(line(Stream::Stderr, "after")));
        let texts: Vec<String> = p.take().concat().into_iter().map(|c| String::from_utf8(c.data).unwrap()).collect();
        assert_eq!(
            texts,
            [
                "[weir-worker: 23 bytes of output dropped while the engine was away]\n".to_string(),
                "after\n".to_string()
            ]
        );
    }
}
