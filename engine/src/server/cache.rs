//! Step caching. A step with `cache:` gets a key when it becomes ready: a BLAKE3 hash over its
//! runtime, image (docker only), rendered command or script, rendered `env:`, the params it
//! uses, the digests of the manifests of the instances it needs, the pipeline's bundle digest,
//! and a hash of the step as declared (less `cache:` and `matrix:`). An earlier successful attempt with the same key (within `ttl`) makes the ready
//! attempt `cached` ([`Event::Cached`]): its outputs and metrics are reused, nothing runs. A
//! fresh success writes its entry in the same batch as the success. The key's parts are kept
//! in the step record, so `weir cache explain` can say which part differs from the closest
//! earlier entry.
//!
//! "The params it uses": those named by `{{ params.X }}` in the step's command, script, env
//! or image, and those whose variable (`WEIR_PARAM_X`) the command, script or env names. A
//! script file that reads `WEIR_PARAM_X` itself is not seen: name it in the step, or leave the
//! step uncached. A step using `{{ run.id }}` never hits (its command differs in every run).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use crate::store::{Batch, CacheEntry, CacheKey, Store, Trigger};
use weir_core::plan::{self, Plan, Resolved};
use weir_core::run::{AttemptId, Effect, InstanceId, Millis, StepState};
use weir_core::spec::{Action, Pipeline, Runtime};
use weir_core::template::{Ref, Template};
use weir_data::artifact::Manifest;

use super::core::{Engine, Live};
use super::error::ApiError;
use super::triggers::reads_trigger_files;

/// What the cache does (or would do) for a step instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// No `cache:`, or caching is off for the run.
    #[default]
    NotCacheable,
    /// Its key cannot be known yet: its inputs come from steps that run first.
    Unknown,
    Hit,
    Miss,
}

impl Verdict {
    /// The verdict as a word, for pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotCacheable => "not cacheable",
            Verdict::Unknown => "unknown",
            Verdict::Hit => "hit",
            Verdict::Miss => "miss",
        }
    }
}

/// One instance of a planned run and what the cache would do for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedStep {
    pub name: String,
    pub step: String,
    pub verdict: Verdict,
    pub reason: String,
    pub cache_key: String,
    pub cached_from: String,
}

/// One part of a cache key: its value now and, when compared, in the closest entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPart {
    pub part: String,
    pub value: String,
    pub closest: String,
}

/// Why an instance of a run was or was not taken from the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    pub verdict: Verdict,
    pub message: String,
    pub cache_key: String,
    pub parts: Vec<KeyPart>,
    pub closest_run: String,
    pub differences: Vec<KeyPart>,
}

/// Which pipeline version a request means: the latest of a name, or one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineRef {
    Name(String),
    Version(String),
}

/// What `PlanRun` plans: a stored pipeline, or a file not stored (`weir plan FILE`), planned as
/// the version it would get with the bundle of that digest (empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanTarget {
    Stored(PipelineRef),
    File { yaml: String, file_name: String, bundle_digest: String },
}

/// The most entries of one step `explain` and the planner compare against.
const MAX_COMPARED: usize = 5000;
/// How much of a long value is shown: its head, or the stretch around a change.
const SHOWN: usize = 72;

/// What an instance's inputs are, for its key: per instance it needs, the digest of its
/// outputs' manifest, or `None` when it has none (skipped by its `when`).
type Inputs = Vec<(String, Option<String>)>;

fn shown(text: &str) -> String {
    if text.chars().count() <= KEPT {
        return text.to_string();
    }
    let head: String = text.chars().take(SHOWN).collect();
    format!("{head}… (blake3 {})", &blake3::hash(text.as_bytes()).to_hex()[..16])
}

/// A part's value is kept whole up to this many characters, so `explain` can show where two
/// values differ (a long command changed in its middle); past it, a head and a hash of the
/// whole.
const KEPT: usize = 4096;

/// Whether two stored values of a part are the same value: equal, or one is the shortened
/// form (`head… (blake3 H)`) that entries written before values were kept whole hold, and
/// the other's text hashes to H.
fn same_value(a: &str, b: &str) -> bool {
    let hashed = |short: &str, whole: &str| {
        short
            .strip_suffix(')')
            .and_then(|s| s.rsplit_once("… (blake3 "))
            .is_some_and(|(head, h)| whole.starts_with(head) && blake3::hash(whole.as_bytes()).to_hex().starts_with(h))
    };
    a == b || hashed(a, b) || hashed(b, a)
}

