//! [`ProcessRuntime`] against the shared conformance suite, plus what only a local process
//! runtime can show: host pids of the step's group, signal deaths, spawn errors, a dropped `run`,
//! a grandchild that escaped the group, the reaper that guards the steps of a runtime, and the step
//! with all its processes dying with its worker (a re-run of this test binary acts as that worker).

mod conformance;

use std::path::Path;
use std::time::{Duration, Instant};

use conformance::{Fixture, run_plain};
use tokio::sync::mpsc;
use weir_worker::runtime::{Action, CancellationToken, Error, Outcome, ProcessRuntime, Runtime};

conformance_tests!(ProcessRuntime::new());

/// Whether `pid` is a live process (a zombie waiting for a reaper counts as dead).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

/// Polls until `pid` is dead, for at most `bound`.
async fn dies_within(pid: i32, bound: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Polls until process group `pgid` has no live member, for at most 2 s (a SIGKILLed process may
/// still show as running for a moment).
async fn group_empties(pgid: i32) {
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "left in group {pgid}: {:?}", group_members(pgid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// The live (not zombie) members of process group `pgid`, as pid and command name.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap());
        if pgrp == pgid && !matches!(state, "Z" | "X") {
            members.push((pid, stat[open + 1..close].to_string()));
        }
    }
    members
}

#[tokio::test]
async fn timeout_kills_grandchild_by_pid() {
    let f = Fixture::new();
    let mut spec = f.script(r#"sleep 30 & echo $! > "$WEIR_OUTPUTS/pid"; sleep 30"#);
    spec.timeout = Some(Duration::from_millis(300));
    assert_eq!(run_plain(&ProcessRuntime::new(), spec).await.outcome, Outcome::TimedOut);
    assert!(dies_within(read_pid(&f.outputs.join("pid")), Duration::from_secs(2)).await);
}

#[tokio::test]
async fn own_signal_is_reported() {
    let f = Fixture::new();
    assert_eq!(run_plain(&ProcessRuntime::new(), f.script("kill -9 $$")).await.outcome, Outcome::Signalled(9));
}

#[tokio::test]
async fn a_script_runs_in_bin_sh_whatever_its_path_says() {
    // As system(3) and make: `/bin/sh -c`, so a step's own PATH (here one without any shell)
    // decides what its commands find, not which shell reads them; `$0` is still `sh`.
    let f = Fixture::new();
    let mut spec = f.script("echo $0; echo \"$PATH\"");
    spec.env.push(("PATH".into(), "/nonexistent".into()));
    let ran = run_plain(&ProcessRuntime::new(), spec).await;
    assert_eq!(ran.outcome, Outcome::Exited(0), "{:?}", ran.lines);
    assert_eq!(ran.stdout(), ["sh", "/nonexistent"]);
}

#[tokio::test]
async fn spawn_errors() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    let run = |spec| {
        let (tx, _rx) = mpsc::channel(8);
        rt.run(spec, tx, CancellationToken::new())
    };
    assert!(matches!(run(f.spec(Action::Argv(vec![]))).await, Err(Error::EmptyArgv)));
    let missing = f.spec(Action::Argv(vec!["/nonexistent/weir-step".into()]));
    assert!(matches!(run(missing).await, Err(Error::Spawn { .. })));
    let mut no_dir = f.script("true");
    no_dir.workdir = f.workdir.join("missing");
    assert!(matches!(run(no_dir).await, Err(Error::Spawn { .. })));
}

#[tokio::test]
async fn dropping_run_kills_the_group() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    let (tx, _rx) = mpsc::channel(8);
    let step = rt.run(f.script(r#"echo $$ > "$WEIR_OUTPUTS/pid"; sleep 30"#), tx, CancellationToken::new());
    let wait = f.wait_for("pid");
    tokio::select! {
        _ = step => panic!("the step ended early"),
        () = wait => {}
    }
    assert!(dies_within(read_pid(&f.outputs.join("pid")), Duration::from_secs(2)).await);
}

/// A grandchild in its own session holds stdout open; `run` gives up on the pipe after a bound.
#[tokio::test]
async fn escaped_grandchild_does_not_hang_run() {
    let f = Fixture::new();
    let script = r#"setsid sh -c 'echo $$ > "$WEIR_OUTPUTS/p"; mv "$WEIR_OUTPUTS/p" "$WEIR_OUTPUTS/pid"; exec sleep 20' &
        while [ ! -e "$WEIR_OUTPUTS/pid" ]; do sleep 0.01; done; echo done"#;
    let ran = run_plain(&ProcessRuntime::new(), f.script(script)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), ["done"]);
    assert!(ran.took < Duration::from_secs(5), "took {:?}", ran.took);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(read_pid(&f.outputs.join("pid")), libc::SIGKILL) };
}

/// The live descriptors of `pid`, as `/proc/<pid>/fd` links.
fn fds(pid: u32) -> Vec<(String, std::path::PathBuf)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    dir.flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read_link(e.path()).ok()?)))
        .collect()
}

