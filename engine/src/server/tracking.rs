//! Tracking and lineage: a metric across a pipeline's runs, and the chain of artifacts, steps
//! and runs behind an artifact or a model version.
//!
//! Params and metrics need no index of their own: a run's record holds its params and each
//! step record the metrics of its successful attempt, so [`Engine::metric_history`] scans the
//! pipeline's runs. Lineage does: when an instance succeeds (or is found cached), the success's
//! own batch records each output file in `producers` and each input file in `consumers`
//! (`store/lineage.rs`), keyed by digest. [`Engine::lineage`] walks that index breadth first:
//! upstream from an artifact to the instance that made it, that instance's inputs, their
//! makers, and on to artifacts made from nothing (the ingested data), or, for a run a `files`
//! trigger started, to the triggering files (its input dataset, in the run's record);
//! downstream from an artifact to the instances that took it and what they made.

use std::collections::{BTreeSet, HashMap, VecDeque};

use petgraph::graph::NodeIndex;

use crate::store::{Batch, Consumed, Indexed, Listed, Produced, RunFilter, RunRecord};
use weir_core::run::{InstanceId, Millis, RunState, StepState};
use weir_data::artifact::{Digest, Manifest};

use super::core::{Engine, Live};
use super::error::ApiError;
use super::registry::ModelRef;

/// One value of a metric: the step instance of a run that reported it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MetricPoint {
    pub run_id: String,
    pub step: String,
    /// When the run was created.
    pub at: Millis,
    pub value: f64,
    pub run_state: RunState,
    /// The instance reused the value from an earlier run's cache.
    pub cached: bool,
}

/// A metric across a pipeline's runs, oldest first; when it has no points, the metric names
/// the runs did report (`metrics`), to suggest one.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MetricHistory {
    pub points: Vec<MetricPoint>,
    pub metrics: Vec<String>,
}

/// One artifact of a lineage walk, with the step instance that made it (when known).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LineageNode {
    pub digest: String,
    pub path: String,
    pub size: u64,
    pub run_id: String,
    pub step: String,
    pub produced_at: Option<Millis>,
    pub depth: u32,
    /// The digests of the next nodes (upstream: made from; downstream: fed into).
    pub links: Vec<String>,
}

/// A lineage walk from `digest`; `truncated` says why it stopped early, `model` names the
/// model version the target named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lineage {
    pub digest: String,
    pub nodes: Vec<LineageNode>,
    pub truncated: Option<String>,
    pub model: Option<String>,
}

/// Points MetricHistory returns when the request does not say.
const DEFAULT_POINTS: usize = 1000;
/// The most artifacts one lineage walk returns.
pub(crate) const MAX_NODES: usize = 2000;
/// The most producers or consumers read for one digest.
const MAX_PER_DIGEST: usize = 10_000;
/// `Consumed::from` of a file of the run's input dataset: made by no instance of the run.
pub(crate) const DATASET: u32 = u32::MAX;
/// The fewest hex characters of a digest a target may give.
const MIN_PREFIX: usize = 8;