/// `then` and `now` cut to the stretch where they differ, with a little context each side
/// (`…python3 train.py --l2 [0.1 -> 0.2] --features…` as two strings): a short value whole,
/// newlines shown as `⏎`.
pub(crate) fn change_window(then: &str, now: &str) -> (String, String) {
    let (a, b): (Vec<char>, Vec<char>) = (then.chars().collect(), now.chars().collect());
    let flat = |cs: &[char]| cs.iter().map(|&c| if c == '\n' { '⏎' } else { c }).collect::<String>();
    if a.len() <= SHOWN && b.len() <= SHOWN {
        return (flat(&a), flat(&b));
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    const CONTEXT: usize = 20;
    let cut = |cs: &[char]| {
        let from = prefix.saturating_sub(CONTEXT);
        let to = (cs.len() - suffix + CONTEXT).min(cs.len()).max(from);
        let to = to.min(from + SHOWN * 2);
        let mut out = String::new();
        if from > 0 {
            out.push('…');
        }
        out.push_str(&flat(&cs[from..to]));
        if to < cs.len() {
            out.push('…');
        }
        out
    };
    (cut(&a), cut(&b))
}

/// The name a run's input dataset has among a cache key's inputs (`input.trigger files`).
const TRIGGER_FILES_INPUT: &str = "trigger files";

/// The params a step uses: named in its templates, or by their variable in its text.
fn used_params(pipeline: &Pipeline, step: &weir_core::spec::Step) -> BTreeSet<String> {
    let mut templates: Vec<&Template> = match &step.action {
        Action::Run(t) => vec![t],
        Action::Command(argv) => argv.iter().collect(),
    };
    templates.extend(step.env.iter().map(|(_, t)| t));
    templates.extend(step.image.iter());
    let mut used = BTreeSet::new();
    for t in &templates {
        for r in t.refs() {
            if let Ref::Param(p) = r.reference {
                used.insert(p.clone());
            }
        }
    }
    for p in pipeline.params() {
        let var = p.env_name();
        if templates.iter().any(|t| t.source().contains(&var)) {
            used.insert(p.name.clone());
        }
    }
    used
}

/// The key of instance `node` of `plan` given its inputs. Pure.
pub(crate) fn key_of(
    pipeline: &Pipeline,
    plan: &Plan,
    node: NodeIndex,
    bundle: Option<&str>,
    inputs: &Inputs,
    secrets: &BTreeMap<String, String>,
) -> CacheKey {
    let inst = &plan.graph[node];
    let step = &pipeline.steps()[inst.step];
    // Full values are hashed; the parts keep what a person can compare.
    let mut full: BTreeMap<String, String> = BTreeMap::new();
    full.insert("runtime".into(), format!("{:?}", step.runtime).to_lowercase());
    if step.runtime == Runtime::Docker {
        full.insert("image".into(), inst.image.clone().unwrap_or_default());
    }
    full.insert(
        "command".into(),
        match &inst.action {
            Resolved::Run(script) => script.clone(),
            Resolved::Command(argv) => serde_json::to_string(argv).unwrap_or_default(),
        },
    );
    for (k, v) in &inst.env {
        full.insert(format!("env.{k}"), v.clone());
    }
    for name in used_params(pipeline, step) {
        let value = plan.params.get(&name).map(|v| v.to_string()).unwrap_or_default();
        full.insert(format!("param.{name}"), value);
    }
    // A `run:` script holds references, not values: what they hold (matrix values, run id,
    // instance name) is part of the key. Every matrix value is, even one read by its variable.
    for (k, v) in &inst.matrix {
        full.insert(format!("matrix.{k}"), v.clone());
    }
    for (var, v) in &inst.vars {
        // Params are under `param.`, matrix values above; what is left (the run id, the
        // instance name) goes in as the variable.
        if !var.starts_with("WEIR_PARAM_") && !var.starts_with("WEIR_MATRIX_") {
            full.insert(format!("var.{var}"), v.clone());
        }
    }
    for (name, digest) in inputs {
        full.insert(format!("input.{name}"), digest.clone().unwrap_or_else(|| "none (skipped)".into()));
    }
    full.insert("bundle".into(), bundle.unwrap_or("none").to_string());
    // A secret's value counts (a new password voids the entry) only as its keyed fingerprint
    // (`crate::secrets`): the key, its parts and `weir cache explain` never hold the value.
    for (name, fingerprint) in secrets {
        full.insert(format!("secret.{name}"), fingerprint.clone());
    }
    // The step as declared (outputs, gate, retries, ...), for pipelines submitted without a
    // bundle; minus `cache:` (a longer ttl must not void entries) and the matrix (a new value
    // must not void the other instances; each instance's values are under `matrix.`).
    let mut declared = serde_json::to_value(step).unwrap_or_default();
    if let Some(fields) = declared.as_object_mut() {
        fields.remove("cache");
        fields.remove("matrix");
    }
    let declared = serde_json::to_string(&declared).unwrap_or_default();
    full.insert("definition".into(), format!("blake3 {}", &blake3::hash(declared.as_bytes()).to_hex()[..16]));
    let canonical = serde_json::to_vec(&full).unwrap_or_default();
    let key = blake3::hash(&canonical).to_hex().to_string();
    CacheKey { key, parts: full.into_iter().map(|(k, v)| (k, shown(&v))).collect() }
}

/// The parts that differ between two keys: `(part, ours, theirs)`, empty strings for absent.
/// Causes first: params, inputs, env and the bundle before the command they render into.
fn differences(ours: &CacheKey, theirs: &CacheKey) -> Vec<(String, String, String)> {
    let rank =
        |n: &str| ["param.", "input.", "env.", "bundle", "image", "runtime"].iter().position(|p| n.starts_with(p));
    let mut names: Vec<&String> =
        ours.parts.keys().chain(theirs.parts.keys()).collect::<BTreeSet<_>>().into_iter().collect();
    names.sort_by_key(|n| (rank(n).unwrap_or(usize::MAX), n.as_str()));
    names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (ours.parts.get(n), theirs.parts.get(n));
            let same = match (a, b) {
                (Some(a), Some(b)) => same_value(a, b),
                (None, None) => true,
                _ => false,
            };
            (!same).then(|| {
                let (now, then) = match (a, b) {
                    (Some(a), Some(b)) => {
                        let (then, now) = change_window(b, a);
                        (now, then)
                    }
                    _ => (a.cloned().unwrap_or_default(), b.cloned().unwrap_or_default()),
                };
                (n.clone(), now, then)
            })
        })
        .collect()
}

