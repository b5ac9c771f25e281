//! How tracking and lineage show: `weir runs compare` (runs side by side, differing rows
//! marked), `weir metrics` (a metric across runs, a summary and a sparkline), `weir lineage`
//! (the artifact tree), and the outputs block of `weir status`. Pure, like the rest of
//! `display`: everything shown is passed in, colour included.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use weir_proto::v1::{self, GetRunResponse};

use super::{Table, datetime, millis, paint, run_state, short, span};

/// A byte count as people read it: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A metric value: integers without a fraction, others to at most 6 significant digits
/// (`0.41`, `1234.57`, `1.5e-7`).
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..15).contains(&magnitude) {
        let text = format!("{v:.5e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa =
            if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        return format!("{mantissa}e{exponent}");
    }
    let decimals = (5 - magnitude).max(0) as usize;
    let text = format!("{v:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    text.to_string()
}

/// The value of one row in one run; `None` shows as `-`.
type Cells = Vec<Option<String>>;

/// `weir runs compare`: one column per run, a row per field (pipeline, state, duration, each
/// param, each instance's metrics, each instance's output digests), and a `*` before each row
/// whose runs differ (a value missing from some runs counts as a difference). Duration is
/// shown but never marked: it always differs. `color` paints the differing rows.
pub fn compare(runs: &[GetRunResponse], now: u64, color: bool) -> String {
    let views: Vec<&v1::Run> = runs.iter().map(|r| r.run.as_ref().expect("GetRun answers with its run")).collect();
    let mut rows: Vec<(String, Cells, bool)> = Vec::new();
    let all = |f: &dyn Fn(&v1::Run) -> String| views.iter().map(|r| Some(f(r))).collect::<Cells>();
    rows.push(("pipeline".into(), all(&|r| format!("{}@{}", r.pipeline, short(&r.version))), true));
    rows.push(("state".into(), all(&|r| run_state(r.state).to_string()), true));
    rows.push(("duration".into(), all(&|r| span(r.started_at.as_ref(), r.finished_at.as_ref(), now)), false));

    let params: BTreeSet<&String> = views.iter().flat_map(|r| r.params.keys()).collect();
    for p in params {
        rows.push((format!("param {p}"), views.iter().map(|r| r.params.get(p).cloned()).collect(), true));
    }

    // Instances in the order the runs list them (the first run's order, then any new ones).
    let mut instances: Vec<&str> = Vec::new();
    for r in runs {
        for s in &r.steps {
            if !instances.contains(&s.name.as_str()) {
                instances.push(&s.name);
            }
        }
    }
    let steps: Vec<HashMap<&str, &v1::Step>> =
        runs.iter().map(|r| r.steps.iter().map(|s| (s.name.as_str(), s)).collect()).collect();
    for name in &instances {
        let metrics: BTreeSet<&String> =
            steps.iter().filter_map(|m| m.get(name)).flat_map(|s| s.metrics.keys()).collect();
        for metric in metrics {
            let cells = steps.iter().map(|m| m.get(name).and_then(|s| s.metrics.get(metric)).map(|v| number(*v)));
            rows.push((format!("metric {name} {metric}"), cells.collect(), true));
        }
    }
    for name in &instances {
        let mut paths: Vec<&str> = Vec::new();
        for m in &steps {
            for e in m.get(name).and_then(|s| s.outputs.as_ref()).map_or(&[][..], |o| &o.files[..]) {
                if !paths.contains(&e.path.as_str()) {
                    paths.push(&e.path);
                }
            }
        }
        for path in paths {
            let cells = steps.iter().map(|m| {
                let entries = m.get(name).and_then(|s| s.outputs.as_ref()).map_or(&[][..], |o| &o.files[..]);
                entries.iter().find(|e| e.path == path).map(|e| short(&e.digest).to_string())
            });
            rows.push((format!("output {name}/{path}"), cells.collect(), true));
        }
    }

    let mut header = vec!["", "FIELD"];
    header.extend(views.iter().map(|r| r.run_id.as_str()));
    let mut t = Table::new(&header);
    let mut marked = Vec::new();
    for (label, cells, markable) in &rows {
        let first = &cells[0];
        let differs = *markable && cells.iter().any(|c| c != first);
        marked.push(differs);
        let mut row = vec![if differs { "*".to_string() } else { String::new() }, label.clone()];
        row.extend(cells.iter().map(|c| c.clone().unwrap_or_else(|| "-".into())));
        t.push(row);
    }
    let mut out = String::new();
    for (i, line) in t.render().lines().enumerate() {
        let differs = i > 0 && marked[i - 1];
        let _ = writeln!(out, "{}", if differs { paint(line, "33", color) } else { line.to_string() });
    }
    let n = marked.iter().filter(|m| **m).count();
    let _ = writeln!(out, "{n} of {} rows differ (marked *); `-`: not in that run", rows.len());
    out
}

/// The eight heights of a sparkline.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as a line of bars from lowest to highest; all equal values sit mid-height.
pub fn sparkline(values: &[f64]) -> String {
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    values
        .iter()
        .map(|v| {
            if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                BARS[3]
            } else {
                BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize]
            }
        })
        .collect()
}