impl Engine {
    /// Records which step made each of `outputs` and which artifacts went into it, in `batch`
    /// (the batch that records the instance's success, so both land or neither does).
    ///
    /// Called for every instance that ends with outputs: one that ran and succeeded (from
    /// `on_succeeded`) and one that ends `Cached`, a cache hit or a retry's reuse (from
    /// `apply_at`; its `outputs` are the copy of the earlier run's manifest stored under its
    /// own run, so lineage walks the run's own chain). Its inputs are the
    /// manifests of the instances it needs in `live`'s plan graph, read from the store: they
    /// must have been written by an earlier batch (an instance whose need is cached in the same
    /// batch should use [`record_lineage_of`] with the manifests in hand).
    pub(crate) fn record_lineage(
        &self,
        live: &Live,
        instance: InstanceId,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        let run = &live.record.id;
        let mut needs: Vec<NodeIndex> = live
            .plan
            .graph
            .neighbors_directed(NodeIndex::new(instance.index()), petgraph::Direction::Incoming)
            .collect();
        needs.sort_unstable();
        let root = needs.is_empty();
        let mut inputs = Vec::new();
        for need in needs {
            let id = InstanceId(need.index() as u32);
            if let Some(m) = self.store.artifacts(run, id)? {
                inputs.push((id, m));
            }
        }
        let name = live.steps.get(instance.index()).map_or_else(|| live.machine.name(instance), |s| s.name.as_str());
        record_lineage_of(run, instance, name, outputs, &inputs, batch, now)?;
        // An instance that reads its run's input dataset (new data, directly or through an
        // upstream run) took those files: `weir lineage FILE-DIGEST --down` starts here.
        let step = &live.pipeline.steps()[live.plan.graph[NodeIndex::new(instance.index())].step];
        if super::triggers::takes_dataset(&live.pipeline, step, root) {
            for f in self.input_dataset(&live.record)? {
                let c = Consumed { path: f.path.clone(), step: name.to_string(), from: DATASET, at: now };
                batch.put_consumed(&f.digest, run, instance, &c)?;
            }
        }
        Ok(())
    }

