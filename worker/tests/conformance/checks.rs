//! The checks of the conformance suite, one `async fn` per behaviour, each generic over the
//! runtime. Scripts use only POSIX `sh` and coreutils-or-busybox tools, so a minimal container
//! image passes them too. Time bounds are generous: they catch hangs, not slowness.

use std::time::Duration;

use weir_worker::runtime::{Action, CancellationToken, Outcome, Runtime, Stream};

use super::{Fixture, LINE, run, run_plain};

/// A bound for "returned promptly" that a loaded CI machine still meets.
const PROMPT: Duration = Duration::from_secs(5);

pub async fn exit_codes<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    assert_eq!(run_plain(rt, f.script("exit 0")).await.outcome, Outcome::Exited(0));
    assert_eq!(run_plain(rt, f.script("echo failing >&2; exit 3")).await.outcome, Outcome::Exited(3));
    let argv = Action::Argv(vec!["sh".into(), "-c".into(), "exit 42".into()]);
    assert_eq!(run_plain(rt, f.spec(argv)).await.outcome, Outcome::Exited(42));
}

pub async fn environment<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    std::fs::write(f.workdir.join("bundle.txt"), "from the bundle\n").unwrap();
    let mut spec = f.script(
        r#"printf '%s\n' "$WEIR_STEP" "$MY_VAR" "${WEIR_OUTPUTS:+set}" "${WEIR_INPUTS:+set}"; cat bundle.txt; test -d "$WEIR_OUTPUTS" && echo outputs-dir"#,
    );
    spec.env = vec![("WEIR_STEP".into(), "train".into()), ("MY_VAR".into(), "a b  'c'".into())];
    let ran = run_plain(rt, spec).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), ["train", "a b  'c'", "set", "set", "from the bundle", "outputs-dir"]);
}

pub async fn worker_secrets_hidden<R: Runtime>(rt: &R) {
    static SET: std::sync::Once = std::sync::Once::new();
    // SAFETY: set once, before this test's step starts; no C code in the test binary reads the
    // environment concurrently (Rust's own readers take std's environment lock).
    SET.call_once(|| unsafe { std::env::set_var("WEIR_WORKER_TOKEN", "worker-secret") });
    let f = Fixture::new();
    let ran = run_plain(rt, f.script(r#"echo "token=${WEIR_WORKER_TOKEN-unset}"; env | grep -c WORKER_TOKEN"#)).await;
    assert_eq!(ran.stdout(), ["token=unset", "0"]);
}

pub async fn argv_not_split<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let args = ["a b", "it's \"quoted\"", "$HOME", "*", "", "semi;colon"];
    let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), r#"printf '<%s>\n' "$@""#.into(), "argv0".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let ran = run_plain(rt, f.spec(Action::Argv(argv))).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), args.map(|a| format!("<{a}>")));
}

pub async fn inputs_and_outputs<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    std::fs::create_dir(f.inputs.join("prep")).unwrap();
    std::fs::write(f.inputs.join("prep/data.csv"), "x,y\n1,2\n").unwrap();
    let script = r#"wc -l < "$WEIR_INPUTS/prep/data.csv" > "$WEIR_OUTPUTS/lines.txt"
        mkdir -p "$WEIR_OUTPUTS/model" && cp "$WEIR_INPUTS/prep/data.csv" "$WEIR_OUTPUTS/model/copy.csv""#;
    assert_eq!(run_plain(rt, f.script(script)).await.outcome, Outcome::Exited(0));
    assert_eq!(std::fs::read_to_string(f.outputs.join("lines.txt")).unwrap().trim(), "2");
    assert_eq!(std::fs::read_to_string(f.outputs.join("model/copy.csv")).unwrap(), "x,y\n1,2\n");
}

pub async fn large_outputs<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    // 20 MB to a file and about 5 MB of numbered stdout lines.
    let script = r#"head -c 20000000 /dev/zero > "$WEIR_OUTPUTS/big.bin"
        awk 'BEGIN { for (i = 1; i <= 100000; i++) printf "%d ............................................\n", i }'"#;
    let ran = run_plain(rt, f.script(script)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(std::fs::metadata(f.outputs.join("big.bin")).unwrap().len(), 20_000_000);
    let out = ran.stdout();
    assert_eq!(out.len(), 100_000);
    for (i, line) in out.iter().enumerate() {
        assert_eq!(line.split(' ').next().unwrap(), (i + 1).to_string(), "stdout line {i} out of order");
    }
}

