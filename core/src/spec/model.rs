//! The validated pipeline model. A [`Pipeline`] can only be built by [`crate::spec::load`], so
//! holding one means every check passed: names are valid and unique, `needs` resolve and form
//! no cycle, templates and expressions refer only to things that exist, and limits hold.
//! Code past validation never sees YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::notify::Notify;
use crate::diag::Span;
use crate::expr::Expr;
use crate::template::{Ref, Template};

/// A validated pipeline. Fields are private: the invariants above hold for its whole life.
#[derive(Clone, Debug, Serialize)]
pub struct Pipeline {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) params: Vec<Param>,
    pub(crate) schedule: Option<Schedule>,
    /// Absent from the hashed form when unset, so versions without it keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) keep: Option<Keep>,
    /// `sla:`, absent from the hashed form when unset (as every later field).
    #[serde(serialize_with = "ser_duration", skip_serializing_if = "Option::is_none")]
    pub(crate) sla: Option<Duration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notify: Vec<Notify>,
    /// `on:`, the triggers beside `schedule:`; absent from the hashed form when empty, so
    /// versions without them keep their hash.
    #[serde(rename = "on", skip_serializing_if = "Vec::is_empty")]
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) steps: Vec<Step>,
    #[serde(skip)]
    pub(crate) hash: String,
}

impl Pipeline {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    pub fn params(&self) -> &[Param] {
        &self.params
    }
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }
    /// `keep:`, the pipeline's retention, when set.
    pub fn keep(&self) -> Option<&Keep> {
        self.keep.as_ref()
    }
    /// `sla:`: how long a run may stay unfinished before `sla_missed` is sent.
    pub fn sla(&self) -> Option<Duration> {
        self.sla
    }
    /// The pipeline's own `notify:` entries (each step has its own in [`Step::notify`]).
    pub fn notify(&self) -> &[Notify] {
        &self.notify
    }
    /// The triggers of `on:`, in file order; names are unique.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }
    /// Trigger `name` of `on:`.
    pub fn trigger(&self, name: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.name == name)
    }
    /// The `webhook` trigger, when the pipeline has one (at most one: its URL is the pipeline's).
    pub fn webhook(&self) -> Option<(&Trigger, &WebhookTrigger)> {
        self.triggers.iter().find_map(|t| match &t.kind {
            TriggerKind::Webhook(w) => Some((t, w)),
            _ => None,
        })
    }
    /// Steps in file order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
    /// BLAKE3 of the canonical JSON form of the validated model: comments, key order inside
    /// mappings and formatting do not change it; any change of meaning does.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// The version id a server stores this pipeline under, with the BLAKE3 digest (hex) of its
    /// folder's bundle when it has one: the file's meaning and every file beside it. `weir
    /// plan` shows it, `weir submit` gets it back, and runs record it.
    pub fn version(&self, bundle: Option<&str>) -> String {
        match bundle {
            None => self.hash.clone(),
            Some(d) => {
                let h = blake3::hash(format!("{}:{d}", self.hash).as_bytes()).to_hex();
                h[..self.hash.len().min(64)].to_string()
            }
        }
    }
    /// Number of step instances after matrix expansion.
    pub fn instance_count(&self) -> usize {
        self.steps.iter().fold(0usize, |n, s| n.saturating_add(s.instance_count()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Float,
    Bool,
    String,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::String => "string",
        })
    }
}

/// A parameter value, already checked against its declaration.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => f.write_str(v),
        }
    }
}

