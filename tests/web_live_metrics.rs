//! A step's live metrics (`$WEIR_METRICS`) on its web page, over a real server and worker: one
//! inline SVG plot per series, with the count of malformed lines; and nothing of the kind for
//! a step that wrote none.

use std::time::Duration;

use weir_tests::Cluster;
use weir_tests::http::Http;

const MINUTE: Duration = Duration::from_secs(60);

const YAML: &str = r#"
name: webl
steps:
  train:
    run: |
      for i in 1 2 3 4; do echo "{\"name\": \"loss\", \"value\": 0.$((10 - i)), \"step\": $i}" >> "$WEIR_METRICS"; done
      echo '{"name": "acc", "value": 0.5}' >> "$WEIR_METRICS"
      echo 'oops' >> "$WEIR_METRICS"
  quiet:
    run: echo nothing
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_page_plots_each_live_series() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(YAML, None).await;
    let id = c.start_run(&version, &[]).await;
    c.wait(&id, MINUTE).await;
    let mut web = Http::new(&c.url());
    let page = web.get(&format!("/runs/{id}/steps/train")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let b = &page.body;
    assert!(b.contains("<h2>Live metrics</h2>"), "{b}");
    assert!(b.contains(r#"data-series="loss""#) && b.contains(r#"data-series="acc""#), "{b}");
    let loss = b.split(r#"data-series="loss""#).nth(1).unwrap();
    let line = loss.split(r#"points=""#).nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(line.split(' ').count(), 4, "four points in the loss line: {line}");
    assert!(b.contains("1 line of $WEIR_METRICS was not a metric point"), "{b}");
    // The last value of each series is a metric of the step, as in metrics.json.
    assert!(b.contains("<td>loss</td><td class=\"num\">0.6</td>"), "{b}");

    let quiet = web.get(&format!("/runs/{id}/steps/quiet")).await;
    assert_eq!(quiet.status, 200);
    assert!(!quiet.body.contains("Live metrics"), "{}", quiet.body);
    c.stop().await;
}
