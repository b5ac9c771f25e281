//! Backup and restore end to end, through the real binaries: `weir server` and `weir-worker`
//! over loopback, and the `weir` CLI for everything the test does.
//!
//! A pipeline (whose bundle holds a data file the steps read) has one finished run with
//! outputs and one whose second step waits on a gate file. `weir backup` saves the server
//! while that step runs (refusing to overwrite the file without --force); the server and
//! worker stop; `weir restore` refuses a non-empty folder, a truncated copy and a copy with a
//! flipped byte of an output (naming the blob), and restores the good file into a new folder.
//! A server and a worker started on it list and download the finished run's outputs with the
//! same digests, and the unfinished run resumes (its bundle restored too) and finishes once the
//! gate opens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use weir_tests::procs::{self, Kill};

const PIPELINE: &str = r#"name: backed
params:
  gate: ""
steps:
  make:
    run: |
      printf 'output of the %s run' finished > "$WEIR_OUTPUTS/out.txt"
      cp data.txt "$WEIR_OUTPUTS/copy.txt"
    outputs: [out.txt, copy.txt]
  wait:
    needs: [make]
    run: |
      if [ -n "$WEIR_PARAM_GATE" ]; then
        touch "$WEIR_PARAM_GATE.started"
        while [ ! -e "$WEIR_PARAM_GATE" ]; do sleep 0.05; done
      fi
      cp data.txt "$WEIR_OUTPUTS/late.txt"
    outputs: [late.txt]
"#;

const DATA: &str = "data from the pipeline's bundle\n";

fn weir(weir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(weir).args(args).args(["--server", url]).env_remove("RUST_LOG").output().unwrap()
}

