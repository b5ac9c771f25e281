//! The models pages over a real server and worker: the list, a model's versions, aliases and
//! history (a refused promotion with the values its gate compared), promote and rollback
//! whose first submit shows the registry's dry run and records nothing, and the lineage graph
//! from a version back to the ingested data with nodes linked to their runs and steps.

use std::time::Duration;

use weir_proto::v1;
use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const YAML: &str = r#"name: reg
params:
  rmse: 0.5
steps:
  ingest:
    run: echo "rows" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
  train:
    needs: [ingest]
    run: |
      (cat $WEIR_INPUTS/ingest/data.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.json
      printf '{"rmse": %s}\n' "$WEIR_PARAM_RMSE" > "$WEIR_OUTPUTS/metrics.json"
    outputs: [model.json, metrics.json]
    register:
      model: churn
      file: model.json
      alias: production
      when: "metrics.rmse < current.metrics.rmse"
"#;

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let at = body.find(start).unwrap_or_else(|| panic!("{start} not in {body}")) + start.len();
    let rest = &body[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

async fn production(c: &mut Cluster) -> Option<u64> {
    let m = c.client.get_model(v1::GetModelRequest { name: "churn".into() }).await.unwrap().into_inner();
    m.aliases.get("production").copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_pages_show_history_preview_moves_and_lineage() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(YAML, None).await;
    let mut runs = Vec::new();
    for rmse in ["0.5", "0.3", "0.9"] {
        let id = c.start_run(&version, &[("rmse", rmse)]).await;
        c.wait(&id, MINUTE).await;
        runs.push(id);
    }
    let mut web = Http::new(&c.url());
    let list = web.get("/models").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let row = between(&list.body, "data-model=\"churn\"", "</tr>");
    assert!(row.contains("v3") && row.contains("production → v2"), "{row}");

    let page = web.get("/models/churn").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let v1row = between(&page.body, "data-version=\"1\"", "</tr>");
    assert!(v1row.contains(&format!("href=\"/runs/{}\"", runs[0])), "{v1row}");
    assert!(v1row.contains(&format!("href=\"/runs/{}/steps/train\"", runs[0])) && v1row.contains("rmse=0.5"));
    let history = between(&page.body, "id=\"history\"", "</table>");
    let refused = between(history, "class=\"refused\"", "</tr>");
    assert!(refused.contains("v2 → v3") && refused.contains("✗ refused"), "{refused}");
    assert!(refused.contains("metrics.rmse &lt; current.metrics.rmse"), "{refused}");
    assert!(refused.contains("metrics.rmse = 0.9") && refused.contains("current.metrics.rmse = 0.3"), "{refused}");
    let csrf = page.csrf().unwrap();

    // Promote: the first submit is the registry's dry run; nothing moves until confirmed.
    let check = web
        .post("/models/churn/promote", &[("csrf", &csrf), ("version", "3"), ("alias", "production"), ("reason", "ok")])
        .await;
    assert_eq!(check.status, 200, "{}", check.body);
    let preview = between(&check.body, "id=\"preview\"", "</section>");
    assert!(preview.contains("production</strong> v2 → v3") && preview.contains("Confirm promote"), "{preview}");
    assert_eq!(production(&mut c).await, Some(2), "a check moves nothing");
    let done = web
        .post(
            "/models/churn/promote",
            &[("csrf", &csrf), ("version", "3"), ("alias", "production"), ("reason", "ok"), ("confirm", "true")],
        )
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(production(&mut c).await, Some(3));
    let page = web.get("/models/churn").await;
    assert!(page.body.contains("<strong>production</strong> → v3"), "the alias moved on the page");

    // Rollback, the same way.
    let check = web.post("/models/churn/rollback", &[("csrf", &csrf), ("alias", "production")]).await;
    assert!(between(&check.body, "id=\"preview\"", "</section>").contains("v3 → v2"), "{}", check.body);
    assert_eq!(production(&mut c).await, Some(3));
    web.post("/models/churn/rollback", &[("csrf", &csrf), ("alias", "production"), ("confirm", "true")]).await;
    assert_eq!(production(&mut c).await, Some(2));
    let bad = web.post("/models/churn/promote", &[("csrf", &csrf), ("version", "9"), ("alias", "production")]).await;
    assert_eq!(bad.status, 404, "{}", bad.body);

    // Lineage of v1: its model file, the train step and run, back to ingest's data.csv.
    let page = web.get("/models/churn?lineage=1").await;
    let svg = between(&page.body, "id=\"lineage\"", "</section>");
    assert!(svg.contains(">model.json<") && svg.contains(">data.csv<"), "{svg}");
    assert!(svg.contains(&format!("href=\"/runs/{}/steps/train\"", runs[0])), "{svg}");
    assert!(svg.contains(&format!("href=\"/runs/{}/steps/ingest\"", runs[0])), "{svg}");
    assert!(svg.contains(&format!("href=\"/runs/{}\"", runs[0])), "{svg}");
    assert_eq!(web.get("/models/nothing").await.status, 404);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_dry_run_through_grpc_records_nothing() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(YAML, None).await;
    for rmse in ["0.5", "0.9"] {
        let id = c.start_run(&version, &[("rmse", rmse)]).await;
        c.wait(&id, MINUTE).await;
    }
    let req = v1::PromoteModelRequest {
        name: "churn".into(),
        version: 2,
        alias: "production".into(),
        reason: String::new(),
        dry_run: true,
    };
    let ev = c.client.promote_model(req).await.expect("dry run").into_inner().event.unwrap();
    assert_eq!((ev.from_version, ev.to_version), (1, 2));
    assert_eq!(production(&mut c).await, Some(1), "a dry run moves nothing");
    let m = c.client.get_model(v1::GetModelRequest { name: "churn".into() }).await.unwrap().into_inner();
    let before = m.history.len();
    let req = v1::RollbackModelRequest {
        name: "churn".into(),
        alias: "production".into(),
        dry_run: true,
        ..Default::default()
    };
    let refused = c.client.rollback_model(req).await.expect_err("nothing to go back to");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let m = c.client.get_model(v1::GetModelRequest { name: "churn".into() }).await.unwrap().into_inner();
    assert_eq!(m.history.len(), before, "no event recorded");
    c.stop().await;
}
