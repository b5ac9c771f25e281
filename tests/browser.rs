//! The web UI in a real browser: headless Chromium driven over WebDriver against a real
//! server with tokens and a real worker. What only a browser shows is tested here: the login
//! flow with its cookie, and pages that change by themselves (live state) without a reload.
//! Needs `chromium` and `chromium-driver` (CI installs them; elsewhere a loud skip).

use std::time::Duration;

use weir_engine::server;
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_tests::test_config;
use weir_tests::webdriver::{self, Browser};

const MINUTE: Duration = Duration::from_secs(60);
const TOKEN: &str = "client-token-for-the-browser-tests-0123456789";

/// A server with tokens, a worker, and a gRPC client that sends the client token.
struct Team {
    _dir: tempfile::TempDir,
    server: server::Server,
    stop: tokio_util::sync::CancellationToken,
    client: WeirClientClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>>,
}

#[derive(Clone)]
struct Token;

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        Ok(req)
    }
}

impl Team {
    async fn start() -> Team {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("engine"));
        config.client_token = Some(TOKEN.into());
        config.worker_token = Some("worker-token-for-the-browser-tests-987654321".into());
        let server = server::start(config).await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut agent = weir_worker::AgentConfig::new(server.url(), dir.path().join("worker"));
        agent.name = "w0".into();
        agent.capacity = 4;
        agent.token = Some("worker-token-for-the-browser-tests-987654321".into());
        tokio::spawn(weir_worker::Agent::new(agent).run(stop.clone()));
        let channel = tonic::transport::Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
        let client = WeirClientClient::with_interceptor(channel, Token);
        Team { _dir: dir, server, stop, client }
    }

    async fn submit(&mut self, yaml: &str) -> String {
        let header =
            v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "pipeline.yaml".into(), ..Default::default() };
        let msg = v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) };
        self.client.submit_pipeline(tokio_stream::iter(vec![msg])).await.unwrap().into_inner().version
    }

    async fn start_run(&mut self, version: &str) -> String {
        let req = v1::StartRunRequest {
            pipeline: Some(v1::start_run_request::Pipeline::Version(version.into())),
            ..Default::default()
        };
        self.client.start_run(req).await.unwrap().into_inner().run.unwrap().run_id
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.shutdown().await;
    }
}

