//! Placement end to end: real engine, real worker agents, real processes. A GPU worker here has
//! no GPU: it is told `--gpus 0` (the agent's `GpuChoice::Only`), which is all the engine and
//! the agent's GPU pool go by; the step only sees `CUDA_VISIBLE_DEVICES`. What is shown: two
//! `gpus: 1` steps on a one-GPU worker never overlap and each sees its device, a CPU-only worker
//! never gets them though it sits idle, a CPU step sees no GPU, and a step nobody can run says
//! why it waits.

use std::time::Duration;

use weir_proto::v1::{RunState, StepState};
use weir_tests::{Cluster, step, summary};
use weir_worker::gpu::GpuChoice;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_steps_go_one_at_a_time_to_the_gpu_worker_and_see_only_their_device() {
    let mut c = Cluster::start(0, 4).await;
    c.add_worker_with(4, |w| {
        w.gpus = GpuChoice::None;
        w.labels.insert("pool".into(), "cpu".into());
    });
    c.add_worker_with(4, |w| w.gpus = GpuChoice::Only(vec![0]));
    // A GPU step holds `busy` while it runs: a second one at the same time fails its mkdir.
    let busy = c.dir.path().join("gpu0-busy");
    let gpu_step = format!(
        "{{run: 'mkdir {b} || exit 7; echo devices=$CUDA_VISIBLE_DEVICES; sleep 0.5; rmdir {b}', resources: {{gpus: 1}}}}",
        b = busy.display()
    );
    let yaml = format!(
        "name: gpus
steps:
  g1: {gpu_step}
  g2: {gpu_step}
  g3: {gpu_step}
  plain:
    run: 'echo devices=[${{CUDA_VISIBLE_DEVICES-unset}}]'
    runs_on: {{pool: cpu}}
"
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(got.run.as_ref().unwrap().state(), RunState::Succeeded, "{:#?}", got.steps);
    for g in ["g1", "g2", "g3"] {
        assert_eq!(summary(&got, g).1, 1, "{g} ran once, never alongside another");
        assert!(step(&got, g).worker_id.starts_with("w1-"), "{g} ran on {}", step(&got, g).worker_id);
        assert!(c.logs(&run, g).await.contains("devices=0\n"), "{g}");
    }
    assert!(step(&got, "plain").worker_id.starts_with("w0-"));
    assert!(c.logs(&run, "plain").await.contains("devices=[]\n"), "set, and empty: no GPU for a CPU step");

    // Two GPUs: no worker offers them; the step says so, and runs once a worker that can joins.
    let yaml = "name: two
steps:
  both: {run: 'echo devices=$CUDA_VISIBLE_DEVICES', resources: {gpus: 2}}
";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    c.wait_for(&run, MINUTE, |got| step(got, "both").message == "waiting: no worker offers gpus=2").await;
    assert_eq!(summary(&c.get(&run).await, "both").0, StepState::Ready);
    c.add_worker_with(1, |w| w.gpus = GpuChoice::Only(vec![2, 5]));
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(got.run.as_ref().unwrap().state(), RunState::Succeeded, "{:#?}", got.steps);
    assert!(c.logs(&run, "both").await.contains("devices=2,5\n"));
    c.stop().await;
}
