//! Maps the spanned YAML tree onto the model, field by field, recording a diagnostic for each
//! problem and carrying on. Cross-references between fields and steps are left to `check`.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::expr::{self, Expr};
use crate::spec::decode::{Cx, check_name, is_ident, suggest_name};
use crate::spec::model::*;
use crate::spec::units::{self, CPUS_HELP, DURATION_HELP, MEMORY_HELP};
use crate::spec::yaml::{Kind, NodeId, Scalar};
use crate::spec::{Limits, check, cron};
use crate::template::{self, Template};

// The field lists live beside the JSON Schema, so the schema and the parser cannot drift.
use crate::schema::{
    CACHE_FIELDS, DEFAULTS_FIELDS, PARAM_FIELDS, REGISTER_FIELDS, RESOURCE_FIELDS, RETRY_FIELDS, SCHEDULE_FIELDS,
    STEP_FIELDS, TOP_LEVEL_FIELDS,
};

/// What `defaults:` may set; each field is `None` when not given.
#[derive(Default)]
pub(crate) struct Defaults {
    runtime: Option<Runtime>,
    image: Option<(Template, NodeId)>,
    image_given: bool,
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
    let steps_node = cx.require(&fields, "steps", "the pipeline", "a mapping of step names to steps", top);
    let mut drafts = Vec::new();
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
    let mut pipeline = Pipeline { name, description, params, schedule, steps, hash: String::new() };
    let canonical = serde_json::to_vec(&pipeline).unwrap_or_default();
    pipeline.hash = blake3::hash(&canonical).to_hex().to_string();
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

// ---- params ------------------------------------------------------------------------------

/// The valid params, and the names of all declared ones (a param with a problem is still
/// declared: references to it are not reported again as unknown).
fn params(cx: &mut Cx<'_>, id: NodeId) -> (Vec<Param>, Vec<String>) {
    let Some(entries) = cx.map(id, "params") else { return (Vec::new(), Vec::new()) };
    let mut out: Vec<Param> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let mut env_names: HashMap<String, NodeId> = HashMap::new();
    for &(k, v) in entries {
        let name = cx.doc.text(k).unwrap_or("").to_string();
        if !is_ident(&name) {
            cx.push(
                Diagnostic::error(format!("invalid param name `{name}`"))
                    .at(cx.span(k), "expected letters, digits and `_`, not starting with a digit")
                    .note("params become environment variables `WEIR_PARAM_<NAME>` and `{{ params.NAME }}` references"),
            );
            continue;
        }
        let upper = name.to_ascii_uppercase();
        if let Some(&first) = env_names.get(&upper) {
            cx.push(
                Diagnostic::error(format!("param `{name}` clashes with another param's environment variable"))
                    .at(cx.span(k), format!("both become `WEIR_PARAM_{upper}`"))
                    .related(cx.span(first), "the other param"),
            );
            continue;
        }
        env_names.insert(upper, k);
        declared.push(name.clone());
        if let Some(p) = param(cx, name, k, v) {
            out.push(p);
        }
    }
    (out, declared)
}

fn param(cx: &mut Cx<'_>, name: String, key: NodeId, v: NodeId) -> Option<Param> {
    let path = format!("params.{name}");
    let mut p = Param {
        name,
        kind: ParamType::String,
        default: None,
        description: None,
        choices: Vec::new(),
        min: None,
        max: None,
        pattern: None,
        span: cx.span(key),
    };
    match &cx.doc.node(v).kind {
        Kind::Seq(_) => {
            cx.expected(v, &path, "a default value or a mapping with `type` and `default`");
            return None;
        }
        Kind::Scalar { .. } => {
            let (kind, value) = match cx.doc.scalar(v)? {
                Scalar::Null => {
                    cx.push(
                        Diagnostic::error(format!("param `{}` has no default and no type", p.name))
                            .at(cx.span(v), "expected a default value")
                            .help(format!("write `{}: {{type: string}}` for a required param", p.name)),
                    );
                    return None;
                }
                Scalar::Bool(b) => (ParamType::Bool, Value::Bool(b)),
                Scalar::Int(i) => (ParamType::Int, Value::Int(i)),
                Scalar::Float(f) if f.is_finite() => (ParamType::Float, Value::Float(f)),
                Scalar::Float(_) => {
                    cx.expected(v, &path, "a finite number");
                    return None;
                }
                Scalar::Str(s) => (ParamType::String, Value::String(s.to_string())),
            };
            p.kind = kind;
            p.default = Some(value);
            return Some(p);
        }
        Kind::Map(_) => {}
    }
    let fields = cx.fields(v, &path, "param", PARAM_FIELDS)?;
    let mut ok = true;
    let declared = fields.get("type").and_then(|t| {
        let text = cx.string(t, &format!("{path}.type"))?;
        let kind = match text {
            "int" => ParamType::Int,
            "float" => ParamType::Float,
            "bool" => ParamType::Bool,
            "string" => ParamType::String,
            other => {
                let alias = match other {
                    "integer" => Some("int"),
                    "number" | "double" => Some("float"),
                    "boolean" => Some("bool"),
                    "str" | "text" => Some("string"),
                    _ => None,
                };
                let help = alias
                    .map(|a| format!("did you mean `{a}`?"))
                    .or_else(|| did_you_mean(other, ["int", "float", "bool", "string"]));
                cx.push(
                    Diagnostic::error(format!("unknown param type `{other}`"))
                        .at(cx.span(t), "expected int, float, bool or string")
                        .help_opt(help),
                );
                ok = false;
                return None;
            }
        };
        Some(kind)
    });
    let default_node = fields.get("default");
    p.kind = match (declared, default_node) {
        (Some(k), _) => k,
        (None, Some(d)) => match cx.doc.scalar(d) {
            Some(Scalar::Int(_)) => ParamType::Int,
            Some(Scalar::Float(_)) => ParamType::Float,
            Some(Scalar::Bool(_)) => ParamType::Bool,
            _ => ParamType::String,
        },
        (None, None) => {
            if ok {
                cx.push(
                    Diagnostic::error(format!("param `{}` needs a `type` or a `default`", p.name))
                        .at(cx.span(v), "neither is given")
                        .help("add `type: string` (or int, float, bool)"),
                );
            }
            return None;
        }
    };
    if !ok {
        return None;
    }
    if let Some(d) = fields.get("description") {
        p.description = cx.string(d, &format!("{path}.description")).map(str::to_string);
    }
    let numeric = matches!(p.kind, ParamType::Int | ParamType::Float);
    for (field, slot) in [("min", &mut p.min), ("max", &mut p.max)] {
        if let Some(n) = fields.get(field) {
            if !numeric {
                cx.push(
                    Diagnostic::error(format!("`{field}` applies to int and float params, not {}", p.kind))
                        .at(cx.span(n), "not allowed here"),
                );
                ok = false;
            } else {
                *slot = cx.number(n, &format!("{path}.{field}"));
                ok &= slot.is_some();
            }
        }
    }
    if let (Some(min), Some(max)) = (p.min, p.max)
        && min > max
    {
        let span = fields.key_span(cx, "min").unwrap_or(fields.span);
        cx.push(
            Diagnostic::error(format!("param `{}` has min {min} above max {max}", p.name))
                .at(span, "min is larger than max"),
        );
        ok = false;
    }
    if let Some(pat) = fields.get("pattern") {
        if p.kind != ParamType::String {
            cx.push(
                Diagnostic::error(format!("`pattern` applies to string params, not {}", p.kind))
                    .at(cx.span(pat), "not allowed here"),
            );
            ok = false;
        } else if let Some(text) = cx.string(pat, &format!("{path}.pattern")) {
            match regex::RegexBuilder::new(text).size_limit(1 << 20).build() {
                Ok(re) => p.pattern = Some(re),
                Err(e) => {
                    let first = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                    cx.push(
                        Diagnostic::error(format!("invalid regular expression in `{path}.pattern`"))
                            .at(cx.span(pat), first.trim_start_matches("error: ").to_string()),
                    );
                    ok = false;
                }
            }
        }
    }
    if let Some(e) = fields.get("enum")
        && let Some(items) = cx.seq(e, &format!("{path}.enum"))
    {
        if items.is_empty() {
            cx.push(Diagnostic::error(format!("`{path}.enum` is empty")).at(cx.span(e), "expected at least one value"));
            ok = false;
        }
        for &item in items {
            match typed_value(cx, item, &p, &format!("{path}.enum")) {
                Some(v) if p.choices.contains(&v) => {
                    cx.push(
                        Diagnostic::error(format!("`{v}` is listed twice in `{path}.enum`"))
                            .at(cx.span(item), "duplicate"),
                    );
                }
                Some(v) => p.choices.push(v),
                None => ok = false,
            }
        }
    }
    if let Some(d) = default_node {
        if let Some(value) = typed_value(cx, d, &p, &format!("{path}.default")) {
            if let Err(e) = p.check(&value) {
                cx.push(
                    Diagnostic::error(format!("the default of param `{}` is not allowed", p.name)).at(cx.span(d), e),
                );
                ok = false;
            }
            p.default = Some(value);
        } else {
            ok = false;
        }
    }
    ok.then_some(p)
}

/// A YAML scalar read as a value of `param`'s type.
pub(crate) fn typed_value(cx: &mut Cx<'_>, id: NodeId, param: &Param, path: &str) -> Option<Value> {
    let scalar = cx.doc.scalar(id);
    let value = match (param.kind, scalar) {
        (ParamType::Int, Some(Scalar::Int(i))) => Value::Int(i),
        (ParamType::Float, Some(Scalar::Int(i))) => Value::Float(i as f64),
        (ParamType::Float, Some(Scalar::Float(f))) if f.is_finite() => Value::Float(f),
        (ParamType::Bool, Some(Scalar::Bool(b))) => Value::Bool(b),
        (ParamType::String, Some(Scalar::Null)) | (_, None) => {
            cx.expected(id, path, "a string");
            return None;
        }
        (ParamType::String, Some(_)) => Value::String(cx.doc.text(id).unwrap_or("").to_string()),
        (kind, _) => {
            let expected = match kind {
                ParamType::Int => "an int",
                ParamType::Float => "a finite float",
                ParamType::Bool => "`true` or `false`",
                ParamType::String => "a string",
            };
            cx.expected(id, path, &format!("{expected} (param `{}` is {kind})", param.name));
            return None;
        }
    };
    Some(value)
}

// ---- schedule ----------------------------------------------------------------------------

fn schedule(cx: &mut Cx<'_>, id: NodeId, key: Span, params: &[Param], declared: &[String]) -> Option<Schedule> {
    let fields = cx.fields(id, "schedule", "schedule", SCHEDULE_FIELDS)?;
    let cron_node = cx.require(&fields, "cron", "schedule", "a cron expression like \"0 3 * * *\"", key);
    let parsed = cron_node.and_then(|n| {
        let text = cx.string(n, "schedule.cron")?;
        match cron::parse_cron(text) {
            Ok(c) => Some((text.trim().to_string(), c)),
            Err(e) => {
                cx.push(
                    Diagnostic::error("`schedule.cron` is not a valid cron expression")
                        .at(cx.span(n), e)
                        .help(cron::CRON_HELP),
                );
                None
            }
        }
    });
    let timezone = match fields.get("timezone") {
        None => Some(chrono_tz::Tz::UTC),
        Some(n) => cx.string(n, "schedule.timezone").and_then(|text| match chrono_tz::Tz::from_str(text) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let help = did_you_mean(text, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
                    .unwrap_or_else(|| "use an IANA name like `Europe/Berlin`, `America/New_York` or `UTC`".into());
                cx.push(
                    Diagnostic::error(format!("unknown time zone `{text}`"))
                        .at(cx.span(n), "expected an IANA time zone name")
                        .help(help),
                );
                None
            }
        }),
    };
    let catchup = fields.get("catchup").map_or(Some(false), |n| cx.bool(n, "schedule.catchup"));
    let concurrency = fields.get("concurrency").map_or(Some(Concurrency::Forbid), |n| {
        let text = cx.string(n, "schedule.concurrency")?;
        match text {
            "allow" => Some(Concurrency::Allow),
            "forbid" => Some(Concurrency::Forbid),
            "replace" => Some(Concurrency::Replace),
            other => {
                cx.push(
                    Diagnostic::error(format!("unknown concurrency policy `{other}`"))
                        .at(cx.span(n), "expected allow, forbid or replace")
                        .help_opt(did_you_mean(other, ["allow", "forbid", "replace"])),
                );
                None
            }
        }
    });
    let mut values = BTreeMap::new();
    let mut ok = true;
    if let Some(n) = fields.get("params")
        && let Some(entries) = cx.map(n, "schedule.params")
    {
        for &(k, v) in entries {
            let name = cx.doc.text(k).unwrap_or("");
            match params.iter().find(|p| p.name == name) {
                Some(p) => match typed_value(cx, v, p, &format!("schedule.params.{name}")) {
                    Some(value) => {
                        if let Err(e) = p.check(&value) {
                            cx.push(
                                Diagnostic::error(format!("scheduled value for param `{name}` is not allowed"))
                                    .at(cx.span(v), e),
                            );
                            ok = false;
                        }
                        values.insert(name.to_string(), value);
                    }
                    None => ok = false,
                },
                None if declared.iter().any(|d| d == name) => ok = false,
                None => {
                    cx.push(
                        Diagnostic::error(format!("unknown param `{name}` in `schedule.params`"))
                            .at(cx.span(k), "not a declared param")
                            .help_opt(did_you_mean(name, params.iter().map(|p| p.name.as_str()))),
                    );
                    ok = false;
                }
            }
        }
    }
    let (cron, parsed) = parsed?;
    if !ok {
        return None;
    }
    Some(Schedule { cron, timezone: timezone?, catchup: catchup?, concurrency: concurrency?, params: values, parsed })
}