/// Logs `b` in through the form.
async fn log_in(b: &mut Browser, base: &str) {
    b.goto(&format!("{base}/runs")).await;
    assert!(b.url().await.contains("/login?next="), "without a session the UI sends the browser to log in");
    let field = b.wait_for("#token", MINUTE).await;
    b.fill(&field, TOKEN).await;
    let submit = b.wait_for("form[action='/login'] button", MINUTE).await;
    b.click(&submit).await;
    b.wait_for("#runs, p.muted", MINUTE).await;
    assert!(b.url().await.ends_with("/runs"), "back where it was going: {}", b.url().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_and_watch_a_run_change_state_without_reloading() {
    if !webdriver::available() {
        return;
    }
    let mut team = Team::start().await;
    let gate = team._dir.path().join("go");
    let yaml = format!(
        "name: live\nsteps:\n  wait:\n    run: while [ ! -e {g} ]; do sleep 0.05; done\n  after:\n    needs: [wait]\n    run: echo done\n",
        g = gate.display()
    );
    let version = team.submit(&yaml).await;
    let run = team.start_run(&version).await;
    let base = team.server.url();
    let mut b = Browser::start().await;

    // A wrong token stays on the login page, saying so.
    b.goto(&format!("{base}/login")).await;
    let field = b.wait_for("#token", MINUTE).await;
    b.fill(&field, "wrong").await;
    let submit = b.wait_for("form[action='/login'] button", MINUTE).await;
    b.click(&submit).await;
    b.wait_for("p.error", MINUTE).await;
    assert!(b.page_text().await.contains("That token is not valid"));

    log_in(&mut b, &base).await;
    let row = format!("tr[data-run='{run}'] td.state .badge");
    let badge = b.wait_for(&row, MINUTE).await;
    assert_eq!(b.attribute(&badge, "data-state").await.as_deref(), Some("running"));
    // Marks this page: a reload would lose the mark.
    b.eval("window.__weirMark = 42; return true", vec![]).await;
    std::fs::write(&gate, "").unwrap();
    b.wait_until(&format!("return document.querySelector(\"{row}\").dataset.state === 'succeeded'"), MINUTE).await;
    assert_eq!(b.eval("return window.__weirMark", vec![]).await, serde_json::json!(42), "no reload");
    let badge = b.wait_for(&row, MINUTE).await;
    let text = b.text(&badge).await;
    assert!(text.contains("✓") && text.contains("succeeded"), "state by icon and text: {text}");

    // A session cookie that is not ours sends the browser back to log in.
    b.set_cookie("weir_session", "99999999999999.00").await;
    b.goto(&format!("{base}/runs")).await;
    b.wait_for("#token", MINUTE).await;
    assert!(b.url().await.contains("/login"), "{}", b.url().await);
    drop(b);
    team.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_graph_and_a_steps_logs_change_live() {
    if !webdriver::available() {
        return;
    }
    let mut team = Team::start().await;
    let gate = team._dir.path().join("go");
    let yaml = format!(
        "name: graph\nsteps:\n  prep:\n    stage: preprocessing\n    run: echo prepared\n  train:\n    stage: training\n    needs: [prep]\n    run: |\n      echo \"epoch 1 loss 0.9\"\n      while [ ! -e {g} ]; do sleep 0.05; done\n      echo \"epoch 2 loss 0.4\"\n",
        g = gate.display()
    );
    let version = team.submit(&yaml).await;
    let run = team.start_run(&version).await;
    let base = team.server.url();
    let mut b = Browser::start().await;
    log_in(&mut b, &base).await;

    // The run's graph: train goes from running to succeeded with no reload.
    b.goto(&format!("{base}/runs/{run}")).await;
    let node = "svg g[data-node='train']";
    b.wait_for(node, MINUTE).await;
    b.wait_until(&format!("return document.querySelector(\"{node}\").dataset.state === 'running'"), MINUTE).await;
    b.eval("window.__weirMark = 7; return true", vec![]).await;
    std::fs::write(&gate, "").unwrap();
    b.wait_until(&format!("return document.querySelector(\"{node}\").dataset.state === 'succeeded'"), MINUTE).await;
    assert_eq!(b.eval("return window.__weirMark", vec![]).await, serde_json::json!(7), "no reload");
    let text = b.page_text().await;
    assert!(text.contains("preprocessing") && text.contains("training"), "stages are drawn: {text}");

    // A step's logs stream in while it runs.
    std::fs::remove_file(&gate).unwrap();
    let again = team.start_run(&version).await;
    b.goto(&format!("{base}/runs/{again}/steps/train")).await;
    b.wait_until("return document.body.innerText.includes('epoch 1 loss 0.9')", MINUTE).await;
    assert!(!b.page_text().await.contains("epoch 2 loss 0.4"));
    b.eval("window.__weirMark = 8; return true", vec![]).await;
    std::fs::write(&gate, "").unwrap();
    b.wait_until("return document.body.innerText.includes('epoch 2 loss 0.4')", MINUTE).await;
    assert_eq!(b.eval("return window.__weirMark", vec![]).await, serde_json::json!(8), "no reload");
    drop(b);
    team.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_the_form_promote_a_model_and_follow_its_lineage() {
    if !webdriver::available() {
        return;
    }
    let mut team = Team::start().await;
    let yaml = r#"name: shop
params:
  rows: {type: int, default: 5, description: "rows to ingest"}
steps:
  ingest:
    stage: ingestion
    run: |
      seq 1 "$WEIR_PARAM_ROWS" > "$WEIR_OUTPUTS/data.csv"
    outputs: [data.csv]
  train:
    stage: training
    needs: [ingest]
    run: |
      echo "{\"run\": \"$WEIR_RUN_ID\"}" > "$WEIR_OUTPUTS/model.json"
      echo '{"rmse": 0.3}' > "$WEIR_OUTPUTS/metrics.json"
    outputs: [model.json, metrics.json]
    register: {model: demo, file: model.json, alias: production}
"#;
    team.submit(yaml).await;
    let base = team.server.url();
    let mut b = Browser::start().await;
    log_in(&mut b, &base).await;

    // A bad param: the form comes back with the error beside the field.
    b.goto(&format!("{base}/pipelines/shop")).await;
    let rows = b.wait_for("form.start input[name='p.rows']", MINUTE).await;
    b.fill(&rows, "many").await;
    let go = b.wait_for("form.start button[type='submit']", MINUTE).await;
    b.click(&go).await;
    let err = b.wait_for("form.start .error[data-param='rows']", MINUTE).await;
    let said = b.text(&err).await;
    assert!(!said.is_empty(), "an inline error for rows");
    assert!(b.url().await.ends_with("/pipelines/shop/start"), "{}", b.url().await);
    // A good one starts a run and shows it; twice, for two model versions.
    let mut runs = Vec::new();
    for n in ["7", "9"] {
        b.goto(&format!("{base}/pipelines/shop")).await;
        let rows = b.wait_for("form.start input[name='p.rows']", MINUTE).await;
        b.fill(&rows, n).await;
        let go = b.wait_for("form.start button[type='submit']", MINUTE).await;
        b.click(&go).await;
        b.wait_until("return location.pathname.startsWith('/runs/shop-')", MINUTE).await;
        let run = b.url().await.rsplit('/').next().unwrap().to_string();
        b.wait_until("return !!document.querySelector(\"svg g[data-node='train'][data-state='succeeded']\")", MINUTE)
            .await;
        runs.push(run);
    }

    // Promote v1 back to production: the dry run first, then the move.
    b.goto(&format!("{base}/models/demo")).await;
    let version = b.wait_for("form[action$='/promote'] select[name='version']", MINUTE).await;
    b.eval("arguments[0].value = '1'; return true", vec![serde_json::json!({webdriver::ELEMENT: version.id()})]).await;
    let alias = b.wait_for("form[action$='/promote'] input[name='alias']", MINUTE).await;
    b.fill(&alias, "production").await;
    let check = b.wait_for("form[action$='/promote'] button", MINUTE).await;
    b.click(&check).await;
    let confirm = b.wait_for("form[action$='/promote'] input[name='confirm'] ~ button", MINUTE).await;
    let preview = b.page_text().await;
    assert!(preview.contains("v2 → v1"), "the move is shown before it is made: {preview}");
    b.click(&confirm).await;
    b.wait_until("return document.querySelector('#history tbody tr') !== null && document.querySelector('#history tbody tr').innerText.includes('v2 → v1')", MINUTE).await;

    // Lineage of v1: from the model back to the ingested data, and on to the step that made it.
    b.goto(&format!("{base}/models/demo?lineage=1#lineage")).await;
    b.wait_for("#lineage svg", MINUTE).await;
    let graph = b.eval("return document.querySelector('#lineage svg').textContent", vec![]).await;
    assert!(graph.as_str().unwrap_or_default().contains("data.csv"), "{graph}");
    let ingest = b.wait_for("#lineage svg g[data-node*='ingest'] a", MINUTE).await;
    b.click(&ingest).await;
    b.wait_until(&format!("return location.pathname === '/runs/{}/steps/ingest'", runs[0]), MINUTE).await;
    drop(b);
    team.stop().await;
}

/// Makes the screenshots README.md shows (docs/screenshots/*.png) from the example pipeline on
/// a real server and worker: `cargo test -p weir-tests --test browser -- --ignored screenshots`.
/// Not a check (what it captures depends on timing), so it does not run with the tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshots; run by hand after changing the UI"]
async fn screenshots() {
    if !webdriver::available() {
        return;
    }
    let out = weir_tests::root().join("docs/screenshots");
    std::fs::create_dir_all(&out).unwrap();
    // One slot: the four training instances run one after another, so a run is caught midway.
    let mut c = weir_tests::Cluster::start(1, 1).await;
    let folder = weir_tests::root().join("pipelines/ml-retrain");
    let yaml = std::fs::read_to_string(folder.join("pipeline.yaml")).unwrap();
    let version = c.submit(&yaml, Some(&folder)).await;
    for rows in ["800", "1200", "1600"] {
        let run = c.start_run(&version, &[("rows", rows)]).await;
        c.wait(&run, MINUTE * 3).await;
    }
    let base = c.url();
    let mut b = Browser::start().await;
    let shot = |name: &str| out.join(format!("{name}.png"));

    let mid = c.start_run(&version, &[("rows", "40000")]).await;
    c.wait_for(&mid, MINUTE * 3, |got| {
        got.steps.iter().any(|s| s.name.starts_with("train") && s.state() == v1::StepState::Running)
            && got.steps.iter().any(|s| s.name.starts_with("train") && s.state() == v1::StepState::Succeeded)
    })
    .await;
    b.goto(&format!("{base}/runs/{mid}")).await;
    b.wait_for("svg", MINUTE).await;
    b.screenshot(&shot("run-dag")).await;
    b.goto(&format!("{base}/runs")).await;
    b.wait_for("#runs", MINUTE).await;
    b.screenshot(&shot("runs")).await;
    let done = c.wait(&mid, MINUTE * 3).await;
    let train = done.steps.iter().find(|s| s.name.starts_with("train")).unwrap().name.clone();
    b.goto(&format!("{base}/runs/{mid}/steps/{}", urlencode(&train))).await;
    b.wait_for("main", MINUTE).await;
    b.screenshot(&shot("step-logs")).await;
    b.goto(&format!("{base}/plots?pipeline=ml-retrain&step=validate&metric=rmse")).await;
    b.wait_for("main", MINUTE).await;
    b.screenshot(&shot("metric-plot")).await;
    b.goto(&format!("{base}/models/churn")).await;
    b.wait_for("main", MINUTE).await;
    b.screenshot(&shot("model")).await;
    drop(b);
    c.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