pub async fn log_order<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let ran =
        run_plain(rt, f.script(r#"i=1; while [ $i -le 10000 ]; do echo $i; echo e$i >&2; i=$((i+1)); done"#)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    let expect: Vec<String> = (1..=10000).map(|i| i.to_string()).collect();
    assert_eq!(ran.stdout(), expect);
    let expect: Vec<String> = (1..=10000).map(|i| format!("e{i}")).collect();
    assert_eq!(ran.stream(Stream::Stderr), expect);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let at: Vec<_> = ran.lines.iter().filter(|l| l.stream == stream).map(|l| l.at).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{stream:?} timestamps go backwards");
    }
}

pub async fn partial_and_long_lines<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let long = LINE * 2 + 100;
    let script = format!("head -c {long} /dev/zero | tr '\\000' x; echo; printf 'no newline at the end'");
    let ran = run_plain(rt, f.script(&script)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    let sizes: Vec<usize> = ran.stdout().iter().map(String::len).collect();
    assert_eq!(sizes, [LINE, LINE, 100, "no newline at the end".len()]);
    assert_eq!(ran.stdout().last().unwrap(), "no newline at the end");
}

/// The step and a background child that keeps appending to a file; after a timeout neither runs.
pub async fn timeout_stops_group<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let mut spec = f.script(r#"(while :; do echo x >> "$WEIR_OUTPUTS/tick"; sleep 0.05; done) & sleep 30"#);
    spec.timeout = Some(Duration::from_millis(500));
    let ran = run_plain(rt, spec).await;
    assert_eq!(ran.outcome, Outcome::TimedOut);
    assert!(ran.took < PROMPT, "took {:?}", ran.took);
    let size = || std::fs::metadata(f.outputs.join("tick")).map(|m| m.len()).unwrap_or(0);
    let before = size();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(size(), before, "a background child still runs after the timeout");
}

/// A step that traps SIGTERM gets to clean up and exit within the grace.
pub async fn sigterm_then_grace<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let mut spec = f.script(
        r#"trap 'echo cleaning; echo cleaned > "$WEIR_OUTPUTS/cleaned"; exit 0' TERM
        touch "$WEIR_OUTPUTS/ready"; while :; do sleep 0.05; done"#,
    );
    spec.grace = Duration::from_secs(5);
    let cancel = CancellationToken::new();
    let (ran, ()) = tokio::join!(run(rt, spec, cancel.clone()), async {
        f.wait_for("ready").await;
        cancel.cancel();
    });
    assert_eq!(ran.outcome, Outcome::Cancelled);
    assert_eq!(ran.stdout(), ["cleaning"]);
    assert!(f.outputs.join("cleaned").exists());
    assert!(ran.took < PROMPT, "took {:?}: the step was not killed as soon as it exited", ran.took);
}

/// A step that ignores SIGTERM is killed once the grace has passed.
pub async fn sigterm_ignored_then_kill<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let mut spec = f.script(r#"trap '' TERM; touch "$WEIR_OUTPUTS/ready"; while :; do sleep 0.05; done"#);
    spec.grace = Duration::from_millis(700);
    spec.timeout = Some(Duration::from_millis(300));
    let ran = run_plain(rt, spec).await;
    assert_eq!(ran.outcome, Outcome::TimedOut);
    assert!(ran.took >= Duration::from_millis(1000), "killed before the grace passed: {:?}", ran.took);
    assert!(ran.took < PROMPT, "took {:?}", ran.took);
}

pub async fn cancel_mid_run<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let cancel = CancellationToken::new();
    let spec = f.script(r#"echo started; touch "$WEIR_OUTPUTS/ready"; sleep 30; echo never"#);
    let (ran, ()) = tokio::join!(run(rt, spec, cancel.clone()), async {
        f.wait_for("ready").await;
        cancel.cancel();
    });
    assert_eq!(ran.outcome, Outcome::Cancelled);
    assert_eq!(ran.stdout(), ["started"]);
    assert!(ran.took < PROMPT, "took {:?}", ran.took);
}

/// `sleep 100 &` keeps the step's stdout open; `run` still returns when the step exits.
pub async fn background_child_holding_stdout<R: Runtime>(rt: &R) {
    let f = Fixture::new();
    let ran = run_plain(rt, f.script("sleep 100 & echo done")).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), ["done"]);
    assert!(ran.took < PROMPT, "took {:?}", ran.took);
}
