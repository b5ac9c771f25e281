//! Maps the spanned YAML tree onto the model, field by field, recording a diagnostic for each
//! problem and carrying on. Cross-references between fields and steps are left to `check`.
//!
//! This file owns the entry point [`pipeline`], the top-level fields (with `x-` extension keys
//! ignored), and the drafts the readers fill in ([`StepDraft`], [`Defaults`]). The readers live
//! in the submodules: `params`, `schedule`, `triggers` (`on:`), `fields` (what steps and `defaults:` share) and
//! `step`. It must not read a field of its own beyond the top level.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::spec::decode::{Cx, check_name, suggest_name};
use crate::spec::model::*;
use crate::spec::yaml::NodeId;
use crate::spec::{Limits, check};
use crate::template::Template;

// The field lists live beside the JSON Schema, so the schema and the parser cannot drift.
use crate::schema::TOP_LEVEL_FIELDS;

mod fields;
mod keep;
mod notify;
mod params;
mod schedule;
mod step;
mod triggers;

use fields::defaults;
use keep::keep;
use notify::{notify, sla};
use params::params;
use schedule::schedule;
use step::step;
use triggers::triggers;

/// What `defaults:` may set; each field is `None` when not given.
#[derive(Default)]
pub(crate) struct Defaults {
    runtime: Option<Runtime>,
    image: Option<(Template, NodeId)>,
    image_given: bool,
    pull: Option<PullPolicy>,
    capabilities: Option<Vec<String>>,
    retries: Option<Retries>,
    timeout: Option<Duration>,
    resources: Option<PartialResources>,
    runs_on: BTreeMap<String, String>,
    env: Vec<(String, Template, NodeId)>,
    cache: Option<Cache>,
}

#[derive(Clone, Copy, Default)]
struct PartialResources {
    cpus_milli: Option<u32>,
    memory_bytes: Option<u64>,
    gpus: Option<u32>,
}

/// A step as read, before cross-checks; node ids kept for precise messages.
pub(crate) struct StepDraft {
    pub step: Step,
    pub needs_nodes: Vec<NodeId>,
    /// Node of each template, parallel to how `check` walks them: (template, node).
    pub templates: Vec<(Template, NodeId)>,
    /// The `run:` script's node, to point at its references.
    pub run_node: Option<NodeId>,
    pub when_node: Option<NodeId>,
    pub gate_node: Option<NodeId>,
    pub register_node: Option<NodeId>,
    pub runtime_node: Option<NodeId>,
    /// The matrix had problems (reported); its keys are kept but it counts as one instance.
    pub matrix_rejected: bool,
    /// The step (or defaults) names an image, even an invalid one.
    pub image_given: bool,
    /// Templates inherited from `defaults` (reported once, not per step).
    pub inherited: Vec<NodeId>,
}

pub(crate) fn pipeline(cx: &mut Cx<'_>, limits: &Limits) -> Option<Pipeline> {
    let root = cx.doc.root;
    let fields = cx.fields_with_extensions(root, "the pipeline", TOP_LEVEL_FIELDS)?;
    if let Some(v) = fields.get("version")
        && let Some(n) = cx.int(v, "version")
        && n != 1
    {
        cx.push(
            Diagnostic::error(format!("unsupported pipeline format version {n}"))
                .at(cx.span(v), "this weir reads version 1")
                .help("write `version: 1` or leave it out"),
        );
    }
    let top = Span::on_line(1, 0, 1);
    let name = cx.require(&fields, "name", "the pipeline", "the pipeline's name, like `churn-retrain`", top);
    let name = name.and_then(|n| {
        let text = cx.text(n, "name")?;
        match check_name(text) {
            Ok(()) => Some(text.to_string()),
            Err(e) => {
                cx.push(
                    Diagnostic::error(format!("invalid pipeline name `{text}`"))
                        .at(cx.span(n), e)
                        .help(format!("try `{}`", suggest_name(text))),
                );
                None
            }
        }
    });
    let description = fields.get("description").and_then(|d| cx.string(d, "description").map(str::to_string));
    let (params, declared) = fields.get("params").map(|p| params(cx, p)).unwrap_or_default();
    let defaults = fields.get("defaults").map(|d| defaults(cx, d)).unwrap_or_default();
    let schedule_key = fields.key_span(cx, "schedule").unwrap_or(top);
    let schedule = fields.get("schedule").and_then(|s| schedule(cx, s, schedule_key, &params, &declared));
    let keep_key = fields.key_span(cx, "keep").unwrap_or(top);
    let keep = fields.get("keep").and_then(|k| keep(cx, k, keep_key));
    let notify = fields.get("notify").and_then(|n| notify(cx, n, "notify", false)).unwrap_or_default();
    let sla = fields.get("sla").and_then(|s| sla(cx, s));
    let on_key = fields.key_span(cx, "on").unwrap_or(top);
    let triggers = fields.get("on").map(|o| triggers(cx, o, on_key, &params, &declared)).unwrap_or_default();
    let steps_node = cx.require(&fields, "steps", "the pipeline", "a mapping of step names to steps", top);
    let mut drafts = Vec::with_capacity(steps_node.and_then(|n| cx.doc.node(n).kind.items()).unwrap_or(0));
    if let Some(steps_node) = steps_node
        && let Some(entries) = cx.map(steps_node, "steps")
    {
        if entries.is_empty() {
            cx.push(Diagnostic::error("`steps` is empty").at(cx.span(steps_node), "expected at least one step"));
        }
        for &(k, v) in entries {
            if let Some(d) = step(cx, k, v, &defaults, limits) {
                drafts.push(d);
            }
        }
    }
    let steps = check::steps(cx, drafts, &params, &declared, limits);
    let (name, steps) = (name?, steps?);
    let mut pipeline =
        Pipeline { name, description, params, schedule, keep, sla, notify, triggers, steps, hash: String::new() };
    // Stream the canonical JSON into the hasher: no copy of the whole model in memory.
    // (buffered: the serializer's many tiny writes would each pay the hasher's call overhead).
    let mut hasher = blake3::Hasher::new();
    {
        let mut buffered = std::io::BufWriter::with_capacity(64 << 10, &mut hasher);
        let _ = serde_json::to_writer(&mut buffered, &pipeline);
        let _ = std::io::Write::flush(&mut buffered);
    }
    pipeline.hash = hasher.finalize().to_hex().to_string();
    Some(pipeline)
}

impl Cx<'_> {
    /// Like `fields`, but keys starting with `x-` are extensions and ignored.
    fn fields_with_extensions<'b>(
        &mut self,
        id: NodeId,
        path: &str,
        allowed: &[&str],
    ) -> Option<crate::spec::decode::Fields<'b>>
    where
        Self: 'b,
    {
        let doc = self.doc;
        let entries = self.map(id, path)?;
        let mut out = crate::spec::decode::Fields { entries: Vec::new(), span: self.span(id) };
        for &(k, v) in entries {
            let key = doc.text(k).unwrap_or("");
            if key.starts_with("x-") {
                continue;
            }
            if allowed.contains(&key) {
                out.entries.push((key, k, v));
                continue;
            }
            let d = Diagnostic::error(format!("unknown field `{key}` at the top level"))
                .at(self.span(k), "not a pipeline field");
            let d = match did_you_mean(key, allowed.iter().copied()) {
                Some(h) => d.help(h),
                None => d.note(format!(
                    "expected one of: {}; keys starting with `x-` are free for anchors",
                    allowed.join(", ")
                )),
            };
            self.push(d);
        }
        Some(out)
    }
}