/// The `/proc/<pid>/stat` fields after the command name: state, ppid, pgrp, session, ...
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().map(str::to_string).collect()
}

/// One reaper per runtime, started with its first step and shared by every step (and clone): a
/// child of the worker in no step's group or session, holding nothing but its pipes (so not the
/// steps' stdout and stderr) and no directory; it outlives the steps and goes with the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reaper_per_runtime_goes_with_it() {
    let [a, b] = [Fixture::new(), Fixture::new()];
    let script = r#"echo $$ > "$WEIR_OUTPUTS/p"; mv "$WEIR_OUTPUTS/p" "$WEIR_OUTPUTS/pid"
        while [ ! -e "$WEIR_OUTPUTS/go" ]; do sleep 0.02; done; echo finished"#;
    let rt = ProcessRuntime::new();
    assert_eq!(rt.reaper_pid(), None, "a reaper before any step");
    let clone = rt.clone();
    let (ran_a, ran_b, reaper) =
        tokio::join!(run_plain(&rt, a.script(script)), run_plain(&clone, b.script(script)), async {
            a.wait_for("pid").await;
            b.wait_for("pid").await;
            let reaper = rt.reaper_pid().expect("a running step has a reaper");
            assert_eq!(clone.reaper_pid(), Some(reaper), "clones share one reaper");
            let reapers: Vec<i32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|&pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.ends_with(b"weir-reaper\0"))
                })
                .filter(|&pid| stat_fields(pid)[1] == std::process::id().to_string())
                .collect();
            assert!(reapers.contains(&(reaper as i32)), "reaper {reaper} is no child of the worker: {reapers:?}");
            for step in [&a, &b] {
                let sid = read_pid(&step.outputs.join("pid"));
                let fields = stat_fields(reaper as i32);
                assert_ne!(fields[2], sid.to_string(), "the reaper is in the step's group");
                assert_ne!(fields[3], sid.to_string(), "the reaper is in the step's session");
            }
            // Descriptors 1 and 2 on /dev/null, and beyond its pipe only what the worker itself
            // holds without close-on-exec (a test run by cargo inherits its jobserver pipe), so
            // neither the steps' stdout and stderr nor any pipe of the runtime.
            let ours = fds(std::process::id());
            let steps: Vec<_> = [&a, &b].iter().flat_map(|f| fds(read_pid(&f.outputs.join("pid")) as u32)).collect();
            for (fd, target) in fds(reaper) {
                assert!(
                    !steps.iter().any(|(n, t)| (n == "1" || n == "2") && *t == target),
                    "the reaper holds a step's {target:?}"
                );
                match fd.as_str() {
                    // The guard and the list of sessions.
                    "0" | "1" => {
                        assert!(target.to_string_lossy().starts_with("pipe:"), "reaper descriptor {fd}: {target:?}")
                    }
                    "2" => assert_eq!(target, Path::new("/dev/null"), "reaper stderr"),
                    _ => assert!(ours.contains(&(fd.clone(), target.clone())), "the reaper holds {fd}: {target:?}"),
                }
            }
            assert_eq!(std::fs::read_link(format!("/proc/{reaper}/cwd")).unwrap(), Path::new("/"));
            std::fs::write(a.outputs.join("go"), "").unwrap();
            std::fs::write(b.outputs.join("go"), "").unwrap();
            reaper
        });
    for ran in [ran_a, ran_b] {
        assert_eq!(ran.outcome, Outcome::Exited(0));
        assert_eq!(ran.stdout(), ["finished"]);
    }
    for f in [&a, &b] {
        group_empties(read_pid(&f.outputs.join("pid"))).await;
    }
    // Between steps the reaper waits; the next step uses it again.
    assert!(alive(reaper as i32), "the reaper ended with the steps");
    assert_eq!(run_plain(&rt, a.script("true")).await.outcome, Outcome::Exited(0));
    assert_eq!(rt.reaper_pid(), Some(reaper));
    drop((rt, clone));
    assert!(dies_within(reaper as i32, Duration::from_secs(2)).await, "reaper {reaper} outlived its runtime");
}

