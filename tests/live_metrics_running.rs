//! A training step's live loss series is visible through the API while the step still runs
//! (issue 15): a real engine and worker over loopback gRPC, a process step that writes two
//! points to `$WEIR_METRICS` and then waits for a file the test creates. The test polls
//! `GetStepMetrics` until both points are there, checks the step is still running at that
//! moment, then releases it and sees the run finish with the last value as a metric.

use std::time::{Duration, Instant};

use weir_proto::v1;
use weir_tests::{Cluster, step};

const MINUTE: Duration = Duration::from_secs(60);

fn yaml(release: &std::path::Path) -> String {
    format!(
        r#"
name: live
steps:
  train:
    run: |
      echo '{{"name": "loss", "value": 0.9, "step": 1}}' >> "$WEIR_METRICS"
      echo '{{"name": "loss", "value": 0.4, "step": 2}}' >> "$WEIR_METRICS"
      while [ ! -e '{release}' ]; do sleep 0.05; done
"#,
        release = release.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_steps_loss_series_is_readable_before_it_ends() {
    let mut c = Cluster::start(1, 1).await;
    let release = c.dir.path().join("release");
    let version = c.submit(&yaml(&release), None).await;
    let id = c.start_run(&version, &[]).await;

    let request = v1::GetStepMetricsRequest { run_id: id.clone(), step: "train".into(), attempt: 0 };
    let deadline = Instant::now() + MINUTE;
    let seen = loop {
        // NOT_FOUND until the attempt exists; an empty answer until the worker's first upload.
        if let Ok(answer) = c.client.get_step_metrics(request.clone()).await {
            let answer = answer.into_inner();
            let loss = answer.series.iter().find(|s| s.name == "loss");
            if loss.is_some_and(|s| s.points.len() == 2) {
                break answer;
            }
        }
        assert!(Instant::now() < deadline, "no live loss series within a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The series was read while the step waited on the file the test has not made yet.
    let got = c.get(&id).await;
    assert_eq!(step(&got, "train").state(), v1::StepState::Running, "the step is still running");
    assert_eq!(got.run.as_ref().expect("run").state(), v1::RunState::Running);
    let loss = seen.series.iter().find(|s| s.name == "loss").expect("loss");
    let values: Vec<(Option<u64>, f64)> = loss.points.iter().map(|p| (p.step, p.value)).collect();
    assert_eq!(values, vec![(Some(1), 0.9), (Some(2), 0.4)]);

    std::fs::write(&release, b"").expect("release the step");
    let done = c.wait(&id, MINUTE).await;
    assert_eq!(done.run.as_ref().expect("run").state(), v1::RunState::Succeeded);
    let metrics = &step(&done, "train").metrics;
    assert_eq!(metrics.get("loss").copied(), Some(0.4), "the last live value is the step's metric: {metrics:?}");
    c.stop().await;
}
