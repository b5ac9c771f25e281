//! Metrics keep every float a step writes exactly (issue 18): `metrics.json` is parsed with
//! serde_json's `float_roundtrip`, so a gate comparing a metric with the very value the step
//! wrote passes, end to end through a real engine and worker. Without it `0.9283333333333333`
//! parses as `0.9283333333333332` and `metrics.acc >= 0.9283333333333333` is false.

use std::time::Duration;

use weir_proto::v1::RunState;
use weir_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

/// Awkward values: a repeating decimal, a sum that is not the decimal it looks like, a tiny
/// normal number, the smallest subnormal and the largest finite double.
const VALUES: [(&str, &str, f64); 5] = [
    ("acc", "0.9283333333333333", 0.9283333333333333),
    ("sum", "0.30000000000000004", 0.1 + 0.2),
    ("tiny", "1e-300", 1e-300),
    ("subnormal", "5e-324", 5e-324),
    ("huge", "1.7976931348623157e308", f64::MAX),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_passes_when_a_metric_equals_its_threshold_exactly() {
    let mut c = Cluster::start(1, 1).await;
    let json = VALUES.iter().map(|(k, text, _)| format!("\"{k}\": {text}")).collect::<Vec<_>>().join(", ");
    let gate = VALUES.iter().map(|(k, text, _)| format!("metrics.{k} >= {text}")).collect::<Vec<_>>().join(" && ");
    let yaml = format!(
        "name: floats
steps:
  score:
    run: |
      echo '{{{json}}}' > \"$WEIR_OUTPUTS/metrics.json\"
    outputs: [metrics.json]
    gate: \"{gate}\"
"
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    let score = weir_tests::step(&got, "score");
    assert_eq!(got.run.as_ref().unwrap().state(), RunState::Succeeded, "{score:?}");
    for (key, _, value) in VALUES {
        assert_eq!(score.metrics[key].to_bits(), value.to_bits(), "{key}: {}", score.metrics[key]);
    }
    c.stop().await;
}
