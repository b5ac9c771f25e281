//! A `weir run` killed outright (kill -9) while a step runs: the run it leaves behind is named
//! by the next `weir runs --local` and `weir run`, left as it was by them (nothing runs it
//! silently), refused by `weir retry --local` with the command that helps, and finished by
//! `weir resume RUN --local` without running its succeeded step again. Every step appends
//! `RUN STEP` to a file, which shows what ran. Also: the hints a failed `weir run` prints work
//! when pasted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env("NO_COLOR", "1").env_remove("WEIR_SERVER").env_remove("WEIR_DATA_DIR");
    c
}

fn run(args: &[&str]) -> Output {
    weir().args(args).output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The steps `run_id` ran, in order, from the counter file.
fn ran(counter: &Path, run_id: &str) -> Vec<String> {
    std::fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(run_id).map(|s| s.trim().to_string()))
        .collect()
}

/// Waits (60 s at most) until `counter` has a line ending with ` suffix`; returns its run id.
fn wait_for(counter: &Path, suffix: &str) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(counter).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.ends_with(&format!(" {suffix}"))) {
            return line.split(' ').next().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no `{suffix}` in {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A data folder where a `weir run` of `slow` (a, then b, which waits for the file `go`, then
/// c) was killed with SIGKILL while b ran.
struct Killed {
    _dir: tempfile::TempDir,
    counter: PathBuf,
    go: PathBuf,
    data: String,
    /// The run it left unfinished.
    run: String,
    /// A one-step pipeline, `other`.
    other: String,
}

fn killed_mid_run() -> Killed {
    let dir = tempfile::tempdir().unwrap();
    let (counter, go) = (dir.path().join("counter"), dir.path().join("go"));
    let data = dir.path().join("data").display().to_string();
    // b waits for the test's go-ahead, so the kill lands while it runs, whatever the load. It
    // announces itself a second after it starts: a worker killed between spawning a step and
    // registering it with its reaper leaves that step running (a known window, see the process
    // runtime's docs), which a loaded machine can stretch to the moment the test kills.
    let yaml = format!(
        "name: slow\nsteps:\n  a:\n    run: echo \"$WEIR_RUN_ID a\" >> {c}\n  b:\n    needs: [a]\n    run: \
         sleep 1; echo \"$WEIR_RUN_ID b-start\" >> {c}; while [ ! -f {g} ]; do sleep 0.05; done; echo \"$WEIR_RUN_ID b\" >> {c}\n  \
         c:\n    needs: [b]\n    run: echo \"$WEIR_RUN_ID c\" >> {c}\n",
        c = counter.display(),
        g = go.display()
    );
    let file = dir.path().join("slow.yaml");
    std::fs::write(&file, yaml).unwrap();
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "name: other\nsteps:\n  x:\n    run: 'true'\n").unwrap();

    let mut child = weir()
        .args(["run", &file.display().to_string(), "--data-dir", &data])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for(&counter, "b-start");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Killed { other: other.display().to_string(), _dir: dir, counter, go, data, run }
}

#[test]
fn a_run_left_by_a_killed_weir_run_is_named_left_alone_and_resumed_on_request() {
    let k = killed_mid_run();
    let (first, counter, data_arg) = (k.run.clone(), &k.counter, k.data.clone());

    // The next command on the folder names the run and how far it got.
    let listed = run(&["runs", "--local", &data_arg]);
    let err = text(&listed.stderr);
    assert_eq!(listed.status.code(), Some(0), "{err}");
    assert!(err.contains("1 run in") && err.contains("was left unfinished by a `weir run` that was killed"), "{err}");
    assert!(err.contains(&format!("  {first}  slow  1 of 3 steps done")), "{err}");
    let resume = format!("`weir resume {first} --local {data_arg}`");
    assert!(err.contains(&resume), "{err}");

    // `weir retry --local` says what to do instead of "cancel it first".
    let retried = run(&["retry", &first, "--local", &data_arg]);
    let err = text(&retried.stderr);
    assert_eq!(retried.status.code(), Some(1), "{err}");
    assert!(err.contains(&resume) && !err.contains("cancel it first"), "{err}");

    // A later `weir run` says so too, runs its own pipeline, and leaves the old run alone.
    let again = run(&["run", &k.other, "--data-dir", &data_arg]);
    let err = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("  {first}  slow  1 of 3 steps done")) && err.contains(&resume), "{err}");
    assert_eq!(ran(counter, &first), ["a", "b-start"], "nothing ran the interrupted run meanwhile");

    // `weir resume` finishes it: a is not run again, b runs again as a new attempt, then c.
    std::fs::write(&k.go, "").unwrap();
    let resumed = run(&["resume", &first, "--local", &data_arg]);
    let (out, err) = (text(&resumed.stdout), text(&resumed.stderr));
    assert_eq!(resumed.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&format!("resuming run {first} (1 of 3 steps done); b was running")), "{err}");
    assert!(out.contains(&format!("run {first} succeeded")), "{out}");
    assert_eq!(ran(counter, &first), ["a", "b-start", "b-start", "b", "c"], "a ran once; b finished once");

    // Nothing is left unfinished now.
    let listed = run(&["runs", "--local", &data_arg]);
    assert!(!text(&listed.stderr).contains("left unfinished"), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).lines().any(|l| l.starts_with(&first) && l.contains("succeeded")));
}

