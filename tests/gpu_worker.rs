//! GPUs through the real `weir-worker` binary, on a host without any: a fake `nvidia-smi` on
//! the worker's `PATH` prints the real output of an H200 host (`tests/fixtures/`), so detection,
//! Register, the engine's placement, the worker's GPU pool and `CUDA_VISIBLE_DEVICES` all run
//! for real. Faking the hardware is the only fake. Two `gpus: 1` steps on the one-GPU worker
//! must never overlap; `--gpus none` on the same host offers none, and the step says why it
//! waits.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weir_engine::server::{self, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_tests::procs::{self, Kill};

const H200: &str = include_str!("../worker/tests/fixtures/nvidia-smi-h200.txt");

/// A folder holding an `nvidia-smi` that prints the fixture's answer to the worker's query.
fn fake_nvidia_smi(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // The first section of the fixture: one CSV line per GPU (extra columns included).
    let csv: String = H200.lines().filter(|l| !l.starts_with('#')).take(1).collect();
    let script = format!("#!/bin/sh\ncase \"$*\" in *--query-gpu=*) echo '{csv}' ;; *) exit 9 ;; esac\n");
    let path = bin.join("nvidia-smi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Killed and reaped when dropped, so a failing test leaves no worker behind.
fn worker(url: &str, dir: &Path, name: &str, extra: &[&str]) -> Kill {
    let path = format!("{}:{}", fake_nvidia_smi(dir).display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(weir_tests::binaries().1);
    cmd.args(["--engine", url, "--capacity", "4", "--name", name, "--grace", "1"])
        .args(extra)
        .arg("--work-dir")
        .arg(dir.join(name))
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    procs::spawn(cmd)
}

fn stop(mut child: Kill) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

async fn start(client: &mut WeirClientClient<Channel>, yaml: String) -> String {
    let header = v1::SubmitPipelineHeader { yaml, file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    let version = client.submit_pipeline(tonic::codegen::tokio_stream::iter(msgs)).await.unwrap().into_inner().version;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version)),
        params: HashMap::new(),
        no_cache: false,
    };
    client.start_run(req).await.unwrap().into_inner().run.unwrap().run_id
}

async fn until(
    client: &mut WeirClientClient<Channel>,
    run: &str,
    what: &str,
    pred: impl Fn(&v1::GetRunResponse) -> bool,
) -> v1::GetRunResponse {
    let start = Instant::now();
    loop {
        let got =
            client.get_run(v1::GetRunRequest { run_id: run.into(), ..Default::default() }).await.unwrap().into_inner();
        if pred(&got) {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never {what}: {:#?}", got.steps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detected_gpu_goes_to_one_step_at_a_time_and_none_is_offered_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("engine"), "127.0.0.1:0".parse().unwrap());
    config.terms.lease_timeout = Duration::from_millis(1500);
    config.terms.heartbeat_interval = Duration::from_millis(250);
    config.tick = Duration::from_millis(20);
    let server = server::start(config).await.unwrap();
    let mut client = WeirClientClient::connect(server.url()).await.unwrap();

    // `--gpus none` on a host whose nvidia-smi lists one: the step waits, and says why.
    let log = dir.path().join("gpu.log");
    let step = format!(
        "{{run: 'echo start $CUDA_VISIBLE_DEVICES >> {l}; sleep 0.4; echo end $CUDA_VISIBLE_DEVICES >> {l}', resources: {{gpus: 1}}}}",
        l = log.display()
    );
    let run = start(&mut client, format!("name: gpus\nsteps:\n  a: {step}\n  b: {step}\n")).await;
    let blind = worker(&server.url(), dir.path(), "blind", &["--gpus", "none"]);
    until(&mut client, &run, "waiting for a GPU worker", |got| {
        got.steps.iter().all(|s| s.message == "waiting: no worker offers gpus=1")
    })
    .await;

    // Detected: the fake H200. Both steps run on it, one after the other, each seeing GPU 0.
    let gpu = worker(&server.url(), dir.path(), "h200", &[]);
    let got =
        until(&mut client, &run, "succeeded", |got| got.run.as_ref().unwrap().state() == v1::RunState::Succeeded).await;
    for s in &got.steps {
        assert!(s.worker_id.starts_with("h200-"), "{s:?}");
    }
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines, "start 0\nend 0\nstart 0\nend 0\n", "the steps overlapped or saw the wrong GPU");
    stop(gpu);
    stop(blind);
    server.shutdown().await;
}
