//! The metrics pages over a real server and worker: the picker offers the steps and metrics
//! the runs reported, the plot has a point per run linked to it with its value in a tooltip,
//! and the comparison shows runs side by side with the rows that differ marked.

use std::time::Duration;

use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const YAML: &str = r#"name: lineage-demo
params:
  seed: 1
  lr: 0.1
steps:
  ingest:
    run: echo "rows for seed $WEIR_PARAM_SEED" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
  train:
    needs: [ingest]
    run: |
      (cat $WEIR_INPUTS/ingest/data.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.bin
      echo "{\"rmse\": $WEIR_PARAM_LR, \"epochs\": 3}" > $WEIR_OUTPUTS/metrics.json
    outputs: [model.bin, metrics.json]
"#;

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let at = body.find(start).unwrap_or_else(|| panic!("{start} not in {body}")) + start.len();
    let rest = &body[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

async fn runs(c: &mut Cluster) -> Vec<String> {
    let version = c.submit(YAML, None).await;
    let mut ids = Vec::new();
    for lr in ["0.5", "0.4", "0.6"] {
        let id = c.start_run(&version, &[("lr", lr)]).await;
        c.wait(&id, MINUTE).await;
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_is_plotted_across_runs_with_points_linked_to_them() {
    let mut c = Cluster::start(1, 2).await;
    let ids = runs(&mut c).await;
    let mut web = Http::new(&c.url());

    let picker = web.get("/plots?pipeline=lineage-demo").await;
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(picker.body.contains("href=\"/plots\""), "the nav's Metrics entry");
    let steps = between(&picker.body, "name=\"step\"", "</select>");
    assert!(
        steps.contains("<option value=\"train\">") && !steps.contains("ingest"),
        "only steps with metrics: {steps}"
    );
    let metrics = between(&picker.body, "name=\"metric\"", "</select>");
    assert!(metrics.contains(">epochs<") && metrics.contains(">rmse<"), "{metrics}");

    let page = web.get("/plots?pipeline=lineage-demo&step=train&metric=rmse").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let svg = between(&page.body, "<svg class=\"plot\"", "</svg>");
    assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    for (id, v) in ids.iter().zip(["0.5", "0.4", "0.6"]) {
        assert!(svg.contains(&format!("<a class=\"point\" href=\"/runs/{id}\">")), "{svg}");
        assert!(svg.contains(&format!("<title>rmse = {v} · run {id} · train</title>")), "{svg}");
    }
    assert!(svg.contains("class=\"series\"") && svg.contains("class=\"tick y\""), "a line and ticks");
    // One flat metric still plots.
    let flat = web.get("/plots?pipeline=lineage-demo&metric=epochs").await;
    let svg = between(&flat.body, "<svg class=\"plot\"", "</svg>");
    assert!(svg.matches("<circle").count() == 3 && !svg.contains("NaN"), "{svg}");
    let unknown = web.get("/plots?pipeline=nope&metric=rmse").await;
    assert_eq!(unknown.status, 404);
    let none = web.get("/plots?pipeline=lineage-demo&metric=accuracy").await;
    assert!(none.body.contains("No run reported accuracy") && none.body.contains("Reported: epochs, rmse"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_compare_side_by_side_with_differences_marked() {
    let mut c = Cluster::start(1, 2).await;
    let ids = runs(&mut c).await;
    let mut web = Http::new(&c.url());
    let page = web.get(&format!("/compare?runs={},{}", ids[0], ids[1])).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let row = |field: &str| between(&page.body, &format!("data-field=\"{field}\">"), "</tr>").to_string();
    let marked = |field: &str| page.body.contains(&format!("<tr class=\"differs\" data-field=\"{field}\">"));
    assert!(marked("param lr") && row("param lr").contains(">0.5<") && row("param lr").contains(">0.4<"));
    assert!(!marked("param seed") && !marked("state") && !marked("duration"));
    assert!(marked("metric train rmse") && !marked("metric train epochs"));
    assert!(!marked("output ingest/data.csv"), "the same seed made the same data");
    assert!(marked("output train/model.bin"), "each run's model differs");
    assert!(page.body.contains(&format!("href=\"/runs/{}\"", ids[1])));
    let empty = web.get("/compare?runs=").await;
    assert_eq!(empty.status, 400);
    let missing = web.get(&format!("/compare?runs={},no-such-run", ids[0])).await;
    assert_eq!(missing.status, 404);
    c.stop().await;
}
