//! End to end, in one process: a real engine on 127.0.0.1:0 with a sled store in a temporary
//! folder, real worker agents running steps as real processes, a real gRPC client. Each test is
//! a behaviour a user relies on: retries, timeouts, cancel, `when`, upstream failure, refused
//! outputs, logs, inputs between steps.

use std::time::Duration;

use weir_proto::v1::{RunState, StepState};
use weir_tests::{Cluster, alive, root, summary, wait_gone};

const MINUTE: Duration = Duration::from_secs(60);

fn state(got: &weir_proto::v1::GetRunResponse) -> RunState {
    got.run.as_ref().expect("run").state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pipeline_runs_with_inputs_outputs_matrix_and_gate() {
    let mut c = Cluster::start(1, 2).await;
    let folder = root().join("pipelines/ml-retrain");
    let yaml = std::fs::read_to_string(folder.join("pipeline.yaml")).unwrap();
    let version = c.submit(&yaml, Some(&folder)).await;
    let run = c.start_run(&version, &[("rows", "400")]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Succeeded, "{:#?}", got.steps);
    let deploy = weir_tests::step(&got, "deploy");
    let files: Vec<&str> = deploy.outputs.as_ref().unwrap().files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["explain.json", "manifest.json", "metrics.json", "model.json"]);
    // The registered version keeps the explanation train computed (permutation importance).
    let model =
        c.client.get_model(weir_proto::v1::GetModelRequest { name: "churn".into() }).await.unwrap().into_inner();
    let explained = model.versions[0].explanation.as_ref().expect("version 1 keeps its explanation");
    assert_eq!((explained.method.as_str(), explained.importances.len()), ("permutation", 4), "{explained:?}");
    let validate = weir_tests::step(&got, "validate");
    assert!(validate.metrics["rmse"] > 0.0, "{validate:?}");
    assert!(c.logs(&run, "validate").await.contains("best of 4"));

    // A strict threshold fails the gate with the expression and the values it saw.
    let run = c.start_run(&version, &[("rows", "400"), ("max_rmse", "0.0001")]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Failed);
    let (s, attempts, message) = summary(&got, "validate");
    assert_eq!((s, attempts), (StepState::Failed, 1), "a gate never retries");
    assert!(message.starts_with("gate `metrics.rmse < params.max_rmse` is false: metrics.rmse = "), "{message}");
    assert!(message.ends_with("params.max_rmse = 0.0001"), "{message}");
    assert_eq!(summary(&got, "deploy").0, StepState::Skipped);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_step_retries_then_succeeds() {
    let mut c = Cluster::start(1, 1).await;
    let counter = c.dir.path().join("tries");
    let yaml = format!(
        "name: flaky
steps:
  flaky:
    run: |
      n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}
      echo try $n
      [ $n -ge 3 ]
    retries: {{limit: 3, backoff: 100ms}}
",
        f = counter.display()
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Succeeded);
    assert_eq!(summary(&got, "flaky").1, 3);
    let logs = c.logs(&run, "flaky").await;
    assert!(logs.contains("try 1") && logs.contains("try 2") && logs.contains("try 3"), "{logs}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_timeout_is_killed_with_its_children() {
    let mut c = Cluster::start(1, 1).await;
    let pids = c.dir.path().join("pids");
    let yaml = format!(
        "name: slow
steps:
  slow:
    run: |
      sleep 300 &
      echo $$ $! > {p}
      wait
    timeout: 1s
",
        p = pids.display()
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Failed);
    let (s, _, message) = summary(&got, "slow");
    assert_eq!(s, StepState::Failed);
    assert!(message.contains("timed out after 1s"), "{message}");
    let text = std::fs::read_to_string(&pids).unwrap();
    for pid in text.split_whitespace().map(|p| p.parse::<i32>().unwrap()) {
        assert!(wait_gone(pid, Duration::from_secs(10)), "process {pid} of the timed-out step survived");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_step_and_cancels_the_rest() {
    let mut c = Cluster::start(1, 2).await;
    let pid_file = c.dir.path().join("pid");
    let yaml = format!(
        "name: long
steps:
  long:
    run: echo $$ > {p}; exec sleep 300
  after:
    needs: [long]
    run: 'true'
",
        p = pid_file.display()
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    c.wait_for(&run, MINUTE, |g| g.steps[0].state() == StepState::Running && pid_file.exists()).await;
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    let req = weir_proto::v1::CancelRunRequest { run_id: run.clone(), reason: "test".into() };
    c.client.cancel_run(req).await.unwrap();
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Cancelled);
    assert_eq!(summary(&got, "long").0, StepState::Cancelled);
    assert_eq!(summary(&got, "after"), (StepState::Cancelled, 0, String::new()));
    assert!(wait_gone(pid, Duration::from_secs(10)), "the cancelled step's process survived");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_skips_and_an_upstream_failure_skips_only_its_dependents() {
    let mut c = Cluster::start(1, 4).await;
    let yaml = "name: branches
params:
  extra: false
steps:
  broken:
    run: echo doomed; exit 3
  middle:
    needs: [broken]
    run: 'true'
  last:
    needs: [middle]
    run: 'true'
  independent:
    run: sleep 0.5; echo fine > $WEIR_OUTPUTS/ok.txt
    outputs: [ok.txt]
  optional:
    when: params.extra
    run: 'true'
  after_optional:
    needs: [optional, independent]
    run: cat $WEIR_INPUTS/independent/ok.txt
";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Failed);
    assert_eq!(summary(&got, "broken"), (StepState::Failed, 1, "exit code 3".into()));
    assert_eq!(summary(&got, "middle"), (StepState::Skipped, 0, "upstream failed: broken".into()));
    assert_eq!(summary(&got, "last"), (StepState::Skipped, 0, "upstream failed: broken".into()));
    assert_eq!(summary(&got, "independent").0, StepState::Succeeded);
    assert_eq!(
        summary(&got, "optional"),
        (StepState::Skipped, 0, "when `params.extra` is false: params.extra = false".into())
    );
    assert_eq!(summary(&got, "after_optional").0, StepState::Succeeded, "a when-skip satisfies its dependents");
    assert_eq!(c.logs(&run, "after_optional").await, "fine\n");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_points_out_of_its_folder_fails_the_step() {
    let mut c = Cluster::start(1, 1).await;
    let yaml = "name: escape
steps:
  sneaky:
    run: ln -s /etc/passwd $WEIR_OUTPUTS/out.txt
    outputs: [out.txt]
";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Failed);
    let (s, _, message) = summary(&got, "sneaky");
    assert_eq!(s, StepState::Failed);
    assert!(message.contains("symlink"), "{message}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_step_finishes_on_another_worker() {
    // The agent is stopped abruptly (its task aborted mid-step, like a crash of the worker's
    // engine connection); the engine notices the silence and dispatches attempt 2 elsewhere.
    let mut c = Cluster::start(0, 1).await;
    let marker = c.dir.path().join("attempts");
    let yaml = format!(
        "name: survive
steps:
  work:
    run: echo $WEIR_ATTEMPT >> {m}; sleep 2; echo done
",
        m = marker.display()
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let first = c.add_worker(1);
    c.wait_for(&run, MINUTE, |g| g.steps[0].state() == StepState::Running).await;
    c.kill_worker(first);
    c.add_worker(1);
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Succeeded, "{:#?}", got.steps);
    assert_eq!(summary(&got, "work").1, 2, "attempt 2 ran on the second worker");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().last(), Some("2"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_running_step_and_runs_list_by_page_and_filter() {
    let mut c = Cluster::start(1, 2).await;
    let yaml = "name: talky
params:
  fail: false
steps:
  talk:
    run: |
      for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done
      echo oops >&2
      [ {{ params.fail }} = false ]
";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    // Following from the start: every line arrives, then the stream ends with the run.
    let req = weir_proto::v1::StreamLogsRequest { run_id: run.clone(), step: "talk".into(), follow: true, attempt: 0 };
    let mut stream = c.client.stream_logs(req).await.unwrap().into_inner();
    let mut text = String::new();
    let mut streams = Vec::new();
    while let Some(chunk) = tokio::time::timeout(MINUTE, stream.message()).await.unwrap().unwrap() {
        assert_eq!((chunk.instance_name.as_str(), chunk.attempt), ("talk", 1));
        streams.push(chunk.stream());
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    assert_eq!(text, "line 1\nline 2\nline 3\nline 4\nline 5\noops\n");
    assert_eq!(streams.last(), Some(&weir_proto::v1::LogStream::Stderr));
    assert_eq!(state(&c.wait(&run, MINUTE).await), RunState::Succeeded);

    let failed = c.start_run(&version, &[("fail", "true")]).await;
    assert_eq!(state(&c.wait(&failed, MINUTE).await), RunState::Failed);
    let third = c.start_run(&version, &[]).await;
    c.wait(&third, MINUTE).await;

    let list = |page_size, page_token: String, states: Vec<i32>| weir_proto::v1::ListRunsRequest {
        pipeline: "talky".into(),
        states,
        page_size,
        page_token,
        trigger: String::new(),
    };
    // Newest first, across pages.
    let first = c.client.list_runs(list(2, String::new(), vec![])).await.unwrap().into_inner();
    let ids: Vec<&str> = first.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [third.as_str(), failed.as_str()]);
    assert!(!first.next_page_token.is_empty());
    let rest = c.client.list_runs(list(2, first.next_page_token, vec![])).await.unwrap().into_inner();
    let ids: Vec<&str> = rest.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [run.as_str()]);
    assert!(rest.next_page_token.is_empty());
    let only_failed =
        c.client.list_runs(list(10, String::new(), vec![RunState::Failed as i32])).await.unwrap().into_inner();
    let ids: Vec<&str> = only_failed.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [failed.as_str()]);
    assert_eq!(only_failed.runs[0].steps_done, 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_attempt_folder_never_leaks_one_step_s_files_into_the_next() {
    // One slot: the second step runs in the folder the first one used.
    let mut c = Cluster::start(1, 1).await;
    let yaml = "name: leak
steps:
  first:
    run: echo stale > $WEIR_OUTPUTS/extra.txt; echo kept > $WEIR_OUTPUTS/kept.txt; echo scratch > scratch.txt
    outputs: [kept.txt]
  second:
    needs: [first]
    run: ls -A $WEIR_OUTPUTS; ls -A .; test ! -e scratch.txt
    outputs: [extra.txt]
";
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(summary(&got, "first").0, StepState::Succeeded);
    let (s, _, message) = summary(&got, "second");
    assert_eq!(s, StepState::Failed, "extra.txt of the first step must not count for the second");
    assert!(message.contains("extra.txt"), "{message}");
    assert_eq!(
        c.logs(&run, "second").await,
        "inputs\nmetrics\noutputs\n",
        "outputs/ starts empty, the folder holds only inputs/, metrics/ ($WEIR_METRICS) and outputs/"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_param_with_a_payload_reaches_the_step_literally_and_runs_nothing() {
    // Through the real engine and worker: the script holds references, the step's
    // environment holds the values (params and matrix values alike).
    let mut c = Cluster::start(1, 2).await;
    let dir = c.dir.path().to_path_buf();
    let canary = dir.join("canary");
    let got = dir.join("got");
    let payload =
        format!("'\"; touch {p}; $(touch {p}) `touch {p}`\nEOF\ntouch {p} # a[$(touch {p})]", p = canary.display());
    let yaml = format!(
        "name: payload
params:
  msg: {{type: string}}
steps:
  param:
    run: |
      # the value: {{{{ params.msg }}}}
      printf '%s' {{{{ params.msg }}}} > {got}.param
      printf '%s' \"$(printf '%s' \"{{{{ params.msg }}}}\")\" > {got}.subst
  matrix:
    matrix: {{m: [{m}]}}
    run: printf '%s' {{{{ matrix.m }}}} > {got}.matrix
",
        got = got.display(),
        m = format_args!("\"$(touch {})\"", canary.display()),
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[("msg", &payload)]).await;
    let done = c.wait(&run, MINUTE).await;
    assert_eq!(state(&done), RunState::Succeeded, "{:#?}", done.steps);
    let read = |suffix: &str| std::fs::read_to_string(format!("{}.{suffix}", got.display())).expect("output");
    assert_eq!(read("param"), payload);
    assert_eq!(read("subst"), payload);
    assert_eq!(read("matrix"), format!("$(touch {})", canary.display()));
    assert!(!canary.exists(), "a payload ran");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_worker_needs_no_socket_and_still_passes_the_guard() {
    // `weir run`'s embedded worker calls the engine's router directly. Its engine URL here
    // points where nothing listens, so every call, the streams of a bundle, logs and artifacts
    // included, can only have gone in-process.
    let mut c = Cluster::start(0, 1).await;
    let transport = c.transport();
    assert!(transport.is_local());
    c.add_worker_with(2, |config| {
        config.engine = "http://127.0.0.1:9".into();
        config.local = Some(transport);
    });
    let folder = c.dir.path().join("bundle");
    std::fs::create_dir_all(folder.join("steps")).unwrap();
    std::fs::write(folder.join("steps/make.sh"), "echo made by $1 > \"$WEIR_OUTPUTS/made.txt\"\n").unwrap();
    let yaml = "name: inproc
steps:
  make:
    run: sh steps/make.sh bundle; echo making
    outputs: [made.txt]
  use:
    needs: [make]
    run: cat \"$WEIR_INPUTS/make/made.txt\"
";
    let version = c.submit(yaml, Some(&folder)).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    assert_eq!(state(&got), RunState::Succeeded, "{:#?}", got.steps);
    assert_eq!(c.logs(&run, "make").await, "making\n");
    assert_eq!(c.logs(&run, "use").await, "made by bundle\n");
    c.stop().await;

    // The guard sees in-process calls like any other: a server that wants a worker token
    // refuses an in-process worker without one.
    let dir = tempfile::tempdir().unwrap();
    let mut config = weir_tests::test_config(dir.path());
    config.worker_token = Some("w".repeat(32));
    config.client_token = Some("c".repeat(32));
    let server = weir_engine::server::start(config).await.unwrap();
    let mut agent = weir_worker::AgentConfig::new("http://127.0.0.1:9", dir.path().join("worker"));
    agent.local = Some(server.transport());
    let ended = tokio::time::timeout(MINUTE, weir_worker::Agent::new(agent).run(Default::default())).await;
    let Ok(Err(refused)) = ended else { panic!("the worker without a token must be refused: {ended:?}") };
    assert!(refused.is_auth(), "{refused}");
    server.shutdown().await;
}
