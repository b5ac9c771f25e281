//! The pipelines pages over a real server and worker: the list, a pipeline's versions, YAML
//! and graph, the start form (bad params shown beside their fields with the CLI's exact
//! diagnostics, good ones start a run) and the schedule card (pause, resume, backfill after
//! its dry run).

use std::time::Duration;

use weir_proto::v1;
use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const TYPED: &str = r#"
name: typed
description: a pipeline with typed params
params:
  rows: {type: int, default: 100, min: 10, description: how many rows to read}
  region: {type: string, default: us-east, enum: [us-east, us-west]}
  deep: {type: bool, default: false}
steps:
  ingest:
    stage: ingestion
    run: echo "rows=$WEIR_PARAM_ROWS"
  train:
    stage: training
    needs: [ingest]
    run: echo "<trained>"
"#;

/// The text between `start` and the next `end` in `body`.
fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let at = body.find(start).unwrap_or_else(|| panic!("{start} not in {body}")) + start.len();
    let rest = &body[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_list_and_page_show_versions_source_graph_and_params() {
    let mut c = Cluster::start(1, 2).await;
    let first = c.submit(TYPED, None).await;
    let second = c.submit(&TYPED.replace("<trained>", "<trained again>"), None).await;
    let run = c.start_run(&second, &[]).await;
    c.wait(&run, MINUTE).await;
    let mut web = Http::new(&c.url());

    let list = web.get("/pipelines").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let row = between(&list.body, "data-pipeline=\"typed\"", "</tr>");
    assert!(row.contains(&second[..12]) && row.contains("(2 versions)"), "{row}");
    assert!(row.contains(&format!("href=\"/runs/{run}\"")) && row.contains(">succeeded<"), "last run: {row}");

    let page = web.get("/pipelines/typed").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("href=\"/pipelines/typed?version={first}\"")), "older version linked");
    assert!(page.body.contains("id=\"L14\"") && page.body.contains("href=\"#L14\""), "line anchors");
    assert!(page.body.contains("echo &quot;&lt;trained again&gt;&quot;"), "the YAML, escaped");
    // The graph: both steps, stages as columns, one `needs` edge.
    let svg = between(&page.body, "<svg", "</svg>");
    assert!(svg.contains(">ingestion<") && svg.contains(">training<"), "{svg}");
    assert!(svg.contains("data-node=\"ingest\"") && svg.contains("data-node=\"train\""));
    assert_eq!(svg.matches("class=\"edge\"").count(), 1);
    // The form, from the typed params.
    assert!(page.body.contains("name=\"p.rows\" value=\"100\""), "int with its default");
    assert!(page.body.contains("how many rows to read") && page.body.contains("min 10"));
    let select = between(&page.body, "name=\"p.region\"", "</select>");
    assert!(select.contains("<option value=\"us-west\">") && select.contains("value=\"us-east\" selected"));
    assert!(page.body.contains("type=\"checkbox\" name=\"p.deep\" value=\"true\""), "bool as a checkbox");
    assert!(page.body.contains("name=\"no_cache\""));

    let old = web.get(&format!("/pipelines/typed?version={first}")).await;
    assert!(old.body.contains("echo &quot;&lt;trained&gt;&quot;") && !old.body.contains("trained again"));
    let missing = web.get("/pipelines/typed?version=nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(web.get("/pipelines/nothing").await.status, 404);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_form_shows_the_clis_diagnostics_inline_and_starts_good_runs() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(TYPED, None).await;
    let mut web = Http::new(&c.url());
    let csrf = web.get("/pipelines/typed").await.csrf().unwrap();

    let bad = web
        .post(
            "/pipelines/typed/start",
            &[("csrf", &csrf), ("version", &version), ("p.rows", "5"), ("p.region", "us-east"), ("p.deep", "false")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let inline = between(&bad.body, "data-param=\"rows\">", "</span>");
    assert!(inline.contains("10"), "the rows field says what is wrong: {inline}");
    assert!(bad.body.contains("name=\"p.rows\" value=\"5\""), "the form keeps what was typed");
    // Exactly the text the CLI prints: the gRPC status message of the same request.
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version.clone())),
        params: [("rows".to_string(), "5".to_string())].into(),
        no_cache: false,
    };
    let status = c.client.start_run(req).await.expect_err("refused");
    let shown = unescape(between(&bad.body, "<pre class=\"diagnostics\">", "</pre>"));
    assert_eq!(shown, status.message());

    let good = web
        .post(
            "/pipelines/typed/start",
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("p.rows", "20"),
                ("p.region", "us-west"),
                ("p.deep", "false"),
                ("p.deep", "true"),
                ("no_cache", "true"),
            ],
        )
        .await;
    assert_eq!(good.status, 303, "{}", good.body);
    let run = good.header("location").unwrap().strip_prefix("/runs/").expect("to the run").to_string();
    let got = c.wait(&run, MINUTE).await;
    let r = got.run.unwrap();
    assert_eq!(r.state(), v1::RunState::Succeeded);
    assert!(r.no_cache, "the no-cache box reached the run");
    assert!(c.logs(&run, "ingest").await.contains("rows=20"));
    let forged = web.post("/pipelines/typed/start", &[("version", &version)]).await;
    assert_eq!(forged.status, 403, "no CSRF, no run");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_card_pauses_resumes_and_backfills_after_a_dry_run() {
    let mut c = Cluster::start(1, 2).await;
    let yaml = "name: nightly\nschedule:\n  cron: \"0 3 * * *\"\n  timezone: Europe/Paris\n  concurrency: allow\nsteps:\n  hello: {run: 'true'}\n";
    c.submit(yaml, None).await;
    let mut web = Http::new(&c.url());
    let page = web.get("/pipelines/nightly").await;
    let card = between(&page.body, "id=\"schedule\"", "</section>").to_string();
    assert!(card.contains("0 3 * * *") && card.contains("Europe/Paris") && card.contains("active"), "{card}");
    assert!(card.contains("03:00 CE"), "next fires in the schedule's zone: {card}");
    let csrf = page.csrf().unwrap();

    let paused = web.post("/pipelines/nightly/pause", &[("csrf", &csrf), ("paused", "true")]).await;
    assert_eq!(paused.status, 303);
    let listed = c.client.list_schedules(v1::ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert!(listed.schedules[0].paused, "paused through the engine");
    let page = web.get("/pipelines/nightly").await;
    assert!(between(&page.body, "id=\"schedule\"", "</section>").contains("Resume"));
    web.post("/pipelines/nightly/pause", &[("csrf", &csrf), ("paused", "false")]).await;
    let listed = c.client.list_schedules(v1::ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert!(!listed.schedules[0].paused);

    let range = [("csrf", csrf.as_str()), ("from", "2026-01-01T00:00:00Z"), ("to", "2026-01-03T12:00:00Z")];
    let dry = web.post("/pipelines/nightly/backfill", &range).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    let ticks = between(&dry.body, "id=\"dry-run\"", "</ul>");
    assert!(ticks.starts_with(">3 tick(s)") && ticks.matches("(would start)").count() == 3, "{ticks}");
    let runs = c.client.list_runs(v1::ListRunsRequest::default()).await.unwrap().into_inner();
    assert!(runs.runs.is_empty(), "a dry run starts nothing");
    let mut confirm = range.to_vec();
    confirm.push(("confirm", "true"));
    let done = web.post("/pipelines/nightly/backfill", &confirm).await;
    assert!(done.body.contains("3 run(s) started or queued"), "{}", done.body);
    let runs = c.client.list_runs(v1::ListRunsRequest::default()).await.unwrap().into_inner();
    assert_eq!(runs.runs.len(), 3);
    let bad = web.post("/pipelines/nightly/backfill", &[("csrf", &csrf), ("from", "yesterday"), ("to", "")]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    c.stop().await;
}