/// Runs `weir ARGS` (against `url` when given), expecting `code`; returns stdout and stderr.
fn expect(bin: &Path, url: Option<&str>, args: &[&str], code: i32) -> (String, String) {
    let out = match url {
        Some(url) => weir(bin, url, args),
        None => Command::new(bin).args(args).env_remove("RUST_LOG").output().unwrap(),
    };
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(code), "weir {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

fn start_server(weir: &Path, data: &Path) -> (Kill, String) {
    procs::server(weir, data, &["--lease-timeout", "3s"])
}

fn start_worker(worker: &Path, url: &str, work: &Path) -> Kill {
    procs::spawn(procs::worker(worker, url, work, "w1", 2))
}

/// `weir restore FILE --data-dir DIR`, expecting `code`; returns stderr.
fn restore(bin: &Path, file: &Path, dir: &Path, code: i32) -> String {
    let args = ["restore", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()];
    expect(bin, None, &args, code).1
}

#[test]
fn a_backup_of_a_running_server_restores_its_outputs_and_resumes_its_unfinished_run() {
    let (bin, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url) = start_server(&bin, &data);
    let worker = start_worker(&worker_bin, &url, &dir.path().join("work"));
    let folder = dir.path().join("backed");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), PIPELINE).unwrap();
    std::fs::write(folder.join("data.txt"), DATA).unwrap();
    expect(&bin, Some(&url), &["submit", folder.to_str().unwrap()], 0);

    let (out, _) = expect(&bin, Some(&url), &["start", "backed"], 0);
    let done = out.lines().next().unwrap().trim().to_string();
    expect(&bin, Some(&url), &["status", &done, "--watch"], 0);
    let gate = dir.path().join("gate");
    let (out, _) = expect(&bin, Some(&url), &["start", "backed", "-p", &format!("gate={}", gate.display())], 0);
    let waiting = out.lines().next().unwrap().trim().to_string();
    let started = PathBuf::from(format!("{}.started", gate.display()));
    let since = Instant::now();
    while !started.exists() {
        assert!(since.elapsed() < Duration::from_secs(120), "the waiting step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (listed_before, _) = expect(&bin, Some(&url), &["artifacts", "ls", &done], 0);

    let file = dir.path().join("weir.backup");
    let (out, _) = expect(&bin, Some(&url), &["backup", file.to_str().unwrap()], 0);
    assert!(out.contains("backup ") && out.contains(" records, "), "{out}");
    assert!(!dir.path().join("weir.backup.tmp").exists());
    let (_, err) = expect(&bin, Some(&url), &["backup", file.to_str().unwrap()], 1);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    drop(worker);
    drop(server);

    // Refused: a folder in use, a truncated file, a flipped byte of an output.
    let err = restore(&bin, &file, &data, 1);
    assert!(err.contains("is not empty"), "{err}");
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = restore(&bin, &cut, &dir.path().join("from-cut"), 1);
    assert!(err.contains("truncated"), "{err}");
    // Only the output holds these bytes (the pipeline file has a `%s` in their place).
    let marker = b"output of the finished run";
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("the output's bytes are in the backup");
    let mut flipped = bytes.clone();
    flipped[at + 5] ^= 1;
    let bad = dir.path().join("flipped.backup");
    std::fs::write(&bad, &flipped).unwrap();
    let err = restore(&bin, &bad, &dir.path().join("from-flipped"), 1);
    let digest = weir_data::artifact::Digest::of(marker);
    assert!(err.contains("damaged") && err.contains(&format!("blob {digest}")), "{err}");
    assert!(!dir.path().join("from-cut").exists() && !dir.path().join("from-flipped").exists());

    let restored = dir.path().join("restored");
    restore(&bin, &file, &restored, 0);
    let (check, _) = expect(&bin, None, &["store", "check", "--data-dir", restored.to_str().unwrap()], 0);
    assert!(check.contains("every record is readable"), "{check}");
    let (server, url) = start_server(&bin, &restored);
    let _worker = start_worker(&worker_bin, &url, &dir.path().join("work2"));
    let (listed_after, _) = expect(&bin, Some(&url), &["artifacts", "ls", &done], 0);
    assert_eq!(listed_after, listed_before, "same outputs, sizes and digests");
    let got = dir.path().join("got");
    std::fs::create_dir(&got).unwrap();
    expect(&bin, Some(&url), &["artifacts", "get", &done, "make", "-o", got.to_str().unwrap()], 0);
    assert_eq!(std::fs::read(got.join("out.txt")).unwrap(), marker);
    assert_eq!(std::fs::read_to_string(got.join("copy.txt")).unwrap(), DATA);

    std::fs::write(&gate, b"open").unwrap();
    expect(&bin, Some(&url), &["status", &waiting, "--watch"], 0);
    let late = dir.path().join("late.txt");
    expect(&bin, Some(&url), &["artifacts", "get", &waiting, "wait", "late.txt", "-o", late.to_str().unwrap()], 0);
    assert_eq!(std::fs::read_to_string(&late).unwrap(), DATA, "the resumed step read the restored bundle");
    drop(server);
}

#[test]
fn weir_backup_local_saves_a_weir_run_data_folder_that_restores_and_lists_its_runs() {
    let (bin, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        "name: here\nsteps:\n  a:\n    run: printf 'local output' > \"$WEIR_OUTPUTS/o.txt\"\n    outputs: [o.txt]\n",
    )
    .unwrap();
    let data = dir.path().join("d");
    let (out, err) = expect(&bin, None, &["run", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], 0);
    let (runs, _) = expect(&bin, None, &["runs", "--local", data.to_str().unwrap()], 0);
    assert!(runs.contains("here"), "{out}{err}{runs}");
    let saved = dir.path().join("local.backup");
    expect(&bin, None, &["backup", saved.to_str().unwrap(), "--local", data.to_str().unwrap()], 0);
    let restored = dir.path().join("r");
    restore(&bin, &saved, &restored, 0);
    let (again, _) = expect(&bin, None, &["runs", "--local", restored.to_str().unwrap()], 0);
    let first = |t: &str| t.lines().nth(1).and_then(|l| l.split_whitespace().next()).map(str::to_string);
    assert!(first(&runs).is_some() && first(&again) == first(&runs), "{runs}\n{again}");
    assert!(again.contains("succeeded"), "{again}");
}
