//! The web UI by role, over HTTP against a real server with named tokens: a viewer sees a
//! running run without its cancel button and a cancel it forges (with its own valid CSRF
//! token) is refused and changes nothing; an operator sees the button and cancels; a worker's
//! token cannot log in; revoking a token ends its web session at once; the web's mutations
//! are in the audit log with their people.

use tonic::Request;
use weir_engine::access::{Grant, Role};
use weir_engine::server;
use weir_proto::v1;
use weir_tests::http::Http;
use weir_tests::test_config;

const ADA: &str = "ada-admin-token-0123456789abcdef0123";
const OTTO: &str = "otto-operator-token-0123456789abcdef";
const VIC: &str = "vic-viewer-token-0123456789abcdef012";
const WES: &str = "wes-worker-token-0123456789abcdef012";

fn bearer<T>(mut r: Request<T>, token: &str) -> Request<T> {
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_cancel_button_and_a_forged_cancel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("engine"));
    let g = |name: &str, role, token: &str| Grant { name: name.into(), role, token: token.into() };
    config.grants = vec![
        g("ada", Role::Admin, ADA),
        g("otto", Role::Operator, OTTO),
        g("vic", Role::Viewer, VIC),
        g("wes", Role::Worker, WES),
    ];
    let s = server::start(config).await.unwrap();
    let mut client = v1::weir_client_client::WeirClientClient::connect(s.url()).await.unwrap();
    let header = v1::SubmitPipelineHeader {
        yaml: "name: slow\nsteps:\n  wait:\n    run: sleep 60\n".into(),
        file_name: "pipeline.yaml".into(),
        ..Default::default()
    };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    client.submit_pipeline(bearer(Request::new(tokio_stream::iter(msgs)), ADA)).await.unwrap();
    // no worker: the run stays running (its step queued) for as long as the test needs
    let start = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("slow".into())),
        ..Default::default()
    };
    let run = client.start_run(bearer(Request::new(start), OTTO)).await.unwrap().into_inner().run.unwrap().run_id;
    let path = format!("/runs/{run}");

    let mut vic = Http::new(&s.url());
    assert_eq!(vic.login(VIC).await.status, 303);
    let page = vic.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("/cancel") && !page.body.contains("Cancel run"), "{}", page.body);
    let csrf = page.csrf().unwrap();
    let forged = vic.post(&format!("{path}/cancel"), &[("csrf", &csrf)]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("`vic` (viewer) may not do this: it needs the operator role"), "{}", forged.body);
    let state = |c: &v1::GetRunResponse| c.run.as_ref().unwrap().state;
    let got = client
        .get_run(bearer(Request::new(v1::GetRunRequest { run_id: run.clone(), ..Default::default() }), VIC))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&got), v1::RunState::Running as i32, "the forged cancel changed nothing");
    // nor can a viewer start runs from the pipeline page
    let pipeline = vic.get("/pipelines/slow").await;
    assert!(!pipeline.body.contains("Start a run"), "{}", pipeline.body);

    let mut otto = Http::new(&s.url());
    assert_eq!(otto.login(OTTO).await.status, 303);
    let page = otto.get(&path).await;
    assert!(page.body.contains("Cancel run"), "{}", page.body);
    let csrf = page.csrf().unwrap();
    assert_eq!(otto.post(&format!("{path}/cancel"), &[("csrf", &csrf)]).await.status, 303);
    let got = client
        .get_run(bearer(Request::new(v1::GetRunRequest { run_id: run.clone(), ..Default::default() }), VIC))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&got), v1::RunState::Cancelled as i32);

    // the web's mutations are in the audit log with their people, the refusal included
    let mut access = v1::weir_access_client::WeirAccessClient::connect(s.url()).await.unwrap();
    let log = access.list_audit(bearer(Request::new(v1::ListAuditRequest::default()), ADA)).await.unwrap().into_inner();
    let web: Vec<(String, String, String)> = log
        .entries
        .into_iter()
        .filter(|e| e.target.starts_with("web "))
        .map(|e| (e.who, e.action, e.outcome))
        .collect();
    let want = [("vic", "cancel", "http_403"), ("otto", "cancel", "ok")]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(web, want);

    // a worker's token is no way into the UI
    let mut wes = Http::new(&s.url());
    let refused = wes.login(WES).await;
    assert!(
        refused.header("location").unwrap_or_default().starts_with("/login?failed=true"),
        "{:?}",
        refused.header("location")
    );
    assert!(wes.cookie.is_none());

    // revoking a token ends its session at once
    let create = v1::CreateTokenRequest { name: "temp".into(), role: "operator".into() };
    let temp = access.create_token(bearer(Request::new(create), ADA)).await.unwrap().into_inner().token;
    let mut web = Http::new(&s.url());
    assert_eq!(web.login(&temp).await.status, 303);
    assert_eq!(web.get("/runs").await.status, 200);
    access.revoke_token(bearer(Request::new(v1::RevokeTokenRequest { name: "temp".into() }), ADA)).await.unwrap();
    assert_eq!(web.get("/runs").await.status, 303, "back to the login page");
    s.shutdown().await;
}
