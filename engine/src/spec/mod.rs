//! Pipeline files: YAML text in, a validated [`Pipeline`] or every problem out.
//!
//! `yaml` builds a spanned tree under budgets, `decode` reads typed fields from it recording
//! diagnostics, `load` maps the tree onto the model field by field, `check` does the
//! cross-references (needs, cycles, templates, expressions, limits), and `model` holds the
//! result. Nothing here does I/O: callers pass the text (see [`read_source`] for the one
//! bounded read the CLI uses), and nothing here knows about sled, gRPC or processes.

mod check;
pub mod cron;
mod decode;
mod load;
pub mod model;
pub mod units;
pub mod yaml;

use std::io::Read;
use std::path::Path;

pub use model::*;

use crate::diag::{Diagnostic, Span};

/// Bounds on what a pipeline file may ask of the parser and planner.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: usize,
    /// Deepest nesting of YAML collections.
    pub max_depth: usize,
    /// Most YAML nodes after alias expansion.
    pub max_yaml_nodes: u64,
    /// Most instances one matrix step expands to.
    pub max_matrix: usize,
    /// Most step instances in a pipeline after expansion.
    pub max_steps: usize,
    /// Most dependency edges between step instances after expansion.
    pub max_edges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1 << 20,
            max_depth: 64,
            max_yaml_nodes: 1_000_000,
            max_matrix: 10_000,
            max_steps: 100_000,
            max_edges: 1_000_000,
        }
    }
}

impl Limits {
    /// Limits large enough for machine-generated pipelines (benchmarks, tests).
    pub fn generous() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_depth: 64,
            max_yaml_nodes: 50_000_000,
            max_matrix: 1_000_000,
            max_steps: 10_000_000,
            max_edges: 50_000_000,
        }
    }
}

/// Parses and validates pipeline text. On failure, every problem found, sorted by position.
pub fn load(text: &str, limits: &Limits) -> Result<Pipeline, Vec<Diagnostic>> {
    if text.len() > limits.max_file_bytes {
        return Err(vec![too_large(text.len() as u64, limits)]);
    }
    let (doc, problems) = yaml::parse(text, limits).map_err(|d| vec![d])?;
    let mut cx = decode::Cx { doc: &doc, source: text, diags: problems };
    let pipeline = load::pipeline(&mut cx, limits);
    let mut diags = cx.diags;
    match pipeline {
        Some(p) if diags.is_empty() => Ok(p),
        _ => {
            if diags.is_empty() {
                diags.push(Diagnostic::error("the pipeline is invalid"));
            }
            diags.sort_by_key(|d| d.span.map(|s| (s.line, s.col)).unwrap_or((u32::MAX, 0)));
            Err(diags)
        }
    }
}

/// Any YAML text as JSON (YAML 1.2 core schema), under the same budgets as [`load`].
pub fn yaml_to_json(text: &str, limits: &Limits) -> Result<serde_json::Value, Diagnostic> {
    let (doc, mut problems) = yaml::parse(text, limits)?;
    if !problems.is_empty() {
        return Err(problems.swap_remove(0));
    }
    Ok(doc.to_json(doc.root))
}

fn too_large(len: u64, limits: &Limits) -> Diagnostic {
    Diagnostic::error(format!("the file is {len} bytes, more than the limit of {} bytes", limits.max_file_bytes))
        .help("raise the limit with `--max-file-size` if the file is really meant to be this large")
}

/// Reads a pipeline file, refusing one larger than the limit before reading it whole.
pub fn read_source(path: &Path, limits: &Limits) -> Result<String, Diagnostic> {
    let cannot = |e: std::io::Error| Diagnostic::error(format!("cannot read `{}`: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(limits.max_file_bytes as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() > limits.max_file_bytes {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(too_large(len, limits));
    }
    String::from_utf8(bytes).map_err(|e| {
        let prefix = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(prefix);
        let line = text.matches('\n').count() as u32 + 1;
        let col = text.rsplit('\n').next().unwrap_or("").chars().count() as u32;
        Diagnostic::error("the file is not valid UTF-8").at(Span::on_line(line, col, 1), "invalid byte here")
    })
}
