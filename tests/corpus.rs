//! The bad-pipeline corpus: every `tests/corpus/bad/NAME.yaml` must be rejected, and the
//! diagnostics it gets, rendered without colour against the path `tests/corpus/bad/NAME.yaml`,
//! must equal the snapshot `NAME.stderr` beside it. A file may lower the limits with a leading
//! comment `# limits: max_matrix=4 max_steps=10 max_file_bytes=2000` (also `max_depth`,
//! `max_yaml_nodes`, `max_edges`), so limit errors need only small files. A file named
//! `params-*.yaml` is instead a valid pipeline with a leading comment `# params: rows=abc x=1`:
//! it must load, and resolving those overrides must fail; the snapshot holds that failure.
//! `WEIR_BLESS=1 cargo test -p weir-tests --test corpus` (re)writes the snapshots; without it
//! a mismatch, a missing snapshot or a snapshot without its `.yaml` fails the test and nothing
//! is written, so CI can only check. Every file is checked before the test reports, so one run
//! lists every problem.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use weir_core::diag::Renderer;
use weir_core::plan;
use weir_core::spec::{self, Limits};

/// The corpus must not shrink below this by accident.
const MIN_FILES: usize = 40;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join("bad")
}

fn bless() -> bool {
    std::env::var_os("WEIR_BLESS").is_some_and(|v| v == "1")
}

/// The `# key: ...` directive among the file's leading comment lines, if any.
fn directive<'a>(source: &'a str, key: &str) -> Option<&'a str> {
    source
        .lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix('#').map(str::trim_start).and_then(|l| l.strip_prefix(key)))
        .and_then(|rest| rest.strip_prefix(':'))
}

/// `name=value` pairs separated by spaces.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split_whitespace()
        .map(|p| {
            p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(format!("`{p}` is not NAME=VALUE"))
        })
        .collect()
}

fn limits(source: &str) -> Result<Limits, String> {
    let mut limits = Limits::default();
    let Some(text) = directive(source, "limits") else { return Ok(limits) };
    for (key, value) in pairs(text)? {
        let n: usize = value.parse().map_err(|_| format!("limit `{key}={value}` is not a number"))?;
        match key.as_str() {
            "max_file_bytes" => limits.max_file_bytes = n,
            "max_depth" => limits.max_depth = n,
            "max_yaml_nodes" => limits.max_yaml_nodes = n as u64,
            "max_matrix" => limits.max_matrix = n,
            "max_steps" => limits.max_steps = n,
            "max_edges" => limits.max_edges = n,
            other => return Err(format!("unknown limit `{other}` in the `# limits:` comment")),
        }
    }
    Ok(limits)
}

/// The rendered diagnostics of one corpus file, or why the file does not belong in the corpus.
fn render(name: &str, source: &str) -> Result<String, String> {
    let path = format!("tests/corpus/bad/{name}");
    let renderer = Renderer { path: &path, source, color: false };
    let limits = limits(source)?;
    let loaded = spec::load(source, &limits);
    if !name.starts_with("params-") {
        return match loaded {
            Ok(_) => Err("the file loads without error, but the bad corpus holds only invalid pipelines".into()),
            Err(diags) => Ok(renderer.render_all(&diags)),
        };
    }
    let overrides = pairs(directive(source, "params").ok_or("a `params-` file needs a `# params: a=1 b=2` comment")?)?;
    let pipeline = loaded.map_err(|diags| {
        format!("a `params-` file must be a valid pipeline, but it does not load:\n{}", renderer.render_all(&diags))
    })?;
    match plan::resolve_params(&pipeline, &overrides) {
        Ok(_) => Err("the `# params:` overrides resolve without error; they must fail".into()),
        Err(diags) => Ok(renderer.render_all_as(&diags, &format!("parameters for `{}` are invalid", renderer.path))),
    }
}

/// A line diff of `expected` and `actual` (longest common subsequence): ` ` common, `-` only
/// in the snapshot, `+` only in the actual output.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "   {}", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  -{}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  +{}", b[j]);
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("  (the two differ in the final newline)\n");
    }
    out
}

#[test]
fn bad_pipelines_match_their_snapshots() {
    let dir = corpus_dir();
    let mut yaml = BTreeSet::new();
    let mut stderr = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()).map(str::to_string) else { continue };
        if let Some(stem) = file.strip_suffix(".yaml") {
            yaml.insert(stem.to_string());
        } else if let Some(stem) = file.strip_suffix(".stderr") {
            stderr.insert(stem.to_string());
        }
    }
    assert!(yaml.len() >= MIN_FILES, "the corpus has {} files, fewer than {MIN_FILES}", yaml.len());

    let bless = bless();
    let mut failures: Vec<String> = Vec::new();
    for stem in stderr.difference(&yaml) {
        failures.push(format!("tests/corpus/bad/{stem}.stderr has no {stem}.yaml: delete it"));
    }
    for stem in &yaml {
        let name = format!("{stem}.yaml");
        let shown = format!("tests/corpus/bad/{name}");
        let source = match std::fs::read_to_string(dir.join(&name)) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{shown}: cannot read: {e}"));
                continue;
            }
        };
        let actual = match catch_unwind(AssertUnwindSafe(|| render(&name, &source))) {
            Ok(Ok(text)) => text,
            Ok(Err(why)) => {
                failures.push(format!("{shown}: {why}"));
                continue;
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                failures.push(format!("{shown}: loading panicked: {why}"));
                continue;
            }
        };
        let snapshot = dir.join(format!("{stem}.stderr"));
        if bless {
            if std::fs::read_to_string(&snapshot).ok().as_deref() != Some(actual.as_str()) {
                std::fs::write(&snapshot, &actual)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", snapshot.display()));
                eprintln!("blessed tests/corpus/bad/{stem}.stderr");
            }
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{shown}: the diagnostics differ from {stem}.stderr (- snapshot, + actual):\n{}",
                diff(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{shown}: no snapshot {stem}.stderr; the diagnostics are:\n{actual}\
                 (run `WEIR_BLESS=1 cargo test -p weir-tests --test corpus` to write it, then read it)"
            )),
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} corpus files failed; `WEIR_BLESS=1` rewrites the snapshots\n\n{}",
            failures.len(),
            yaml.len(),
            failures.join("\n\n")
        );
    }
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "   a\n  -b\n  +x\n   c\n");
    assert_eq!(diff("a\n", "a"), "   a\n  (the two differ in the final newline)\n");
}

#[test]
fn directives_are_read_from_leading_comments() {
    let source = "# limits: max_matrix=4 max_steps=10\n# params: rows=abc\nname: x\n# limits: max_steps=1\n";
    let l = limits(source).expect("valid limits");
    assert_eq!((l.max_matrix, l.max_steps, l.max_file_bytes), (4, 10, Limits::default().max_file_bytes));
    assert_eq!(pairs(directive(source, "params").expect("params")), Ok(vec![("rows".into(), "abc".into())]));
    assert!(limits("# limits: max_matrx=4\n").is_err());
    assert!(directive("name: x\n# params: a=1\n", "params").is_none());
}