/// `weir metrics`: TIME RUN STEP VALUE per point, oldest first, then a summary (count, min,
/// max, latest and its change from the point before) and, when the points fit in `width`
/// columns, a sparkline.
pub fn metric_history(metric: &str, points: &[v1::MetricPoint], width: usize) -> String {
    let mut t = Table::new(&["TIME", "RUN", "STEP", "VALUE"]);
    for p in points {
        let mut value = number(p.value);
        if p.cached {
            value.push_str(" (cached)");
        }
        let state = run_state(p.run_state);
        if state != "succeeded" {
            let _ = write!(value, " (run {state})");
        }
        t.push(vec![
            millis(p.time.as_ref()).map_or_else(|| "-".into(), datetime),
            p.run_id.clone(),
            p.step.clone(),
            value,
        ]);
    }
    let mut out = t.render();
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let Some(latest) = values.last() else { return out };
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let _ = write!(
        out,
        "\n{metric}: {} point{}, min {}, max {}, latest {}",
        values.len(),
        if values.len() == 1 { "" } else { "s" },
        number(lo),
        number(hi),
        number(*latest)
    );
    if let [.., previous, _] = values.as_slice() {
        let change = latest - previous;
        let sign = if change > 0.0 { "+" } else { "" };
        let _ = write!(out, " ({sign}{} vs previous)", number(change));
    }
    out.push('\n');
    if values.len() > 1 && values.len() + metric.len() + 2 <= width {
        let _ = writeln!(out, "{metric}  {}", sparkline(&values));
    }
    out
}

/// `weir lineage`: the target's artifact, then each linked artifact indented under the one it
/// went into (upstream) or came out of (downstream): short digest, path, size, `run/step`. An
/// artifact reached a second time is named, not expanded again.
pub fn lineage(r: &v1::GetLineageResponse, down: bool) -> String {
    let mut out = String::new();
    let what = if r.model.is_empty() { String::new() } else { format!(" ({})", r.model) };
    let direction = if down { "downstream: what it fed" } else { "upstream: what it came from" };
    let _ = writeln!(out, "lineage of {}{what}, {direction}", r.digest);
    let by_digest: HashMap<&str, &v1::LineageNode> = r.nodes.iter().map(|n| (n.digest.as_str(), n)).collect();
    let Some(root) = r.nodes.first() else { return out };
    let _ = writeln!(out, "{}", node_line(root));
    let mut shown = HashSet::from([root.digest.as_str()]);
    tree(&mut out, root, &by_digest, &mut shown, "");
    if r.truncated {
        let _ = writeln!(out, "... the walk stopped early ({}); --depth N walks further", r.truncated_reason);
    }
    out
}

/// `weir lineage --json`: the walk as one JSON object (see the flag's help), a line.
pub fn lineage_json(r: &v1::GetLineageResponse) -> String {
    let nodes: Vec<serde_json::Value> = r
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "digest": n.digest, "path": n.path, "size": n.size, "run_id": n.run_id,
                "step": n.step, "depth": n.depth, "links": n.links,
            })
        })
        .collect();
    let model = (!r.model.is_empty()).then_some(r.model.as_str());
    let truncated = r.truncated.then_some(r.truncated_reason.as_str());
    let o = serde_json::json!({"digest": r.digest, "model": model, "truncated": truncated, "nodes": nodes});
    format!("{o}\n")
}

