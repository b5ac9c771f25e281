//! Retention and garbage collection end to end, through the real binaries: `weir server` and
//! `weir-worker` over loopback, and the `weir` CLI for everything the test does.
//!
//! One pipeline with `keep: {runs: 2}` gets five runs: the first registers a model version, the
//! second makes a cache entry. `weir gc --dry-run` names the one run keep lets go (the other two
//! old ones are protected) and deletes nothing; `weir gc` deletes it and sweeps its output blob
//! and an old orphan blob, but not an orphan written moments ago (younger than --gc-grace).
//! `weir runs delete` refuses a running run, a protected run and an unknown one, each with a
//! reason, and deletes a cancelled one; `weir pipelines delete` removes a pipeline with its
//! runs. Then the server is killed with SIGKILL right after a delete whose blobs were never
//! swept: `weir store check` passes on the data folder, and a restarted server's `weir gc`
//! sweeps what the deleted run left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use weir_data::artifact::Digest;
use weir_tests::procs::{self, Kill};

const KEEPY: &str = r#"name: keepy
keep: {runs: 2}
params:
  n: 0
  reg: false
  cache: false
  gate: ""
steps:
  make:
    run: |
      printf 'output-%s' "$WEIR_PARAM_N" > "$WEIR_OUTPUTS/out.txt"
      if [ -n "$WEIR_PARAM_GATE" ]; then while [ ! -e "$WEIR_PARAM_GATE" ]; do sleep 0.05; done; fi
    outputs: [out.txt]
  reg:
    when: "params.reg"
    run: printf 'model-%s' "$WEIR_PARAM_N" > "$WEIR_OUTPUTS/model.txt"
    outputs: [model.txt]
    register:
      model: m
      file: model.txt
  cached:
    when: "params.cache"
    cache: true
    run: printf 'cached' > "$WEIR_OUTPUTS/c.txt"
    outputs: [c.txt]
"#;

const OTHER: &str =
    "name: other\nsteps:\n  one:\n    run: printf 'other' > \"$WEIR_OUTPUTS/o.txt\"\n    outputs: [o.txt]\n";

struct Env {
    weir: PathBuf,
    url: String,
    data: PathBuf,
}

impl Env {
    fn weir(&self, args: &[&str]) -> Output {
        Command::new(&self.weir).args(args).args(["--server", &self.url]).env_remove("RUST_LOG").output().unwrap()
    }

    /// Runs `weir ARGS`, expecting `code`; returns stdout and stderr.
    fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.weir(args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(code), "weir {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        (stdout, stderr)
    }

    /// Starts a run of `pipeline` with `params`, follows it to its end and returns its id.
    fn run(&self, pipeline: &str, params: &[&str]) -> String {
        let mut args = vec!["start", pipeline];
        for p in params {
            args.extend(["-p", p]);
        }
        let (out, _) = self.expect(&args, 0);
        let id = out.lines().next().unwrap().trim().to_string();
        self.expect(&["status", &id, "--watch"], 0);
        id
    }

    fn blob(&self, content: &[u8]) -> PathBuf {
        let hex = Digest::of(content).to_string();
        self.data.join("artifacts").join("blobs").join(&hex[..2]).join(&hex[2..])
    }
}

fn start_server(weir: &Path, data: &Path) -> (Kill, String) {
    procs::server(weir, data, &["--gc-every", "off", "--gc-grace", "1h"])
}

fn start_worker(worker: &Path, url: &str, work: &Path) -> Kill {
    procs::spawn(procs::worker(worker, url, work, "w1", 2))
}

/// Sets a file's modification time two hours back: older than the server's 1h grace.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(path).unwrap().set_modified(old).unwrap();
}

