//! The direct HTTP/2 transport workers use for `http://` engines (`weir_proto::direct`), against
//! a real engine on loopback: outputs, inputs and a bundle far larger than HTTP/2's flow-control
//! windows cross it both ways; a connection the engine closed is replaced at the next call; a
//! peer that stops answering is noticed by the keep-alive ping instead of hanging a call; a
//! call's deadline holds; over TLS, with and without a client certificate (mTLS), a worker runs
//! steps and a client that does not trust the engine's certificate is told so.

use std::time::{Duration, Instant};

use tonic::Code;
use weir_proto::direct::{Direct, Settings};
use weir_proto::tls::ClientTls;
use weir_proto::transport::Transport;
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;
use weir_tests::pki::Pki;
use weir_tests::{Cluster, summary, test_config};

const MINUTE: Duration = Duration::from_secs(60);

fn direct(url: &str, settings: Settings) -> Transport {
    Transport::from(Direct::new(url, settings, None).expect("an http:// URL"))
}

/// 12 MB up (UploadArtifact, a client stream) and down again (DownloadBlob, a server stream),
/// and a 3 MB bundle down (DownloadBundle): each more than a stream's 2 MiB window and the
/// 5 MiB connection window, so both directions must wait for and give back capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_larger_than_the_flow_control_windows_cross_both_ways() {
    let mut c = Cluster::start(1, 2).await;
    let folder = tempfile::tempdir().unwrap();
    let bundled: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(folder.path().join("bundled.bin"), &bundled).unwrap();
    let yaml = r#"
name: big
steps:
  make:
    run: |
      head -c 12000000 /dev/urandom > "$WEIR_OUTPUTS/big.bin"
      cksum < "$WEIR_OUTPUTS/big.bin"
      cksum < bundled.bin
    outputs: [big.bin]
  use:
    needs: [make]
    run: cksum < "$WEIR_INPUTS/make/big.bin"
"#;
    let version = c.submit(yaml, Some(folder.path())).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
    let made = c.logs(&run, "make").await;
    let used = c.logs(&run, "use").await;
    let lines: Vec<&str> = made.lines().collect();
    assert_eq!(lines.len(), 2, "{made}");
    assert!(lines[0].ends_with(" 12000000"), "{made}");
    assert_eq!(used.trim(), lines[0], "the input differs from the output it was made from");
    assert!(lines[1].ends_with(" 3000000"), "the bundle arrived cut: {made}");
    c.stop().await;
}

/// An engine that goes away and comes back on the same port: the call in between fails as
/// UNAVAILABLE (callers retry those), and a later one connects again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_engine_closed_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_engine::server::start(test_config(&dir.path().join("engine"))).await.expect("server starts");
    let addr = server.addr();
    let mut client = WeirClientClient::new(direct(&server.url(), Settings::default()));
    let list = || v1::ListPipelinesRequest::default();
    client.list_pipelines(list()).await.expect("a first call");

    server.shutdown().await;
    let err = client.list_pipelines(list()).await.expect_err("no engine");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let mut config = test_config(&dir.path().join("engine"));
    config.listen = addr;
    let server = weir_engine::server::start(config).await.expect("the server starts again on its port");
    client.list_pipelines(list()).await.expect("a call after the engine came back");
    server.shutdown().await;
}

/// A peer that accepts the connection and then says nothing, as a host cut off by the network
/// looks: without a deadline a call would wait forever; the keep-alive ping notices the silence
/// and the call fails as UNAVAILABLE. A call with a deadline ends at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_fails_calls_instead_of_hanging_them() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            kept.push(socket);
        }
    });
    let settings = Settings {
        connect_timeout: Duration::from_secs(5),
        keep_alive_interval: Some(Duration::from_millis(200)),
        keep_alive_timeout: Duration::from_millis(300),
    };
    let mut worker = WeirWorkerClient::new(direct(&url, settings.clone()));
    let start = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), worker.heartbeat(v1::HeartbeatRequest::default()))
        .await
        .expect("the call ended without an outside timeout")
        .expect_err("nobody answers");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "noticed only after {:?}", start.elapsed());

    // Deadlines bound the wait even with no keep-alive at all.
    let mut quiet = WeirWorkerClient::new(direct(&url, Settings { keep_alive_interval: None, ..settings }));
    let mut request = tonic::Request::new(v1::HeartbeatRequest::default());
    request.set_timeout(Duration::from_millis(300));
    let err = tokio::time::timeout(Duration::from_secs(20), quiet.heartbeat(request))
        .await
        .expect("the call ended at its deadline")
        .expect_err("nobody answers");
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    held.abort();
}