/// One line saying what differs: `param rows: 1000 -> 2000; input ingest changed`.
fn describe(diffs: &[(String, String, String)]) -> String {
    let said: Vec<String> = diffs
        .iter()
        .map(|(part, now, then)| match (then.is_empty(), now.is_empty()) {
            (true, _) => format!("{part} is new ({now})"),
            (_, true) => format!("{part} is gone (was {then})"),
            _ => format!("{part}: {then} -> {now}"),
        })
        .collect();
    said.join("; ")
}

/// The entry closest to `key` among `entries`: most parts equal, then the same instance, then
/// the newest.
fn closest<'a>(key: &CacheKey, name: &str, entries: &'a [CacheEntry]) -> Option<&'a CacheEntry> {
    entries.iter().max_by_key(|e| {
        let equal = e.key.parts.iter().filter(|(k, v)| key.parts.get(*k) == Some(v)).count();
        (equal, e.name == name, e.created_at)
    })
}

/// Whether `entry` is still usable at `now` under the step's `ttl`.
fn fresh(entry: &CacheEntry, ttl: Option<std::time::Duration>, now: Millis) -> bool {
    ttl.is_none_or(|ttl| now.0.saturating_sub(entry.created_at.0) <= ttl.as_millis() as u64)
}

impl Engine {
    /// The inputs of instance `i` of a live run, as its key sees them. `current` is the
    /// instance whose outputs the event being applied brings: not in the store yet.
    fn live_inputs(
        &self,
        live: &Live,
        run_id: &str,
        node: NodeIndex,
        current: Option<(InstanceId, &Manifest)>,
    ) -> Result<Inputs, ApiError> {
        let mut needs: Vec<NodeIndex> = live.plan.graph.neighbors_directed(node, Direction::Incoming).collect();
        needs.sort_unstable();
        let mut inputs = Vec::with_capacity(needs.len());
        for need in needs {
            let id = InstanceId(need.index() as u32);
            let digest = if live.machine.state(id).is_success() {
                let digest = match current {
                    Some((i, m)) if i == id => m.digest(),
                    _ => self.store.artifacts(run_id, id)?.unwrap_or_default().digest(),
                };
                Some(digest.to_string())
            } else {
                None
            };
            inputs.push((live.plan.graph[need].name.clone(), digest));
        }
        // A step that reads the run's input dataset (`$WEIR_TRIGGER_FILES`) is keyed on its
        // bytes, not on the names in its text: new data under an old file name runs it again.
        let step = &live.pipeline.steps()[live.plan.graph[node].step];
        if reads_trigger_files(step) {
            let files = self.input_dataset(&live.record)?;
            let digests: Vec<String> = files.iter().map(|f| f.digest.to_string()).collect();
            inputs.push((TRIGGER_FILES_INPUT.into(), Some(digests.join(","))));
        }
        Ok(inputs)
    }

