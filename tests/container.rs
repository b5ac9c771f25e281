//! weir's own container image and compose file, as a user deploys them: `scripts/weir-image.sh`
//! builds the image (from this build's binaries, under a tag of this test's own), and
//! `docker-compose up` starts `deploy/compose.yaml` as it is: one engine, two workers with
//! process steps, the data folder in a volume, the token file as a secret, the engine healthy
//! before the workers start. The host's `weir` reaches the engine through the published port
//! with a client config file (a profile naming the server and the token file), sees both workers
//! registered (`weir workers`), submits a two-step pipeline and watches a run of it succeed.
//! `down -v` runs whatever happens (a drop guard), with a project name unique to the test.
//!
//! Needs docker, docker-compose (or the `docker compose` plugin) and a static busybox: with `CI`
//! set a missing one fails the test; otherwise it says loudly that it skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"name: compose-hello
steps:
  greet:
    run: echo "hello from $(hostname)" > "$WEIR_OUTPUTS/greeting.txt"
    outputs: [greeting.txt]
  read:
    needs: [greet]
    run: cat "$WEIR_INPUTS/greet/greeting.txt"
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn said(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `docker-compose` when installed, else `docker compose` (the plugin); `None` when neither runs.
fn compose_command() -> Option<Vec<String>> {
    for candidate in [vec!["docker-compose"], vec!["docker", "compose"]] {
        let ok =
            Command::new(candidate[0]).args(&candidate[1..]).arg("version").output().is_ok_and(|o| o.status.success());
        if ok {
            return Some(candidate.into_iter().map(String::from).collect());
        }
    }
    None
}

/// The deployment: `down -v` and the test's image tag removed when dropped.
struct Deployment {
    compose: Vec<String>,
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    image: String,
}

impl Deployment {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["--project-name", &self.project, "--file"])
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run docker-compose")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("compose logs:\n{}", said(&self.run(&["logs", "--no-color"])));
        }
        let down = self.run(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        if !down.status.success() {
            eprintln!("docker-compose down failed: {}", said(&down));
        }
        let _ = Command::new("docker").args(["image", "rm", &self.image]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The host's `weir` with a clean environment and the test's config file and profile.
fn weir(weir: &Path, home: &Path, args: &[&str]) -> Output {
    let config = home.join("config.toml");
    let mut cmd = Command::new(weir);
    cmd.args(args).args(["--config", &config.display().to_string(), "--profile", "compose"]);
    cmd.env("NO_COLOR", "1").env("HOME", home).env_remove("XDG_CONFIG_HOME");
    for var in ["WEIR_SERVER", "WEIR_TOKEN", "WEIR_TOKEN_FILE", "WEIR_PROFILE", "WEIR_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run weir")
}

#[test]
fn the_compose_file_runs_an_engine_and_two_workers_from_the_local_image() {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    let compose = compose_command();
    let missing = match (&docker, &compose) {
        (Ok(out), Some(_)) if out.status.success() => None,
        (Ok(out), _) if out.status.success() => Some("neither docker-compose nor `docker compose`".to_string()),
        (Ok(out), _) => Some(format!("no Docker engine answers: {}", said(out))),
        (Err(e), _) => Some(format!("no docker command: {e}")),
    };
    if let Some(why) = missing {
        assert!(std::env::var_os("CI").is_none(), "CI needs Docker and docker-compose for the compose test: {why}");
        eprintln!("\n!!! SKIPPED the compose test: {why}\n");
        return;
    }
    let compose = compose.expect("checked above");
    let root = weir_tests::root();
    let (weir_bin, worker_bin) = weir_tests::binaries();
    let unique = format!("{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_millis());
    let tag = format!("weir-test/weir:{unique}");
    let built = Command::new("bash")
        .arg(root.join("scripts/weir-image.sh"))
        .args(["--tag", &tag])
        .arg(&weir_bin)
        .arg(&worker_bin)
        .output()
        .expect("run scripts/weir-image.sh");
    assert!(built.status.success(), "scripts/weir-image.sh failed: {}", said(&built));
    assert_eq!(text(&built.stdout).trim(), tag);

    let home = tempfile::tempdir().unwrap();
    let tokens = home.path().join("tokens");
    std::fs::write(&tokens, format!("client={}\nworker={}\n", "c".repeat(40), "w".repeat(40))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[profiles.compose]\nserver = \"http://127.0.0.1:{port}\"\ntoken_file = \"tokens\"\n"),
    )
    .unwrap();
    let deployment = Deployment {
        compose,
        project: format!("weirtest{}", unique.replace('-', "x")),
        file: root.join("deploy/compose.yaml"),
        env: vec![
            ("WEIR_IMAGE".into(), tag.clone()),
            ("WEIR_TOKENS".into(), tokens.display().to_string()),
            ("WEIR_PORT".into(), port.to_string()),
        ],
        image: tag,
    };
    // The workers wait for the engine's health check, so `up` returns once the engine answers.
    let up = deployment.run(&["up", "--detach"]);
    assert!(up.status.success(), "docker-compose up failed: {}", said(&up));

    // Both workers register; the deadline only bounds a failure.
    let start = Instant::now();
    let listed = loop {
        let out = weir(&weir_bin, home.path(), &["workers"]);
        let shown = text(&out.stdout);
        if out.status.success() && shown.contains("worker-1-") && shown.contains("worker-2-") {
            break shown;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the two workers never registered: {}", said(&out));
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(listed.contains("process"), "{listed}");

    let folder = home.path().join("compose-hello");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), PIPELINE).unwrap();
    let submitted = weir(&weir_bin, home.path(), &["submit", &folder.display().to_string()]);
    assert!(submitted.status.success(), "{}", said(&submitted));
    let run = weir(&weir_bin, home.path(), &["start", "compose-hello", "--watch"]);
    let shown = said(&run);
    assert_eq!(run.status.code(), Some(0), "{shown}");
    assert!(shown.contains("succeeded"), "{shown}");
    let id = text(&run.stdout).lines().next().unwrap_or_default().trim().to_string();
    let logs = weir(&weir_bin, home.path(), &["logs", &id, "read"]);
    assert!(text(&logs.stdout).contains("hello from "), "{}", said(&logs));
    let runs = weir(&weir_bin, home.path(), &["runs"]);
    assert!(text(&runs.stdout).contains(&id) && text(&runs.stdout).contains("succeeded"), "{}", said(&runs));
}
