//! Who may call what, over a real server: every gRPC method of the compiled descriptors is
//! called with each role's token (and with none), and the guard must refuse exactly the roles
//! below the method's role. A method of the descriptors missing from `EXPECTED` fails the test,
//! as it is refused to everyone by the server's table (deny by default): give it a row in
//! `engine/src/access/table.rs` and here. Calls carry an empty request: what matters is only
//! whether the guard let them through (anything but its refusal), not what the handler says.

use std::str::FromStr;
use std::time::Duration;

use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use weir_engine::access::{Grant, Role};
use weir_engine::server;
use weir_proto::v1;
use weir_tests::test_config;

/// The least role of every method: the specification the server's table must meet.
const EXPECTED: &[(&str, &str)] = &[
    ("WeirClient/SubmitPipeline", "admin"),
    ("WeirClient/ListPipelines", "viewer"),
    ("WeirClient/StartRun", "operator"),
    ("WeirClient/GetRun", "viewer"),
    ("WeirClient/ListRuns", "viewer"),
    ("WeirClient/WatchRun", "viewer"),
    ("WeirClient/CancelRun", "operator"),
    ("WeirClient/RetryRun", "operator"),
    ("WeirClient/StreamLogs", "viewer"),
    ("WeirClient/GetArtifact", "viewer"),
    ("WeirClient/ListSchedules", "viewer"),
    ("WeirClient/PauseSchedule", "operator"),
    ("WeirClient/ResumeSchedule", "operator"),
    ("WeirClient/Backfill", "operator"),
    ("WeirClient/PlanRun", "viewer"),
    ("WeirClient/ExplainCache", "viewer"),
    ("WeirClient/MetricHistory", "viewer"),
    ("WeirClient/GetLineage", "viewer"),
    ("WeirClient/ListModels", "viewer"),
    ("WeirClient/GetModel", "viewer"),
    ("WeirClient/PromoteModel", "admin"),
    ("WeirClient/RollbackModel", "admin"),
    ("WeirClient/DecideAliasMove", "admin"),
    ("WeirSecrets/SetSecret", "admin"),
    ("WeirSecrets/ListSecrets", "admin"),
    ("WeirSecrets/DeleteSecret", "admin"),
    ("WeirClient/GetModelArtifact", "viewer"),
    ("WeirClient/DiffModelExplanations", "viewer"),
    ("WeirClient/ListWorkers", "viewer"),
    ("WeirClient/GetStepMetrics", "viewer"),
    ("WeirClient/DeleteRuns", "admin"),
    ("WeirClient/DeletePipeline", "admin"),
    ("WeirClient/Gc", "admin"),
    ("WeirClient/ListNotifications", "viewer"),
    ("WeirClient/RetryNotification", "operator"),
    ("WeirClient/Approve", "operator"),
    ("WeirClient/FireWebhook", "operator"),
    ("WeirAdmin/Backup", "admin"),
    ("WeirAccess/CreateToken", "admin"),
    ("WeirAccess/ListTokens", "admin"),
    ("WeirAccess/RevokeToken", "admin"),
    ("WeirAccess/ListAudit", "admin"),
    ("WeirWorker/Register", "worker"),
    ("WeirWorker/Lease", "worker"),
    ("WeirWorker/Heartbeat", "worker"),
    ("WeirWorker/Report", "worker"),
    ("WeirWorker/UploadLogs", "worker"),
    ("WeirWorker/UploadArtifact", "worker"),
    ("WeirWorker/DownloadBlob", "worker"),
    ("WeirWorker/DownloadBundle", "worker"),
    ("WeirWorker/UploadMetrics", "worker"),
];

/// (name, role, token) of the server below.
const PEOPLE: &[(&str, Role, &str)] = &[
    ("vic", Role::Viewer, "viewer-token-0000000000000000000000"),
    ("otto", Role::Operator, "operator-token-00000000000000000000"),
    ("ada", Role::Admin, "admin-token-0000000000000000000000"),
    ("wes", Role::Worker, "worker-token-000000000000000000000"),
];