    /// `metric` across the runs of `pipeline` (of `step` only, unless empty), the most recent
    /// `limit` (0: a default).
    pub(crate) fn metric_history(
        &self,
        pipeline: &str,
        metric: &str,
        step: &str,
        limit: u32,
    ) -> Result<MetricHistory, ApiError> {
        if pipeline.is_empty() || metric.is_empty() {
            return Err(ApiError::Invalid("give a pipeline and a metric name (`weir metrics PIPELINE METRIC`)".into()));
        }
        if self.store.pipeline(pipeline)?.is_none() {
            let names = self.store.pipelines()?;
            let hint = weir_core::diag::did_you_mean(pipeline, names.iter().map(|(n, _)| n.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "no pipeline {pipeline}{hint}: `weir pipelines` lists the stored ones"
            )));
        }
        let mut points = Vec::new();
        let mut others = BTreeSet::new();
        let mut steps_seen = BTreeSet::new();
        let mut step_matched = false;
        for run in self.pipeline_runs(pipeline)? {
            let steps = match self.store.steps(&run.id, None, usize::MAX) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(run = run.id, error = %e, "metric history skips a run whose steps do not decode");
                    continue;
                }
            };
            for (_, s) in steps {
                let base = s.name.split_once('[').map_or(s.name.as_str(), |(b, _)| b);
                steps_seen.insert(base.to_string());
                if !step.is_empty() && s.name != step && base != step {
                    continue;
                }
                step_matched = true;
                match s.metrics.get(metric) {
                    Some(v) => points.push(MetricPoint {
                        run_id: run.id.clone(),
                        step: s.name.clone(),
                        at: run.created_at,
                        value: *v,
                        run_state: run.state,
                        cached: s.state == StepState::Cached,
                    }),
                    None => others.extend(s.metrics.keys().cloned()),
                }
            }
        }
        if !step.is_empty() && !step_matched && !steps_seen.is_empty() {
            let hint = weir_core::diag::did_you_mean(step, steps_seen.iter().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            let list: Vec<&str> = steps_seen.iter().map(String::as_str).collect();
            return Err(ApiError::NotFound(format!(
                "no step {step} in the runs of {pipeline}{hint}; its steps: {}",
                list.join(", ")
            )));
        }
        // One series is one step's: a metric several steps write (a train's and a validate's
        // `rmse`) mixed into one line would read as one quantity changing.
        let writers: BTreeSet<&str> =
            points.iter().map(|p| p.step.split_once('[').map_or(p.step.as_str(), |(b, _)| b)).collect();
        if step.is_empty() && writers.len() > 1 {
            let list: Vec<&str> = writers.into_iter().collect();
            return Err(ApiError::Invalid(format!(
                "{metric} is written by several steps of {pipeline} ({}): name one with --step",
                list.join(", ")
            )));
        }
        let limit = if limit == 0 { DEFAULT_POINTS } else { limit as usize };
        let cut = points.len().saturating_sub(limit);
        points.drain(..cut);
        let metrics = if points.is_empty() { others.into_iter().collect() } else { Vec::new() };
        Ok(MetricHistory { points, metrics })
    }

    /// Every readable run of `pipeline`, oldest first (creation time, then id).
    pub(crate) fn pipeline_runs(&self, pipeline: &str) -> Result<Vec<RunRecord>, ApiError> {
        let filter = RunFilter { pipeline: Some(pipeline.to_string()), state: None };
        let mut token = None;
        let mut out = Vec::new();
        loop {
            let page = self.store.list_runs(&filter, 500, token.as_deref())?;
            for listed in page.runs {
                match listed {
                    Listed::Run(r) | Listed::Quarantined { record: Some(r), .. } => out.push(r),
                    Listed::Quarantined { .. } | Listed::Unreadable { .. } => {}
                }
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// The lineage of `target` (a digest prefix or a model version): upstream, or with `down`
    /// downstream, at most `depth` links away (0: all).
    pub(crate) fn lineage(&self, target: &str, down: bool, depth: u32) -> Result<Lineage, ApiError> {
        let target = target.trim();
        if target.is_empty() {
            return Err(ApiError::Invalid(
                "give an artifact digest (at least 8 hex characters; `weir status RUN` shows each step's outputs) \
                 or a model as MODEL@ALIAS, MODEL@VERSION or MODEL"
                    .into(),
            ));
        }
        let (digest, model) = self.lineage_target(target)?;
        let depth = if depth == 0 { u32::MAX } else { depth };
        let mut walk = Walk::new(self, depth, down);
        walk.run(digest, model.as_ref())?;
        Ok(Lineage {
            digest: digest.to_string(),
            nodes: walk.nodes,
            truncated: walk.truncated,
            model: model.map(|m| format!("{} version {}", m.model, m.version)),
        })
    }

    /// The digest a lineage target names, and the model version when it named one.
    fn lineage_target(&self, target: &str) -> Result<(Digest, Option<ModelRef>), ApiError> {
        let hex = target.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && target.len() >= MIN_PREFIX && target.len() <= 64 {
            let lower = target.to_ascii_lowercase();
            let mut found = self.store.produced_digests(&lower, 11)?;
            if found.is_empty() {
                // Data no step made: a file a trigger brought in, known by the steps it fed.
                found = self.store.consumed_digests(&lower, 11)?;
            }
            match found.as_slice() {
                [one] => return Ok((*one, None)),
                [] => {}
                many => {
                    let shown: Vec<String> = many.iter().take(10).map(Digest::to_string).collect();
                    let more = if many.len() > 10 { ", ..." } else { "" };
                    return Err(ApiError::Invalid(format!(
                        "digest prefix {target} is ambiguous: {}{more}; give more of its characters",
                        shown.join(", ")
                    )));
                }
            }
            // A model may be named like hex; only then is this not an unknown digest.
            return match self.resolve_model(target) {
                Ok(m) => self.model_digest(m),
                Err(_) => Err(ApiError::NotFound(format!(
                    "no step made an artifact with digest {target}: `weir status RUN` shows each step's outputs \
                     with their digests"
                ))),
            };
        }
        match self.resolve_model(target) {
            Ok(m) => self.model_digest(m),
            Err(ApiError::NotFound(msg)) if hex => Err(ApiError::NotFound(format!(
                "{msg}; as an artifact digest, give at least {MIN_PREFIX} hex characters"
            ))),
            Err(e) => Err(e),
        }
    }

    fn model_digest(&self, m: ModelRef) -> Result<(Digest, Option<ModelRef>), ApiError> {
        let d = m.digest.parse::<Digest>().map_err(|e| ApiError::DataLoss {
            what: format!("model {} version {} names a bad digest", m.model, m.version),
            detail: e.to_string(),
        })?;
        Ok((d, Some(m)))
    }
}

/// Records the lineage of instance `instance` (named `name`) of `run`: every file of `outputs`
/// as made by it, with `inputs` (the manifests of the instances of the same run it needs, by
/// instance) as what went in. Writes into `batch` only; see [`Engine::record_lineage`].
pub(crate) fn record_lineage_of(
    run: &str,
    instance: InstanceId,
    name: &str,
    outputs: &Manifest,
    inputs: &[(InstanceId, Manifest)],
    batch: &mut Batch,
    now: Millis,
) -> Result<(), ApiError> {
    let needs: Vec<u32> = inputs.iter().map(|(i, _)| i.0).collect();
    let mut seen = BTreeSet::new();
    for e in outputs.entries() {
        if seen.insert(e.digest) {
            let p =
                Produced { path: e.path.clone(), size: e.size, at: now, step: name.to_string(), needs: needs.clone() };
            batch.put_produced(&e.digest, run, instance, &p)?;
        }
    }
    let mut seen = BTreeSet::new();
    for (from, m) in inputs {
        for e in m.entries() {
            if seen.insert(e.digest) {
                let c = Consumed { path: e.path.clone(), step: name.to_string(), from: from.0, at: now };
                batch.put_consumed(&e.digest, run, instance, &c)?;
            }
        }
    }
    tracing::debug!(run, instance = name, outputs = outputs.entries().len(), inputs = seen.len(), "lineage recorded");
    Ok(())
}

/// One breadth-first lineage walk.
struct Walk<'a> {
    engine: &'a Engine,
    depth: u32,
    down: bool,
    nodes: Vec<LineageNode>,
    index: HashMap<Digest, usize>,
    /// The producer chosen for each node, by node index: where an upstream walk goes on.
    made_by: Vec<Option<Indexed<Produced>>>,
    truncated: Option<String>,
}

impl<'a> Walk<'a> {
    fn new(engine: &'a Engine, depth: u32, down: bool) -> Walk<'a> {
        Walk { engine, depth, down, nodes: Vec::new(), index: HashMap::new(), made_by: Vec::new(), truncated: None }
    }

    fn run(&mut self, root: Digest, model: Option<&ModelRef>) -> Result<(), ApiError> {
        let store = &self.engine.store;
        let producers = store.producers(&root, MAX_PER_DIGEST)?;
        // The model's own run and step when it names one; else the first that made the bytes.
        let chosen = model
            .and_then(|m| producers.iter().find(|p| p.run == m.run_id && p.value.step == m.step).cloned())
            .or_else(|| first(producers));
        let mut node = self.node(root, chosen.as_ref(), 0);
        if chosen.is_none()
            && let Some(m) = model
        {
            (node.run_id, node.step) = (m.run_id.clone(), m.step.clone());
        } else if chosen.is_none()
            && let Some(c) = store.consumers(&root, 1)?.into_iter().next()
        {
            node.path = c.value.path; // a file a trigger brought in: its path when it came
        }
        self.push(root, node, chosen);
        let mut queue = VecDeque::from([0usize]);
        while let Some(at) = queue.pop_front() {
            let depth = self.nodes[at].depth;
            let next = if self.down { self.fed(at)? } else { self.made_from(at)? };
            if next.is_empty() {
                continue;
            }
            if depth >= self.depth {
                self.truncated.get_or_insert_with(|| format!("depth {} reached", self.depth));
                continue;
            }
            let mut links: Vec<String> = Vec::new();
            for (digest, producer, path, size) in next {
                let text = digest.to_string();
                if text == self.nodes[at].digest {
                    continue; // a step that passed its input on unchanged (a copy of the data)
                }
                if !links.contains(&text) {
                    links.push(text);
                }
                if self.index.contains_key(&digest) {
                    continue;
                }
                if self.nodes.len() >= MAX_NODES {
                    self.truncated.get_or_insert_with(|| format!("the server's cap of {MAX_NODES} artifacts reached"));
                    continue;
                }
                let mut node = self.node(digest, producer.as_ref(), depth + 1);
                if producer.is_none() {
                    (node.path, node.size) = (path, size);
                }
                queue.push_back(self.nodes.len());
                self.push(digest, node, producer);
            }
            self.nodes[at].links = links;
        }
        Ok(())
    }

    fn push(&mut self, digest: Digest, node: LineageNode, producer: Option<Indexed<Produced>>) {
        self.index.insert(digest, self.nodes.len());
        self.nodes.push(node);
        self.made_by.push(producer);
    }

    fn node(&self, digest: Digest, p: Option<&Indexed<Produced>>, depth: u32) -> LineageNode {
        LineageNode {
            digest: digest.to_string(),
            path: p.map(|p| p.value.path.clone()).unwrap_or_default(),
            size: p.map_or(0, |p| p.value.size),
            run_id: p.map(|p| p.run.clone()).unwrap_or_default(),
            step: p.map(|p| p.value.step.clone()).unwrap_or_default(),
            produced_at: p.map(|p| p.value.at),
            depth,
            links: Vec::new(),
        }
    }

    /// Upstream: the input files of the instance that made node `at`, each with the instance
    /// of the same run that made it (its exact maker, not just the first to make those bytes).
    fn made_from(&self, at: usize) -> Result<Vec<Step>, ApiError> {
        let Some(p) = &self.made_by[at] else { return Ok(Vec::new()) };
        let store = &self.engine.store;
        let mut out = Vec::new();
        for need in &p.value.needs {
            let need = InstanceId(*need);
            let Some(m) = store.artifacts(&p.run, need)? else { continue };
            for e in m.entries() {
                let produced = store.produced(&e.digest, &p.run, need)?;
                let producer = match produced {
                    Some(value) => Some(Indexed { run: p.run.clone(), instance: need, value }),
                    None => first(store.producers(&e.digest, MAX_PER_DIGEST)?),
                };
                out.push((e.digest, producer, e.path.clone(), e.size));
            }
        }
        // An instance that took its run's input dataset (the triggering files, or those of the
        // upstream run whose result started it) was made from them; they have no maker (the
        // data came from outside). Runs recorded before consumption was: their root instances.
        if let Some(record) = store.run(&p.run)? {
            for f in self.engine.input_dataset(&record)? {
                let took = store.consumed(&f.digest, &p.run, p.instance)?.is_some_and(|c| c.from == DATASET)
                    || (p.value.needs.is_empty()
                        && matches!(record.trigger, crate::store::Trigger::Files { .. })
                        && !store.consumers(&f.digest, MAX_PER_DIGEST)?.iter().any(|c| c.run == p.run));
                // Bytes a need of the run made too are shown with that maker.
                if took && !out.iter().any(|o: &Step| o.0 == f.digest) {
                    out.push((f.digest, None, f.path, f.size));
                }
            }
        }
        Ok(out)
    }

    /// Downstream: what the instances that took node `at` as an input made.
    fn fed(&mut self, at: usize) -> Result<Vec<Step>, ApiError> {
        let store = &self.engine.store;
        let digest: Digest = self.nodes[at].digest.parse().map_err(|e| ApiError::Internal(format!("{e}")))?;
        let consumers = store.consumers(&digest, MAX_PER_DIGEST)?;
        if consumers.len() == MAX_PER_DIGEST {
            self.truncated.get_or_insert_with(|| {
                format!("{} fed more than {MAX_PER_DIGEST} step instances; only those were read", digest)
            });
        }
        let mut out = Vec::new();
        for c in consumers {
            let Some(m) = store.artifacts(&c.run, c.instance)? else { continue };
            for e in m.entries() {
                let producer = store.produced(&e.digest, &c.run, c.instance)?.map(|value| Indexed {
                    run: c.run.clone(),
                    instance: c.instance,
                    value,
                });
                out.push((e.digest, producer, e.path.clone(), e.size));
            }
        }
        Ok(out)
    }
}

/// A linked artifact: its digest, its maker when known, and its path and size.
type Step = (Digest, Option<Indexed<Produced>>, String, u64);

/// The first of several makers of the same bytes: the earliest, then by run id and instance.
fn first(producers: Vec<Indexed<Produced>>) -> Option<Indexed<Produced>> {
    producers.into_iter().min_by(|a, b| (a.value.at, &a.run, a.instance.0).cmp(&(b.value.at, &b.run, b.instance.0)))
}

#[cfg(test)]
mod tests;