/// Nothing listens: the call fails at once as UNAVAILABLE and names the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_engine_at_the_address_is_unavailable_and_named() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut worker = WeirWorkerClient::new(direct(&format!("http://127.0.0.1:{port}"), Settings::default()));
    let err = worker.heartbeat(v1::HeartbeatRequest::default()).await.expect_err("nothing listens");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&format!("127.0.0.1:{port}")), "{err:?}");
}

/// A worker agent on an `http://` engine runs steps over the direct transport end to end, and
/// the engine refuses a call with its own status (not a transport error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_statuses_arrive_as_the_engine_sent_them() {
    let mut c = Cluster::start(1, 1).await;
    let version = c.submit("name: one\nsteps:\n  a:\n    run: echo hi\n", None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(summary(&got, "a").0, v1::StepState::Succeeded);
    let mut worker = WeirWorkerClient::new(direct(&c.url(), Settings::default()));
    let err = worker
        .heartbeat(v1::HeartbeatRequest { worker_id: "nobody".into(), ..Default::default() })
        .await
        .expect_err("a call without a session");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("no worker session"), "{err:?}");
    c.stop().await;
}

/// An `https://` engine that verifies client certificates: a worker with one signed by the
/// engine's client CA runs a step over the direct transport; a direct client that trusts the
/// system's roots instead of the engine's CA fails with UNAVAILABLE and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_a_worker_runs_steps() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut config = test_config(&dir.path().join("engine"));
    config.tls = Some(
        weir_engine::server::TlsConfig::from_files(&pki.server_cert, &pki.server_key, Some(&pki.ca), false)
            .expect("the test certificates"),
    );
    let server = weir_engine::server::start(config).await.expect("server starts");
    let url = server.url().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://"), "{url}");

    let tls =
        ClientTls { ca: Some(pki.ca.clone()), cert: Some(pki.worker_cert.clone()), key: Some(pki.worker_key.clone()) };
    let work = dir.path().join("worker");
    let mut agent = weir_worker::AgentConfig::new(url.clone(), work);
    agent.tls = tls.clone();
    agent.name = "w-tls".into();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(weir_worker::Agent::new(agent).run(stop.clone()));

    let mut client = WeirClientClient::new(Transport::from(
        Direct::new(&url, Settings::default(), Some(tls.rustls_config().unwrap())).unwrap(),
    ));
    let header = v1::SubmitPipelineHeader {
        yaml: "name: tls\nsteps:\n  a:\n    run: echo over-direct-tls\n".into(),
        file_name: "pipeline.yaml".into(),
        ..Default::default()
    };
    let submit = v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) };
    let version = client.submit_pipeline(tokio_stream::iter([submit])).await.expect("submitted").into_inner().version;
    let start =
        v1::StartRunRequest { pipeline: Some(v1::start_run_request::Pipeline::Version(version)), ..Default::default() };
    let run = client.start_run(start).await.expect("started").into_inner().run.unwrap().run_id;
    let began = Instant::now();
    loop {
        let got = client
            .get_run(v1::GetRunRequest { run_id: run.clone(), ..Default::default() })
            .await
            .expect("get")
            .into_inner();
        if got.run.as_ref().unwrap().state() == v1::RunState::Succeeded {
            break;
        }
        assert!(began.elapsed() < MINUTE, "{:#?}", got.steps);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let workers = client.list_workers(v1::ListWorkersRequest::default()).await.expect("workers").into_inner();
    assert!(workers.workers.iter().any(|w| w.name.starts_with("w-tls")), "{workers:?}");

    // The system's roots do not hold the test CA.
    let untrusting = ClientTls::default().rustls_config().unwrap();
    let mut stranger =
        WeirClientClient::new(Transport::from(Direct::new(&url, Settings::default(), Some(untrusting)).unwrap()));
    let err = stranger.list_pipelines(v1::ListPipelinesRequest::default()).await.expect_err("an untrusted certificate");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("UnknownIssuer") || err.message().contains("invalid peer certificate"), "{err:?}");

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    server.shutdown().await;
}
