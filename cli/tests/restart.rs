//! The engine dies and comes back: `weir server` as a child process, `kill -9` at several points
//! of a run (right after the run was acknowledged, between steps, while a step runs), restarted
//! on the same data folder and port each time. A worker agent in this test process keeps
//! running its steps meanwhile and reconnects. Every step appends to a counter file: at the
//! end each step must appear exactly once, the run must have succeeded, and nothing
//! acknowledged (the submission, the run) may be lost.

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_worker::{Agent, AgentConfig};

mod common;
use common::{client, free_port};

/// A 10 s lease: the worker fences itself after about 5.7 s without an answer and an orphan's
/// deadline is 13.5 s after it was last heard of, both well past the few seconds this test's
/// string of kill -9s and restarts takes on a loaded machine (with 3 s, a step could lose its
/// attempt to the storm: run once, but as attempt 2).
fn server(data: &Path, port: u16) -> Child {
    common::server(data, port, &["--lease-timeout", "10s"])
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn counted(counter: &Path) -> Vec<String> {
    std::fs::read_to_string(counter).unwrap_or_default().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_engine_at_several_points_never_reruns_a_succeeded_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let counter = dir.path().join("counter");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let steps = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let mut yaml = String::from("name: chain\nsteps:\n");
    for (i, s) in steps.iter().enumerate() {
        yaml += &format!("  {s}:\n    run: echo {s} >> {}; sleep 0.4\n", counter.display());
        if i > 0 {
            yaml += &format!("    needs: [{}]\n", steps[i - 1]);
        }
    }

    let mut engine = server(&data, port);
    let stop = CancellationToken::new();
    let mut config = AgentConfig::new(url.clone(), dir.path().join("worker"));
    config.capacity = 2;
    let agent = tokio::spawn(Agent::new(config).run(stop.clone()));

    let mut c = client(&url).await;
    let header = v1::SubmitPipelineHeader { yaml, file_name: "chain.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    c.submit_pipeline(tokio_stream::iter(msgs)).await.unwrap();
    // Killed right after acknowledging the submission: the pipeline must still be there.
    kill9(&mut engine);
    engine = server(&data, port);
    let mut c = client(&url).await;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("chain".into())),
        params: HashMap::new(),
        no_cache: false,
    };
    let run = c.start_run(req).await.expect("the submission survived a kill -9").into_inner().run.unwrap().run_id;
    // Killed right after acknowledging the run, then at several points while steps run and
    // between them: the progress through the chain decides when.
    kill9(&mut engine);
    engine = server(&data, port);
    for wanted in [1, 2, 4] {
        let start = Instant::now();
        while counted(&counter).len() < wanted {
            assert!(start.elapsed() < Duration::from_secs(60), "stuck at {:?}", counted(&counter));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 0, 150 and 300 ms into a 400 ms step: during it, near its end, and around the
        // hand-over to the next one.
        tokio::time::sleep(Duration::from_millis(150 * (wanted as u64 - 1) / 2)).await;
        kill9(&mut engine);
        engine = server(&data, port);
    }

    let mut c = client(&url).await;
    let start = Instant::now();
    let got = loop {
        let got =
            c.get_run(v1::GetRunRequest { run_id: run.clone(), ..Default::default() }).await.unwrap().into_inner();
        if got.run.as_ref().unwrap().state() == v1::RunState::Succeeded {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "run did not finish: {:#?}", got);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counted(&counter), steps, "every step exactly once, in order");
    for s in &got.steps {
        assert_eq!((s.state(), s.attempt), (v1::StepState::Succeeded, 1), "{s:?}");
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    kill9(&mut engine);
}