    /// For each attempt made ready by `effects` of a step with `cache:`: computes its key
    /// (kept in its step record, which is marked touched) and, unless caching is off for the
    /// run or this step is the one a `retry --from` re-runs, looks for a usable entry. Returns
    /// the hits. A store error only costs the hit (logged): caching never fails a run.
    pub(crate) fn cache_lookups(
        &self,
        live: &mut Live,
        effects: &[Effect],
        current: Option<(InstanceId, &Manifest)>,
        touched: &mut BTreeSet<InstanceId>,
        metered: &mut Vec<crate::metrics::Metered>,
        now: Millis,
    ) -> Vec<(AttemptId, CacheEntry)> {
        let mut hits = Vec::new();
        for effect in effects {
            let Effect::Ready { attempt } = effect else { continue };
            let node = NodeIndex::new(attempt.instance.index());
            let step = &live.pipeline.steps()[live.plan.graph[node].step];
            if !step.cache.enabled {
                continue;
            }
            let run_id = live.record.id.clone();
            let inputs = match self.live_inputs(live, &run_id, node, current) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(run = run_id, error = %e, "cannot read inputs for a cache key; the step runs");
                    continue;
                }
            };
            let secrets = self.secret_fingerprints(&step.secrets);
            let key = key_of(&live.pipeline, &live.plan, node, live.bundle.as_deref(), &inputs, &secrets);
            let forced = matches!(&live.record.trigger, Trigger::Retry { from: Some(s), .. } if *s == step.name);
            let (pipeline, name, ttl) = (live.pipeline.name().to_string(), step.name.clone(), step.cache.ttl);
            live.steps[attempt.instance.index()].cache = Some(key.clone());
            touched.insert(attempt.instance);
            if live.record.no_cache || forced {
                continue;
            }
            match self.store.cache_entry(&pipeline, &name, &key.key) {
                Ok(Some(entry)) if fresh(&entry, ttl, now) && entry.run != run_id => {
                    // An entry whose files are gone from the blob store (a folder cleaned by
                    // hand) would hand its dependents inputs nobody can download: run instead.
                    if let Some(gone) = entry.outputs.entries().iter().find(|f| !self.blobs.contains(&f.digest)) {
                        tracing::warn!(
                            run = run_id,
                            step = entry.name,
                            file = gone.path,
                            "cached output missing; the step runs"
                        );
                        continue;
                    }
                    tracing::info!(run = run_id, step = entry.name, from = entry.run, "cache hit");
                    metered.push(crate::metrics::Metered::CacheHit);
                    hits.push((*attempt, entry));
                }
                Ok(_) => {
                    metered.push(crate::metrics::Metered::CacheMiss);
                }
                Err(e) => tracing::warn!(run = run_id, error = %e, "cannot read the cache; the step runs"),
            }
        }
        hits
    }

    /// Records the cache entry of a fresh success of a step with `cache:`.
    pub(crate) fn record_cache_entry(
        &self,
        live: &Live,
        instance: InstanceId,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        let node = NodeIndex::new(instance.index());
        let step = &live.pipeline.steps()[live.plan.graph[node].step];
        let Some(key) = live.steps[instance.index()].cache.clone() else { return Ok(()) };
        if !step.cache.enabled {
            return Ok(());
        }
        let entry = CacheEntry {
            key,
            run: live.record.id.clone(),
            instance: instance.0,
            name: live.plan.graph[node].name.clone(),
            outputs: outputs.clone(),
            metrics: live.machine.metrics(instance).clone(),
            created_at: now,
        };
        batch.put_cache_entry(live.pipeline.name(), &step.name, &entry)?;
        Ok(())
    }

    /// `PlanRun`: the plan of a stored version (or of a file not stored, as the version it would
    /// get) with these params, and what the cache would do for each instance. An instance whose
    /// inputs come from a step that runs cannot be known (`unknown`); one whose every input the
    /// cache supplies gets its key computed exactly as the run would.
    pub(crate) fn plan_run(
        &self,
        target: Option<PlanTarget>,
        params: BTreeMap<String, String>,
        no_cache: bool,
    ) -> Result<(String, Vec<PlannedStep>), ApiError> {
        let stored = |version: String| {
            let (pipeline, bundle) = self.pipeline(&mut self.lock(), &version)?;
            Ok::<_, ApiError>((version, pipeline, bundle))
        };
        let (version, pipeline, bundle) = match target {
            Some(PlanTarget::Stored(PipelineRef::Name(name))) => {
                stored(self.store.pipeline(&name)?.ok_or_else(|| self.no_pipeline(&name))?.latest)?
            }
            Some(PlanTarget::Stored(PipelineRef::Version(v))) => stored(v)?,
            // A file not stored (`weir plan FILE`): planned as the version it would get.
            Some(PlanTarget::File { yaml, file_name, bundle_digest }) => {
                self.unstored(&yaml, &file_name, &bundle_digest)?
            }
            None => return Err(ApiError::Invalid("pipeline: give a name, a version or a source".into())),
        };
        let overrides: Vec<(String, String)> = params.into_iter().collect();
        let params = plan::resolve_params(&pipeline, &overrides)
            .map_err(|diags| self.params_error(&version, pipeline.name(), diags))?;
        let plan = plan::plan(&pipeline, &params, "planned");
        let fingerprints = |names: &[String]| self.secret_fingerprints(names);
        let steps =
            predict(&self.store, &pipeline, &plan, bundle.as_deref(), no_cache, self.clock.now(), &fingerprints)?;
        Ok((version, steps))
    }

    /// `ExplainCache`: why an instance of a run was or was not taken from the cache.
    pub(crate) fn explain_cache(&self, run_id: &str, step: &str) -> Result<Explanation, ApiError> {
        let record = self
            .store
            .run(run_id)?
            .ok_or_else(|| ApiError::NotFound(format!("no run {run_id}: `weir runs` lists the runs")))?;
        let (pipeline, _) = self.pipeline(&mut self.lock(), &record.version)?;
        let steps = match self.lock().runs.get(run_id) {
            Some(live) => live.steps.clone(),
            None => self.store.steps(run_id, None, usize::MAX)?.into_iter().map(|(_, s)| s).collect(),
        };
        let by_step: Vec<&crate::store::StepRecord> =
            steps.iter().filter(|s| s.name.split('[').next() == Some(step)).collect();
        let s = match steps.iter().find(|s| s.name == step) {
            Some(s) => s,
            None if by_step.len() == 1 => by_step[0],
            None if by_step.len() > 1 => {
                let names: Vec<&str> = by_step.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::Invalid(format!(
                    "step {step} has {} instances; name one: {}",
                    names.len(),
                    names.join(", ")
                )));
            }
            None => {
                let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::NotFound(format!(
                    "run {run_id} has no step {step} (it has: {})",
                    names.join(", ")
                )));
            }
        };
        let step_name = s.name.split('[').next().unwrap_or(&s.name).to_string();
        let spec = pipeline.step(&step_name);
        let mut out = Explanation { name: s.name.clone(), ..Default::default() };
        if !spec.is_some_and(|st| st.cache.enabled) {
            out.verdict = Verdict::NotCacheable;
            out.message = format!("{step_name} has no `cache:` in the pipeline file: it always runs");
            return Ok(out);
        }
        let ttl = spec.and_then(|st| st.cache.ttl);
        let Some(key) = &s.cache else {
            out.verdict = Verdict::Unknown;
            out.message = format!("{} never became ready ({}), so it has no key", s.name, s.state);
            return Ok(out);
        };
        out.cache_key = key.key.clone();
        out.parts = key
            .parts
            .iter()
            .map(|(k, v)| KeyPart { part: k.clone(), value: v.clone(), closest: String::new() })
            .collect();
        if s.state == StepState::Cached {
            out.verdict = Verdict::Hit;
            let from = s.cached_from.clone().unwrap_or_default();
            out.closest_run.clone_from(&from);
            out.message = match &record.trigger {
                Trigger::Retry { of, .. } if *of == from => format!("reused from run {from}, the run this one retries"),
                _ => format!("taken from the cache: run {from} succeeded with the same key"),
            };
            return Ok(out);
        }
        out.verdict = Verdict::Miss;
        let entries: Vec<CacheEntry> = self
            .store
            .cache_entries(&record.pipeline, &step_name, MAX_COMPARED)?
            .into_iter()
            .filter(|e| e.run != record.id && e.created_at <= s.started_at.unwrap_or(Millis(u64::MAX)))
            .collect();
        let same = entries.iter().find(|e| e.key.key == key.key);
        let forced = matches!(&record.trigger, Trigger::Retry { from: Some(f), .. } if *f == step_name);
        out.message = if record.no_cache {
            "caching was off for this run (`--no-cache`)".to_string()
        } else if forced {
            format!("`weir retry --from {step_name}` re-runs this step whatever the cache holds")
        } else if let Some(e) = same {
            match ttl {
                Some(ttl) if !fresh(e, Some(ttl), s.started_at.unwrap_or(record.created_at)) => format!(
                    "the entry with the same key, from run {}, had expired (ttl {})",
                    e.run,
                    weir_core::spec::units::format_duration(ttl)
                ),
                _ => {
                    format!("an entry with the same key exists (run {}) but was written after this step started", e.run)
                }
            }
        } else {
            match closest(key, &s.name, &entries) {
                None => format!("no earlier successful attempt of {step_name} was cached: this was the first"),
                Some(c) => {
                    let diffs = differences(key, &c.key);
                    out.closest_run.clone_from(&c.run);
                    out.differences = diffs
                        .iter()
                        .map(|(p, now, then)| KeyPart { part: p.clone(), value: now.clone(), closest: then.clone() })
                        .collect();
                    for part in &mut out.parts {
                        part.closest = c.key.parts.get(&part.part).cloned().unwrap_or_default();
                    }
                    format!("closest entry is run {} ({}): {}", c.run, c.name, describe(&diffs))
                }
            }
        };
        Ok(out)
    }
}

