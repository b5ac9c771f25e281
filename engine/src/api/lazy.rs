//! A service built at its first call: gRPC reflection decodes weir's and health's descriptor
//! sets and indexes every symbol, twice (v1 and v1alpha), which was most of the time from a
//! bound socket to a serving one (about 2.7 ms of a one-step `weir run`'s 20; BENCHMARKS.md,
//! issue 19). Only tools such as grpcurl ever call it, so a server that is never asked never
//! pays.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::codegen::Service;
use tonic::server::NamedService;

/// `S`, made by `make` when first called and shared by every clone afterwards.
pub(super) struct Lazy<S> {
    cell: Arc<OnceLock<S>>,
    make: fn() -> S,
}

impl<S> Lazy<S> {
    pub(super) fn new(make: fn() -> S) -> Self {
        Lazy { cell: Arc::new(OnceLock::new()), make }
    }
}

impl<S> Clone for Lazy<S> {
    fn clone(&self) -> Self {
        Lazy { cell: self.cell.clone(), make: self.make }
    }
}

impl<S: NamedService> NamedService for Lazy<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> Service<R> for Lazy<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    /// Ready at once: the services wrapped here (tonic's generated servers) always are, and the
    /// call drives a fresh clone of the built one, as tonic's router does with every service.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let mut inner = self.cell.get_or_init(self.make).clone();
        inner.call(req)
    }
}
