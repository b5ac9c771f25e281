//! Turning a step's output stream into [`LogLine`]s: split on `\n`, cap line length, stamp the
//! time, send in order. Shared by every runtime that reads bytes from a pipe or a socket. It never
//! blocks the step on a closed receiver: output nobody listens to is read and dropped.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use super::{LogLine, Stream};

/// The longest line sent as one [`LogLine`]; longer lines arrive in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads `reader` to its end, sending each line to `tx`. Returns when the stream closes or fails
/// (a read error ends the stream like an end of file: the step's exit status says what happened).
pub(crate) async fn pump(mut reader: impl AsyncBufRead + Unpin, stream: Stream, tx: mpsc::Sender<LogLine>) {
    let mut line = Vec::new();
    let mut listening = true;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let room = MAX_LINE - line.len();
        // A newline right after a full line still ends that line (no empty piece follows).
        let (take, complete) = match buf.iter().take(room + 1).position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), buf.len() > room),
        };
        let chunk = &buf[..take];
        line.extend_from_slice(chunk.strip_suffix(b"\n").unwrap_or(chunk));
        reader.consume(take);
        if complete {
            let line = std::mem::take(&mut line);
            if listening {
                listening = tx.send(LogLine { stream, at: crate::clock::wall(), line }).await.is_ok();
            }
        }
    }
    if !line.is_empty() && listening {
        let _ = tx.send(LogLine { stream, at: crate::clock::wall(), line }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(input: &[u8], expect: &[&[u8]]) {
        let (tx, mut rx) = mpsc::channel(1024);
        // A tiny buffer so that lines straddle reads.
        let reader = tokio::io::BufReader::with_capacity(7, input);
        pump(reader, Stream::Stderr, tx).await;
        let mut got = Vec::new();
        while let Some(l) = rx.recv().await {
            assert_eq!(l.stream, Stream::Stderr);
            got.push(l.line);
        }
        assert_eq!(got, expect.iter().map(|l| l.to_vec()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn splits_lines() {
        check(b"", &[]).await;
        check(b"a\n", &[b"a"]).await;
        check(b"a\n\nbcdefghijklmnop\nlast", &[b"a", b"", b"bcdefghijklmnop", b"last"]).await;
        check(b"\r\n", &[b"\r"]).await;
    }

    #[tokio::test]
    async fn caps_long_lines() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.extend_from_slice(b"\nend\n");
        check(&input, &[&long[..MAX_LINE], &long[..MAX_LINE], b"xxxxx", b"end"]).await;
        // Exactly MAX_LINE bytes then a newline: one line, no empty piece after it.
        let mut input = vec![b'y'; MAX_LINE];
        input.extend_from_slice(b"\nz");
        check(&input, &[&input[..MAX_LINE], b"z"]).await;
        check(&input[..MAX_LINE], &[&input[..MAX_LINE]]).await;
    }

    #[tokio::test]
    async fn closed_receiver_still_drains() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        pump(&b"a\nb\nc"[..], Stream::Stdout, tx).await;
    }
}
