//! [`DockerRuntime`] against the shared conformance suite, on the machine's real Docker engine,
//! plus what only containers can show: pull policies, the container's name, labels, mounts and
//! limits as the engine reports them, a duplicated dispatch, the OOM killer, a step that outlives
//! its worker and is resumed by the next one (a re-run of this test binary acts as that worker),
//! removal, and a dropped `run`.
//!
//! The tests build their images with `scripts/test-images.sh` when they are missing (it needs
//! Debian's `busybox-static`). Without a Docker engine they print a loud skip and pass, except
//! under CI (`CI` set), where they fail: CI must run them.

mod conformance;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::Docker;
use conformance::{Fixture, run_plain};
use tokio::sync::mpsc;
use weir_worker::runtime::{
    Action, AttemptLabel, CancellationToken, DockerRuntime, Error, Found, Image, Limits, LogLine, Outcome, PullPolicy,
    RunFuture, Runtime, StepSpec, container_name,
};

/// The image the tests run, built by `scripts/test-images.sh`: busybox and its applets.
const IMAGE: &str = "weir-test/busybox:1";
/// The same image with an entrypoint.
const ENTRYPOINT_IMAGE: &str = "weir-test/entrypoint:1";

/// [`DockerRuntime`] running specs without an image in [`IMAGE`], so that the conformance checks
/// (which know no images) run as they are.
struct TestDocker(DockerRuntime);

impl Runtime for TestDocker {
    fn run(&self, mut spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> RunFuture<'_> {
        spec.image.get_or_insert_with(|| Image { name: IMAGE.into(), pull: PullPolicy::IfNotPresent });
        self.0.run(spec, logs, cancel)
    }
}

/// The runtime for a test, or `None` after a loud skip message when no Docker engine answers and
/// `CI` is unset. Builds the test images once per test binary.
async fn docker() -> Option<TestDocker> {
    let rt = match DockerRuntime::connect().await {
        Ok(rt) => rt,
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but Docker is unreachable, so the Docker runtime cannot be tested: {error}")
        }
        Err(error) => {
            // Once per test binary, and past the harness's capture (which hides what passing
            // tests print), so that a plain `cargo test` shows it.
            static SKIP: std::sync::Once = std::sync::Once::new();
            SKIP.call_once(|| {
                use std::io::Write;
                let line = format!("\n!!!! SKIPPED: the Docker runtime tests, no Docker engine: {error} !!!!\n\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
            });
            return None;
        }
    };
    static IMAGES: OnceLock<Result<(), String>> = OnceLock::new();
    let built = IMAGES.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-images.sh");
        let out = std::process::Command::new(&script).output().map_err(|e| format!("cannot run {script:?}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("{script:?} failed: {}", String::from_utf8_lossy(&out.stderr))),
        }
    });
    if let Err(error) = built {
        panic!("the test images are missing and cannot be built: {error}");
    }
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        sweep(&rt).await;
    }
    Some(TestDocker(rt))
}

/// Removes the containers that earlier runs of these tests left behind: a failed assertion drops a
/// step's future while the test's runtime shuts down, so its removal may never run. Only those of
/// test processes that are gone (by the pid in their run id or anonymous name).
async fn sweep(rt: &DockerRuntime) {
    for found in rt.weir_containers().await.unwrap_or_default() {
        let pid = found.id.run_id.strip_prefix("test-").or_else(|| found.name.strip_prefix("weir-anon-"));
        let Some(pid) = pid.and_then(|p| p.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = rt.remove(&found.name, Duration::ZERO).await;
        }
    }
}

conformance_tests!(async docker());

/// A fresh attempt id, distinct across tests and test runs (containers are named after it).
fn attempt(step: &str) -> AttemptLabel {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    AttemptLabel {
        run_id: format!("test-{}-{nanos}", std::process::id()),
        step: step.into(),
        instance: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        attempt: 1,
        owner: "docker-tests".into(),
    }
}

fn engine() -> Docker {
    Docker::connect_with_local_defaults().unwrap()
}

/// Whether a container of that name exists on the engine.
async fn exists(name: &str) -> bool {
    engine().inspect_container(name, None).await.is_ok()
}