#[test]
fn keep_runs_deletes_and_gc_through_the_cli_against_a_real_server_and_worker() {
    let (weir, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url) = start_server(&weir, &data);
    let _worker = start_worker(&worker_bin, &url, &dir.path().join("work"));
    let env = Env { weir: weir.clone(), url, data: data.clone() };

    for (name, yaml) in [("keepy", KEEPY), ("other", OTHER)] {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("pipeline.yaml"), yaml).unwrap();
        env.expect(&["submit", folder.to_str().unwrap()], 0);
    }
    let with_model = env.run("keepy", &["n=1", "reg=true"]);
    let with_cache = env.run("keepy", &["n=2", "cache=true"]);
    let plain = env.run("keepy", &["n=3"]);
    let newer = [env.run("keepy", &["n=4"]), env.run("keepy", &["n=5"])];

    // The blobs: the plain run's output is old and only it names it; two orphans, one old.
    assert!(env.blob(b"output-3").is_file());
    age(&env.blob(b"output-3"));
    age(&env.blob(b"output-1"));
    let blobs = data.join("artifacts").join("blobs");
    let orphan = |content: &[u8]| {
        let path = env.blob(content);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    };
    let (old_orphan, fresh_orphan) = (orphan(b"old orphan"), orphan(b"fresh orphan: an upload in flight"));
    age(&old_orphan);
    assert!(blobs.is_dir());

    // Dry run: says what would go, deletes nothing.
    let (out, _) = env.expect(&["gc", "--dry-run"], 0);
    assert!(out.contains(&format!("keepy: would delete 1 runs: {plain}")), "{out}");
    assert!(out.contains("would delete 1 runs, 2 blobs"), "{out}");
    env.expect(&["status", &plain], 0);
    assert!(env.blob(b"output-3").is_file() && old_orphan.is_file());

    let (out, _) = env.expect(&["gc"], 0);
    assert!(out.contains(&format!("keepy: deleted 1 runs: {plain}")), "{out}");
    assert!(out.contains("deleted 1 runs, 2 blobs"), "{out}");
    let (_, err) = env.expect(&["status", &plain], 1);
    assert!(err.contains("no run"), "{err}");
    for kept in [&with_model, &with_cache, &newer[0], &newer[1]] {
        env.expect(&["status", kept], 0);
    }
    assert!(!env.blob(b"output-3").exists(), "the deleted run's output is swept");
    assert!(!old_orphan.exists(), "an old orphan is swept");
    assert!(fresh_orphan.is_file(), "a blob younger than the grace is kept");
    assert!(env.blob(b"output-1").is_file(), "the protected run's output is kept");
    let (runs, _) = env.expect(&["runs", "--pipeline", "keepy", "--limit", "0"], 0);
    assert!(!runs.contains(&plain) && runs.contains(&with_model), "{runs}");

    // `weir runs delete`: a running run, a protected one and an unknown one are refused with
    // their reasons; the others are deleted.
    let gate = dir.path().join("gate");
    let gate_param = format!("gate={}", gate.display());
    let (out, _) = env.expect(&["start", "keepy", "-p", "n=6", "-p", &gate_param], 0);
    let running = out.lines().next().unwrap().trim().to_string();
    let (out, err) = env.expect(&["runs", "delete", &running, &with_model, "no-such-run", &newer[0]], 1);
    assert!(err.contains(&format!("run {running} is still running here: cancel it first")), "{err}");
    assert!(err.contains(&format!("run {with_model} is kept: version 1 of model m came from it")), "{err}");
    assert!(err.contains("no run no-such-run"), "{err}");
    assert!(out.contains(&format!("deleted run {}", newer[0])), "{out}");
    let (_, err) = env.expect(&["runs", "delete", &with_cache], 1);
    assert!(err.contains("the step cache reuses its outputs"), "{err}");
    env.expect(&["cancel", &running], 0);
    env.expect(&["status", &running, "--watch"], 1);
    let (out, _) = env.expect(&["runs", "delete", &running], 0);
    assert!(out.contains(&format!("deleted run {running}")), "{out}");
    std::fs::write(&gate, b"").unwrap();

    // `weir pipelines delete`: refused while a model version came from a run of it; another
    // pipeline goes with its runs. `weir pipelines` still lists.
    let other_run = env.run("other", &[]);
    let (_, err) = env.expect(&["pipelines", "delete", "keepy"], 1);
    assert!(err.contains("pipeline keepy is not deleted") && err.contains("model m"), "{err}");
    let (out, _) = env.expect(&["pipelines", "delete", "other"], 0);
    assert!(out.contains("deleted pipeline other and 1 of its runs"), "{out}");
    let (list, _) = env.expect(&["pipelines"], 0);
    assert!(list.contains("keepy") && !list.contains("other"), "{list}");
    env.expect(&["status", &other_run], 1);
    let (_, err) = env.expect(&["pipelines", "delete", "other"], 1);
    assert!(err.contains("no pipeline other"), "{err}");

    // A crash between the store deletes and the sweep: delete a run, SIGKILL the server before
    // any sweep. The store is consistent, and the next collection sweeps what the run left.
    let last = &newer[1];
    age(&env.blob(b"output-5"));
    env.expect(&["runs", "delete", last], 0);
    drop(server); // SIGKILL
    let check = Command::new(&weir).args(["store", "check", "--data-dir"]).arg(&data).output().unwrap();
    assert!(
        check.status.success(),
        "store check after kill -9:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(env.blob(b"output-5").is_file(), "no sweep ran before the kill");
    let (_server, url) = start_server(&weir, &data);
    let env = Env { url, ..env };
    let (out, _) = env.expect(&["gc"], 0);
    assert!(out.contains("deleted 0 runs, 1 blobs"), "{out}");
    assert!(!env.blob(b"output-5").exists());
    env.expect(&["status", &with_model], 0);
}

const BIG: &str = r#"name: big
params:
  n: 1
steps:
  make:
    run: head -c 700 /dev/zero | tr '\0' "$WEIR_PARAM_N" > "$WEIR_OUTPUTS/data.bin"
    outputs: [data.bin]
  use:
    needs: [make]
    run: test "$(wc -c < "$WEIR_INPUTS/make/data.bin")" -eq 700
"#;

#[test]
fn a_worker_keeps_its_blob_cache_under_cache_max_evicting_the_least_recently_used() {
    let (weir, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, url) = start_server(&weir, &data);
    let work = dir.path().join("work");
    let mut small = procs::worker(&worker_bin, &url, &work, "small", 1);
    small.args(["--cache-max", "1K"]);
    let _worker = procs::spawn(small);
    let env = Env { weir, url, data };
    let folder = dir.path().join("big");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), BIG).unwrap();
    env.expect(&["submit", folder.to_str().unwrap()], 0);

    let cached = |content: &[u8]| {
        let hex = Digest::of(content).to_string();
        work.join("blobs").join(&hex[..2]).join(&hex[2..]).is_file()
    };
    let (one, two) = (vec![b'1'; 700], vec![b'2'; 700]);
    env.run("big", &["n=1"]);
    assert!(cached(&one), "700 bytes fit under 1K and stay cached");
    // The second run's output (700 bytes more) passes the bound: the first one's goes, while
    // the second run's `use` step still got its input.
    env.run("big", &["n=2"]);
    assert!(!cached(&one), "the least recently used blob is evicted");
    assert!(cached(&two), "the blob just used is kept");
    // Both runs' outputs are still on the server: eviction only touches the worker's cache.
    assert!(env.blob(&one).is_file() && env.blob(&two).is_file());
}
