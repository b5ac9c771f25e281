//! How a client's calls reach an engine: over a connection ([`Transport::Channel`], tonic's, TCP
//! with or without TLS; [`Transport::Direct`], HTTP/2 sent from the caller's task, plain or TLS,
//! see [`crate::direct`]), or, when the engine runs in the same process (`weir run`'s embedded
//! worker), straight into its gRPC router ([`Transport::local`]): the generated client encodes the
//! request as usual and the router's guard and handlers decode it, but there is no socket, no
//! HTTP/2 framing and no connection task in between, so a call is a function call on the
//! caller's own task. The guard still checks every call the same way (a local call carries no
//! peer address or client certificate, so a server that demands mTLS of workers refuses it).

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::transport::Channel;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;
use tracing::Instrument as _;

/// A gRPC transport for the generated clients (`WeirWorkerClient::new(transport)`); cloning
/// is cheap and clones share the connection (or the router).
#[derive(Clone)]
pub enum Transport {
    /// A connection to an engine elsewhere.
    Channel(Channel),
    /// A connection to an engine elsewhere, plain or TLS, without tonic's task hops.
    Direct(crate::direct::Direct),
    /// An engine in this process: its router, called directly.
    Local(BoxCloneSyncService<Request<Body>, Response<Body>, StdError>),
}

impl Transport {
    /// Calls go to `router` (the engine's gRPC routes, e.g. `tonic::service::Routes`) as plain
    /// service calls.
    pub fn local<S>(router: S) -> Transport
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Transport::Local(BoxCloneSyncService::new(router.map_err(|never| match never {})))
    }

    /// Whether calls stay in this process.
    pub fn is_local(&self) -> bool {
        matches!(self, Transport::Local(_))
    }
}

impl From<crate::direct::Direct> for Transport {
    fn from(direct: crate::direct::Direct) -> Transport {
        Transport::Direct(direct)
    }
}

impl From<Channel> for Transport {
    fn from(channel: Channel) -> Transport {
        Transport::Channel(channel)
    }
}

impl Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Response<Body>, StdError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        match self {
            Transport::Channel(c) => c.poll_ready(cx).map_err(Into::into),
            Transport::Direct(_) => Poll::Ready(Ok(())),
            Transport::Local(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self {
            Transport::Channel(c) => {
                let call = c.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Direct(d) => {
                let call = d.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Local(s) => {
                // As the server's own `trace_fn` does for calls over a connection.
                let span = tracing::info_span!("rpc", method = request.uri().path());
                Box::pin(s.call(request).instrument(span))
            }
        }
    }
}