impl Value {
    pub fn to_expr(&self) -> crate::expr::Value {
        match self {
            Value::Int(v) => crate::expr::Value::Int(*v),
            Value::Float(v) => crate::expr::Value::Float(*v),
            Value::Bool(v) => crate::expr::Value::Bool(*v),
            Value::String(v) => crate::expr::Value::Str(v.clone()),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Option<Value>,
    pub description: Option<String>,
    #[serde(rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Value>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(serialize_with = "ser_regex")]
    pub pattern: Option<regex::Regex>,
    #[serde(skip)]
    pub span: Span,
}

fn ser_regex<S: serde::Serializer>(re: &Option<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    match re {
        Some(re) => s.serialize_some(re.as_str()),
        None => s.serialize_none(),
    }
}

impl Param {
    /// The environment variable that carries this param into every step.
    pub fn env_name(&self) -> String {
        crate::template::param_var(&self.name)
    }

    /// Checks a typed value against `enum`, `min`, `max` and `pattern`.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        if !self.choices.is_empty() && !self.choices.contains(value) {
            let list: Vec<String> = self.choices.iter().map(|c| format!("`{c}`")).collect();
            return Err(format!("`{value}` is not one of {}", list.join(", ")));
        }
        let number = match value {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        };
        if let Some(n) = number {
            if n.is_nan() {
                return Err("NaN is not a valid value".into());
            }
            if let Some(min) = self.min.filter(|min| n < *min) {
                return Err(format!("`{value}` is below the minimum {min}"));
            }
            if let Some(max) = self.max.filter(|max| n > *max) {
                return Err(format!("`{value}` is above the maximum {max}"));
            }
        }
        if let (Some(re), Value::String(s)) = (&self.pattern, value)
            && !re.is_match(s)
        {
            return Err(format!("`{s}` does not match the pattern `{}`", re.as_str()));
        }
        Ok(())
    }

    /// Parses a `-p name=text` override by the declared type.
    pub fn parse_value(&self, text: &str) -> Result<Value, String> {
        let value = match self.kind {
            ParamType::Int => Value::Int(
                text.trim().parse().map_err(|_| format!("param `{}` expects an int, got `{text}`", self.name))?,
            ),
            ParamType::Float => {
                let f: f64 =
                    text.trim().parse().map_err(|_| format!("param `{}` expects a float, got `{text}`", self.name))?;
                if !f.is_finite() {
                    return Err(format!("param `{}` expects a finite float, got `{text}`", self.name));
                }
                Value::Float(f)
            }
            ParamType::Bool => match text.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("param `{}` expects `true` or `false`, got `{text}`", self.name)),
            },
            ParamType::String => Value::String(text.to_string()),
        };
        self.check(&value).map_err(|e| format!("param `{}`: {e}", self.name))?;
        Ok(value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    Allow,
    Forbid,
    Replace,
}

/// `keep:`: the finished runs of a pipeline that retention keeps. A run goes when it is older
/// than `days` or not among the newest `runs` finished ones (whichever says so first), unless
/// something still needs it; either may be unset, not both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Keep {
    pub(crate) runs: Option<u32>,
    pub(crate) days: Option<u32>,
}

impl Keep {
    /// The most finished runs to keep.
    pub fn runs(&self) -> Option<u32> {
        self.runs
    }
    /// The most days a finished run is kept, from when it finished.
    pub fn days(&self) -> Option<u32> {
        self.days
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    pub cron: String,
    #[serde(serialize_with = "ser_display")]
    pub timezone: chrono_tz::Tz,
    pub catchup: bool,
    /// With `catchup`, at most this many missed ticks run after downtime.
    pub max_catchup: u32,
    pub concurrency: Concurrency,
    pub params: BTreeMap<String, Value>,
    #[serde(skip)]
    pub parsed: croner::Cron,
}

/// One trigger of `on:`: its name (the kind, or `KIND-N` for the Nth of a list) and what
/// starts a run.
#[derive(Clone, Debug, Serialize)]
pub struct Trigger {
    pub name: String,
    #[serde(flatten)]
    pub kind: TriggerKind,
}

/// What starts a run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// `files:` new or changed files in a folder on the engine's host.
    Files(FilesTrigger),
    /// `pipeline:` another pipeline's successful runs.
    Pipeline(PipelineTrigger),
    /// `webhook:` a signed POST to the pipeline's URL.
    Webhook(WebhookTrigger),
}

impl TriggerKind {
    /// `files`, `pipeline` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerKind::Files(_) => "files",
            TriggerKind::Pipeline(_) => "pipeline",
            TriggerKind::Webhook(_) => "webhook",
        }
    }
}