#[test]
fn a_run_left_by_a_killed_weir_run_can_be_cancelled_then_retried() {
    let k = killed_mid_run();
    let cancelled = run(&["cancel", &k.run, "--local", &k.data]);
    let (out, err) = (text(&cancelled.stdout), text(&cancelled.stderr));
    assert_eq!(cancelled.status.code(), Some(0), "{err}");
    assert!(out.contains(&format!("cancelled run {}", k.run)), "{out}");
    assert!(!err.contains("left unfinished"), "the run cancelled is not announced: {err}");
    assert_eq!(ran(&k.counter, &k.run), ["a", "b-start"], "no step started for the cancel");

    // Now an ordinary cancelled run: retry keeps a and runs the rest.
    std::fs::write(&k.go, "").unwrap();
    let retried = run(&["retry", &k.run, "--local", &k.data]);
    let (out, err) = (text(&retried.stdout), text(&retried.stderr));
    assert_eq!(retried.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let new = out.lines().find_map(|l| l.strip_prefix(&format!("retrying run {} as ", k.run))).unwrap();
    assert_eq!(ran(&k.counter, new), ["b-start", "b", "c"], "a is reused, not run again");
    assert!(!text(&run(&["runs", "--local", &k.data]).stderr).contains("left unfinished"));
}

#[test]
fn the_hints_after_a_failed_weir_run_work_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("fails.yaml");
    std::fs::write(&file, "name: fails\nsteps:\n  boom:\n    run: echo oh-no; exit 3\n").unwrap();
    let out = run(&["run", &file.display().to_string(), "--data-dir", &data.display().to_string()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let help = err.lines().find(|l| l.starts_with("help: `weir logs")).unwrap_or_else(|| panic!("{err}"));
    let commands: Vec<&str> = help.split('`').skip(1).step_by(2).collect();
    assert_eq!(commands.len(), 2, "{help}");
    let bin = Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for (command, wanted) in commands.iter().zip(["oh-no", "retrying run"]) {
        assert!(command.contains(&format!(" --local {}", data.display())), "{command}");
        let pasted = Command::new("sh").args(["-c", command]).env("PATH", &path).env("NO_COLOR", "1").output().unwrap();
        let all = format!("{}{}", text(&pasted.stdout), text(&pasted.stderr));
        // The retry fails again (the step still exits 3), but it ran: the command worked.
        assert!(all.contains(wanted), "`{command}`:\n{all}");
    }
}
