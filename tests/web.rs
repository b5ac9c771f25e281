//! The web UI over a real server and worker: the runs list (filters, paging, live states)
//! and sessions (login, CSRF, redirects). Pages of other areas have their own files.

use std::time::Duration;

use weir_engine::server;
use weir_tests::http::Http;
use weir_tests::{Cluster, test_config};

const MINUTE: Duration = Duration::from_secs(60);

const TWO: &str = r#"
name: webby
steps:
  first:
    run: echo one
  second:
    needs: [first]
    run: echo two
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_page_lists_filters_and_pages_runs() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(TWO, None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = c.start_run(&version, &[]).await;
        c.wait(&id, MINUTE).await;
        ids.push(id);
    }
    let mut web = Http::new(&c.url());
    let page = web.get("/runs").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for id in &ids {
        assert!(page.body.contains(&format!("data-run=\"{id}\"")), "run {id} listed");
    }
    assert!(page.body.contains("✓") && page.body.contains(">succeeded<"), "state by icon and text");
    assert!(page.body.contains(">2/2<"), "steps done");

    let failed = web.get("/runs?state=failed").await;
    assert!(!failed.body.contains("data-run="), "no failed runs");
    let cron = web.get("/runs?trigger=cron").await;
    assert!(!cron.body.contains("data-run="), "no cron runs");
    let manual = web.get("/runs?trigger=manual&pipeline=webby").await;
    assert_eq!(manual.body.matches("data-run=").count(), 3);
    let bad = web.get("/runs?trigger=sometimes").await;
    assert_eq!(bad.status, 400, "an unknown trigger is the caller's mistake");
    assert!(bad.body.contains("is not one of manual, cron, backfill, retry"), "{}", bad.body);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_stream_tells_state_changes_as_they_happen() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(TWO, None).await;
    let mut web = Http::new(&c.url());
    let client = c.client.clone();
    let started = async move {
        let mut client = client;
        let req = weir_proto::v1::StartRunRequest {
            pipeline: Some(weir_proto::v1::start_run_request::Pipeline::Version(version)),
            ..Default::default()
        };
        client.start_run(req).await.expect("started");
    };
    let events = web
        .events("/events", MINUTE, |ev, data| ev == "run" && data.contains("\"state\":\"succeeded\""), started)
        .await;
    let states: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "run")
        .map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).unwrap()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states.last().map(String::as_str), Some("succeeded"), "{events:?}");
    assert!(events.iter().any(|(_, d)| d.contains("\"done\":2,") && d.contains("\"total\":2")), "{events:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_ui_asks_to_log_in_and_checks_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("engine"));
    let token = "c".repeat(40);
    config.client_token = Some(token.clone());
    config.worker_token = Some("w".repeat(40));
    let s = server::start(config).await.unwrap();
    let mut web = Http::new(&s.url());

    let page = web.get("/runs?state=failed").await;
    assert_eq!(page.status, 303, "a page without a session redirects to log in");
    assert_eq!(page.header("location"), Some("/login?next=%2Fruns%3Fstate%3Dfailed"));
    let script = web.request("GET", "/events", &[("accept", "text/event-stream")], None).await;
    assert_eq!(script.status, 401, "a stream without a session is refused");

    let wrong = web.login("not-the-token").await;
    assert_eq!(wrong.header("location").unwrap_or_default().split('&').next(), Some("/login?failed=true"));
    assert!(web.cookie.is_none());

    let ok = web.login(&token).await;
    assert_eq!((ok.status, ok.header("location")), (303, Some("/runs")));
    let set = ok.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains(&token) && !ok.header("location").unwrap().contains(&token), "the token never comes back");
    let page = web.get("/runs").await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf().expect("a CSRF token in the page");

    // A form without its CSRF token, or from another site, is refused; with it, it passes.
    let forged = web.post("/logout", &[]).await;
    assert_eq!(forged.status, 403);
    let cross = web
        .request(
            "POST",
            "/logout",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", "http://evil.example")],
            Some(format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(cross.status, 403);
    let out = web.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(web.cookie.is_none(), "logging out clears the cookie");
    assert_eq!(web.get("/runs").await.status, 303);

    // A forged cookie is no session.
    web.cookie = Some("weir_session=99999999999999.00".into());
    assert_eq!(web.get("/runs").await.status, 303);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_the_web_share_one_port_and_unknown_paths_say_so() {
    let c = Cluster::start(0, 1).await;
    let mut web = Http::new(&c.url());
    let missing = web.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("No such page"));
    let css = web.get("/static/style.css").await;
    assert_eq!((css.status, css.header("content-type")), (200, Some("text/css; charset=utf-8")));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_listed_with_what_they_hold_in_the_api_the_page_and_the_cli() {
    let mut c = Cluster::start(0, 1).await;
    // One step slot and one attempt held ahead of it, held until the slot frees: of two long
    // steps, one runs and the other waits leased.
    c.add_worker_with(1, |w| {
        w.labels.insert("zone".into(), "north".into());
        w.ahead = 1;
        w.hold = None;
    });
    let marker = c.dir.path().join("started");
    let yaml = format!(
        "name: holder\nsteps:\n  hold:\n    run: touch {m}; sleep 30\n  wait:\n    run: touch {m}; sleep 30\n",
        m = marker.display()
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    let deadline = std::time::Instant::now() + MINUTE;
    // Both leased, and the one that started has said so (its Started report follows its start).
    let w = loop {
        let listed = c.client.list_workers(weir_proto::v1::ListWorkersRequest {}).await.unwrap().into_inner();
        assert_eq!(listed.workers.len(), 1);
        let w = listed.workers[0].clone();
        if marker.exists() && w.attempts.len() == 2 && w.attempts.iter().any(|a| a.running) {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "one step did not start and the other was not held: {w:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(w.name.starts_with("w0"), "{w:?}");
    assert_eq!(w.labels.get("zone").map(String::as_str), Some("north"));
    assert_eq!(w.runtimes, ["process"]);
    assert_eq!((w.capacity, w.ahead), (2, 1), "one slot and one held ahead: {w:?}");
    let running: Vec<&str> = w.attempts.iter().filter(|a| a.running).map(|a| a.step.as_str()).collect();
    let leased: Vec<&str> = w.attempts.iter().filter(|a| !a.running).map(|a| a.step.as_str()).collect();
    assert_eq!((running.len(), leased.len()), (1, 1), "{w:?}");
    assert!(w.attempts.iter().all(|a| a.run_id == run), "{w:?}");
    assert!(w.last_heard.is_some() && w.total.is_some());

    let mut web = Http::new(&c.url());
    let page = web.get("/workers").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&w.name) && page.body.contains("zone=north"), "{}", page.body);
    assert!(page.body.contains(&format!("href=\"/runs/{run}/steps/{}\"", running[0])), "{}", page.body);
    assert!(page.body.contains("runs at most 1 at once, holds 1 more ahead"), "{}", page.body);
    assert!(page.body.contains(" running") && page.body.contains(" leased"), "{}", page.body);

    let (weir, _) = weir_tests::binaries();
    let out = std::process::Command::new(weir).args(["workers", "--server", &c.url()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("NAME") && text.contains(&w.name) && text.contains("zone=north"), "{text}");
    assert!(text.contains(&format!("{run}/{}#1 ", running[0])), "{text}");
    assert!(text.contains(&format!("{run}/{}#1(leased)", leased[0])), "{text}");

    c.client.cancel_run(weir_proto::v1::CancelRunRequest { run_id: run.clone(), reason: "done".into() }).await.unwrap();
    c.wait(&run, MINUTE).await;
    c.stop().await;
}

/// A free loopback port (bound and released: another process may take it first, rarely).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `child` writes a line containing `what` on stderr; the lines so far.
fn wait_line(child: &mut std::process::Child, what: &str) -> String {
    use std::io::BufRead;
    let err = child.stderr.take().expect("piped stderr");
    let mut reader = std::io::BufReader::new(err);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the process ended before saying {what:?}: {seen}");
        }
        seen.push_str(&line);
        if line.contains(what) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_ui_shows_weir_runs_data_folder_and_serves_loopback_only() {
    let (weir, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, TWO).unwrap();
    let ran = std::process::Command::new(&weir)
        .args(["run", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));

    let port = free_port();
    let mut ui = std::process::Command::new(&weir)
        .args(["ui", "--data-dir", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = wait_line(&mut ui, "weir UI on");
    assert!(said.contains(&format!("http://127.0.0.1:{port}/runs")), "{said}");
    let mut web = Http::new(&format!("http://127.0.0.1:{port}"));
    let page = web.get("/runs").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.matches("data-run=\"webby-").count(), 1, "the run `weir run` made is listed");
    // Ctrl-C stops it cleanly.
    unsafe { libc::kill(ui.id() as i32, libc::SIGINT) };
    let status = ui.wait().unwrap();
    assert!(status.success(), "{status}");

    let off = std::process::Command::new(&weir)
        .args(["ui", "--data-dir", data.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&off.stderr).contains("loopback only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_run_with_ui_serves_the_run_page_while_it_runs_and_after() {
    let (weir, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, TWO).unwrap();
    let port = free_port();
    let mut run = std::process::Command::new(&weir)
        .args(["run", file.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg(format!("--ui=127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let said = wait_line(&mut run, "the web UI stays up");
    let link = said.lines().find_map(|l| l.strip_prefix("watch it at ")).expect("a link to the run").to_string();
    let path = link.trim_start_matches(&format!("http://127.0.0.1:{port}")).to_string();
    assert!(path.starts_with("/runs/webby-"), "{said}");
    let mut web = Http::new(&format!("http://127.0.0.1:{port}"));
    let page = web.get("/runs").await;
    assert!(page.body.contains(">succeeded<"), "{}", page.body);
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = run.wait().unwrap();
    assert!(status.success(), "the run's exit status is kept: {status}");
}