// ---- fields shared by steps and defaults -------------------------------------------------

fn runtime(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Runtime> {
    let text = cx.string(id, path)?;
    match text {
        "process" => Some(Runtime::Process),
        "docker" => Some(Runtime::Docker),
        other => {
            cx.push(
                Diagnostic::error(format!("unknown runtime `{other}`"))
                    .at(cx.span(id), "expected process or docker")
                    .help_opt(did_you_mean(other, ["process", "docker"])),
            );
            None
        }
    }
}

fn duration(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Duration> {
    let d = cx.parsed(id, path, "a duration", DURATION_HELP, units::parse_duration)?;
    if d.is_zero() {
        cx.push(Diagnostic::error(format!("`{path}` must be longer than 0")).at(cx.span(id), "zero duration"));
        return None;
    }
    Some(d)
}

fn retries(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Retries> {
    let mut r = Retries::default();
    if let Kind::Scalar { .. } = cx.doc.node(id).kind {
        if !matches!(cx.doc.scalar(id), Some(Scalar::Int(_))) {
            cx.expected(id, path, "a retry count or a mapping with `limit`, `backoff`, `max_backoff`");
            return None;
        }
        r.limit = cx.int_in(id, path, 0, 100)? as u32;
        return Some(r);
    }
    let fields = cx.fields(id, path, "retries", RETRY_FIELDS)?;
    let mut ok = true;
    if let Some(n) = fields.get("limit") {
        match cx.int_in(n, &format!("{path}.limit"), 0, 100) {
            Some(l) => r.limit = l as u32,
            None => ok = false,
        }
    }
    for (field, slot) in [("backoff", &mut r.backoff), ("max_backoff", &mut r.max_backoff)] {
        if let Some(n) = fields.get(field) {
            match duration(cx, n, &format!("{path}.{field}")) {
                Some(d) => *slot = d,
                None => ok = false,
            }
        }
    }
    if ok && r.backoff > r.max_backoff {
        let span = fields.key_span(cx, "backoff").unwrap_or(fields.span);
        cx.push(
            Diagnostic::error(format!("`{path}.backoff` is longer than `max_backoff`"))
                .at(span, format!("{} > {}", units::format_duration(r.backoff), units::format_duration(r.max_backoff)))
                .help("raise `max_backoff` or shorten `backoff`"),
        );
        ok = false;
    }
    ok.then_some(r)
}

fn resources(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<PartialResources> {
    let fields = cx.fields(id, path, "resources", RESOURCE_FIELDS)?;
    let mut r = PartialResources::default();
    let mut ok = true;
    if let Some(n) = fields.get("cpus") {
        r.cpus_milli = cx.parsed(n, &format!("{path}.cpus"), "a CPU amount", CPUS_HELP, units::parse_cpus);
        ok &= r.cpus_milli.is_some();
    }
    if let Some(n) = fields.get("memory") {
        r.memory_bytes = cx.parsed(n, &format!("{path}.memory"), "a memory quantity", MEMORY_HELP, units::parse_memory);
        ok &= r.memory_bytes.is_some();
    }
    if let Some(n) = fields.get("gpus") {
        r.gpus = cx.int_in(n, &format!("{path}.gpus"), 0, 64).map(|g| g as u32);
        ok &= r.gpus.is_some();
    }
    ok.then_some(r)
}

fn cache(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Cache> {
    if let Kind::Scalar { .. } = cx.doc.node(id).kind {
        if !matches!(cx.doc.scalar(id), Some(Scalar::Bool(_))) {
            cx.expected(id, path, "`true`, `false` or a mapping with `ttl`");
            return None;
        }
        return cx.bool(id, path).map(|enabled| Cache { enabled, ttl: None });
    }
    let fields = cx.fields(id, path, "cache", CACHE_FIELDS)?;
    let ttl = match fields.get("ttl") {
        Some(n) => Some(duration(cx, n, &format!("{path}.ttl"))?),
        None => None,
    };
    Some(Cache { enabled: true, ttl })
}

fn label_map(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<BTreeMap<String, String>> {
    let entries = cx.map(id, path)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for &(k, v) in entries {
        let key = cx.doc.text(k).unwrap_or("").to_string();
        let valid =
            !key.is_empty() && key.len() <= 63 && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        if !valid {
            cx.push(
                Diagnostic::error(format!("invalid label `{key}` in `{path}`"))
                    .at(cx.span(k), "expected letters, digits, `_`, `.`, `-` or `/`, at most 63"),
            );
            ok = false;
            continue;
        }
        match cx.text(v, &format!("{path}.{key}")) {
            Some(value) => {
                out.insert(key, value.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn template(cx: &mut Cx<'_>, id: NodeId, text: &str, path: &str) -> Option<Template> {
    match Template::parse(text) {
        Ok(t) => Some(t),
        Err(errors) => {
            for e in errors {
                report_template_error(cx, id, path, &e);
            }
            None
        }
    }
}

fn report_template_error(cx: &mut Cx<'_>, id: NodeId, path: &str, e: &template::Error) {
    let span = cx.sub_span(id, e.offset, e.len, &e.snippet);
    let (head, help) = match e.message.split_once(": ") {
        Some((head, rest)) if rest.starts_with("did you mean") => (head.to_string(), Some(rest.to_string())),
        _ => (e.message.clone(), None),
    };
    cx.push(Diagnostic::error(format!("bad template in `{path}`")).at(span, head).help_opt(help));
}

fn env(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Vec<(String, Template, NodeId)>> {
    let entries = cx.map(id, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for &(k, v) in entries {
        let key = cx.doc.text(k).unwrap_or("").to_string();
        if !is_ident(&key) {
            cx.push(
                Diagnostic::error(format!("invalid environment variable name `{key}`"))
                    .at(cx.span(k), "expected letters, digits and `_`, not starting with a digit"),
            );
            ok = false;
            continue;
        }
        if key.to_ascii_uppercase().starts_with("WEIR_") {
            cx.push(
                Diagnostic::error(format!("`{key}` is reserved"))
                    .at(cx.span(k), "names starting with `WEIR_` are set by weir")
                    .help("params already reach steps as `WEIR_PARAM_<NAME>`; pick another name"),
            );
            ok = false;
            continue;
        }
        let Some(text) = cx.text(v, &format!("{path}.{key}")) else {
            ok = false;
            continue;
        };
        match template(cx, v, text, &format!("{path}.{key}")) {
            Some(t) => out.push((key, t, v)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn image(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<(Template, NodeId)> {
    let text = cx.string(id, path)?;
    if text.trim().is_empty() || (text.chars().any(char::is_whitespace) && !text.contains("{{")) {
        cx.push(
            Diagnostic::error(format!("`{path}` is not an image reference"))
                .at(cx.span(id), "expected a name like `python:3.12-slim`"),
        );
        return None;
    }
    template(cx, id, text, path).map(|t| (t, id))
}

fn defaults(cx: &mut Cx<'_>, id: NodeId) -> Defaults {
    let mut d = Defaults::default();
    let Some(fields) = cx.fields(id, "defaults", "defaults", DEFAULTS_FIELDS) else { return d };
    for (name, _, v) in fields.entries.iter().copied() {
        let path = format!("defaults.{name}");
        match name {
            "runtime" => d.runtime = runtime(cx, v, &path),
            "image" => {
                d.image_given = true;
                d.image = image(cx, v, &path);
            }
            "retries" => d.retries = retries(cx, v, &path),
            "timeout" => d.timeout = duration(cx, v, &path),
            "resources" => d.resources = resources(cx, v, &path),
            "runs_on" => d.runs_on = label_map(cx, v, &path).unwrap_or_default(),
            "env" => d.env = env(cx, v, &path).unwrap_or_default(),
            "cache" => d.cache = cache(cx, v, &path),
            _ => {}
        }
    }
    d
}

// ---- steps -------------------------------------------------------------------------------

/// Why an output path is not acceptable, if it is not.
fn check_output(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("an output name cannot be empty");
    }
    if name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':') {
        return Err("absolute paths are not allowed: name a file inside $WEIR_OUTPUTS");
    }
    if name.contains('\\') {
        return Err("use `/` to separate folders");
    }
    if name.contains('\0') || name.chars().any(char::is_control) {
        return Err("control characters are not allowed");
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    for part in trimmed.split('/') {
        match part {
            ".." => return Err("`..` would leave the outputs folder"),
            "." | "" => return Err("empty or `.` path segments are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

fn step(cx: &mut Cx<'_>, key: NodeId, v: NodeId, defaults: &Defaults, limits: &Limits) -> Option<StepDraft> {
    let name = cx.doc.text(key).unwrap_or("").to_string();
    let mut ok = true;
    if let Err(e) = check_name(&name) {
        let suggestion = suggest_name(&name);
        let d = Diagnostic::error(format!("invalid step name `{name}`")).at(cx.span(key), e);
        cx.push(if suggestion.is_empty() { d } else { d.help(format!("try `{suggestion}`")) });
        ok = false;
    }
    let path = format!("steps.{name}");
    let fields = cx.fields(v, &path, "step", STEP_FIELDS)?;
    let p = |f: &str| format!("{path}.{f}");
    let mut draft = StepDraft {
        step: Step {
            name: name.clone(),
            stage: None,
            needs: Vec::new(),
            needs_idx: Vec::new(),
            action: Action::Command(Vec::new()),
            env: Vec::new(),
            outputs: Vec::new(),
            matrix: Vec::new(),
            cache: defaults.cache.unwrap_or_default(),
            resources: Resources::default(),
            runtime: defaults.runtime.unwrap_or_default(),
            image: defaults.image.as_ref().map(|(t, _)| t.clone()),
            retries: defaults.retries.unwrap_or_default(),
            timeout: defaults.timeout,
            when: None,
            gate: None,
            register: None,
            runs_on: defaults.runs_on.clone(),
            span: cx.span(key),
        },
        needs_nodes: Vec::new(),
        templates: Vec::new(),
        when_node: None,
        gate_node: None,
        register_node: None,
        runtime_node: None,
        matrix_rejected: false,
        image_given: defaults.image_given,
        inherited: Vec::new(),
    };
    if let Some((t, n)) = &defaults.image {
        draft.templates.push((t.clone(), *n));
    }
    draft.image_given |= fields.get("image").is_some();
    let mut res = defaults.resources.unwrap_or_default();
    let mut env_vars: Vec<(String, Template, NodeId)> = defaults.env.clone();
    draft.inherited = defaults.env.iter().map(|(_, _, n)| *n).chain(defaults.image.as_ref().map(|(_, n)| *n)).collect();

    match (fields.get("run"), fields.get("command")) {
        (Some(_), Some(c)) => {
            let run_span = fields.key_span(cx, "run").unwrap_or(fields.span);
            cx.push(
                Diagnostic::error(format!("step `{name}` has both `run` and `command`"))
                    .at(fields.key_span(cx, "command").unwrap_or(cx.span(c)), "remove this one or `run`")
                    .related(run_span, "`run` is here")
                    .note("`run` is a shell script; `command` is an argv list run without a shell"),
            );
            ok = false;
        }
        (None, None) => {
            cx.push(
                Diagnostic::error(format!("step `{name}` has neither `run` nor `command`"))
                    .at(cx.span(key), "nothing to run")
                    .help("add `run: <shell script>` or `command: [program, arg, ...]`"),
            );
            ok = false;
        }
        (Some(r), None) => match cx.string(r, &p("run")) {
            Some(text) if text.trim().is_empty() => {
                cx.push(
                    Diagnostic::error(format!("`{}` is empty", p("run"))).at(cx.span(r), "expected a shell script"),
                );
                ok = false;
            }
            Some(text) => match template(cx, r, text, &p("run")) {
                Some(t) => {
                    draft.templates.push((t.clone(), r));
                    draft.step.action = Action::Run(t);
                }
                None => ok = false,
            },
            None => ok = false,
        },
        (None, Some(c)) => match cx.seq(c, &p("command")) {
            Some([]) => {
                cx.push(
                    Diagnostic::error(format!("`{}` is empty", p("command")))
                        .at(cx.span(c), "expected [program, arg, ...]"),
                );
                ok = false;
            }
            Some(items) => {
                let mut argv = Vec::new();
                for (i, &item) in items.iter().enumerate() {
                    let Some(text) = cx.text(item, &format!("{}[{i}]", p("command"))) else {
                        ok = false;
                        continue;
                    };
                    match template(cx, item, text, &format!("{}[{i}]", p("command"))) {
                        Some(t) => {
                            draft.templates.push((t.clone(), item));
                            argv.push(t);
                        }
                        None => ok = false,
                    }
                }
                draft.step.action = Action::Command(argv);
            }
            None => ok = false,
        },
    }

    for (field, _, v) in fields.entries.iter().copied() {
        let path = p(field);
        let good = match field {
            "run" | "command" => true,
            "stage" => cx.string(v, &path).map(|s| draft.step.stage = Some(s.to_string())).is_some(),
            "needs" => {
                let items: Vec<NodeId> = match &cx.doc.node(v).kind {
                    Kind::Scalar { .. } => vec![v],
                    Kind::Seq(items) => items.clone(),
                    Kind::Map(_) => {
                        cx.expected(v, &path, "a list of step names");
                        Vec::new()
                    }
                };
                let mut good = true;
                for item in items {
                    match cx.string(item, &path) {
                        Some(s) => {
                            draft.step.needs.push(s.to_string());
                            draft.needs_nodes.push(item);
                        }
                        None => good = false,
                    }
                }
                good
            }
            "env" => match env(cx, v, &path) {
                Some(vars) => {
                    for var in vars {
                        env_vars.retain(|(k, _, _)| *k != var.0);
                        env_vars.push(var);
                    }
                    true
                }
                None => false,
            },
            "outputs" => outputs(cx, v, &path, &mut draft.step.outputs),
            "matrix" => {
                // Keep the keys even when the matrix has problems, so templates that use them
                // are not reported again as unknown.
                let (axes, good) = matrix(cx, v, &path, limits);
                draft.step.matrix = axes;
                draft.matrix_rejected = !good;
                good
            }
            "cache" => cache(cx, v, &path).map(|c| draft.step.cache = c).is_some(),
            "resources" => resources(cx, v, &path)
                .map(|r| {
                    res.cpus_milli = r.cpus_milli.or(res.cpus_milli);
                    res.memory_bytes = r.memory_bytes.or(res.memory_bytes);
                    res.gpus = r.gpus.or(res.gpus);
                })
                .is_some(),
            "runtime" => {
                draft.runtime_node = Some(v);
                runtime(cx, v, &path).map(|r| draft.step.runtime = r).is_some()
            }
            "image" => match image(cx, v, &path) {
                Some((t, n)) => {
                    draft.templates.retain(|(_, node)| Some(*node) != defaults.image.as_ref().map(|(_, n)| *n));
                    draft.templates.push((t.clone(), n));
                    draft.step.image = Some(t);
                    true
                }
                None => false,
            },
            "retries" => retries(cx, v, &path).map(|r| draft.step.retries = r).is_some(),
            "timeout" => duration(cx, v, &path).map(|d| draft.step.timeout = Some(d)).is_some(),
            "when" => {
                draft.when_node = Some(v);
                expression(cx, v, &path).map(|e| draft.step.when = Some(e)).is_some()
            }
            "gate" => {
                draft.gate_node = Some(v);
                expression(cx, v, &path).map(|e| draft.step.gate = Some(e)).is_some()
            }
            "register" => {
                draft.register_node = Some(v);
                register(cx, v, &path).map(|r| draft.step.register = Some(r)).is_some()
            }
            "runs_on" => label_map(cx, v, &path)
                .map(|m| {
                    draft.step.runs_on.extend(m);
                })
                .is_some(),
            _ => true,
        };
        ok &= good;
    }
    draft.step.resources =
        Resources { cpus_milli: res.cpus_milli, memory_bytes: res.memory_bytes, gpus: res.gpus.unwrap_or(0) };
    for (k, t, n) in env_vars {
        draft.templates.push((t.clone(), n));
        draft.step.env.push((k, t));
    }
    // A step with problems still takes part in the cross-checks (its name resolves `needs`,
    // its templates are checked); the problems already recorded make the load fail.
    let _ = ok;
    Some(draft)
}

fn outputs(cx: &mut Cx<'_>, id: NodeId, path: &str, out: &mut Vec<String>) -> bool {
    let Some(items) = cx.seq(id, path) else { return false };
    let mut ok = true;
    let mut seen: HashMap<&str, NodeId> = HashMap::new();
    for &item in items {
        let Some(name) = cx.string(item, path) else {
            ok = false;
            continue;
        };
        if let Err(e) = check_output(name) {
            cx.push(Diagnostic::error(format!("invalid output `{name}` in `{path}`")).at(cx.span(item), e));
            ok = false;
            continue;
        }
        if let Some(&first) = seen.get(name) {
            cx.push(
                Diagnostic::error(format!("output `{name}` is listed twice in `{path}`"))
                    .at(cx.span(item), "duplicate")
                    .related(cx.span(first), "first listed here"),
            );
            ok = false;
            continue;
        }
        seen.insert(name, item);
        out.push(name.to_string());
    }
    ok
}

/// The axes read (problems recorded, keys kept) and whether the matrix is valid.
fn matrix(cx: &mut Cx<'_>, id: NodeId, path: &str, limits: &Limits) -> (Vec<Axis>, bool) {
    let Some(entries) = cx.map(id, path) else { return (Vec::new(), false) };
    let mut axes = Vec::new();
    let mut ok = true;
    if entries.is_empty() {
        cx.push(
            Diagnostic::error(format!("`{path}` is empty"))
                .at(cx.span(id), "expected at least one key with a list of values"),
        );
        return (Vec::new(), false);
    }
    for &(k, v) in entries {
        let key = cx.doc.text(k).unwrap_or("").to_string();
        if !is_ident(&key) {
            cx.push(
                Diagnostic::error(format!("invalid matrix key `{key}`"))
                    .at(cx.span(k), "expected letters, digits and `_`, not starting with a digit"),
            );
            ok = false;
            continue;
        }
        let Some(items) = cx.seq(v, &format!("{path}.{key}")) else {
            ok = false;
            continue;
        };
        if items.is_empty() {
            cx.push(
                Diagnostic::error(format!("matrix key `{key}` has no values"))
                    .at(cx.span(v), "empty list")
                    .help("an empty axis would expand to no instances at all; give at least one value"),
            );
            ok = false;
            continue;
        }
        let mut values: Vec<MatrixValue> = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        for &item in items {
            let kind = match cx.doc.scalar(item) {
                Some(Scalar::Int(_)) => MatrixKind::Int,
                Some(Scalar::Float(f)) if f.is_finite() => MatrixKind::Float,
                Some(Scalar::Bool(_)) => MatrixKind::Bool,
                Some(Scalar::Str(_)) => MatrixKind::String,
                _ => {
                    cx.expected(item, &format!("{path}.{key}[]"), "a string, number or boolean");
                    ok = false;
                    continue;
                }
            };
            let text = cx.doc.text(item).unwrap_or("").to_string();
            if let Some(&first) = seen.get(&text) {
                cx.push(
                    Diagnostic::error(format!("matrix value `{text}` is listed twice for `{key}`"))
                        .at(cx.span(item), "duplicate")
                        .related(cx.span(first), "first listed here")
                        .note("instances are named by their values, so each must be unique"),
                );
                ok = false;
                continue;
            }
            seen.insert(text.clone(), item);
            values.push(MatrixValue { text, kind });
        }
        axes.push(Axis { key, values });
    }
    let total = axes.iter().try_fold(1usize, |acc, a| acc.checked_mul(a.values.len()));
    match total {
        Some(n) if n <= limits.max_matrix => {}
        _ => {
            let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
            cx.push(
                Diagnostic::error(format!(
                    "`{path}` expands to {} instances, more than the limit of {}",
                    total.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                    limits.max_matrix
                ))
                .at(cx.span(id), format!("{} combinations", sizes.join(" x ")))
                .help("split the step, or raise the limit with `--max-matrix`"),
            );
            ok = false;
        }
    }
    (axes, ok)
}

fn expression(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Expr> {
    let text = match cx.doc.scalar(id) {
        Some(Scalar::Bool(b)) => {
            if b {
                "true"
            } else {
                "false"
            }
        }
        _ => cx.string(id, path)?,
    };
    match expr::parse(text) {
        Ok(e) => Some(e),
        Err(e) => {
            let needle: String = text.chars().skip(e.offset).take(e.len.max(1)).collect();
            let span = cx.sub_span(id, e.offset, e.len, &needle);
            cx.push(
                Diagnostic::error(format!("invalid expression in `{path}`"))
                    .at(span, e.message.clone())
                    .note("expressions: see docs/expressions.md"),
            );
            None
        }
    }
}

fn register(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Register> {
    let fields = cx.fields(id, path, "register", REGISTER_FIELDS)?;
    let at = cx.span(id);
    let model = cx.require(&fields, "model", path, "the model's name", at);
    let file = cx.require(&fields, "file", path, "one of the step's outputs", at);
    let named = |cx: &mut Cx<'_>, n: NodeId, field: &str| -> Option<String> {
        let text = cx.string(n, &format!("{path}.{field}"))?;
        match check_name(text) {
            Ok(()) => Some(text.to_string()),
            Err(e) => {
                cx.push(Diagnostic::error(format!("invalid {field} name `{text}` in `{path}`")).at(cx.span(n), e));
                None
            }
        }
    };
    let model = model.and_then(|n| named(cx, n, "model"));
    let alias = match fields.get("alias") {
        Some(n) => Some(named(cx, n, "alias")?),
        None => None,
    };
    let file = file.and_then(|n| cx.string(n, &format!("{path}.file")).map(str::to_string));
    Some(Register { model: model?, file: file?, alias })
}
