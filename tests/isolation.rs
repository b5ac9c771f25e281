//! What one step cannot do to the next on the same worker, end to end (a real engine, a real
//! worker agent, real processes): change the pipeline bundle later runs execute, whether by
//! editing the files in its working folder or by reaching the worker's bundle cache itself.

use std::time::Duration;

use weir_proto::v1::{RunState, StepState};
use weir_tests::{Cluster, summary};

const MINUTE: Duration = Duration::from_secs(60);

/// Runs `sh steps/x.sh` from the bundle, then rewrites it in its working folder.
const EDITS_ITS_FOLDER: &str = "name: poison-cwd
steps:
  work:
    run: |
      sh steps/x.sh
      echo 'echo poisoned through the working folder' > steps/x.sh
";

/// Runs `sh steps/x.sh`, then rewrites it in the worker's bundle cache, as a hostile step of the
/// worker's own uid can (`$WEIR_OUTPUTS` is `<work>/attempts/<n>/outputs`).
const EDITS_THE_CACHE: &str = "name: poison-cache
steps:
  work:
    run: |
      sh steps/x.sh
      for f in \"$WEIR_OUTPUTS\"/../../../bundles/*/steps/x.sh; do
        chmod -R u+w \"${f%/steps/x.sh}\"
        echo 'echo poisoned through the cache' > \"$f\"
        echo \"rewrote $f\"
      done
";

async fn run_once(c: &mut Cluster, version: &str) -> String {
    let run = c.start_run(version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(got.run.as_ref().expect("run").state(), RunState::Succeeded, "{:#?}", got.steps);
    assert_eq!(summary(&got, "work").0, StepState::Succeeded);
    c.logs(&run, "work").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_poison_the_bundle_later_runs_execute() {
    // One worker with one slot: every run uses the same cached bundle and the same slot folder.
    let mut c = Cluster::start(1, 1).await;
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(folder.path().join("steps")).expect("mkdir");
    std::fs::write(folder.path().join("steps/x.sh"), "echo original\n").expect("write");
    // Two pipelines over the same folder: the same bundle digest, so the same cache entry.
    let cwd = c.submit(EDITS_ITS_FOLDER, Some(folder.path())).await;
    let cache = c.submit(EDITS_THE_CACHE, Some(folder.path())).await;

    assert_eq!(run_once(&mut c, &cwd).await, "original\n");
    assert_eq!(run_once(&mut c, &cwd).await, "original\n", "the first run's edit of its folder leaked");

    let log = run_once(&mut c, &cache).await;
    assert!(log.starts_with("original\nrewrote "), "the step reached the cache (the positive control): {log}");
    assert_eq!(
        run_once(&mut c, &cwd).await,
        "original\n",
        "a cache changed behind the worker's back must be detected and fetched again"
    );
    assert_eq!(run_once(&mut c, &cache).await.lines().next(), Some("original"));
    c.stop().await;
}
