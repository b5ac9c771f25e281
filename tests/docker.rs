//! Docker steps through the whole system: a real engine, a worker agent with the Docker runtime,
//! and real containers of the locally built `weir-test/busybox:1` image. Logs, outputs and inputs
//! cross the /weir mounts; an image that does not exist fails the step once, without its retries;
//! a container past its memory limit is reported as out of memory; a step's `capabilities:`
//! reaches its container; a param payload reaches a container's script through its environment
//! and runs nothing.

use std::time::Duration;

use weir_proto::v1::StepState;
use weir_tests::{Cluster, docker, summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_step_hands_its_outputs_and_logs_to_a_process_step() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 2).await;
    c.add_worker_with(2, |c| c.docker = Some(docker));
    let yaml = r#"
name: docker-flow
steps:
  make:
    runtime: docker
    image: weir-test/busybox:1
    pull: never
    run: |
      echo "to stdout from $WEIR_STEP in $(pwd)"
      echo "to stderr" >&2
      echo "made in a container" > "$WEIR_OUTPUTS/data.txt"
      if touch /weir/src/x 2>/dev/null; then echo "the bundle is writable"; exit 1; fi
      echo "the bundle is read-only"
    outputs: [data.txt]
  use:
    needs: [make]
    run: cat "$WEIR_INPUTS/make/data.txt" > "$WEIR_OUTPUTS/copy.txt"
    outputs: [copy.txt]
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, Duration::from_secs(60)).await;
    assert_eq!(summary(&got, "make").0, StepState::Succeeded, "{:#?}", got.steps);
    assert_eq!(summary(&got, "use").0, StepState::Succeeded, "{:#?}", got.steps);
    let logs = c.logs(&run, "make").await;
    assert!(logs.contains("to stdout from make in /weir/src"), "{logs}");
    assert!(logs.contains("to stderr"), "{logs}");
    assert!(logs.contains("the bundle is read-only"), "{logs}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_step_once_despite_its_retries() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 1).await;
    c.add_worker_with(1, |c| c.docker = Some(docker));
    let yaml = r#"
name: no-image
steps:
  s:
    runtime: docker
    image: weir-test/there-is-no-such-image:0
    pull: never
    retries: {limit: 3, backoff: 1s}
    run: "true"
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, Duration::from_secs(30)).await;
    let (state, attempts, message) = summary(&got, "s");
    assert_eq!((state, attempts), (StepState::Failed, 1), "{message}");
    assert!(message.contains("weir-test/there-is-no-such-image:0"), "{message}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_memory_limit_is_reported_out_of_memory() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 1).await;
    c.add_worker_with(1, |c| c.docker = Some(docker));
    let yaml = r#"
name: oom
steps:
  hog:
    runtime: docker
    image: weir-test/busybox:1
    pull: never
    resources: {memory: 16Mi}
    run: dd if=/dev/zero of=/dev/null bs=64M count=1
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, Duration::from_secs(30)).await;
    let (state, _, message) = summary(&got, "hog");
    assert_eq!(state, StepState::Failed);
    assert!(message.contains("out of memory") && message.contains("16 MiB"), "{message}");
    c.stop().await;
}

/// A worker given the Docker socket can refuse process steps (`--no-process-steps`): it offers
/// only the docker runtime, so the engine never sends it a process step, which waits with the
/// reason instead of running beside a worker that is root on its host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_only_worker_never_gets_a_process_step() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 2).await;
    c.add_worker_with(2, |c| {
        c.docker = Some(docker);
        c.process_steps = false;
    });
    let yaml = r#"
name: docker-only
steps:
  boxed: {runtime: docker, image: "weir-test/busybox:1", pull: never, run: "true"}
  bare: {run: "true"}
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    c.wait_for(&run, Duration::from_secs(30), |got| {
        summary(got, "boxed").0 == StepState::Succeeded
            && summary(got, "bare").2.contains("waiting: no worker runs process steps")
    })
    .await;
    let got = c.get(&run).await;
    assert_eq!(summary(&got, "bare").0, StepState::Ready, "{:#?}", got.steps);
    c.stop().await;
}

/// A step's `capabilities:` travels from the pipeline file through the engine to its
/// container: the bounding set is exactly what it named, and the default set otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_s_capabilities_reach_its_container() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 1).await;
    c.add_worker_with(1, |c| c.docker = Some(docker));
    let yaml = r#"
name: caps
defaults:
  runtime: docker
  image: weir-test/busybox:1
  pull: never
steps:
  default:
    run: grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status
  chroot:
    capabilities: [chown, sys_chroot]
    run: grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, Duration::from_secs(60)).await;
    assert_eq!(summary(&got, "default").0, StepState::Succeeded, "{:#?}", got.steps);
    assert_eq!(summary(&got, "chroot").0, StepState::Succeeded, "{:#?}", got.steps);
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE: bits 0 1 3 4 5 6 7 10.
    let default = c.logs(&run, "default").await;
    assert!(default.contains("CapBnd:\t00000000000004fb"), "{default}");
    assert!(default.contains("NoNewPrivs:\t1"), "{default}");
    // CHOWN and SYS_CHROOT: bits 0 and 18.
    let chroot = c.logs(&run, "chroot").await;
    assert!(chroot.contains("CapBnd:\t0000000000040001"), "{chroot}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_param_payload_reaches_a_container_step_literally_and_runs_nothing() {
    let Some(docker) = docker().await else { return };
    let mut c = Cluster::start(0, 1).await;
    c.add_worker_with(1, |c| c.docker = Some(docker));
    let yaml = r#"
name: docker-payload
params:
  msg: {type: string}
steps:
  echo:
    runtime: docker
    image: weir-test/busybox:1
    pull: never
    run: |
      # {{ params.msg }}
      printf '%s\n' {{ params.msg }}
      [ ! -e /tmp/canary ]
"#;
    let payload = "'\"; touch /tmp/canary; $(touch /tmp/canary) `touch /tmp/canary`\nEOF\ntouch /tmp/canary # a[$(touch /tmp/canary)]";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[("msg", payload)]).await;
    let got = c.wait(&run, Duration::from_secs(60)).await;
    assert_eq!(summary(&got, "echo").0, StepState::Succeeded, "the canary exists: {:#?}", got.steps);
    assert_eq!(c.logs(&run, "echo").await, format!("{payload}\n"), "byte for byte");
    c.stop().await;
}