/// Every method of weir's services: (path, client streaming, server streaming).
fn methods() -> Vec<(String, bool, bool)> {
    let set = prost_types::FileDescriptorSet::decode(weir_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in set.file.iter().filter(|f| f.package() == "weir.v1") {
        for s in &f.service {
            for m in &s.method {
                out.push((format!("/weir.v1.{}/{}", s.name(), m.name()), m.client_streaming(), m.server_streaming()));
            }
        }
    }
    out
}

async fn server_with_people() -> (tempfile::TempDir, server::Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("engine"));
    config.grants =
        PEOPLE.iter().map(|(n, r, t)| Grant { name: n.to_string(), role: *r, token: t.to_string() }).collect();
    let s = server::start(config).await.unwrap();
    (dir, s)
}

/// Calls `path` with an empty request (and no request at all when it streams them) and
/// `token`; the status, `Ok` when the call was answered or is still going after a while (a
/// long poll the guard let through).
async fn call(
    channel: &Channel,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
    token: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
    let path = PathAndQuery::from_str(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    fn auth<T>(r: Request<T>, token: Option<&str>) -> Request<T> {
        match token {
            Some(t) => bearer(r, t),
            None => r,
        }
    }
    let call = async {
        match (client_streaming, server_streaming) {
            (false, false) => grpc.unary(auth(Request::new(()), token), path, codec).await.map(|_| ()),
            (false, true) => grpc.server_streaming(auth(Request::new(()), token), path, codec).await.map(|_| ()),
            (true, false) => {
                let none = tokio_stream::iter(Vec::<()>::new());
                grpc.client_streaming(auth(Request::new(none), token), path, codec).await.map(|_| ())
            }
            (true, true) => {
                let none = tokio_stream::iter(Vec::<()>::new());
                grpc.streaming(auth(Request::new(none), token), path, codec).await.map(|_| ())
            }
        }
    };
    // The guard answers before any handler runs; a call still going was let through.
    tokio::time::timeout(Duration::from_secs(10), call).await.unwrap_or(Ok(()))
}

/// Whether `status` is the guard's refusal (the handlers' own PERMISSION_DENIED, a worker
/// speaking for another's attempt, says something else).
fn refused_by_guard(r: &Result<(), Status>) -> bool {
    matches!(r, Err(s) if (s.code() == Code::PermissionDenied && s.message().contains("may not call"))
        || (s.code() == Code::Unauthenticated && (s.message().contains("a token is required") || s.message().contains("not valid (unknown or revoked)"))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_admits_exactly_the_roles_of_the_table() {
    let (_dir, s) = server_with_people().await;
    let channel = Endpoint::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut problems = Vec::new();
    let all = methods();
    assert!(all.len() >= EXPECTED.len(), "the descriptors list {} methods", all.len());
    for (path, cs, ss) in &all {
        let short = path.trim_start_matches("/weir.v1.");
        let Some((_, need)) = EXPECTED.iter().find(|(m, _)| *m == short) else {
            problems.push(format!(
                "{path} has no role: add a row to engine/src/access/table.rs and to EXPECTED in tests/roles.rs"
            ));
            continue;
        };
        let need = Role::parse(need).unwrap();
        for (name, role, token) in PEOPLE {
            let got = call(&channel, path, *cs, *ss, Some(token)).await;
            let allowed = role.covers(need);
            if allowed == refused_by_guard(&got) {
                problems.push(format!(
                    "{path} as {name} ({role}): expected {}, got {got:?}",
                    if allowed { "through" } else { "refused" }
                ));
            }
            if !allowed && got.as_ref().err().map(Status::code) != Some(Code::PermissionDenied) {
                problems.push(format!("{path} as {name} ({role}): refused with {got:?}, expected PERMISSION_DENIED"));
            }
        }
        let anonymous = call(&channel, path, *cs, *ss, None).await;
        if anonymous.as_ref().err().map(Status::code) != Some(Code::Unauthenticated) || !refused_by_guard(&anonymous) {
            problems.push(format!("{path} without a token: {anonymous:?}, expected UNAUTHENTICATED"));
        }
    }
    for (m, _) in EXPECTED {
        if !all.iter().any(|(p, _, _)| p.trim_start_matches("/weir.v1.") == *m) {
            problems.push(format!("{m} is expected but not in the descriptors"));
        }
    }
    // a method the table does not know is refused to everyone, admins included
    let unknown = call(&channel, "/weir.v1.WeirClient/NoSuchMethod", false, false, Some(PEOPLE[2].2)).await;
    assert_eq!(unknown.as_ref().err().map(Status::code), Some(Code::PermissionDenied), "{unknown:?}");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    s.shutdown().await;
}

fn bearer<T>(mut r: Request<T>, token: &str) -> Request<T> {
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_start_or_cancel_a_worker_cannot_call_clients_and_revoking_is_immediate() {
    let (_dir, s) = server_with_people().await;
    let channel = Endpoint::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut client = v1::weir_client_client::WeirClientClient::new(channel.clone());
    let mut access = v1::weir_access_client::WeirAccessClient::new(channel.clone());
    let [vic, otto, ada, wes] = [PEOPLE[0].2, PEOPLE[1].2, PEOPLE[2].2, PEOPLE[3].2];

    let start = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("nope".into())),
        ..Default::default()
    };
    let denied = client.start_run(bearer(Request::new(start.clone()), vic)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("`vic` (viewer) may not call /weir.v1.WeirClient/StartRun: it needs the operator role"),
        "{denied:?}"
    );
    let cancel = v1::CancelRunRequest { run_id: "r-1".into(), reason: String::new() };
    assert_eq!(
        client.cancel_run(bearer(Request::new(cancel.clone()), vic)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // the operator gets through to the service, which knows no such pipeline or run
    assert_eq!(client.start_run(bearer(Request::new(start), otto)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.cancel_run(bearer(Request::new(cancel), otto)).await.unwrap_err().code(), Code::NotFound);
    // a worker token is no client token
    let runs = client.list_runs(bearer(Request::new(v1::ListRunsRequest::default()), wes)).await.unwrap_err();
    assert_eq!(runs.code(), Code::PermissionDenied, "{runs:?}");

    // a created token works at once, and is refused the moment RevokeToken answers
    let create = v1::CreateTokenRequest { name: "ci".into(), role: "viewer".into() };
    let made = access.create_token(bearer(Request::new(create), ada)).await.unwrap().into_inner();
    assert!(made.token.len() >= 64);
    client.list_runs(bearer(Request::new(v1::ListRunsRequest::default()), &made.token)).await.unwrap();
    access.revoke_token(bearer(Request::new(v1::RevokeTokenRequest { name: "ci".into() }), ada)).await.unwrap();
    let after = client.list_runs(bearer(Request::new(v1::ListRunsRequest::default()), &made.token)).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "{after:?}");
    // the token file's are not revoked here
    let file = access.revoke_token(bearer(Request::new(v1::RevokeTokenRequest { name: "vic".into() }), ada)).await;
    assert_eq!(file.unwrap_err().code(), Code::FailedPrecondition);

    // the audit log saw each mutation with its actor and outcome, refusals included
    let log = access.list_audit(bearer(Request::new(v1::ListAuditRequest::default()), ada)).await.unwrap().into_inner();
    let got: Vec<(String, String, String, String)> =
        log.entries.into_iter().map(|e| (e.who, e.action, e.target, e.outcome)).collect();
    let want = [
        ("vic", "start", "", "permission_denied"),
        ("vic", "cancel", "", "permission_denied"),
        ("otto", "start", "name=nope", "not_found"),
        ("otto", "cancel", "run_id=r-1", "not_found"),
        ("ada", "token.create", "name=ci role=viewer", "ok"),
        ("ada", "token.revoke", "name=ci", "ok"),
        ("ada", "token.revoke", "name=vic", "failed_precondition"),
    ];
    let want: Vec<(String, String, String, String)> =
        want.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string())).collect();
    assert_eq!(got, want);
    // no token ever reaches the log
    assert!(!format!("{got:?}").contains(&made.token));
    // a viewer cannot read it
    let peek = access.list_audit(bearer(Request::new(v1::ListAuditRequest::default()), vic)).await.unwrap_err();
    assert_eq!(peek.code(), Code::PermissionDenied);
    s.shutdown().await;
}
