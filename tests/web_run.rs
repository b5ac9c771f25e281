//! A run's page over a real server and worker: the DAG (stages, matrix groups that expand,
//! `needs` edges, state by text and icon), the instance table, the step page (attempts,
//! outputs and their download, metrics, gate, cache verdict, logs with colours, search and
//! download), the live streams of a run and of a step's log, cancel and retry, and approval
//! buttons.

use std::time::Duration;

use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const GRAPH: &str = r#"
name: webrun
params:
  limit: 0.5
steps:
  ingest:
    stage: ingestion
    run: |
      printf '\033[1;32mloaded\033[0m <rows> & more\n'
      echo "warn: slow disk" >&2
      echo "a,b" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
    cache: true
  train:
    stage: training
    needs: [ingest]
    matrix:
      lr: [1, 2]
    run: |
      echo '{"rmse": 0.25}' > $WEIR_OUTPUTS/metrics.json
    outputs: [metrics.json]
    gate: metrics.rmse < params.limit
  report:
    stage: deployment
    needs: [train]
    run: echo done
"#;

async fn finished_run(c: &mut Cluster, yaml: &str) -> String {
    let version = c.submit(yaml, None).await;
    let id = c.start_run(&version, &[]).await;
    c.wait(&id, MINUTE).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_draws_stages_groups_edges_and_every_instance() {
    let mut c = Cluster::start(1, 2).await;
    let id = finished_run(&mut c, GRAPH).await;
    let mut web = Http::new(&c.url());
    let page = web.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let b = &page.body;
    assert!(b.contains(r#"href="/pipelines/webrun""#), "pipeline linked");
    assert!(b.contains("limit=0.5"), "params shown");
    assert!(b.contains(r#"id="run-state""#) && b.contains(">succeeded<"), "run badge");
    for stage in ["ingestion", "training", "deployment"] {
        assert!(b.contains(r#"class="stage-label""#) && b.contains(&format!(">{stage}</text>")), "stage {stage}");
    }
    // The matrix is one node with its counts; its instances stay in the table.
    assert!(b.contains(r#"data-node="train""#) && b.contains("train ×2"), "{b}");
    assert!(b.contains("✓ succeeded · 2 succeeded"), "group counts by state: {b}");
    assert!(!b.contains(r#"data-node="train[lr=1]""#));
    assert_eq!(b.matches("class=\"edge\"").count(), 2, "ingest → train → report");
    assert!(b.contains(r#"href="/runs/"#) && b.contains("?expand=train#dag"), "the group opens");
    for inst in ["ingest", "train[lr=1]", "train[lr=2]", "report"] {
        assert!(b.contains(&format!(r#"data-instance="{inst}""#)), "table row {inst}");
    }
    assert!(b.contains(&format!("/runs/{id}/steps/train%5Blr%3D1%5D")), "instances link to their pages");

    let open = web.get(&format!("/runs/{id}?expand=train")).await;
    assert!(open.body.contains(r#"data-node="train[lr=1]""#) && open.body.contains(r#"data-node="train[lr=2]""#));
    assert!(!open.body.contains(r#"data-node="train""#));
    assert_eq!(open.body.matches("class=\"edge\"").count(), 4, "each instance keeps its needs");
    assert!(
        !open.body.contains("Cancel run") && !open.body.contains("Retry what did not"),
        "nothing to cancel or retry"
    );

    let missing = web.get("/runs/no-such-run").await;
    assert_eq!(missing.status, 404);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_page_shows_attempts_outputs_gate_cache_and_coloured_logs() {
    let mut c = Cluster::start(1, 2).await;
    let id = finished_run(&mut c, GRAPH).await;
    let mut web = Http::new(&c.url());
    let ingest = web.get(&format!("/runs/{id}/steps/ingest")).await;
    assert_eq!(ingest.status, 200, "{}", ingest.body);
    let b = &ingest.body;
    assert!(b.contains(r#"<tr data-attempt="1">"#) && b.contains(">succeeded<"), "attempt 1: {b}");
    assert!(b.contains("<td>w0-"), "the worker that ran it: {b}");
    assert!(b.contains(r#"<span class="ansi-1 ansi-32">loaded</span> &lt;rows&gt; &amp; more"#), "colours: {b}");
    assert!(b.contains(r#"<span class="line err" data-attempt="1">warn: slow disk</span>"#), "stderr marked");
    assert!(b.contains("data.csv") && b.contains(&format!("/runs/{id}/steps/ingest/outputs/data.csv")));
    assert!(b.contains(r#"data-verdict="miss""#), "cache verdict with its reason: {b}");
    assert!(b.contains("this was the first"), "{b}");
    let report = web.get(&format!("/runs/{id}/steps/report")).await;
    assert!(report.body.contains(r#"data-verdict="not cacheable""#) && report.body.contains("has no `cache:`"));
    assert!(b.contains("Retry from this step"), "the run finished");

    let found = web.get(&format!("/runs/{id}/steps/ingest?q=SLOW")).await;
    assert!(found.body.contains("warn: slow disk") && !found.body.contains(">loaded<"), "search keeps matches");

    let txt = web.get(&format!("/runs/{id}/steps/ingest/logs.txt")).await;
    assert_eq!(txt.status, 200);
    assert!(txt.body.contains("loaded <rows> & more\n") && !txt.body.contains('\u{1b}'), "{}", txt.body);
    assert!(txt.header("content-disposition").unwrap_or_default().starts_with("attachment"));

    let file = web.get(&format!("/runs/{id}/steps/ingest/outputs/data.csv")).await;
    assert_eq!((file.status, file.body.as_str()), (200, "a,b\n"));
    assert_eq!(
        file.header("content-disposition"),
        Some("attachment; filename=\"data.csv\"; filename*=UTF-8''data.csv")
    );
    let escape = web.get(&format!("/runs/{id}/steps/ingest/outputs/..%2F..%2Fetc%2Fpasswd")).await;
    assert_eq!(escape.status, 400, "{}", escape.body);
    let absent = web.get(&format!("/runs/{id}/steps/ingest/outputs/other.csv")).await;
    assert_eq!(absent.status, 404);

    let train = web.get(&format!("/runs/{id}/steps/train%5Blr%3D2%5D")).await;
    assert_eq!(train.status, 200, "{}", train.body);
    let t = &train.body;
    assert!(t.contains("matrix.lr=2") && t.contains("limit=0.5"), "params and matrix values");
    assert!(t.contains("rmse") && t.contains("0.25"), "metrics");
    assert!(t.contains(r#"id="gate" data-verdict="passed""#) && t.contains("metrics.rmse &lt; params.limit"), "{t}");
    assert!(t.contains("metrics.json"), "outputs");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gate_shows_the_values_and_retry_from_a_step_shows_its_plan_first() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(GRAPH, None).await;
    let id = c.start_run(&version, &[("limit", "0.1")]).await;
    c.wait(&id, MINUTE).await;
    let mut web = Http::new(&c.url());
    let train = web.get(&format!("/runs/{id}/steps/train%5Blr%3D1%5D")).await;
    assert!(train.body.contains(r#"data-verdict="failed""#), "{}", train.body);
    assert!(train.body.contains("metrics.rmse = 0.25, params.limit = 0.1"), "the values compared: {}", train.body);
    let run = web.get(&format!("/runs/{id}")).await;
    assert!(run.body.contains("✗ failed"), "a failed node says so in text");
    assert!(run.body.contains("Retry what did not succeed"));

    let plan = web.get(&format!("/runs/{id}/retry?from=train")).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let rerun = plan.body.split(r#"id="rerun""#).nth(1).unwrap().split("</ul>").next().unwrap().to_string();
    let reused = plan.body.split(r#"id="reused""#).nth(1).unwrap().split("</ul>").next().unwrap().to_string();
    assert!(rerun.contains("train[lr=1]") && rerun.contains("report") && !rerun.contains("ingest"), "{rerun}");
    assert!(reused.contains("ingest"), "{reused}");
    let csrf = plan.csrf().expect("csrf");

    let forged = web.post(&format!("/runs/{id}/retry"), &[("from", "train")]).await;
    assert_eq!(forged.status, 403, "no csrf, no retry");
    let done = web.post(&format!("/runs/{id}/retry"), &[("csrf", &csrf), ("from", "train")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let to = done.header("location").unwrap().to_string();
    assert!(to.starts_with("/runs/") && to != format!("/runs/{id}"), "{to}");
    let new = web.get(&to).await;
    assert!(new.body.contains("retry of") && new.body.contains(&id) && new.body.contains("<code>train</code>"));
    let reused = web.get(&format!("{to}/steps/ingest")).await;
    assert!(reused.body.contains(r#"data-verdict="hit""#), "{}", reused.body);
    assert!(reused.body.contains(&format!("reused from run {id}, the run this one retries")), "{}", reused.body);
    assert!(
        reused.body.contains(&format!("<td class=\"reason\">from run {id}</td>")),
        "the attempt says where from: {}",
        reused.body.split("<h2>Attempts</h2>").nth(1).unwrap_or_default().split("<h2>").next().unwrap_or_default()
    );

    let plain = web.post(&format!("/runs/{id}/retry"), &[("csrf", &csrf)]).await;
    assert_eq!(plain.status, 303, "retry what did not succeed: {}", plain.body);
    let again = web.get(plain.header("location").unwrap()).await;
    assert!(again.body.contains("retry of") && !again.body.contains("<code>train</code>"), "no `from`");

    let unknown = web.get(&format!("/runs/{id}/retry?from=nope")).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    c.stop().await;
}

const SLOW: &str = r#"
name: slowrun
steps:
  talk:
    run: |
      echo first
      sleep 2
      printf '\033[31msecond\033[0m\n'
  wait:
    needs: [talk]
    run: sleep 60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_logs_change_live_and_cancel_ends_the_run() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(SLOW, None).await;
    let id = c.start_run(&version, &[]).await;
    let mut web = Http::new(&c.url());
    let page = web.get(&format!("/runs/{id}")).await;
    assert!(page.body.contains(&format!(r#"data-live-run="/runs/{id}/events""#)), "{}", page.body);
    assert!(page.body.contains("Cancel run"));
    let csrf = page.csrf().unwrap();

    let logs = web.events(&format!("/runs/{id}/steps/talk/logs/events"), MINUTE, |ev, _| ev == "end", async {}).await;
    let lines: Vec<&str> = logs.iter().filter(|(e, _)| e == "line").map(|(_, d)| d.as_str()).collect();
    assert_eq!(lines.len(), 2, "{logs:?}");
    assert!(lines[0].contains(">first<"), "{logs:?}");
    assert!(lines[1].contains(r#"<span class="ansi-31">second</span>"#), "rendered on the server: {logs:?}");

    let url = c.url();
    let run = id.clone();
    let cancel = async move {
        let mut other = Http::new(&url);
        let r = other.post(&format!("/runs/{run}/cancel"), &[("csrf", &csrf)]).await;
        assert_eq!(r.status, 303, "{}", r.body);
    };
    let events = web.events(&format!("/runs/{id}/events"), MINUTE, |ev, _| ev == "end", cancel).await;
    let steps: Vec<serde_json::Value> =
        events.iter().filter(|(e, _)| e == "step").map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(
        steps.iter().any(|s| s["instance"] == "talk" && s["state"] == "succeeded" && s["attempt"] == 1),
        "{events:?}"
    );
    assert!(steps.iter().any(|s| s["instance"] == "wait" && s["state"] == "running"), "{events:?}");
    assert!(events.iter().any(|(e, d)| e == "run" && d.contains("cancelled")), "{events:?}");
    assert_eq!(events.last().map(|(e, _)| e.as_str()), Some("end"), "the stream ends with the run");
    let after = web.get(&format!("/runs/{id}")).await;
    assert!(after.body.contains("⊘") && !after.body.contains("data-live-run"), "{}", after.body);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_group_node_gets_its_state_and_counts_from_the_stream() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(GRAPH, None).await;
    let mut web = Http::new(&c.url());
    let id = c.start_run(&version, &[]).await;
    let events = web.events(&format!("/runs/{id}/events"), MINUTE, |ev, _| ev == "end", async {}).await;
    let groups: Vec<serde_json::Value> = events
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter(|s| s["step"] == "train")
        .map(|s| s["group"].clone())
        .collect();
    assert!(groups.iter().all(|g| g["key"] == "train"), "{groups:?}");
    assert_eq!(
        groups.last().map(|g| (g["state"].clone(), g["detail"].clone())),
        Some(("succeeded".into(), "2 succeeded".into()))
    );
    let ingest = events.iter().find(|(e, d)| e == "step" && d.contains("\"instance\":\"ingest\"")).unwrap();
    assert!(ingest.1.contains("\"group\":null"), "a step of one instance is its own node: {ingest:?}");
    c.stop().await;
}

const APPROVAL: &str = r#"
name: webapproval
steps:
  deploy:
    approval: {message: "ship it?"}
    run: echo deployed
  again:
    approval: {message: "and this?"}
    run: echo again
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_awaiting_approval_is_approved_and_rejected_from_its_page() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(APPROVAL, None).await;
    let id = c.start_run(&version, &[]).await;
    let mut web = Http::new(&c.url());
    let page = loop {
        let page = web.get(&format!("/runs/{id}/steps/deploy")).await;
        if page.body.contains("Approve</button>") {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.body.contains("✋") && page.body.contains("awaiting_approval"), "{}", page.body);
    assert!(page.body.contains("<strong>ship it?</strong>"), "{}", page.body);
    let list = web.get("/runs").await;
    assert!(list.body.contains(r#"data-state="awaiting_approval""#), "the runs list says it waits: {}", list.body);
    let csrf = page.csrf().expect("csrf");
    let forged = web.post(&format!("/runs/{id}/steps/deploy/approve"), &[("decision", "approve")]).await;
    assert_eq!(forged.status, 403, "no csrf, no decision");
    let form = [("csrf", csrf.as_str()), ("decision", "approve"), ("name", "carol"), ("comment", "go")];
    let done = web.post(&format!("/runs/{id}/steps/deploy/approve"), &form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let form = [("csrf", csrf.as_str()), ("decision", "reject"), ("name", ""), ("comment", "not today")];
    let no = web.post(&format!("/runs/{id}/steps/again/approve"), &form).await;
    assert_eq!(no.status, 303, "{}", no.body);
    c.wait(&id, MINUTE).await;
    let deploy = web.get(&format!("/runs/{id}/steps/deploy")).await;
    assert!(deploy.body.contains("Approved by carol (anonymous) at "), "{}", deploy.body);
    assert!(!deploy.body.contains("Approve</button>"), "decided: no buttons");
    let again = web.get(&format!("/runs/{id}/steps/again")).await;
    assert!(again.body.contains("Rejected by anonymous at "), "{}", again.body);
    assert!(again.body.contains("rejected by anonymous: not today"), "{}", again.body);
    let late = web.post(&format!("/runs/{id}/steps/again/approve"), &form).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(late.body.contains("already finished as failed"), "{}", late.body);
    c.stop().await;
}
