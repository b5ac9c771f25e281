//! The model registry end to end: a real server and worker over loopback run a step whose
//! `register:` gates `production` on `metrics.rmse < current.metrics.rmse`, with the model's
//! quality set by a param. Versions, alias moves, a refused promotion with the values it
//! compared, a promotion by hand, a rollback and the download of a version's bytes are all
//! checked through the gRPC API.

use std::time::Duration;

use weir_proto::v1;
use weir_tests::{Cluster, step};

const YAML: &str = r#"name: reg
params:
  rmse: 0.5
steps:
  train:
    run: |
      printf '{"kind": "linear", "rmse": %s}\n' "$WEIR_PARAM_RMSE" > "$WEIR_OUTPUTS/model.json"
      printf '{"rmse": %s}\n' "$WEIR_PARAM_RMSE" > "$WEIR_OUTPUTS/metrics.json"
    outputs: [model.json, metrics.json]
    register:
      model: churn
      file: model.json
      alias: production
      when: "metrics.rmse < current.metrics.rmse"
"#;

/// Runs the pipeline with `rmse` to success; returns the run id and its model.json digest.
async fn run(c: &mut Cluster, version: &str, rmse: &str) -> (String, String) {
    let id = c.start_run(version, &[("rmse", rmse)]).await;
    let got = c.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
    let outputs = step(&got, "train").outputs.clone().expect("outputs");
    let digest = outputs.files.iter().find(|e| e.path == "model.json").expect("model.json").digest.clone();
    (id, digest)
}

async fn model(c: &mut Cluster) -> v1::GetModelResponse {
    c.client.get_model(v1::GetModelRequest { name: "churn".into() }).await.expect("get model").into_inner()
}

