//! The conformance suite every step runtime must pass (STYLE.md habit 9). Each check is a generic
//! `async fn` over [`Runtime`]; `conformance_tests!(expr)` turns them into one `#[tokio::test]`
//! each for the runtime `expr` builds, so they run in parallel and fail by name. Checks only use
//! what every runtime shares: `$WEIR_INPUTS`, `$WEIR_OUTPUTS`, the working directory by relative
//! path, the logs and the outcome; never host pids or host paths inside the step.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;
use weir_worker::runtime::{Action, CancellationToken, LogLine, MAX_LINE, Outcome, Runtime, StepSpec, Stream};

pub mod checks;

/// Instantiates every check of the suite as a test, for the runtime built by `$make`. With
/// `async`, `$make` is a future of an `Option` of the runtime: `None` skips the check (a runtime
/// whose engine is not there, outside CI; the future says so loudly).
#[macro_export]
macro_rules! conformance_tests {
    (async $make:expr) => {
        $crate::conformance_tests!(@all [async] $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@all [] $make);
    };
    (@all [$($async:ident)?] $make:expr) => {
        $crate::conformance_tests!(@each [$($async)?] $make;
            exit_codes, environment, worker_secrets_hidden, argv_not_split, inputs_and_outputs, large_outputs,
            log_order, partial_and_long_lines, timeout_stops_group, sigterm_then_grace, sigterm_ignored_then_kill,
            cancel_mid_run, background_child_holding_stdout);
    };
    (@each [] $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                conformance::checks::$name(&$make).await;
            }
        )*
    };
    (@each [async] $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(runtime) = $make.await else { return };
                conformance::checks::$name(&runtime).await;
            }
        )*
    };
}

/// A step's folders in a fresh temporary directory: `src/` (the bundle), `inputs/`, `outputs/`.
pub struct Fixture {
    _dir: TempDir,
    pub workdir: PathBuf,
    pub inputs: PathBuf,
    pub outputs: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [workdir, inputs, outputs] = ["src", "inputs", "outputs"].map(|d| dir.path().join(d));
        for d in [&workdir, &inputs, &outputs] {
            std::fs::create_dir(d).unwrap();
        }
        Fixture { _dir: dir, workdir, inputs, outputs }
    }

    pub fn spec(&self, action: Action) -> StepSpec {
        let mut spec = StepSpec::new(action, self.workdir.clone(), self.inputs.clone(), self.outputs.clone());
        spec.grace = Duration::from_secs(2);
        spec
    }

    /// A `sh -c` step.
    pub fn script(&self, script: &str) -> StepSpec {
        self.spec(Action::Script(script.to_string()))
    }

    /// Waits (at most 10 s) until the step has written `$WEIR_OUTPUTS/<name>`.
    pub async fn wait_for(&self, name: &str) {
        let path = self.outputs.join(name);
        let start = Instant::now();
        while !path.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "the step never wrote {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a step did, as seen through the runtime.
pub struct Ran {
    pub outcome: Outcome,
    pub lines: Vec<LogLine>,
    pub took: Duration,
}

impl Ran {
    pub fn stream(&self, stream: Stream) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stream(Stream::Stdout)
    }
}

/// Runs `spec` to its end, collecting every log line.
pub async fn run<R: Runtime + ?Sized>(rt: &R, spec: StepSpec, cancel: CancellationToken) -> Ran {
    let (tx, mut rx) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        lines
    });
    let start = Instant::now();
    let outcome = rt.run(spec, tx, cancel).await.expect("the runtime runs the step");
    let took = start.elapsed();
    let lines = collect.await.unwrap();
    Ran { outcome, lines, took }
}

/// Runs `spec` with no cancel.
pub async fn run_plain<R: Runtime + ?Sized>(rt: &R, spec: StepSpec) -> Ran {
    run(rt, spec, CancellationToken::new()).await
}

/// The longest line the runtimes send in one piece, re-exported for the checks.
pub const LINE: usize = MAX_LINE;
