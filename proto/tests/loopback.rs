//! Smoke test of the generated tonic code over a real loopback connection: a unary call, a
//! client stream, a server stream and a status code carrying details, against a stub worker
//! service. The engine's real services are tested in the engine; this only shows that the
//! generated client and server and the tonic-prost codec fit together.

use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use weir_proto::v1::weir_worker_client::WeirWorkerClient;
use weir_proto::v1::weir_worker_server::{WeirWorker, WeirWorkerServer};
use weir_proto::v1::*;

struct Stub;

type ChunkStream = std::pin::Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl WeirWorker for Stub {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let worker_id = format!("{}-1", request.into_inner().name);
        let lease_timeout = Some(prost_types::Duration { seconds: 30, nanos: 0 });
        Ok(Response::new(RegisterResponse {
            worker_id,
            lease_timeout,
            heartbeat_interval: None,
            session: String::new(),
        }))
    }

    async fn lease(&self, _: Request<LeaseRequest>) -> Result<Response<LeaseResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn report(&self, request: Request<ReportRequest>) -> Result<Response<ReportResponse>, Status> {
        let attempt = request.into_inner().attempt.and_then(|a| a.attempt).unwrap_or_default();
        let message = format!("attempt #{}.{} is stale", attempt.instance, attempt.number);
        let details = Diagnostics { diagnostics: vec![Diagnostic { message: message.clone(), ..Default::default() }] };
        Err(Status::with_details(Code::FailedPrecondition, message, prost::Message::encode_to_vec(&details).into()))
    }

    async fn upload_metrics(
        &self,
        _: Request<weir_proto::v1::UploadMetricsRequest>,
    ) -> Result<Response<weir_proto::v1::UploadMetricsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn upload_logs(
        &self,
        _: Request<Streaming<UploadLogsRequest>>,
    ) -> Result<Response<UploadLogsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<UploadArtifactRequest>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        use upload_artifact_request::Part;
        let mut parts = request.into_inner();
        let Some(UploadArtifactRequest { part: Some(Part::Header(header)) }) = parts.message().await? else {
            return Err(Status::invalid_argument("the first message must be the header"));
        };
        let mut size = 0;
        while let Some(UploadArtifactRequest { part }) = parts.message().await? {
            match part {
                Some(Part::Chunk(bytes)) => size += bytes.len() as u64,
                _ => return Err(Status::invalid_argument("only chunks may follow the header")),
            }
        }
        Ok(Response::new(UploadArtifactResponse { digest: header.digest, size }))
    }

    type DownloadBlobStream = ChunkStream;

    async fn download_blob(&self, request: Request<DownloadBlobRequest>) -> Result<Response<ChunkStream>, Status> {
        let digest = request.into_inner().digest;
        let chunks = digest.into_bytes().chunks(2).map(|c| Ok(Chunk { data: c.to_vec() })).collect::<Vec<_>>();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    type DownloadBundleStream = ChunkStream;

    async fn download_bundle(&self, _: Request<DownloadBundleRequest>) -> Result<Response<ChunkStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn generated_client_and_server_talk_over_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder().add_service(WeirWorkerServer::new(Stub));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
    let mut client = WeirWorkerClient::connect(format!("http://{addr}")).await.unwrap();

    let registered = client.register(RegisterRequest { name: "gpu".into(), ..Default::default() }).await.unwrap();
    assert_eq!(registered.get_ref().worker_id, "gpu-1");
    assert_eq!(registered.get_ref().lease_timeout.map(|d| d.seconds), Some(30));

    use upload_artifact_request::Part;
    let header = UploadArtifactHeader { path: "model.json".into(), digest: "abc".into(), ..Default::default() };
    let parts = [Part::Header(header), Part::Chunk(vec![1; 1000]), Part::Chunk(vec![2; 24])];
    let upload = tokio_stream::iter(parts.map(|part| UploadArtifactRequest { part: Some(part) }));
    let stored = client.upload_artifact(upload).await.unwrap().into_inner();
    assert_eq!((stored.digest.as_str(), stored.size), ("abc", 1024));

    let request = DownloadBlobRequest { digest: "abcde".into(), ..Default::default() };
    let chunks: Vec<Chunk> =
        client.download_blob(request).await.unwrap().into_inner().map(Result::unwrap).collect().await;
    assert_eq!(chunks.iter().map(|c| c.data.as_slice()).collect::<Vec<_>>(), [&b"ab"[..], b"cd", b"e"]);

    let stale = AttemptRef { run_id: "r1".into(), attempt: Some(AttemptId { instance: 3, number: 1 }) };
    let refused = client.report(ReportRequest { attempt: Some(stale), ..Default::default() }).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, "attempt #3.1 is stale"));
    let details: Diagnostics = prost::Message::decode(refused.details()).unwrap();
    assert_eq!(details.diagnostics[0].message, "attempt #3.1 is stale");
}