/// `on: {files: {path, glob, settle}}`.
#[derive(Clone, Debug, Serialize)]
pub struct FilesTrigger {
    /// An absolute folder on the engine's host.
    pub path: String,
    /// Which file names in it count (`*` and `?`); every file when `*`.
    pub glob: String,
    /// How long a file's size and modification time must stay unchanged before it is taken.
    #[serde(serialize_with = "ser_duration_plain")]
    pub settle: Duration,
}

/// `on: {pipeline: {name, when, params}}`.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineTrigger {
    /// The upstream pipeline.
    pub pipeline: String,
    /// Over the upstream run's `metrics.NAME` (every step's, merged), `steps.STEP.metrics.NAME`
    /// and `params.NAME`; none: every successful run.
    #[serde(serialize_with = "ser_expr", skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
    /// This pipeline's params, each an expression over the same values.
    #[serde(serialize_with = "ser_exprs", skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Expr>,
}

/// `on: {webhook: {params}}`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WebhookTrigger {
    /// Param name to a JSON pointer (`/head_commit/id`) into the payload; empty: the payload's
    /// top-level fields are the params.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

fn ser_exprs<S: serde::Serializer>(m: &BTreeMap<String, Expr>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, v.source())))
}

fn ser_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_source<S: serde::Serializer>(t: &Template, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.source())
}

fn ser_sources<S: serde::Serializer>(t: &[Template], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.iter().map(Template::source))
}

fn ser_env<S: serde::Serializer>(env: &[(String, Template)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(env.iter().map(|(k, v)| (k, v.source())))
}

fn ser_expr<S: serde::Serializer>(e: &Option<Expr>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(e.source()),
        None => s.serialize_none(),
    }
}

fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&crate::spec::units::format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// What a step runs.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `run:` a script for `sh -c`.
    Run(#[serde(serialize_with = "ser_source")] Template),
    /// `command:` an argv, no shell.
    Command(#[serde(serialize_with = "ser_sources")] Vec<Template>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Process,
    Docker,
}

/// When the docker runtime pulls a step's image (`pull:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the worker's Docker engine has no image of that name.
    #[default]
    IfNotPresent,
    /// Pull before every attempt, so that a moved tag is seen.
    Always,
    /// Never pull: a missing image fails the attempt at once.
    Never,
}

impl PullPolicy {
    pub fn is_default(&self) -> bool {
        *self == PullPolicy::IfNotPresent
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Millicores; `None` means no request.
    pub cpus_milli: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub gpus: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Retries {
    pub limit: u32,
    #[serde(serialize_with = "ser_duration_plain")]
    pub backoff: Duration,
    #[serde(serialize_with = "ser_duration_plain")]
    pub max_backoff: Duration,
}

fn ser_duration_plain<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::spec::units::format_duration(*d))
}

impl Default for Retries {
    fn default() -> Self {
        Retries { limit: 0, backoff: Duration::from_secs(10), max_backoff: Duration::from_secs(600) }
    }
}

impl Retries {
    /// The wait before attempt `attempt + 1` (attempt 1 is the first run): `backoff`
    /// doubled per earlier retry, capped at `max_backoff`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.backoff.saturating_mul(1u32 << doublings.min(31)).min(self.max_backoff)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cache {
    pub enabled: bool,
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Option<Duration>,
}

/// `register:`: a fresh success of the step creates the next version of `model` from its
/// output `file`, and moves `alias` to it (when `when` holds, if given).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Register {
    pub model: String,
    pub file: String,
    pub alias: Option<String>,
    /// The promotion gate (needs `alias`): `metrics.X` is the candidate's metric,
    /// `current.metrics.X` the metric of the version the alias holds now.
    #[serde(serialize_with = "ser_expr", skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
    /// `approval:` (needs `alias`): the alias is protected. Recorded with the model when the
    /// step registers, so every later move of it (this step's, `weir models promote`,
    /// `rollback`) waits for a person's approval instead of happening at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<AliasApproval>,
}