fn node_line(n: &v1::LineageNode) -> String {
    let path = if n.path.is_empty() { "?" } else { &n.path };
    let maker = if n.run_id.is_empty() {
        "(no step recorded making it)".to_string()
    } else {
        format!("{}/{}", n.run_id, n.step)
    };
    format!("{}  {path}  {}  {maker}", short(&n.digest), bytes(n.size))
}

fn tree<'a>(
    out: &mut String,
    node: &v1::LineageNode,
    by_digest: &HashMap<&str, &'a v1::LineageNode>,
    shown: &mut HashSet<&'a str>,
    indent: &str,
) {
    let links: Vec<&&v1::LineageNode> = node.links.iter().filter_map(|l| by_digest.get(l.as_str())).collect();
    for (i, child) in links.iter().enumerate() {
        let last = i + 1 == links.len();
        let (branch, more) = if last { ("└── ", "    ") } else { ("├── ", "│   ") };
        if !shown.insert(child.digest.as_str()) {
            let _ = writeln!(out, "{indent}{branch}{}  {} (shown above)", short(&child.digest), child.path);
            continue;
        }
        let _ = writeln!(out, "{indent}{branch}{}", node_line(child));
        tree(out, child, by_digest, shown, &format!("{indent}{more}"));
    }
}

/// The outputs block of `weir status`: each instance's files with their short digest and size,
/// for `weir lineage DIGEST`. Empty when no step has outputs.
pub fn outputs_block(steps: &[v1::Step]) -> String {
    let mut t = Table::new(&["STEP", "OUTPUT", "DIGEST", "SIZE"]);
    let mut any = false;
    for s in steps {
        for e in s.outputs.as_ref().map_or(&[][..], |o| &o.files[..]) {
            any = true;
            t.push(vec![s.name.clone(), e.path.clone(), short(&e.digest).to_string(), bytes(e.size)]);
        }
    }
    if !any {
        return String::new();
    }
    format!("\n{}", t.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_780_801_000; // 2026-11-27 12:00:01 UTC

    fn ts(ms: u64) -> Option<prost_types::Timestamp> {
        Some(weir_engine::api::convert::timestamp(weir_core::run::Millis(ms)))
    }

    fn run(id: &str, params: &[(&str, &str)], took: u64, steps: Vec<v1::Step>) -> GetRunResponse {
        GetRunResponse {
            run: Some(v1::Run {
                run_id: id.into(),
                pipeline: "ml".into(),
                version: "0123456789abcdef".into(),
                state: v1::RunState::Succeeded as i32,
                params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                created_at: ts(T0),
                started_at: ts(T0),
                finished_at: ts(T0 + took),
                ..Default::default()
            }),
            steps,
            next_step_page_token: String::new(),
        }
    }

    fn step(name: &str, metrics: &[(&str, f64)], outputs: &[(&str, &str)]) -> v1::Step {
        v1::Step {
            name: name.into(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            outputs: Some(v1::Manifest {
                files: outputs
                    .iter()
                    .map(|(p, d)| v1::ManifestEntry {
                        path: p.to_string(),
                        digest: d.to_string(),
                        size: 2048,
                        executable: false,
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_and_sizes_read_short() {
        for (v, want) in
            [(0.41, "0.41"), (3.0, "3"), (-2.0, "-2"), (1234.5678, "1234.57"), (0.1 + 0.2, "0.3"), (1.5e-7, "1.5e-7")]
        {
            assert_eq!(number(v), want, "{v}");
        }
        assert_eq!((bytes(12), bytes(2048), bytes(3 << 20)), ("12 B".into(), "2.0 KiB".into(), "3.0 MiB".into()));
    }

    #[test]
    fn compare_marks_the_rows_that_differ_and_only_those() {
        let a = run(
            "r-a",
            &[("seed", "1"), ("lr", "0.1")],
            1_000,
            vec![
                step("ingest", &[], &[("data.csv", "aaaaaaaaaaaaaaaa11")]),
                step("train", &[("rmse", 0.5), ("acc", 0.9)], &[("model.bin", "bbbbbbbbbbbbbbbb11")]),
            ],
        );
        let b = run(
            "r-b",
            &[("seed", "1"), ("lr", "0.2"), ("extra", "x")],
            2_000,
            vec![
                step("ingest", &[], &[("data.csv", "aaaaaaaaaaaaaaaa11")]),
                step("train", &[("rmse", 0.4), ("acc", 0.9)], &[("model.bin", "cccccccccccccccc11")]),
            ],
        );
        let got = compare(&[a, b], T0, false);
        assert_eq!(
            got,
            "   FIELD                   r-a              r-b
   pipeline                ml@0123456789ab  ml@0123456789ab
   state                   succeeded        succeeded
   duration                1.0s             2.0s
*  param extra             -                x
*  param lr                0.1              0.2
   param seed              1                1
   metric train acc        0.9              0.9
*  metric train rmse       0.5              0.4
   output ingest/data.csv  aaaaaaaaaaaa     aaaaaaaaaaaa
*  output train/model.bin  bbbbbbbbbbbb     cccccccccccc
4 of 10 rows differ (marked *); `-`: not in that run
"
        );
        let painted =
            compare(&[run("r-a", &[("lr", "1")], 0, vec![]), run("r-b", &[("lr", "2")], 0, vec![])], T0, true);
        assert!(painted.contains("\x1b[33m*  param lr"), "{painted}");
        assert!(!painted.contains("\x1b[33m   state"), "{painted}");
    }

    #[test]
    fn metric_history_has_a_table_a_summary_and_a_sparkline_when_it_fits() {
        let point = |run: &str, v: f64, cached: bool| v1::MetricPoint {
            run_id: run.into(),
            step: "train".into(),
            time: ts(T0),
            value: v,
            run_state: v1::RunState::Succeeded as i32,
            cached,
        };
        let points = [point("r-1", 0.5, false), point("r-2", 0.3, false), point("r-3", 0.4, true)];
        assert_eq!(
            metric_history("rmse", &points, 80),
            "TIME                 RUN  STEP   VALUE
2026-11-27 12:00:01  r-1  train  0.5
2026-11-27 12:00:01  r-2  train  0.3
2026-11-27 12:00:01  r-3  train  0.4 (cached)

rmse: 3 points, min 0.3, max 0.5, latest 0.4 (+0.1 vs previous)
rmse  █▁▅
"
        );
        assert!(!metric_history("rmse", &points, 6).contains('█'), "no room, no sparkline");
        assert_eq!(sparkline(&[2.0, 2.0]), "▄▄");
        assert!(metric_history("rmse", &points[..1], 80).ends_with("latest 0.5\n"));
    }

    #[test]
    fn lineage_is_a_tree_with_repeats_named_not_expanded() {
        let node = |d: &str, path: &str, step: &str, depth: u32, links: &[&str]| v1::LineageNode {
            digest: d.repeat(16),
            path: path.into(),
            size: 10,
            run_id: "r-1".into(),
            step: step.into(),
            produced_at: ts(T0),
            depth,
            links: links.iter().map(|l| l.repeat(16)).collect(),
        };
        let r = v1::GetLineageResponse {
            digest: "mmmm".repeat(16),
            nodes: vec![
                node("mmmm", "model.bin", "train", 0, &["ffff", "ssss"]),
                node("ffff", "features.csv", "prep", 1, &["dddd"]),
                node("ssss", "stats.json", "prep", 1, &["dddd"]),
                node("dddd", "data.csv", "ingest", 2, &[]),
            ],
            truncated: true,
            truncated_reason: "depth 2 reached".into(),
            model: "churn version 3".into(),
        };
        assert_eq!(
            lineage(&r, false),
            format!(
                "lineage of {} (churn version 3), upstream: what it came from
mmmmmmmmmmmm  model.bin  10 B  r-1/train
├── ffffffffffff  features.csv  10 B  r-1/prep
│   └── dddddddddddd  data.csv  10 B  r-1/ingest
└── ssssssssssss  stats.json  10 B  r-1/prep
    └── dddddddddddd  data.csv (shown above)
... the walk stopped early (depth 2 reached); --depth N walks further
",
                "mmmm".repeat(16)
            )
        );
    }

    #[test]
    fn status_lists_outputs_only_when_there_are_some() {
        assert_eq!(outputs_block(&[v1::Step { name: "a".into(), ..Default::default() }]), "");
        let got = outputs_block(&[step("ingest", &[], &[("data.csv", "0123456789abcdef")])]);
        assert_eq!(got, "\nSTEP    OUTPUT    DIGEST        SIZE\ningest  data.csv  0123456789ab  2.0 KiB\n");
    }
}