/// What the cache in `store` would do for each instance of `plan`, in plan order; `bundle` is
/// the digest of the pipeline folder's bundle as the engine stored it (`weir plan` builds the
/// bundle to know it).
pub fn predict(
    store: &Store,
    pipeline: &Pipeline,
    plan: &Plan,
    bundle: Option<&str>,
    no_cache: bool,
    now: Millis,
    fingerprints: &dyn Fn(&[String]) -> BTreeMap<String, String>,
) -> Result<Vec<PlannedStep>, ApiError> {
    // The outputs an instance would have, when known (it comes from the cache).
    let mut known: HashMap<NodeIndex, Manifest> = HashMap::new();
    let mut out = Vec::with_capacity(plan.order.len());
    for &node in &plan.order {
        let inst = &plan.graph[node];
        let step = &pipeline.steps()[inst.step];
        let mut p = PlannedStep { name: inst.name.clone(), step: step.name.clone(), ..Default::default() };
        if !step.cache.enabled || no_cache {
            p.verdict = Verdict::NotCacheable;
            p.reason = if no_cache { "caching is off for this run".into() } else { "no `cache:`".into() };
            out.push(p);
            continue;
        }
        let mut needs: Vec<NodeIndex> = plan.graph.neighbors_directed(node, Direction::Incoming).collect();
        needs.sort_unstable();
        let runs: Vec<&str> =
            needs.iter().filter(|n| !known.contains_key(n)).map(|n| plan.graph[*n].name.as_str()).collect();
        if !runs.is_empty() {
            p.verdict = Verdict::Unknown;
            p.reason = format!(
                "its inputs come from {}, which run{} first",
                runs.join(", "),
                if runs.len() == 1 { "s" } else { "" }
            );
            out.push(p);
            continue;
        }
        let mut inputs: Inputs =
            needs.iter().map(|n| (plan.graph[*n].name.clone(), Some(known[n].digest().to_string()))).collect();
        if reads_trigger_files(step) {
            // A planned run is started by hand: no input dataset, as `live_inputs` keys it.
            inputs.push((TRIGGER_FILES_INPUT.into(), Some(String::new())));
        }
        let key = key_of(pipeline, plan, node, bundle, &inputs, &fingerprints(&step.secrets));
        p.cache_key.clone_from(&key.key);
        match store.cache_entry(pipeline.name(), &step.name, &key.key)? {
            Some(e) if fresh(&e, step.cache.ttl, now) => {
                p.verdict = Verdict::Hit;
                p.cached_from.clone_from(&e.run);
                known.insert(node, e.outputs);
            }
            Some(e) => {
                p.verdict = Verdict::Miss;
                p.reason = format!("the entry from run {} expired", e.run);
            }
            None => {
                p.verdict = Verdict::Miss;
                let entries = store.cache_entries(pipeline.name(), &step.name, MAX_COMPARED)?;
                p.reason = match closest(&key, &inst.name, &entries) {
                    None => "nothing cached for this step yet".into(),
                    Some(c) => format!("differs from run {}: {}", c.run, describe(&differences(&key, &c.key))),
                };
            }
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(yaml: &str) -> Pipeline {
        weir_core::spec::load(yaml, &Default::default()).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn key(p: &Pipeline, params: &[(&str, &str)], step: &str, inputs: &Inputs, bundle: &str) -> CacheKey {
        let overrides: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let plan = plan::plan(p, &plan::resolve_params(p, &overrides).unwrap(), "r1");
        let node = plan.graph.node_indices().find(|n| plan.graph[*n].name == step).unwrap();
        key_of(p, &plan, node, Some(bundle), inputs, &BTreeMap::new())
    }

    const YAML: &str = "name: p\nparams:\n  rows: 10\n  seed: 1\n  other: x\nsteps:\n  ingest:\n    run: gen --rows {{ params.rows }}\n    cache: true\n  train:\n    needs: [ingest]\n    run: fit --seed \"$WEIR_PARAM_SEED\"\n    env: {MODE: fast}\n    cache: {ttl: 1h}\n";

    #[test]
    fn the_key_covers_used_params_inputs_env_and_bundle_and_nothing_else() {
        let p = pipeline(YAML);
        let inputs: Inputs = vec![("ingest".into(), Some("d1".into()))];
        let base = key(&p, &[], "train", &inputs, "b1");
        assert_eq!(
            base.parts.keys().cloned().collect::<Vec<_>>(),
            ["bundle", "command", "definition", "env.MODE", "input.ingest", "param.seed", "runtime"],
            "train names seed only through its variable, and never rows or other"
        );
        assert_eq!(key(&p, &[("other", "y"), ("rows", "99")], "train", &inputs, "b1"), base, "unused params");
        let seed = key(&p, &[("seed", "2")], "train", &inputs, "b1");
        assert_eq!(differences(&seed, &base), [("param.seed".to_string(), "2".to_string(), "1".to_string())]);
        let data = key(&p, &[], "train", &vec![("ingest".into(), Some("d2".into()))], "b1");
        assert_eq!(describe(&differences(&data, &base)), "input.ingest: d1 -> d2");
        assert_ne!(key(&p, &[], "train", &inputs, "b2").key, base.key, "the bundle");
        let ingest = key(&p, &[("rows", "5")], "ingest", &Vec::new(), "b1");
        assert_eq!(ingest.parts["param.rows"], "5");
        assert_eq!(ingest.parts["command"], r#"gen --rows "${WEIR_PARAM_ROWS}""#);
        let other = key(&p, &[("rows", "6")], "ingest", &Vec::new(), "b1");
        assert_eq!(describe(&differences(&other, &ingest)), "param.rows: 5 -> 6", "the script is the same text");
    }

    #[test]
    fn values_behind_a_scripts_references_are_in_the_key() {
        let p = pipeline(
            "name: p\nsteps:\n  t:\n    matrix: {lr: [1, 2]}\n    run: fit {{ matrix.lr }} {{ run.id }}\n    cache: true\n",
        );
        let plan = |run: &str| plan::plan(&p, &plan::resolve_params(&p, &[]).unwrap(), run);
        let k = |plan: &Plan, name: &str| {
            let node = plan.graph.node_indices().find(|n| plan.graph[*n].name == name).unwrap();
            key_of(&p, plan, node, Some("b"), &Vec::new(), &BTreeMap::new())
        };
        let (r1, r2) = (plan("r1"), plan("r2"));
        assert_eq!(
            describe(&differences(&k(&r1, "t[lr=2]"), &k(&r1, "t[lr=1]"))),
            "matrix.lr: 1 -> 2",
            "same script text, different matrix value"
        );
        assert_eq!(describe(&differences(&k(&r2, "t[lr=1]"), &k(&r1, "t[lr=1]"))), "var.WEIR_RUN_ID: r1 -> r2");
    }

    #[test]
    fn the_declaration_counts_but_not_its_ttl_nor_the_other_matrix_values() {
        let base = "name: p\nsteps:\n  t:\n    matrix: {lr: [1, 2]}\n    run: fit {{ matrix.lr }}\n    outputs: [m.json]\n    cache: true\n";
        let k = |yaml: &str| key(&pipeline(yaml), &[], "t[lr=1]", &Vec::new(), "none");
        let k0 = k(base);
        assert_eq!(k(&base.replace("cache: true", "cache: {ttl: 30d}")), k0, "a longer ttl keeps entries");
        assert_eq!(k(&base.replace("[1, 2]", "[1, 2, 3]")), k0, "a new matrix value keeps the others");
        let more = k(&base.replace("[m.json]", "[m.json, extra.json]"));
        assert_eq!(differences(&more, &k0).iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["definition"]);
    }

    #[test]
    fn values_are_kept_whole_up_to_a_bound_then_shortened_but_hashed_whole() {
        let long = "x".repeat(200);
        assert_eq!(shown(&long), long, "kept whole, so explain can show where it changed");
        let huge = "x".repeat(KEPT + 1);
        let s = shown(&huge);
        assert!(s.starts_with(&"x".repeat(SHOWN)) && s.contains("blake3"), "{s}");
        assert_ne!(shown(&format!("{huge}y")), s);
        assert!(same_value(&s, &huge) && !same_value(&s, &format!("{huge}y")));
    }

    #[test]
    fn a_change_in_the_middle_of_a_long_command_is_shown_with_its_context() {
        let head = "python3 steps/train.py --data \"$WEIR_INPUTS/prep\" --epochs 50 --seed 7 ";
        let then = format!("{head}--l2 0.1 --features linear --out \"$WEIR_OUTPUTS\" --verbose --log-every 10");
        let now = then.replace("--l2 0.1", "--l2 0.2");
        let (a, b) = change_window(&then, &now);
        assert!(a.contains("--l2 0.1") && b.contains("--l2 0.2"), "{a} / {b}");
        assert!(a.starts_with('…') && a.len() < then.len(), "{a}");
        // An entry written when values were stored shortened still matches its whole value.
        let old = format!("{}… (blake3 {})", &then[..40], &blake3::hash(then.as_bytes()).to_hex()[..16]);
        assert!(same_value(&old, &then) && !same_value(&old, &now));
    }

    #[test]
    fn the_closest_entry_has_the_most_equal_parts() {
        let p = pipeline(YAML);
        let inputs: Inputs = vec![("ingest".into(), Some("d1".into()))];
        let mine = key(&p, &[("seed", "3")], "train", &inputs, "b1");
        let entry = |k: CacheKey, run: &str, at: u64| CacheEntry {
            key: k,
            run: run.into(),
            instance: 1,
            name: "train".into(),
            outputs: Manifest::default(),
            metrics: BTreeMap::new(),
            created_at: Millis(at),
        };
        let far =
            entry(key(&p, &[("seed", "4")], "train", &vec![("ingest".into(), Some("d9".into()))], "b1"), "far", 9);
        let near = entry(key(&p, &[("seed", "1")], "train", &inputs, "b1"), "near", 1);
        let entries = [far, near];
        assert_eq!(closest(&mine, "train", &entries).unwrap().run, "near");
        let ttl = Some(std::time::Duration::from_secs(1));
        assert!(fresh(&entries[1], ttl, Millis(1_001)) && !fresh(&entries[1], ttl, Millis(1_002)));
    }
}