/// Polls (at most 10 s) until no container of that name exists.
async fn gone(name: &str) {
    let start = Instant::now();
    while exists(name).await {
        assert!(start.elapsed() < Duration::from_secs(10), "container {name} is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `weir_containers` finds of attempt `id`, once it shows one running (or after 5 s): the
/// engine's list can show a container as running a moment after its step has started.
async fn weir_containers_once_running(rt: &DockerRuntime, id: &AttemptLabel) -> Vec<Found> {
    let start = Instant::now();
    loop {
        let found: Vec<_> = rt.weir_containers().await.unwrap().into_iter().filter(|c| c.id == *id).collect();
        if found.iter().any(|c| c.running) || start.elapsed() > Duration::from_secs(5) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `spec` and returns what `run` returned, error included.
async fn try_run(rt: &impl Runtime, spec: StepSpec) -> Result<Outcome, Error> {
    let (tx, _rx) = mpsc::channel(64);
    rt.run(spec, tx, CancellationToken::new()).await
}

fn image(name: &str, pull: PullPolicy) -> Option<Image> {
    Some(Image { name: name.into(), pull })
}

#[tokio::test]
async fn missing_image_with_pull_never_fails_at_once() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script("true");
    spec.image = image("weir-test/absent:1", PullPolicy::Never);
    match try_run(&rt, spec).await {
        Err(Error::Image { image, reason }) => {
            assert_eq!(image, "weir-test/absent:1");
            assert!(reason.contains("docker load") && reason.contains("if-not-present"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// No registry answers here: a missing image ends the step with a reason, quickly.
#[tokio::test]
async fn missing_image_whose_pull_fails_ends_the_step() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    for (name, pull) in [("weir-test/absent:1", PullPolicy::IfNotPresent), (IMAGE, PullPolicy::Always)] {
        let mut spec = f.script("echo ran > \"$WEIR_OUTPUTS/ran\"");
        spec.image = image(name, pull);
        let start = Instant::now();
        let result = try_run(&rt, spec).await;
        let took = start.elapsed();
        eprintln!("failed pull of {name} ({pull:?}) took {took:?}: {result:?}");
        match result {
            Err(Error::Image { image, reason }) => {
                assert_eq!(image, name);
                assert!(reason.contains("pull"), "{reason}");
            }
            other => panic!("{name} {pull:?}: {other:?}"),
        }
        assert!(took < Duration::from_secs(30), "a failed pull took {took:?}");
        assert!(!f.outputs.join("ran").exists(), "the step ran without its image");
    }
    // Both failed pulls are timed on the worker's `/metrics` (other tests may pull too).
    let pulls = worker_metric("weir_worker_image_pull_seconds_count");
    assert!(pulls >= 2.0, "two failed pulls observed, got {pulls}");
}

/// A sample's value from the worker's metrics (process-wide, so shared by this binary's tests).
fn worker_metric(series: &str) -> f64 {
    let text = weir_worker::metrics::render();
    let line = text.lines().find(|l| l.split_once(' ').is_some_and(|(name, _)| name == series));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A registry that accepts connections and never answers: the pull ends at its bound, and the
/// step with an [`Error::Image`]. (Where the engine cannot reach the test's listener, the pull
/// fails at once instead, which the test accepts too.)
#[tokio::test]
async fn hung_registry_is_bounded() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            held.push(conn); // never answered, never closed
        }
    });
    let rt = rt.with_pull_timeout(Duration::from_secs(1));
    let f = Fixture::new();
    let mut spec = f.script("true");
    spec.image = image(&format!("127.0.0.1:{port}/weir/hung:1"), PullPolicy::IfNotPresent);
    let start = Instant::now();
    let result = try_run(&rt, spec).await;
    let took = start.elapsed();
    let reached = reached.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("pull from a hung registry (reached: {reached}) ended after {took:?}: {result:?}");
    match result {
        Err(Error::Image { reason, .. }) if reached => assert!(reason.contains("within 1s"), "{reason}"),
        Err(Error::Image { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn invalid_image_name_is_an_image_error() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    for pull in [PullPolicy::Never, PullPolicy::IfNotPresent] {
        let mut spec = f.script("true");
        spec.image = image("Weir/Upper Case:1", pull);
        match try_run(&rt, spec).await {
            Err(Error::Image { reason, .. }) => assert!(reason.contains("image:"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn present_image_with_pull_never_runs() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script("echo ok");
    spec.image = image(IMAGE, PullPolicy::Never);
    assert_eq!(run_plain(&rt, spec).await.stdout(), ["ok"]);
}

#[tokio::test]
async fn step_without_image_is_an_image_error() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let f = Fixture::new();
    assert!(matches!(try_run(&rt, f.script("true")).await, Err(Error::Image { .. })));
}

/// The step's command replaces the image's entrypoint, for a script and an argv alike.
#[tokio::test]
async fn command_replaces_the_entrypoint() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let cases =
        [(Action::Script("echo script".into()), "script"), (Action::Argv(vec!["echo".into(), "argv".into()]), "argv")];
    for (action, expect) in cases {
        let mut spec = f.spec(action);
        spec.image = image(ENTRYPOINT_IMAGE, PullPolicy::Never);
        let ran = run_plain(&rt, spec).await;
        assert_eq!(ran.outcome, Outcome::Exited(0));
        assert_eq!(ran.stdout(), [expect], "the image's entrypoint ran");
    }
    let starts = worker_metric("weir_worker_container_start_seconds_count");
    assert!(starts >= 2.0, "both container starts timed on /metrics, got {starts}");
}

/// The bundle and inputs are read-only, the outputs writable and owned by the worker; the step
/// sees the image's PATH, not the worker's.
#[tokio::test]
async fn mounts_and_environment() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    std::fs::write(f.inputs.join("in.txt"), "x").unwrap();
    let script = r#"pwd; echo "$PATH"
        touch /weir/src/new 2>/dev/null && echo src-writable
        touch /weir/inputs/new 2>/dev/null && echo inputs-writable
        echo changed > /weir/inputs/in.txt 2>/dev/null && echo input-changed
        touch /weir/outputs/new && echo outputs-writable
        ls / | grep -c weir"#;
    let ran = run_plain(&rt, f.script(script)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), ["/weir/src", "/bin", "outputs-writable", "1"]);
    assert_eq!(std::fs::read_to_string(f.inputs.join("in.txt")).unwrap(), "x");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(f.outputs.join("new")).unwrap();
    // SAFETY: getuid and getgid have no preconditions.
    assert_eq!((meta.uid(), meta.gid()), unsafe { (libc::getuid(), libc::getgid()) }, "outputs belong to the worker");
}

/// While a step runs, the engine shows its container by the attempt's name, with weir's labels,
/// the limits, the three mounts and no privileges; `weir_containers` finds it running. After the
/// step it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_as_the_engine_sees_it() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let f = Fixture::new();
    let id = attempt("inspect");
    let name = container_name(&id);
    let mut spec = f.script(r#"touch "$WEIR_OUTPUTS/ready"; while [ ! -e "$WEIR_OUTPUTS/go" ]; do sleep 0.05; done"#);
    spec.id = id.clone();
    spec.image = image(IMAGE, PullPolicy::IfNotPresent);
    spec.limits = Limits { cpus_milli: Some(500), memory_bytes: Some(64 << 20) };
    let (ran, ()) = tokio::join!(run_plain(&rt, spec), async {
        f.wait_for("ready").await;
        let info = engine().inspect_container(&name, None).await.expect("the container is named after the attempt");
        let config = info.config.unwrap();
        let labels = config.labels.unwrap();
        for (k, v) in [
            ("weir.run", id.run_id.as_str()),
            ("weir.step", "inspect"),
            ("weir.instance", &id.instance.to_string()),
            ("weir.attempt", "1"),
            ("weir.managed", "1"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        // SAFETY: getuid and getgid have no preconditions.
        assert_eq!(config.user.unwrap(), unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) });
        let host = info.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.privileged, Some(false));
        assert_ne!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.cap_add.unwrap(), weir_data::capabilities::DEFAULT);
        assert_eq!(host.pids_limit, Some(weir_worker::runtime::DOCKER_PIDS_LIMIT));
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        let mut mounts: Vec<(String, bool)> =
            info.mounts.unwrap().into_iter().map(|m| (m.destination.unwrap(), m.rw.unwrap())).collect();
        mounts.sort();
        assert_eq!(
            mounts,
            [("/weir/inputs".into(), false), ("/weir/outputs".into(), true), ("/weir/src".into(), false)]
        );
        let found = weir_containers_once_running(&rt, &id).await;
        let ours = found.iter().find(|c| c.name == name).expect("weir_containers lists the step's container");
        assert!(ours.running, "{ours:?}");
        assert_eq!(ours.id, id);
        assert_eq!(ours.labels.get("weir.managed").map(String::as_str), Some("1"));
        std::fs::write(f.outputs.join("go"), "").unwrap();
    });
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert!(!exists(&name).await, "the container outlived its step");
    assert!(rt.weir_containers().await.unwrap().iter().all(|c| c.name != name));
}

/// Dispatches of one attempt while it runs start no second container: all follow the one
/// container and see its outcome. Three at once hit the engine while the first create is still
/// in the making (its name reserved, the container not yet there); a fourth comes while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_dispatch_runs_one_container() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script(r#"echo started >> "$WEIR_OUTPUTS/starts"; sleep 2; echo done; exit 3"#);
    spec.id = attempt("dup");
    let late = async {
        f.wait_for("starts").await;
        run_plain(&rt, spec.clone()).await
    };
    let (a, b, c, d) =
        tokio::join!(run_plain(&rt, spec.clone()), run_plain(&rt, spec.clone()), run_plain(&rt, spec.clone()), late);
    for ran in [&a, &b, &c, &d] {
        assert_eq!(ran.outcome, Outcome::Exited(3));
        assert_eq!(ran.stdout(), ["done"], "each follower streams the output from when it attached");
    }
    assert_eq!(std::fs::read_to_string(f.outputs.join("starts")).unwrap(), "started\n", "the step ran twice");
    gone(&container_name(&spec.id)).await;
}

/// Busybox `dd` with a 64 MiB block under a 16 MiB limit (and no swap) is OOM-killed.
#[tokio::test]
async fn out_of_memory_is_reported() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script("dd if=/dev/zero of=/dev/null bs=64M count=1");
    spec.limits.memory_bytes = Some(16 << 20);
    assert_eq!(run_plain(&rt, spec.clone()).await.outcome, Outcome::OutOfMemory);
    // The same step within its limit is no OOM.
    spec.action = Action::Script("dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null".into());
    assert_eq!(run_plain(&rt, spec).await.outcome, Outcome::Exited(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_run_removes_the_container() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script(r#"touch "$WEIR_OUTPUTS/ready"; sleep 30"#);
    spec.id = attempt("drop");
    let name = container_name(&spec.id);
    let (tx, _rx) = mpsc::channel(8);
    let step = rt.run(spec, tx, CancellationToken::new());
    tokio::select! {
        outcome = step => panic!("the step ended early: {outcome:?}"),
        () = f.wait_for("ready") => {}
    }
    gone(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_stops_a_running_step() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script(r#"touch "$WEIR_OUTPUTS/ready"; sleep 30"#);
    spec.id = attempt("remove");
    let name = container_name(&spec.id);
    let (ran, ()) = tokio::join!(run_plain(&rt, spec), async {
        f.wait_for("ready").await;
        let start = Instant::now();
        rt.0.remove(&name, Duration::from_secs(5)).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(4), "SIGTERM did not stop it: {:?}", start.elapsed());
        assert!(!exists(&name).await);
    });
    // Stopped from outside: the step saw SIGTERM (through the init, 128 + 15).
    assert_eq!(ran.outcome, Outcome::Exited(143));
    rt.0.remove(&name, Duration::from_secs(1)).await.expect("removing what is gone is fine");
}

#[tokio::test]
async fn resume_of_a_missing_container_is_an_error() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let f = Fixture::new();
    let (tx, _rx) = mpsc::channel(8);
    let result = rt.resume("weir-no-such-container".into(), f.script("true"), tx, CancellationToken::new()).await;
    assert!(matches!(result, Err(Error::Docker(ref m)) if m.contains("gone")), "{result:?}");
}

const RESUME_HELPER: &str = "WEIR_DOCKER_TEST_RESUME";

/// Not a test on its own: when re-run by [`resume_after_worker_restart`] with [`RESUME_HELPER`]
/// set (to `<folder>\t<run id>\t<instance>`), this process is a worker that starts a long step
/// and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process that resume_after_worker_restart starts; not a test on its own"]
async fn resume_helper() {
    let Some(arg) = std::env::var_os(RESUME_HELPER) else { return };
    let arg = arg.into_string().unwrap();
    let [dir, run_id, instance] = <[&str; 3]>::try_from(arg.split('\t').collect::<Vec<_>>()).unwrap();
    let rt = docker().await.expect("the parent test saw Docker");
    let dir = Path::new(dir);
    let mut spec = StepSpec::new(
        Action::Script(
            r#"echo before; touch "$WEIR_OUTPUTS/ready"; while [ ! -e "$WEIR_OUTPUTS/go" ]; do sleep 0.05; done
            echo after; echo err-after >&2; exit 7"#
                .into(),
        ),
        dir.join("src"),
        dir.join("inputs"),
        dir.join("outputs"),
    );
    spec.id = AttemptLabel {
        run_id: run_id.into(),
        step: "resume".into(),
        instance: instance.parse().unwrap(),
        attempt: 1,
        owner: "docker-tests".into(),
    };
    let (tx, _rx) = mpsc::channel(64);
    let _ = rt.run(spec, tx, CancellationToken::new()).await;
}

/// A worker dies (SIGKILL) while its step runs; the container runs on. A fresh runtime finds it
/// by its labels, resumes it, streams its later output and gets its outcome; then it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_worker_restart() {
    let Some(TestDocker(_)) = docker().await else { return };
    let f = Fixture::new();
    let id = attempt("resume");
    let dir = f.workdir.parent().unwrap();
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["resume_helper", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(RESUME_HELPER, format!("{}\t{}\t{}", dir.display(), id.run_id, id.instance))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    f.wait_for("ready").await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    let rt = DockerRuntime::connect().await.unwrap();
    let found = weir_containers_once_running(&rt, &id).await;
    assert_eq!(found.len(), 1, "the step's container runs on without its worker: {found:?}");
    assert!(found[0].running, "{found:?}");
    assert_eq!(found[0].name, container_name(&id));
    let labels: BTreeMap<_, _> = found[0].labels.clone();
    assert_eq!(labels.get("weir.step").map(String::as_str), Some("resume"));

    let (tx, mut rx) = mpsc::channel(64);
    let resumed = rt.resume(found[0].name.clone(), f.script("ignored"), tx, CancellationToken::new());
    let (outcome, ()) = tokio::join!(resumed, async {
        tokio::time::sleep(Duration::from_millis(300)).await; // attached by then
        std::fs::write(f.outputs.join("go"), "").unwrap();
    });
    assert_eq!(outcome.unwrap(), Outcome::Exited(7));
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(String::from_utf8(l.line).unwrap());
    }
    lines.sort();
    assert_eq!(lines, ["after", "err-after"], "only the output from the resume on");
    gone(&found[0].name).await;
}

/// A resumed step honours the timeout (counted from the resume) and the cancel token, like `run`.
/// The containers left by a "previous worker" are made on the engine directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_honours_timeout_and_cancel() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let f = Fixture::new();
    let engine = engine();
    let mut names = Vec::new();
    for step in ["timeout", "cancel"] {
        let name = container_name(&attempt(step));
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sh".into(), "-c".into(), format!("touch /out/{step}; sleep 30")]),
            labels: Some([("weir.managed".to_string(), "1".to_string())].into()),
            host_config: Some(bollard::models::HostConfig {
                init: Some(true),
                binds: Some(vec![format!("{}:/out", f.outputs.display())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new().name(&name).build();
        engine.create_container(Some(options), body).await.unwrap();
        engine.start_container(&name, None).await.unwrap();
        f.wait_for(step).await;
        names.push(name);
    }
    let mut spec = f.script("unused");
    spec.timeout = Some(Duration::from_millis(300));
    let start = Instant::now();
    let (tx, _rx) = mpsc::channel(8);
    assert_eq!(rt.resume(names[0].clone(), spec, tx, CancellationToken::new()).await.unwrap(), Outcome::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    let cancel = CancellationToken::new();
    let (tx, _rx) = mpsc::channel(8);
    let (outcome, ()) = tokio::join!(rt.resume(names[1].clone(), f.script("unused"), tx, cancel.clone()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    assert_eq!(outcome.unwrap(), Outcome::Cancelled);
    for name in &names {
        gone(name).await;
    }
}

/// A step that ended while no worker watched (it ended during the restart) is resumed to its
/// outcome at once, the OOM kill included, and removed.
#[tokio::test]
async fn resume_of_an_ended_container() {
    let Some(TestDocker(rt)) = docker().await else { return };
    let f = Fixture::new();
    let engine = engine();
    for (script, memory, expect) in [
        ("exit 5", None, Outcome::Exited(5)),
        ("dd if=/dev/zero of=/dev/null bs=64M count=1", Some(16 << 20), Outcome::OutOfMemory),
    ] {
        let name = container_name(&attempt("ended"));
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
            host_config: Some(bollard::models::HostConfig { memory, memory_swap: memory, ..Default::default() }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new().name(&name).build();
        engine.create_container(Some(options), body).await.unwrap();
        engine.start_container(&name, None).await.unwrap();
        let waited = bollard::query_parameters::WaitContainerOptionsBuilder::new().condition("not-running").build();
        use tokio_stream::StreamExt;
        let _ = engine.wait_container(&name, Some(waited)).next().await;
        let (tx, _rx) = mpsc::channel(8);
        let start = Instant::now();
        let outcome = rt.resume(name.clone(), f.script("unused"), tx, CancellationToken::new()).await;
        assert_eq!(outcome.unwrap(), expect, "{script}");
        // Up to 1 s for the engine's late OOM event (OOM_TRIES), more for a loaded host.
        assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
        gone(&name).await;
    }
}

/// A folder that cannot be mounted is an error of the runtime, not a step that fails.
#[tokio::test]
async fn missing_folder_is_an_error() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let mut spec = f.script("true");
    spec.inputs_dir = f.inputs.join("missing");
    let result = try_run(&rt, spec).await;
    assert!(matches!(result, Err(Error::Docker(ref m)) if m.contains("missing")), "{result:?}");
}

/// Not part of the suite (`cargo test -p weir-worker --test docker -- --ignored --nocapture`): the
/// time of a `true` step against `docker run --rm IMAGE true`, run alternately.
#[tokio::test]
#[ignore]
async fn start_overhead() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let (mut ours, mut plain) = (Duration::ZERO, Duration::ZERO);
    const N: u32 = 10;
    for _ in 0..N {
        let start = Instant::now();
        assert_eq!(run_plain(&rt, f.spec(Action::Argv(vec!["true".into()]))).await.outcome, Outcome::Exited(0));
        ours += start.elapsed();
        let start = Instant::now();
        let status = std::process::Command::new("docker").args(["run", "--rm", IMAGE, "true"]).status().unwrap();
        assert!(status.success());
        plain += start.elapsed();
    }
    println!("weir step: {:?} per run; docker run --rm: {:?} per run", ours / N, plain / N);
}

const CONNECT_HELPER: &str = "WEIR_DOCKER_TEST_CONNECT";

/// Not a test on its own: re-run by [`connect_fails_fast_without_an_engine`] with a `DOCKER_HOST`
/// where no engine answers.
#[tokio::test]
#[ignore = "a helper process that connect_fails_fast_without_an_engine starts; not a test on its own"]
async fn connect_helper() {
    if std::env::var_os(CONNECT_HELPER).is_none() {
        return;
    }
    let start = Instant::now();
    let error = DockerRuntime::connect().await.expect_err("no engine there").to_string();
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    println!("connect error: {error}");
}

#[tokio::test]
async fn connect_fails_fast_without_an_engine() {
    for host in ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:2375"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["connect_helper", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CONNECT_HELPER, "1")
            .env("DOCKER_HOST", host)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{host}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("connect error: docker: "), "{stdout}");
        assert!(stdout.contains("DOCKER_HOST"), "the error says what to do: {stdout}");
    }
}

/// The logs of a step whose receiver is gone: the step still runs to its end.
#[tokio::test]
async fn closed_receiver_does_not_block() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let spec =
        f.script(r#"i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; echo end > "$WEIR_OUTPUTS/end""#);
    let outcome = tokio::time::timeout(Duration::from_secs(20), rt.run(spec, tx, CancellationToken::new())).await;
    assert_eq!(outcome.expect("the step was blocked").unwrap(), Outcome::Exited(0));
    assert!(f.outputs.join("end").exists());
}

/// The bits of `names` in a capability mask (`CapEff` in /proc/self/status), as the kernel
/// numbers them.
fn cap_mask(names: &[&str]) -> u64 {
    const BITS: &[(&str, u32)] = &[
        ("CHOWN", 0),
        ("DAC_OVERRIDE", 1),
        ("FOWNER", 3),
        ("FSETID", 4),
        ("KILL", 5),
        ("SETGID", 6),
        ("SETUID", 7),
        ("NET_BIND_SERVICE", 10),
        ("SYS_CHROOT", 18),
    ];
    names.iter().map(|n| 1u64 << BITS.iter().find(|(b, _)| b == n).expect("a known capability").1).sum()
}

/// `NoNewPrivs`, `CapEff` and `CapBnd` of the step's shell, and its cgroup's `pids.max`.
async fn privileges(rt: &TestDocker, capabilities: Option<&[&str]>) -> (String, u64, u64, String) {
    let f = Fixture::new();
    let mut spec = f.script(
        "grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status
         cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
    );
    spec.capabilities = capabilities.map(|c| c.iter().map(|n| n.to_string()).collect());
    let ran = run_plain(rt, spec).await;
    assert_eq!(ran.outcome, Outcome::Exited(0), "{:?}", ran.stream(weir_worker::runtime::Stream::Stderr));
    let out = ran.stdout();
    let field = |name: &str| {
        let line = out.iter().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {out:?}"));
        line[name.len()..].trim().to_string()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    (field("NoNewPrivs:"), hex("CapEff:"), hex("CapBnd:"), out.last().cloned().unwrap_or_default())
}

/// Every container runs with `no-new-privileges`, only the default capabilities (effective for a
/// root worker, and the bounding set whoever runs it), and a pids limit.
#[tokio::test]
async fn containers_drop_privileges_by_default() {
    let Some(rt) = docker().await else { return };
    let default =
        cap_mask(&["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]);
    let (no_new_privs, eff, bnd, pids_max) = privileges(&rt, None).await;
    assert_eq!(no_new_privs, "1");
    assert_eq!(bnd, default, "bounding set {bnd:#x}: everything else dropped (no NET_RAW, SYS_ADMIN, ...)");
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    assert_eq!(eff, if root { default } else { 0 }, "effective set {eff:#x}");
    assert_eq!(pids_max, weir_worker::runtime::DOCKER_PIDS_LIMIT.to_string());
}

/// A step's `capabilities:` replaces the set: one more from the safe set, or none at all.
#[tokio::test]
async fn a_step_s_capabilities_replace_the_default_set() {
    let Some(rt) = docker().await else { return };
    let with_chroot = cap_mask(&["CHOWN", "SYS_CHROOT"]);
    let (no_new_privs, _, bnd, _) = privileges(&rt, Some(&["CHOWN", "SYS_CHROOT"])).await;
    assert_eq!((no_new_privs.as_str(), bnd), ("1", with_chroot), "bounding set {bnd:#x}");
    let (_, eff, bnd, _) = privileges(&rt, Some(&[])).await;
    assert_eq!((eff, bnd), (0, 0));
    // The worker refuses a capability outside the safe set even if an engine sent one.
    let f = Fixture::new();
    let mut spec = f.script("true");
    spec.capabilities = Some(vec!["SYS_ADMIN".into()]);
    let err = try_run(&rt, spec).await.unwrap_err();
    assert!(err.to_string().contains("SYS_ADMIN"), "{err}");
}

/// The pids limit holds: a step cannot have more processes at once than the limit.
#[tokio::test]
async fn a_fork_bomb_is_bounded() {
    let Some(rt) = docker().await else { return };
    let f = Fixture::new();
    let limit = weir_worker::runtime::DOCKER_PIDS_LIMIT;
    // Sleepers in the background until fork fails (which ends busybox's subshell), each counted
    // in a file with builtins only: at the limit, nothing can fork.
    let script = format!(
        "( i=0; while [ $i -lt {} ]; do sleep 60 & i=$((i+1)); echo $i > /tmp/n; done ) 2>/dev/null
         read n < /tmp/n; echo started $n",
        limit + 100
    );
    let mut spec = f.script(&script);
    spec.limits.memory_bytes = Some(1 << 30);
    let ran = run_plain(&rt, spec).await;
    let out = ran.stdout();
    let line = out.iter().find(|l| l.starts_with("started")).unwrap_or_else(|| panic!("{out:?}"));
    let count: i64 = line["started ".len()..].trim().parse().unwrap_or_else(|_| panic!("{out:?}"));
    assert!(count < limit, "{count} sleepers started, the limit of {limit} processes did not hold");
    assert!(count > limit / 2, "the bomb did run ({count} processes)");
}
