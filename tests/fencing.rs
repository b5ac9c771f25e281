//! Self-fencing, end to end: a real engine and a real worker agent whose every byte to and from
//! the engine goes through a loopback TCP proxy that the test can freeze (a network partition:
//! the connection stays open, nothing gets through, and what was sent arrives once it heals).
//! A worker cut off while its step runs must kill the step before the engine gives the attempt
//! to anyone else, never let it finish its side effects, and work again once the cut heals.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weir_proto::v1::{RunState, StepState};
use weir_tests::{Cluster, alive, summary};

/// A TCP proxy to `upstream` that stops moving bytes while cut.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, _) = watch::channel(false);
        let rx = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, rx.clone()), pump(ur, dw, rx));
                });
            }
        });
        Proxy { addr, cut }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Copies `from` to `to`, reading and writing nothing while the cut lasts.
async fn pump(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, mut cut: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the cut began are held back until it heals.
        if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Polls `ready` every 10 ms until it holds; panics after `limit` (a generous bound).
async fn until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid(dir: &Path, attempt: u32) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("pid-{attempt}"))).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_engine_stops_its_step_before_the_engine_moves_it() {
    // lease timeout 1.5 s, heartbeats every 200 ms (weir_tests::test_config): the worker fences
    // after 850 ms of silence with a 500 ms kill grace.
    let mut c = Cluster::start(0, 1).await;
    let engine: std::net::SocketAddr = c.url().trim_start_matches("http://").parse().expect("engine address");
    let proxy = Arc::new(Proxy::start(engine).await);
    let url = proxy.url();
    c.add_worker_with(1, move |config| config.engine = url);

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display();
    // Attempt 1 sleeps long, later ones finish at once; each leaves a canary if it gets to its end.
    let yaml = format!(
        "name: fenced
steps:
  work:
    run: |
      echo $$ > {d}/pid-$WEIR_ATTEMPT
      if [ \"$WEIR_ATTEMPT\" = 1 ]; then sleep 6; fi
      touch {d}/canary-$WEIR_ATTEMPT
"
    );
    let version = c.submit(&yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    until("attempt 1's step runs", Duration::from_secs(30), || pid(dir.path(), 1).is_some()).await;
    let step = pid(dir.path(), 1).expect("pid");
    c.wait_for(&run, Duration::from_secs(30), |g| summary(g, "work").0 == StepState::Running).await;
    assert!(alive(step), "the step runs before the cut");

    proxy.set_cut(true);
    // Until the engine has given up on attempt 1 (no worker can take attempt 2 meanwhile: the
    // only one is cut off), the step must be seen gone no later than the re-queue.
    let start = Instant::now();
    let mut gone_at = None;
    loop {
        let gone = !alive(step);
        if gone && gone_at.is_none() {
            gone_at = Some(start.elapsed());
        }
        let got = c.get(&run).await;
        let (state, attempt, _) = summary(&got, "work");
        if attempt >= 2 || state != StepState::Running {
            assert!(gone, "the engine re-queued the step ({state:?}, attempt {attempt}) while attempt 1 still runs");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the engine never lost the cut-off worker");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("step gone {:?} after the cut; engine re-queued after {:?}", gone_at, start.elapsed());
    // Its whole process group went with it: nothing is left to write the canary.
    assert!(!dir.path().join("canary-1").exists(), "attempt 1 reached its side effect");

    proxy.set_cut(false);
    let got = c.wait(&run, Duration::from_secs(60)).await;
    assert_eq!(got.run.as_ref().expect("run").state(), RunState::Succeeded, "{:#?}", got.steps);
    let (state, attempt, _) = summary(&got, "work");
    assert_eq!((state, attempt), (StepState::Succeeded, 2), "the healed worker ran attempt 2");
    assert!(dir.path().join("canary-2").exists());
    assert!(!dir.path().join("canary-1").exists(), "attempt 1 never reaches its side effect");
    c.stop().await;
}
