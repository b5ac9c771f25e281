//! How much a step costs to spawn through [`ProcessRuntime`], next to a plain
//! `tokio::process::Command` running `sh -c true`, in a process that holds N MiB of touched memory
//! (a stand-in for the worker's own footprint, which a `fork` would have to copy page tables for).
//!
//! `cargo run --release -p weir-worker --example spawn_speed -- [MiB of ballast, default 0]`

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weir_worker::runtime::{Action, CancellationToken, Outcome, ProcessRuntime, Runtime, StepSpec};

const RUNS: u32 = 200;
const WARMUP: u32 = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: usize = std::env::args().nth(1).map_or(0, |a| a.parse().expect("MiB of ballast, a number"));
    // Touch every page so that it is really mapped (a fork copies the page tables of all of it).
    let ballast: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8 | 1).collect();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut spec = StepSpec::new(Action::Script("true".into()), d.clone(), d.clone(), d);
    spec.grace = Duration::from_secs(1);
    let rt = ProcessRuntime::new();
    let runtime = || async {
        let (tx, _rx) = mpsc::channel(8);
        let outcome = rt.run(spec.clone(), tx, CancellationToken::new()).await.unwrap();
        assert_eq!(outcome, Outcome::Exited(0));
    };
    let plain = || async {
        let status = tokio::process::Command::new("sh").arg("-c").arg("true").status().await.unwrap();
        assert!(status.success());
    };

    for _ in 0..WARMUP {
        runtime().await;
        plain().await;
    }
    let start = Instant::now();
    for _ in 0..RUNS {
        runtime().await;
    }
    let through_runtime = start.elapsed() / RUNS;
    let start = Instant::now();
    for _ in 0..RUNS {
        plain().await;
    }
    let through_command = start.elapsed() / RUNS;

    println!("ballast {mib} MiB (checksum {})", ballast.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>());
    println!("ProcessRuntime `true`:         {:>8.3} ms per run", through_runtime.as_secs_f64() * 1e3);
    println!("tokio Command `sh -c true`:    {:>8.3} ms per run", through_command.as_secs_f64() * 1e3);
    println!("ratio runtime / plain:         {:>8.2}", through_runtime.as_secs_f64() / through_command.as_secs_f64());
}
