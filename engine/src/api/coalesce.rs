//! A connection's byte stream as the engine's HTTP/2 server writes it: one that says it takes no
//! vectored writes. h2 then copies a DATA frame's payload under 1 KiB into its write buffer
//! (with vectored writes it chains any payload of 256 bytes or more, and buffers no other
//! frame until that one is written). A unary answer, HEADERS, a DATA frame of a few hundred
//! bytes (a Report's answer with the next attempt) and the trailers, then leaves in one write
//! instead of two, and wakes the worker once. Bigger payloads (artifacts, bundles) are still
//! chained; they cost one more write each, which is nothing beside their size.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// `T`, reporting no vectored writes.
pub struct Coalesced<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: Connected> Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use hyper::body::Bytes;
    use hyper::{HeaderMap, Request, Response};

    use super::*;

    /// A stream that counts the writes made to it.
    struct Counted<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let done = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(done, Poll::Ready(Ok(_))) {
                self.writes.fetch_add(1, SeqCst);
            }
            done
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let done = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            if matches!(done, Poll::Ready(Ok(_))) {
                self.writes.fetch_add(1, SeqCst);
            }
            done
        }

        fn is_write_vectored(&self) -> bool {
            true // as a TcpStream
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The writes an h2 server makes to answer one call with HEADERS, a 300-byte message and
    /// trailers queued together (as hyper queues a unary gRPC answer), over `wrap`'s stream.
    async fn writes_of_an_answer<S>(wrap: impl FnOnce(Counted<tokio::io::DuplexStream>) -> S) -> usize
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let server_io = wrap(Counted { inner: server_io, writes: writes.clone() });
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
            let counted = writes.clone();
            let before = counted.load(SeqCst);
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            send.send_data(Bytes::from(vec![7u8; 300]), false).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            send.send_trailers(trailers).unwrap();
            // Drive the connection until the client has read the answer and hung up.
            while conn.accept().await.is_some() {}
            counted.load(SeqCst) - before
        });
        let (client, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(Request::post("http://engine/x").body(()).unwrap(), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        while let Some(chunk) = body.data().await {
            let _ = chunk.unwrap();
        }
        assert!(body.trailers().await.unwrap().is_some());
        drop((client, body));
        server.await.unwrap()
    }

    /// With the stream's vectored writes, h2 chains the 300-byte message and writes the
    /// trailers after it: two writes. Told there are none, it copies the message and the
    /// answer leaves in one.
    #[tokio::test]
    async fn a_small_answer_and_its_trailers_leave_in_one_write() {
        assert_eq!(writes_of_an_answer(|io| io).await, 2, "the case this module is for");
        assert_eq!(writes_of_an_answer(Coalesced).await, 1);
    }
}
