//! Explanations on the web UI over a real server and worker: the model page draws the newest
//! explained version's importance bars and compares it with the explained version before it
//! (rank changes, a feature that appeared, one that vanished); the step page draws the bars
//! of the explain.json its step wrote, and a step without one shows none.

use std::time::Duration;

use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const YAML: &str = r#"name: expl
params:
  variant: a
steps:
  train:
    run: |
      echo "$WEIR_PARAM_VARIANT" > "$WEIR_OUTPUTS/model.json"
      if [ "$WEIR_PARAM_VARIANT" = a ]; then
        echo '{"method": "permutation", "importances": {"income": 0.3, "tenure": 0.2, "zip": 0.01}}'
      else
        echo '{"method": "permutation", "importances": {"customer_id": 0.6, "tenure": 0.25, "income": -0.1}}'
      fi > "$WEIR_OUTPUTS/explain.json"
    outputs: [model.json, explain.json]
    register: {model: churn, file: model.json, alias: production}
  report:
    needs: [train]
    run: echo done > "$WEIR_OUTPUTS/report.txt"
    outputs: [report.txt]
"#;

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let at = body.find(start).unwrap_or_else(|| panic!("{start} not in {body}")) + start.len();
    let rest = &body[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_and_step_pages_show_importance_bars_and_the_comparison() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(YAML, None).await;
    let mut runs = Vec::new();
    for variant in ["a", "b"] {
        let id = c.start_run(&version, &[("variant", variant)]).await;
        c.wait(&id, MINUTE).await;
        runs.push(id);
    }
    let mut web = Http::new(&c.url());
    let page = web.get("/models/churn").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let section = between(&page.body, "id=\"explanation\"", "</section>");
    assert!(section.contains("Explanation of v2"), "{section}");
    let bars: Vec<&str> = section.split("class=\"bar\"").skip(1).collect();
    assert_eq!(bars.len(), 3, "{section}");
    assert!(bars[0].contains("data-feature=\"customer_id\"") && bars[0].contains("data-rank=\"1\""), "{}", bars[0]);
    // Scaled to the largest: customer_id's bar is the full 320, tenure's 0.25 / 0.6 of it.
    assert!(bars[0].contains("width=\"320.0\""), "{}", bars[0]);
    assert!(bars[1].contains("data-feature=\"tenure\"") && bars[1].contains("width=\"133.3\""), "{}", bars[1]);
    assert!(bars[2].contains("data-importance=\"-0.1\"") && bars[2].contains("neg"), "{}", bars[2]);
    let diff = between(section, "id=\"explain-diff\"", "</table>");
    assert!(section.contains("Compared with v1") && section.contains("rank shift"), "{section}");
    let row = |feature: &str| between(diff, &format!("data-feature=\"{feature}\""), "</tr>").to_string();
    assert!(row("customer_id").contains("data-change=\"appeared\""), "{diff}");
    assert!(row("zip").contains("data-change=\"vanished\""), "{diff}");
    assert!(row("income").contains("▼ down 2") && row("income").contains("1 → 3"), "{diff}");
    assert!(row("tenure").contains("data-change=\"=\""), "{diff}");

    let step = web.get(&format!("/runs/{}/steps/train", runs[0])).await;
    assert_eq!(step.status, 200, "{}", step.body);
    let section = between(&step.body, "id=\"explanation\"", "</section>");
    assert!(section.contains("data-feature=\"income\"") && section.contains("data-rank=\"1\""), "{section}");
    let other = web.get(&format!("/runs/{}/steps/report", runs[0])).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(!other.body.contains("id=\"explanation\""), "a step without explain.json shows no bars");
}
