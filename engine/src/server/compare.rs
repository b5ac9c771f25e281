//! Runs side by side, the rows `weir runs compare` shows: pipeline and version, state,
//! duration, each param, each instance's metrics and each instance's output digests, one
//! cell per run, and whether the runs differ on the row (a value missing from some runs is a
//! difference; duration always differs and is never marked). The web UI's comparison reads
//! this; the CLI builds the same rows from GetRun (`cli/src/display/tracking.rs`).

use std::collections::{BTreeSet, HashMap};

use weir_core::run::InstanceId;

use super::core::Engine;
use super::error::ApiError;

/// The most runs one comparison takes.
pub(crate) const MAX_COMPARED: usize = 20;

/// One field across the runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompareRow {
    pub label: String,
    /// One per run, in the order asked; `None`: the run has no such value.
    pub cells: Vec<Option<String>>,
    pub differs: bool,
}

impl Engine {
    /// The comparison of `runs` (at least one, at most [`MAX_COMPARED`]).
    pub(crate) fn compare_runs(&self, runs: &[String]) -> Result<Vec<CompareRow>, ApiError> {
        if runs.is_empty() || runs.len() > MAX_COMPARED {
            return Err(ApiError::Invalid(format!(
                "give between 1 and {MAX_COMPARED} run ids to compare, separated by commas (`weir runs` lists them)"
            )));
        }
        let now = self.clock.now();
        let mut loaded = Vec::with_capacity(runs.len());
        for id in runs {
            let (record, steps, _) = self.load_run(id)?;
            let mut outputs = HashMap::new();
            for (i, s) in steps.iter().enumerate() {
                if s.state.is_success()
                    && let Some(m) = self.store.artifacts(&record.id, InstanceId(i as u32))?
                {
                    outputs.insert(s.name.clone(), m);
                }
            }
            loaded.push((record, steps, outputs));
        }
        let mut rows: Vec<(String, Vec<Option<String>>, bool)> = Vec::new();
        let all = |f: &dyn Fn(&crate::store::RunRecord) -> String| loaded.iter().map(|(r, _, _)| Some(f(r))).collect();
        rows.push(("pipeline".into(), all(&|r| format!("{}@{}", r.pipeline, short(&r.version))), true));
        rows.push(("state".into(), all(&|r| r.state.as_str().to_string()), true));
        rows.push((
            "duration".into(),
            all(&|r| duration(r.finished_at.unwrap_or(now).0.saturating_sub(r.created_at.0))),
            false,
        ));
        let params: BTreeSet<&String> = loaded.iter().flat_map(|(r, _, _)| r.params.keys()).collect();
        for p in params {
            let cells = loaded
                .iter()
                .map(|(r, _, _)| r.params.get(p).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            rows.push((format!("param {p}"), cells, true));
        }
        let mut instances: Vec<&str> = Vec::new();
        for (_, steps, _) in &loaded {
            for s in steps {
                if !instances.contains(&s.name.as_str()) {
                    instances.push(&s.name);
                }
            }
        }
        let by_name: Vec<HashMap<&str, &crate::store::StepRecord>> =
            loaded.iter().map(|(_, steps, _)| steps.iter().map(|s| (s.name.as_str(), s)).collect()).collect();
        for name in &instances {
            let metrics: BTreeSet<&String> =
                by_name.iter().filter_map(|m| m.get(name)).flat_map(|s| s.metrics.keys()).collect();
            for metric in metrics {
                let cells = by_name.iter().map(|m| m.get(name).and_then(|s| s.metrics.get(metric)).map(|v| number(*v)));
                rows.push((format!("metric {name} {metric}"), cells.collect(), true));
            }
        }
        for name in &instances {
            let mut paths: Vec<&str> = Vec::new();
            for (_, _, outputs) in &loaded {
                for e in outputs.get(*name).map_or(&[][..], |m| m.entries()) {
                    if !paths.contains(&e.path.as_str()) {
                        paths.push(&e.path);
                    }
                }
            }
            for path in paths {
                let cells = loaded.iter().map(|(_, _, outputs)| {
                    let entries = outputs.get(*name).map_or(&[][..], |m| m.entries());
                    entries.iter().find(|e| e.path == path).map(|e| short(&e.digest.to_string()).to_string())
                });
                rows.push((format!("output {name}/{path}"), cells.collect(), true));
            }
        }
        Ok(rows
            .into_iter()
            .map(|(label, cells, markable)| {
                let differs = markable && cells.iter().any(|c| *c != cells[0]);
                CompareRow { label, cells, differs }
            })
            .collect())
    }
}

fn short(hash: &str) -> &str {
    hash.char_indices().nth(12).map_or(hash, |(i, _)| &hash[..i])
}

/// A duration as the CLI's `duration` writes it (tenths cut, not rounded).
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A metric as `weir` prints it (the CLI's `number`): integers without a point, about six
/// significant digits, exponents for the very large and small.
pub(crate) fn number(v: f64) -> String {
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