/// `register.approval:`: what a protected alias's approver is told, and how long a request
/// waits before it is refused (absent: until someone decides).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AliasApproval {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(serialize_with = "ser_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `approval:`: once its needs are met (and its `when` holds) the step waits in `awaiting
/// approval` until someone approves or rejects it, or `timeout` passes (absent: it waits until
/// a decision or a cancel). `message` is shown to the approver; its templates render as text
/// for display only, never into a script.
#[derive(Clone, Debug, Serialize)]
pub struct Approval {
    #[serde(serialize_with = "ser_source")]
    pub message: Template,
    #[serde(serialize_with = "ser_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// One matrix axis: a key and its values as written (`0.01` stays `0.01`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Axis {
    pub key: String,
    pub values: Vec<MatrixValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixValue {
    pub text: String,
    #[serde(skip)]
    pub kind: MatrixKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixKind {
    Int,
    Float,
    Bool,
    String,
}

impl MatrixValue {
    pub fn to_expr(&self) -> crate::expr::Value {
        use crate::expr::Value as V;
        match self.kind {
            MatrixKind::Int => self.text.parse().map(V::Int).unwrap_or_else(|_| V::Str(self.text.clone())),
            MatrixKind::Float => self.text.parse().map(V::Float).unwrap_or_else(|_| V::Str(self.text.clone())),
            MatrixKind::Bool => V::Bool(self.text == "true"),
            MatrixKind::String => V::Str(self.text.clone()),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Indices into [`Pipeline::steps`], parallel to `needs`.
    #[serde(skip)]
    pub needs_idx: Vec<usize>,
    pub action: Action,
    #[serde(serialize_with = "ser_env", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, Template)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matrix: Vec<Axis>,
    pub cache: Cache,
    pub resources: Resources,
    pub runtime: Runtime,
    #[serde(serialize_with = "ser_opt_source", skip_serializing_if = "Option::is_none")]
    pub image: Option<Template>,
    /// Left out of the canonical JSON when default, so pipelines written before `pull:`
    /// existed keep their hash.
    #[serde(skip_serializing_if = "PullPolicy::is_default")]
    pub pull: PullPolicy,
    /// The capabilities a docker step's container keeps (from [`super::capabilities::SAFE`],
    /// sorted); `None` for [`super::capabilities::DEFAULT`]. Left out of the canonical JSON when
    /// `None`, so earlier pipelines keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    pub retries: Retries,
    #[serde(serialize_with = "ser_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(serialize_with = "ser_expr", skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
    #[serde(serialize_with = "ser_expr", skip_serializing_if = "Option::is_none")]
    pub gate: Option<Expr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<Register>,
    /// `approval:`: a person approves (or rejects) the step before it runs. Left out of the
    /// canonical JSON when absent, so earlier pipelines keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runs_on: BTreeMap<String, String>,
    /// The step's own `notify:` entries (step events only), beside the pipeline's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// `secrets:`: the names of the server's secrets the step receives as environment
    /// variables (never their values: see [`super::secrets`]). Left out of the canonical JSON
    /// when empty, so earlier pipelines keep their hash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(skip)]
    pub span: Span,
}

fn ser_opt_source<S: serde::Serializer>(t: &Option<Template>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(t.source()),
        None => s.serialize_none(),
    }
}

impl Step {
    /// 1 for a plain step, the product of the axis lengths for a matrix step.
    pub fn instance_count(&self) -> usize {
        self.matrix.iter().fold(1usize, |n, a| n.saturating_mul(a.values.len()))
    }

    pub fn is_matrix(&self) -> bool {
        !self.matrix.is_empty()
    }
}

/// Whether `r` can only hold an integer written in digits: an int param, or a matrix key of
/// `step` whose values all are. Such a value is safe where the shell evaluates arithmetic.
pub fn holds_integer(params: &[Param], step: &Step, r: &Ref) -> bool {
    let digits = |t: &str| {
        let t = t.strip_prefix('-').unwrap_or(t);
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
    };
    match r {
        Ref::Param(name) => params.iter().any(|p| p.name == *name && p.kind == ParamType::Int),
        Ref::Matrix(key) => step
            .matrix
            .iter()
            .any(|a| a.key == *key && a.values.iter().all(|v| v.kind == MatrixKind::Int && digits(&v.text))),
        Ref::RunId | Ref::StepName => false,
    }
}
