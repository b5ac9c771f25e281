//! The architecture's invariants, checked from `cargo tree` and the sources so that a change
//! which breaks one fails here instead of being found by a reader months later
//! (ARCHITECTURE.md, "Invariants"):
//! - the pure core (`weir-core`) links no async runtime, RPC, store, Docker or CLI crate, and its
//!   sources never touch the file system, read the clock, await or name a proto type;
//! - the data plane (`weir-data`) links nothing of the engine, the core or the wire;
//! - the worker never links the engine, the core or their heavy parts (sled, the YAML parser,
//!   petgraph, cron, time zones); the engine never links the worker;
//! - proto types are named only in the adapters: the engine's `api/`, the worker's agent and its
//!   `wire.rs`, the CLI's client, and tests;
//! - the CLI opens no store but in `weir store` (the repair tools): it asks an engine.
//!
//! Each check names the offending crate, file and line, and says where the code belongs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// The crates `package` links (normal dependencies, features as cargo resolves them when that
/// package alone is built; build scripts' dependencies are not linked), by name.
fn linked(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn refuse(package: &str, forbidden: &[&str], why: &str) {
    let linked = linked(package);
    assert!(linked.iter().any(|n| n == package), "cargo tree -p {package} listed no {package}: {linked:?}");
    let found: Vec<&str> = forbidden.iter().copied().filter(|f| linked.iter().any(|n| n == f)).collect();
    assert!(
        found.is_empty(),
        "{package} links {found:?} ({why}); `cargo tree -p {package} -i {}` shows through which dependency",
        found[0]
    );
}

#[test]
fn the_core_links_no_runtime_rpc_store_docker_or_cli_crate() {
    refuse(
        "weir-core",
        &[
            "tokio",
            "tonic",
            "prost",
            "prost-types",
            "hyper",
            "mio",
            "sled",
            "bollard",
            "clap",
            "weir-proto",
            "weir-engine",
            "weir-worker",
            "tracing-subscriber",
        ],
        "the core is pure: callers do the I/O and the effects it decides",
    );
}

#[test]
fn the_data_plane_links_nothing_of_the_engine_core_or_wire() {
    refuse(
        "weir-data",
        &[
            "weir-core",
            "weir-engine",
            "weir-proto",
            "weir-worker",
            "tokio",
            "tonic",
            "prost",
            "sled",
            "bollard",
            "clap",
            "saphyr-parser",
            "petgraph",
            "croner",
            "chrono-tz",
        ],
        "engine and worker share it, so it must stay small and know no pipelines, runs or RPC",
    );
}

#[test]
fn the_worker_never_links_the_engine_or_its_heavy_parts() {
    refuse(
        "weir-worker",
        &["weir-engine", "weir-core", "weir-cli", "sled", "saphyr-parser", "petgraph", "croner", "chrono-tz"],
        "the worker depends on weir-proto and weir-data only",
    );
}

#[test]
fn the_engine_never_links_the_worker_or_the_cli() {
    refuse("weir-engine", &["weir-worker", "weir-cli", "bollard", "clap"], "the engine does not run steps");
}

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The lines of `file` (1-based numbers) outside comments and outside its unit tests (the
/// `#[cfg(test)]` module at its end) that contain any of `needles`.
fn offending(file: &Path, needles: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let rel = file.strip_prefix(root()).unwrap_or(file).display().to_string();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| {
            let code = l.trim_start();
            !code.starts_with("//") && needles.iter().any(|n| code.contains(n))
        })
        .map(|(i, l)| format!("{rel}:{}: {}", i + 1, l.trim()))
        .collect()
}

#[test]
fn core_sources_do_no_io_read_no_clock_and_name_no_proto_type() {
    let needles = [
        "std::fs",
        "File::open",
        "SystemTime::now",
        "Instant::now",
        ".await",
        "async fn",
        "weir_proto",
        "v1::",
        "std::process",
        "std::net",
        "std::env::var",
        "weir_data::artifact",
        "weir_data::bundle",
    ];
    let root = root();
    let found: Vec<String> = sources(&root.join("core/src")).iter().flat_map(|f| offending(f, &needles)).collect();
    assert!(
        found.is_empty(),
        "the core must stay pure (take text, `now` and ids as arguments; return values and \
         effects; read files and the clock in the engine or the CLI):\n{}",
        found.join("\n")
    );
}

/// Where a proto type may be named: the adapters between the wire and the domain.
const ADAPTERS: &[&str] = &[
    "proto/",
    "engine/src/api/",
    "worker/src/agent/",
    "worker/src/wire.rs",
    "worker/src/main.rs",
    "cli/src/client/",
    "cli/src/display",
    "cli/src/serve.rs",
    "cli/src/local.rs",
    "cli/src/main.rs",
];

#[test]
fn proto_types_are_named_only_in_the_adapters() {
    let root = root();
    let mut found = Vec::new();
    for dir in ["core/src", "data/src", "engine/src", "worker/src", "cli/src"] {
        for f in sources(&root.join(dir)) {
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            if ADAPTERS.iter().any(|a| rel.starts_with(a)) {
                continue;
            }
            found.extend(offending(&f, &["weir_proto::v1", "v1::", "use weir_proto"]));
        }
    }
    assert!(
        found.is_empty(),
        "a proto type is named outside the adapters ({}): convert at the edge and pass domain \
         values inward:\n{}",
        ADAPTERS.join(", "),
        found.join("\n")
    );
}

#[test]
fn the_cli_asks_an_engine_and_opens_no_store_but_in_its_repair_tools() {
    let root = root();
    let needles = ["Store::open", "predict_cache", "weir_engine::store::Store", "strip_prefix(\"waiting: \")"];
    let found: Vec<String> = sources(&root.join("cli/src"))
        .iter()
        .filter(|f| !f.ends_with("cli/src/store.rs"))
        .flat_map(|f| offending(f, &needles))
        .collect();
    assert!(
        found.is_empty(),
        "the CLI asks an engine through the API (start one on `weir run`'s data folder, as \
         `--local` and `weir plan` do) and reads the answer's fields; only `weir store` \
         (cli/src/store.rs, run with no engine) opens a store:\n{}",
        found.join("\n")
    );
}

/// Engine and worker files that may read the system clock, and why.
const CLOCK_READERS: &[(&str, &str)] = &[
    ("engine/src/clock.rs", "the engine's one clock"),
    ("worker/src/clock.rs", "the worker's one clock"),
    ("engine/src/store/handle.rs", "waits for sled's file lock, held by a real thread, in real time"),
    ("engine/src/store/testkit.rs", "test support: the same real-time wait for the file lock"),
    ("engine/src/server/testkit.rs", "test support: a real-time bound on waiting for a real process"),
];

#[test]
fn engine_and_worker_read_the_clock_only_through_their_clock() {
    let root = root();
    let needles = ["SystemTime::now", "Utc::now", "Local::now", "std::time::Instant", "time::{Duration, Instant}"];
    let mut found = Vec::new();
    for dir in ["engine/src", "worker/src"] {
        for f in sources(&root.join(dir)) {
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            if CLOCK_READERS.iter().any(|(r, _)| *r == rel) {
                continue;
            }
            found.extend(offending(&f, &needles));
        }
    }
    assert!(
        found.is_empty(),
        "read time from the engine's `Clock` (engine/src/clock.rs) or the worker's clock \
         (worker/src/clock.rs), so tests can pause and move it:\n{}",
        found.join("\n")
    );
}

/// A test function that returns at once unless a variable is set is a helper process another
/// test starts: it must be `#[ignore]`d, or every plain run counts it as a passing test.
#[test]
fn helper_processes_are_ignored_not_counted_as_passing_tests() {
    let root = root();
    let mut found = Vec::new();
    for dir in ["core/tests", "engine/tests", "worker/tests", "cli/tests", "tests"] {
        for f in sources(&root.join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if !(l.trim_start().starts_with("async fn ") || l.trim_start().starts_with("fn ")) {
                    continue;
                }
                let attrs: Vec<&str> =
                    lines[..i].iter().rev().take_while(|a| a.trim_start().starts_with("#[")).copied().collect();
                if !attrs.iter().any(|a| a.contains("test")) || attrs.iter().any(|a| a.contains("#[ignore")) {
                    continue;
                }
                let body = lines[i + 1..(i + 4).min(lines.len())].join("\n");
                if body.contains("env::var_os(") && body.contains("return") {
                    let rel = f.strip_prefix(&root).unwrap().display().to_string();
                    found.push(format!("{rel}:{}: {}", i + 1, l.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "helper processes counted as passing tests (add #[ignore = \"...\"]):\n{}",
        found.join("\n")
    );
}
