//! What the web UI's pipeline and metric pages ask that no other service answers: a pipeline
//! version with its text, every version and its planned graph; which declared param each
//! params diagnostic is about (so a form shows it beside its field); and which metrics the
//! runs of a pipeline reported, per step (so a picker offers only what exists).

use std::collections::BTreeSet;
use std::sync::Arc;

use weir_core::diag::Diagnostic;
use weir_core::plan;
use weir_core::run::Millis;
use weir_core::spec::Pipeline;

use super::core::Engine;
use super::error::ApiError;

/// One node of a pipeline's planned graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GraphNode {
    pub name: String,
    pub step: String,
    pub stage: Option<String>,
}

/// A stored version of a pipeline and what a page shows of it.
#[derive(Clone, Debug)]
pub(crate) struct PipelineDetail {
    pub name: String,
    pub version: String,
    pub yaml: String,
    /// Every version, newest first, with when it was submitted.
    pub versions: Vec<(String, Option<Millis>)>,
    pub pipeline: Arc<Pipeline>,
    /// The plan with default params (one node per step when a param has no default), and
    /// its `needs` edges as indices.
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<(usize, usize)>,
}

impl Engine {
    /// Pipeline `name` at `version` (empty: the latest).
    pub(crate) fn pipeline_detail(&self, name: &str, version: &str) -> Result<PipelineDetail, ApiError> {
        let index = self
            .store
            .pipeline(name)?
            .ok_or_else(|| ApiError::NotFound(format!("no pipeline {name}: submit it first with `weir submit DIR`")))?;
        let version = if version.is_empty() { index.latest.clone() } else { version.to_string() };
        if !index.versions.contains(&version) {
            return Err(ApiError::NotFound(format!(
                "pipeline {name} has no version {version}: the page lists its versions"
            )));
        }
        let stored = self
            .store
            .pipeline_version(&version)?
            .ok_or_else(|| ApiError::NotFound(format!("pipeline version {version} is not stored")))?;
        let (pipeline, _) = self.pipeline(&mut self.lock(), &version)?;
        let mut versions = Vec::with_capacity(index.versions.len());
        for v in index.versions.iter().rev() {
            let at = self.store.pipeline_version(v)?.map(|s| s.submitted_at);
            versions.push((v.clone(), at));
        }
        let (nodes, edges) = graph_of(&pipeline);
        Ok(PipelineDetail { name: name.to_string(), version, yaml: stored.yaml, versions, pipeline, nodes, edges })
    }

    /// Every `(step, metric)` the runs of `pipeline` reported, sorted.
    pub(crate) fn metric_names(&self, pipeline: &str) -> Result<Vec<(String, String)>, ApiError> {
        let mut out = BTreeSet::new();
        for run in self.pipeline_runs(pipeline)? {
            let Ok(steps) = self.store.steps(&run.id, None, usize::MAX) else { continue };
            for (_, s) in steps {
                let base = s.name.split_once('[').map_or(s.name.as_str(), |(b, _)| b).to_string();
                for m in s.metrics.keys() {
                    out.insert((base.clone(), m.clone()));
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// The planned graph with default params, or the steps themselves when a param has no default.
fn graph_of(pipeline: &Pipeline) -> (Vec<GraphNode>, Vec<(usize, usize)>) {
    let steps = pipeline.steps();
    if let Ok(params) = plan::resolve_params(pipeline, &[]) {
        let p = plan::plan(pipeline, &params, "planned");
        let pos: std::collections::HashMap<_, usize> = p.order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let nodes = p
            .order
            .iter()
            .map(|&n| {
                let inst = &p.graph[n];
                let step = &steps[inst.step];
                GraphNode { name: inst.name.clone(), step: step.name.clone(), stage: step.stage.clone() }
            })
            .collect();
        let edges = p.graph.raw_edges().iter().map(|e| (pos[&e.source()], pos[&e.target()])).collect();
        return (nodes, edges);
    }
    let nodes = steps
        .iter()
        .map(|s| GraphNode { name: s.name.clone(), step: s.name.clone(), stage: s.stage.clone() })
        .collect();
    let edges = steps.iter().enumerate().flat_map(|(i, s)| s.needs_idx.iter().map(move |&d| (d, i))).collect();
    (nodes, edges)
}

/// Which declared param each of `diags` is about (by the declaration it points at, or the
/// param it names), `None` for the others, with its message as the CLI words it.
pub(crate) fn param_of_diagnostics(pipeline: &Pipeline, diags: &[Diagnostic]) -> Vec<(Option<String>, String)> {
    diags
        .iter()
        .map(|d| {
            let by_span = d.span.and_then(|s| pipeline.params().iter().find(|p| p.span == s));
            let by_name = || pipeline.params().iter().find(|p| d.message.contains(&format!("`{}`", p.name)));
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text.push_str(&format!(" (help: {h})"));
            }
            (by_span.or_else(by_name).map(|p| p.name.clone()), text)
        })
        .collect()
}