/// The leader of a step is kept unreaped until the reaper has been told the session ended (the
/// `del` waits a moment for the next step's `add`), but not for longer: with no step after it,
/// it is gone, zombie and all, shortly after its step. Consecutive steps all end reaped too.
#[tokio::test]
async fn a_finished_steps_leader_is_reaped_without_a_next_step() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    let mut leaders = Vec::new();
    for _ in 0..3 {
        let ran = run_plain(&rt, f.script(r#"echo $$ > "$WEIR_OUTPUTS/pid""#)).await;
        assert_eq!(ran.outcome, Outcome::Exited(0));
        leaders.push(read_pid(&f.outputs.join("pid")));
    }
    for pid in leaders {
        let start = Instant::now();
        // Not even a zombie: reaped.
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(start.elapsed() < Duration::from_secs(5), "the leader {pid} was never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(alive(rt.reaper_pid().expect("a reaper") as i32));
}

/// The voluntary context switches of `pid` so far: how often it blocked and was woken.
fn wake_ups(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Telling the reaper of a step's start and end does not wake it: it reads the list of sessions
/// only every few hundred steps (and when its worker is gone). It was woken at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_do_not_wake_the_reaper() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    assert_eq!(run_plain(&rt, f.script("true")).await.outcome, Outcome::Exited(0));
    let reaper = rt.reaper_pid().expect("a reaper");
    // Let it settle into its wait on the guard.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = wake_ups(reaper);
    for _ in 0..60 {
        assert_eq!(run_plain(&rt, f.script("true")).await.outcome, Outcome::Exited(0));
    }
    let woken = wake_ups(reaper) - before;
    assert!(woken < 10, "the reaper was woken {woken} times for 60 steps");
    assert_eq!(rt.reaper_pid(), Some(reaper));
}

/// A reaper killed while a step runs is replaced at the next write, and the new one guards the
/// steps still running (the mini-worker below checks the kill itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_reaper_is_replaced() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    assert_eq!(run_plain(&rt, f.script("true")).await.outcome, Outcome::Exited(0));
    let first = rt.reaper_pid().unwrap();
    // SAFETY: kill has no memory-safety preconditions; `first` is our unreaped child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(dies_within(first as i32, Duration::from_secs(2)).await);
    assert_eq!(run_plain(&rt, f.script("echo ok")).await.stdout(), ["ok"]);
    let second = rt.reaper_pid().unwrap();
    assert_ne!(second, first);
    assert!(alive(second as i32));
}

/// A script line that starts `sleep 300` in a group of its own (GNU `timeout` does `setpgid`) and
/// waits until its pid is in `$WEIR_OUTPUTS/escaped`.
const ESCAPE: &str = r#"timeout 300 sh -c 'echo $$ > "$WEIR_OUTPUTS/e"
        mv "$WEIR_OUTPUTS/e" "$WEIR_OUTPUTS/escaped"; exec sleep 300' &
    while [ ! -e "$WEIR_OUTPUTS/escaped" ]; do sleep 0.01; done"#;

/// The process group of `pid`.
fn pgrp(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// A child that left the step's group (but not its session) is stopped with the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_in_another_group_goes_with_the_step() {
    let f = Fixture::new();
    let ran = run_plain(&ProcessRuntime::new(), f.script(&format!("{ESCAPE}\necho $$"))).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    let step: i32 = ran.stdout()[0].parse().unwrap();
    let escaped = read_pid(&f.outputs.join("escaped"));
    assert!(dies_within(escaped, Duration::from_secs(2)).await, "{escaped} outlived its step {step}");
}

const HELPER_ENV: &str = "WEIR_WORKER_TEST_PDEATH_DIR";
const HELPER_CLOSE_STDIN: &str = "WEIR_WORKER_TEST_CLOSE_STDIN";
const HELPER_STEPS_BEFORE: &str = "WEIR_WORKER_TEST_STEPS_BEFORE";

/// Not a test on its own: when re-run by [`worker_dies`] with [`HELPER_ENV`] set, this process is
/// a mini-worker that starts a long step and waits to be killed. The step's background `sleep`s
/// never write anything, so no SIGPIPE would ever end them: only the reaper can. One of them runs
/// under `timeout`, which moves it to a group of its own. With [`HELPER_CLOSE_STDIN`] set, the
/// mini-worker runs with descriptor 0 closed, so the runtime's next descriptors (a step's pipes,
/// the reaper's) start at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process that worker_dies starts; not a test on its own"]
async fn pdeath_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else { return };
    let dir = Path::new(&dir);
    let d = dir.to_path_buf();
    let mut spec = weir_worker::runtime::StepSpec::new(
        Action::Script(format!(
            "sleep 300 & child=$!\n{ESCAPE}\n{}",
            r#"echo "$$ $child $(cat "$WEIR_OUTPUTS/escaped")" > "$WEIR_OUTPUTS/pids.tmp"
                mv "$WEIR_OUTPUTS/pids.tmp" "$WEIR_OUTPUTS/pids"; wait"#
        )),
        d.clone(),
        d.clone(),
        d,
    );
    spec.grace = Duration::from_secs(1);
    let (tx, _rx) = mpsc::channel(8);
    if std::env::var_os(HELPER_CLOSE_STDIN).is_some() {
        // SAFETY: nothing in this process reads stdin.
        unsafe { libc::close(0) };
    }
    let rt = ProcessRuntime::new();
    let before: usize = std::env::var(HELPER_STEPS_BEFORE).map_or(0, |n| n.parse().unwrap());
    for _ in 0..before {
        let short = weir_worker::runtime::StepSpec::new(
            Action::Script("true".into()),
            dir.to_path_buf(),
            dir.to_path_buf(),
            dir.to_path_buf(),
        );
        let (tx, mut rx) = mpsc::channel(8);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        assert_eq!(rt.run(short, tx, CancellationToken::new()).await.unwrap(), Outcome::Exited(0));
        drain.await.unwrap();
    }
    let step = rt.run(spec, tx, CancellationToken::new());
    let reaper = async {
        let start = Instant::now();
        while !dir.join("pids").exists() {
            assert!(start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = rt.reaper_pid().expect("a running step has a reaper");
        std::fs::write(dir.join("reaper.tmp"), pid.to_string()).unwrap();
        std::fs::rename(dir.join("reaper.tmp"), dir.join("reaper")).unwrap();
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = step => {}
        () = reaper => {}
    }
}

/// Starts a mini-worker, waits until its step runs, SIGKILLs the worker, and checks that the step,
/// its background grandchild, its child in another group and the runtime's reaper all die.
async fn worker_dies(close_stdin: bool, steps_before: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap());
    helper
        .args(["pdeath_helper", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null());
    if close_stdin {
        helper.env(HELPER_CLOSE_STDIN, "1");
    }
    helper.env(HELPER_STEPS_BEFORE, steps_before.to_string());
    let mut worker = helper.spawn().unwrap();
    let pid_file = dir.path().join("pids");
    let reaper_file = dir.path().join("reaper");
    let start = Instant::now();
    while !reaper_file.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the mini-worker never started its step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids = std::fs::read_to_string(&pid_file).unwrap();
    let [step, grandchild, escaped] = [0, 1, 2].map(|i| pids.split_whitespace().nth(i).unwrap().parse().unwrap());
    let reaper = read_pid(&reaper_file);
    assert_ne!(pgrp(escaped), step, "the `timeout` child did not leave the step's group");
    // The step keeps running as long as its worker does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(step) && alive(grandchild) && alive(escaped), "the step died while its worker lives");
    assert!(alive(reaper), "the reaper died while its worker lives");
    worker.kill().unwrap(); // SIGKILL: the worker gets no chance to clean up
    worker.wait().unwrap();
    assert!(dies_within(step, Duration::from_secs(10)).await, "step {step} outlived its worker");
    assert!(dies_within(grandchild, Duration::from_secs(10)).await, "grandchild {grandchild} outlived its worker");
    assert!(dies_within(escaped, Duration::from_secs(10)).await, "{escaped}, in another group, outlived its worker");
    group_empties(step).await;
    assert!(dies_within(reaper, Duration::from_secs(10)).await, "reaper {reaper} outlived its worker");
}

#[tokio::test]
async fn step_and_grandchild_die_with_their_worker() {
    worker_dies(false, 0).await;
}

/// The same after 1,000 steps: the reaper has read its list at several `sync` marks (about 20
/// bytes a step, one mark per 8 KiB) and still holds the running step's session.
#[tokio::test]
async fn a_step_after_many_dies_with_its_worker() {
    worker_dies(false, 1000).await;
}

#[tokio::test]
async fn worker_with_closed_stdin_guards_its_step() {
    worker_dies(true, 0).await;
}

/// `warm` starts the reaper before any step (a worker calls it while it registers), and the
/// first step then uses that reaper rather than starting its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmed_runtime_has_its_reaper_before_the_first_step() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    rt.warm();
    let deadline = Instant::now() + Duration::from_secs(5);
    let reaper = loop {
        if let Some(pid) = rt.reaper_pid() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no reaper 5 s after warm");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(alive(reaper as i32));
    assert_eq!(run_plain(&rt, f.script("true")).await.outcome, Outcome::Exited(0));
    assert_eq!(rt.reaper_pid(), Some(reaper), "the step started a second reaper");
    drop(rt);
    assert!(dies_within(reaper as i32, Duration::from_secs(2)).await, "reaper {reaper} outlived its runtime");
}