async fn download(c: &mut Cluster, target: &str) -> (v1::ModelVersion, Vec<u8>) {
    let req = v1::GetModelArtifactRequest { target: target.into() };
    let mut stream = c.client.get_model_artifact(req).await.expect("artifact").into_inner();
    let mut head = None;
    let mut bytes = Vec::new();
    while let Some(msg) = stream.message().await.expect("a message") {
        match msg.part.expect("a part") {
            v1::get_model_artifact_response::Part::Version(v) => head = Some(v),
            v1::get_model_artifact_response::Part::Chunk(c) => bytes.extend_from_slice(&c),
        }
    }
    (head.expect("the version comes first"), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_gated_promotion_by_hand_rollback_and_download() {
    let mut c = Cluster::start(1, 1).await;
    let version = c.submit(YAML, None).await;

    let (run1, digest1) = run(&mut c, &version, "0.5").await;
    let m = model(&mut c).await;
    assert_eq!((m.versions.len(), m.aliases.get("production")), (1, Some(&1)));
    assert_eq!((m.versions[0].run_id.as_str(), m.versions[0].step.as_str()), (run1.as_str(), "train"));
    assert_eq!(m.versions[0].digest, digest1);
    assert_eq!(m.versions[0].metrics.get("rmse"), Some(&0.5));
    assert_eq!(m.versions[0].params.get("rmse").map(String::as_str), Some("0.5"));

    let (run2, digest2) = run(&mut c, &version, "0.3").await;
    let m = model(&mut c).await;
    assert_eq!(m.aliases.get("production"), Some(&2), "a better candidate takes production");
    assert_eq!(m.versions[1].run_id, run2);

    let (_run3, _) = run(&mut c, &version, "0.9").await;
    let m = model(&mut c).await;
    assert_eq!(m.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(m.aliases.get("production"), Some(&2), "a worse candidate is registered but not promoted");
    let refused = m.history.last().expect("history");
    assert!(refused.refused, "{refused:?}");
    assert_eq!((refused.from_version, refused.to_version), (2, 3));
    assert!(refused.reason.contains("0.9") && refused.reason.contains("0.3"), "{}", refused.reason);
    assert!(refused.reason.contains("metrics.rmse < current.metrics.rmse"), "{}", refused.reason);
    assert_eq!(refused.expression, "metrics.rmse < current.metrics.rmse");
    let compared: Vec<(&str, &str)> = refused.compared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut compared = compared;
    compared.sort();
    assert_eq!(compared, [("current.metrics.rmse", "0.3"), ("metrics.rmse", "0.9")], "the values, for programs");

    let promoted = c
        .client
        .promote_model(v1::PromoteModelRequest {
            name: "churn".into(),
            version: 3,
            alias: "production".into(),
            reason: "shadow traffic looked fine".into(),
            dry_run: false,
        })
        .await
        .expect("promote")
        .into_inner()
        .event
        .unwrap();
    assert_eq!(promoted.reason, "promoted by hand: shadow traffic looked fine");
    assert_eq!(model(&mut c).await.aliases.get("production"), Some(&3));

    let back = c
        .client
        .rollback_model(v1::RollbackModelRequest {
            name: "churn".into(),
            alias: "production".into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner()
        .event
        .unwrap();
    assert_eq!((back.from_version, back.to_version, back.reason.as_str()), (3, 2, "rollback"));
    let m = model(&mut c).await;
    assert_eq!(m.aliases.get("production"), Some(&2));
    let moves: Vec<(u64, u64, bool)> = m.history.iter().map(|e| (e.from_version, e.to_version, e.refused)).collect();
    assert_eq!(moves, [(0, 1, false), (1, 2, false), (2, 3, true), (2, 3, false), (3, 2, false)]);

    let (head, bytes) = download(&mut c, "churn@production").await;
    assert_eq!((head.version, head.digest.as_str()), (2, digest2.as_str()));
    assert_eq!(bytes, b"{\"kind\": \"linear\", \"rmse\": 0.3}\n");
    let (latest, _) = download(&mut c, "churn").await;
    assert_eq!(latest.version, 3);
    let (first, bytes) = download(&mut c, "churn@1").await;
    assert_eq!(
        (first.digest.as_str(), bytes.as_slice()),
        (digest1.as_str(), &b"{\"kind\": \"linear\", \"rmse\": 0.5}\n"[..])
    );

    let listed = c.client.list_models(v1::ListModelsRequest {}).await.expect("list").into_inner().models;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].latest_version), ("churn", 3));

    let unknown = c
        .client
        .promote_model(v1::PromoteModelRequest {
            name: "churn".into(),
            version: 7,
            alias: "production".into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let missing = c
        .client
        .get_model_artifact(v1::GetModelArtifactRequest { target: "churn@canary".into() })
        .await
        .expect_err("no alias canary");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("it has: production"), "{}", missing.message());
    c.stop().await;
}

/// The same file registers once: a rerun that writes the same bytes (a retried deploy) makes no
/// new version and moves no alias, and its step log says which version it already is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_the_same_digest_again_keeps_the_existing_version_and_says_so() {
    let mut c = Cluster::start(1, 1).await;
    let version = c.submit(YAML, None).await;
    let (first, digest) = run(&mut c, &version, "0.5").await;
    let (again, same) = run(&mut c, &version, "0.5").await;
    assert_eq!(digest, same, "the same params write the same model.json");
    let m = model(&mut c).await;
    assert_eq!(m.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1], "{m:#?}");
    assert_eq!(m.versions[0].run_id, first);
    assert_eq!(m.history.len(), 1, "no alias move for the copy: {m:#?}");
    let log = c.logs(&again, "train").await;
    assert!(
        log.contains(&format!("model.json is already version 1 of model churn (registered by run {first} step train)")),
        "{log}"
    );
    assert!(log.contains("weir models promote churn 1 --alias ALIAS"), "{log}");
    // Different bytes still make a new version.
    run(&mut c, &version, "0.4").await;
    let m = model(&mut c).await;
    assert_eq!(m.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    c.stop().await;
}
