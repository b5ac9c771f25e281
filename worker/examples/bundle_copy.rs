//! What a process step's private bundle copy ([`weir_worker::checkout`]) costs per step: a step
//! (`sh -c true` through [`ProcessRuntime`]) run in the cached bundle folder itself, as before
//! the copy existed (the baseline), against the same step run in a fresh checkout removed
//! afterwards (the agent's cost when the folder's last copy was changed or was of another
//! bundle), and in a checkout the previous step left untouched in the same folder (the agent's
//! usual case: checked by stamps and reused). All in the same process and in alternating rounds,
//! for the example pipeline's folder and for a large synthetic bundle; plus the one-off
//! verification of a bundle on its first use in a worker process.
//!
//! `cargo run -p weir-worker --example bundle_copy -- [rounds, default 5]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weir_data::bundle::{Bundle, BundleCache, BundleLimits};
use weir_worker::checkout::Checkouts;
use weir_worker::runtime::{Action, CancellationToken, Outcome, ProcessRuntime, Runtime, StepSpec};

/// The large bundle: 1,900 files of 4 KiB and 100 of 256 KiB (33 MiB in 2,000 files), in 20
/// folders: half the default size cap and a fifth of the file cap.
fn large(dir: &Path) {
    for i in 0..2000u32 {
        let folder = dir.join(format!("pkg{:02}", i % 20));
        std::fs::create_dir_all(&folder).unwrap();
        let len = if i % 20 == 0 { 256 << 10 } else { 4 << 10 };
        let bytes: Vec<u8> = (0..len).map(|j| ((i as usize * 31 + j) % 251) as u8).collect();
        std::fs::write(folder.join(format!("f{i}.py")), bytes).unwrap();
    }
}

/// Extracts the bundle of `src` into a cache under `root`; returns its digest and folder.
fn cached(src: &Path, root: &Path) -> (String, PathBuf, Bundle) {
    let bundle = Bundle::build(src, BundleLimits::default()).unwrap();
    let cache = BundleCache::open(root.join("bundles")).unwrap();
    let dir =
        cache.get_or_fetch(bundle.digest(), |w| bundle.write_to(w).map(drop).map_err(std::io::Error::other)).unwrap();
    (bundle.digest().to_string(), dir, bundle)
}

async fn step(rt: &ProcessRuntime, workdir: &Path) {
    let d = workdir.to_path_buf();
    let mut spec = StepSpec::new(Action::Script("true".into()), d.clone(), d.clone(), d);
    spec.grace = Duration::from_secs(1);
    let (tx, _rx) = mpsc::channel(8);
    assert_eq!(rt.run(spec, tx, CancellationToken::new()).await.unwrap(), Outcome::Exited(0));
}

async fn bench(name: &str, src: &Path, runs: u32, rounds: u32) {
    let root = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (digest, dir, bundle) = cached(src, root.path());
    let checkouts = Checkouts::new();
    let start = Instant::now();
    checkouts.verify(&digest, &dir).unwrap();
    let first = start.elapsed();
    let rt = ProcessRuntime::new();
    let attempt = root.path().join("attempt");
    std::fs::create_dir(&attempt).unwrap();
    let copy = attempt.join("src");
    println!(
        "{name}: {} files, {:.1} MiB; first use in a worker process (verify and snapshot): {:.1} ms",
        bundle.files().len(),
        bundle.size() as f64 / (1 << 20) as f64,
        first.as_secs_f64() * 1e3
    );
    for _ in 0..3 {
        step(&rt, &dir).await;
        checkouts.checkout(&digest, &dir, &copy).unwrap();
        step(&rt, &copy).await;
        std::fs::remove_dir_all(&copy).unwrap();
    }
    for round in 1..=rounds {
        let start = Instant::now();
        for _ in 0..runs {
            step(&rt, &dir).await;
        }
        let baseline = start.elapsed() / runs;
        let (mut setup, start) = (Duration::ZERO, Instant::now());
        for _ in 0..runs {
            let t = Instant::now();
            checkouts.checkout(&digest, &dir, &copy).unwrap();
            setup += t.elapsed();
            step(&rt, &copy).await;
            let t = Instant::now();
            std::fs::remove_dir_all(&copy).unwrap();
            setup += t.elapsed();
        }
        let with_copy = start.elapsed() / runs;
        let setup = setup / runs;
        checkouts.checkout(&digest, &dir, &copy).unwrap();
        let start = Instant::now();
        for _ in 0..runs {
            checkouts.checkout(&digest, &dir, &copy).unwrap();
            step(&rt, &copy).await;
        }
        let reused = start.elapsed() / runs;
        std::fs::remove_dir_all(&copy).unwrap();
        // For scale: the same tree through `cp -r` and `rm -rf`, once.
        let start = Instant::now();
        assert!(std::process::Command::new("cp").arg("-r").arg(&dir).arg(&copy).status().unwrap().success());
        assert!(std::process::Command::new("rm").arg("-rf").arg(&copy).status().unwrap().success());
        let cp = start.elapsed();
        println!(
            "  round {round}: in the cache {:>8.3} ms | fresh copy {:>9.3} ms (copy + removal {:>9.3} ms; cp -r + rm -rf {:>9.3} ms), ratio {:>7.2} | reused copy {:>8.3} ms, ratio {:.2}",
            baseline.as_secs_f64() * 1e3,
            with_copy.as_secs_f64() * 1e3,
            setup.as_secs_f64() * 1e3,
            cp.as_secs_f64() * 1e3,
            with_copy.as_secs_f64() / baseline.as_secs_f64(),
            reused.as_secs_f64() * 1e3,
            reused.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: u32 = std::env::args().nth(1).map_or(5, |a| a.parse().expect("rounds, a number"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/ml-retrain");
    bench("example (pipelines/ml-retrain)", &example, 100, rounds).await;
    let big = tempfile::tempdir().unwrap();
    large(big.path());
    bench("large (synthetic)", big.path(), 10, rounds).await;
}
