//! The decisions of `on:` triggers, as values: a triggered run's id (derived from the pipeline,
//! the trigger and what fired it, so a restart that fires it again finds the run and creates
//! nothing), when a watched file has settled, which file names a glob takes, a webhook
//! payload as param overrides, and whether an upstream run fires a `pipeline` trigger and with
//! which params. Nothing here reads a file, the clock or the store: the engine passes sizes,
//! modification times, `now`, payloads and metrics in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::expr::{Ref, Value};
use crate::run::Millis;
use crate::spec::{PipelineTrigger, WebhookTrigger};

/// The id of the run that trigger `trigger` of `pipeline` starts for `key` (a file's digest,
/// an upstream run id, a webhook's idempotency key): `PIPELINE-TRIGGER-HEX16`.
pub fn run_id(pipeline: &str, trigger: &str, key: &str) -> String {
    let h = blake3::hash(format!("{pipeline}\0{trigger}\0{key}").as_bytes()).to_hex();
    format!("{pipeline}-{trigger}-{}", &h[..16])
}

/// Whether `pattern` is a glob this module matches: one file name, `*` and `?` wildcards.
pub fn glob_ok(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if pattern.len() > 255 {
        return Err("longer than a file name may be (255 bytes)".into());
    }
    if pattern.contains('/') || pattern.contains('\0') {
        return Err("a pattern matches file names in the folder, so it cannot hold `/`".into());
    }
    Ok(())
}

/// Whether file name `name` matches `pattern` (`*` any run of characters, `?` one character,
/// everything else itself). A name starting with `.` matches only a pattern that does too:
/// editors' and copiers' temporary files (`.data.csv.swp`, `.part`) are not taken.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic linear matcher: remember the last `*` and retry from one character further.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// What a scan saw of one file: its size and modification time, and since when (engine time)
/// they have not changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, as the file system reports it.
    pub modified: i128,
    pub since: Millis,
}

impl Observed {
    /// This scan's sight of a file the previous scan saw as `prev`: unchanged keeps `since`, a
    /// change starts the wait again at `now`.
    pub fn next(prev: Option<&Observed>, size: u64, modified: i128, now: Millis) -> Observed {
        match prev {
            Some(p) if p.size == size && p.modified == modified => *p,
            _ => Observed { size, modified, since: now },
        }
    }

    /// Whether the file has stayed unchanged for `settle` at `now`: a file still being written
    /// keeps moving `since`, and is not taken.
    pub fn settled(&self, settle: Duration, now: Millis) -> bool {
        now >= self.since.plus(settle)
    }
}

/// Why a webhook payload does not map onto params.
fn payload_error(message: String) -> Diagnostic {
    Diagnostic::error(message).help("send a JSON object whose fields are the pipeline's params")
}

/// A JSON scalar as a param's text; `None` for `null` (the param's default applies).
fn scalar_text(param: &str, v: &serde_json::Value) -> Result<Option<String>, Diagnostic> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(payload_error(format!(
            "payload field for param `{param}` is {}, expected a string, number or boolean",
            if other.is_array() { "a list" } else { "an object" }
        ))),
    }
}

/// The param overrides a webhook delivery's JSON payload gives: with `params:` pointers, the
/// values they point at (a missing one leaves the param's default); without, the payload's
/// top-level fields. Types are the caller's to check against the declarations
/// (`plan::resolve_params`), so the diagnostics say what each param is declared as.
pub fn webhook_params(
    trigger: &WebhookTrigger,
    payload: &serde_json::Value,
) -> Result<Vec<(String, String)>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut take = |name: &str, v: &serde_json::Value| match scalar_text(name, v) {
        Ok(Some(text)) => out.push((name.to_string(), text)),
        Ok(None) => {}
        Err(d) => errors.push(d),
    };
    if trigger.params.is_empty() {
        match payload {
            serde_json::Value::Object(fields) => fields.iter().for_each(|(k, v)| take(k, v)),
            serde_json::Value::Null => {}
            _ => errors.push(payload_error("the payload is not a JSON object".into())),
        }
    } else {
        for (name, pointer) in &trigger.params {
            if let Some(v) = payload.pointer(pointer) {
                take(name, v);
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// What an upstream run offers a `pipeline` trigger's expressions: each step's metrics (in plan
/// order) and the run's params as text.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    /// (step name, its metrics); a matrix step has one entry per instance.
    pub steps: Vec<(String, BTreeMap<String, f64>)>,
    pub params: BTreeMap<String, String>,
}

impl Upstream {
    /// The value of `r`: `metrics.NAME` is the last step's in plan order that reported it.
    fn lookup(&self, r: &Ref) -> Option<Value> {
        match r {
            Ref::Metric(name) => self.steps.iter().rev().find_map(|(_, m)| m.get(name)).map(|v| Value::Float(*v)),
            Ref::StepMetric { step, metric } => {
                self.steps.iter().find(|(s, _)| s == step).and_then(|(_, m)| m.get(metric)).map(|v| Value::Float(*v))
            }
            Ref::Param(name) => self.params.get(name).map(|text| {
                if let Ok(i) = text.parse::<i64>() {
                    Value::Int(i)
                } else if let Ok(f) = text.parse::<f64>() {
                    Value::Float(f)
                } else if let Ok(b) = text.parse::<bool>() {
                    Value::Bool(b)
                } else {
                    Value::Str(text.clone())
                }
            }),
            Ref::Matrix(_) | Ref::CurrentMetric(_) | Ref::Explain { .. } => None,
        }
    }
}

/// Whether an upstream run fires a `pipeline` trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum Fire {
    /// Start a run with these param overrides.
    Start(Vec<(String, String)>),
    /// Do not; why (the condition was false, or a value it reads is missing).
    Skip(String),
}

/// Decides trigger `t` on a successful upstream run.
pub fn upstream(t: &PipelineTrigger, up: &Upstream) -> Fire {
    let lookup = |r: &Ref| up.lookup(r);
    if let Some(when) = &t.when {
        match when.eval_bool(&lookup) {
            Ok(true) => {}
            Ok(false) => return Fire::Skip(format!("`{}` is false", when.source())),
            Err(e) => return Fire::Skip(format!("`{}` cannot be evaluated: {}", when.source(), e.message)),
        }
    }
    let mut params = Vec::new();
    for (name, e) in &t.params {
        let text = match e.eval(&lookup) {
            Ok(Value::Int(i)) => i.to_string(),
            Ok(Value::Float(f)) => f.to_string(),
            Ok(Value::Bool(b)) => b.to_string(),
            Ok(Value::Str(s)) => s,
            Ok(Value::List(_)) => return Fire::Skip(format!("param `{name}`: `{}` is a list", e.source())),
            Err(err) => return Fire::Skip(format!("param `{name}`: `{}`: {}", e.source(), err.message)),
        };
        params.push((name.clone(), text));
    }
    Fire::Start(params)
}

/// What `t`'s condition read of `up`, as `metrics.psi > 0.2 (metrics.psi=0.31)`, for the
/// triggered run's record; empty without a condition.
pub fn explain(t: &PipelineTrigger, up: &Upstream) -> String {
    let Some(when) = &t.when else { return String::new() };
    let (_, trace) = when.eval_bool_traced(&|r: &Ref| up.lookup(r));
    let mut parts: Vec<String> = Vec::new();
    for (r, v) in trace {
        let part = format!("{r}={v}");
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    format!("{} ({})", when.source(), parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Limits, TriggerKind, load};

    #[test]
    fn globs_match_one_file_name_and_skip_hidden_files() {
        let cases = [
            ("*.parquet", "a.parquet", true),
            ("*.parquet", "a.parquet.tmp", false),
            ("*", "x", true),
            ("*", ".x.swp", false),
            (".*", ".x", true),
            ("data-??.csv", "data-01.csv", true),
            ("data-??.csv", "data-1.csv", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p} on {n}");
        }
        assert!(glob_ok("*.csv").is_ok());
        assert!(glob_ok("in/*.csv").is_err());
        assert!(glob_ok("").is_err());
    }

    #[test]
    fn run_ids_are_derived_and_distinct_per_key() {
        let a = run_id("p", "files", "d1");
        assert_eq!(a, run_id("p", "files", "d1"));
        assert_ne!(a, run_id("p", "files", "d2"));
        assert_ne!(a, run_id("p", "files-1", "d1"));
        assert!(a.starts_with("p-files-") && a.len() == "p-files-".len() + 16, "{a}");
    }

    #[test]
    fn a_file_settles_only_after_staying_unchanged() {
        let settle = Duration::from_secs(30);
        let first = Observed::next(None, 10, 1, Millis(1_000));
        assert!(!first.settled(settle, Millis(30_999)));
        let same = Observed::next(Some(&first), 10, 1, Millis(31_000));
        assert!(same.settled(settle, Millis(31_000)));
        // Still growing: the wait starts again.
        let grown = Observed::next(Some(&first), 20, 2, Millis(31_000));
        assert!(!grown.settled(settle, Millis(31_000)));
        assert!(grown.settled(settle, Millis(61_000)));
        // Touched without growing counts as a change too.
        assert_eq!(Observed::next(Some(&first), 10, 3, Millis(5)).since, Millis(5));
    }

    fn pipeline_with(on: &str) -> crate::spec::Pipeline {
        let yaml = format!(
            "name: p\nparams:\n  psi: {{type: float, default: 0.0}}\n  who: {{type: string, default: x}}\n\
             on: {on}\nsteps:\n  a:\n    run: echo hi\n"
        );
        load(&yaml, &Limits::default()).unwrap()
    }

    #[test]
    fn webhook_payloads_become_param_texts() {
        let p = pipeline_with("{webhook: {}}");
        let (_, w) = p.webhook().unwrap();
        let got = webhook_params(w, &serde_json::json!({"psi": 0.5, "who": "ci", "n": null})).unwrap();
        assert_eq!(got, vec![("psi".into(), "0.5".into()), ("who".into(), "ci".into())]);
        let err = webhook_params(w, &serde_json::json!({"psi": [1]})).unwrap_err();
        assert!(err[0].message.contains("param `psi` is a list"), "{err:?}");
        assert!(webhook_params(w, &serde_json::json!([1])).is_err());
        assert_eq!(webhook_params(w, &serde_json::Value::Null).unwrap(), vec![]);

        let p = pipeline_with("{webhook: {params: {who: /pusher/name}}}");
        let (_, w) = p.webhook().unwrap();
        let got = webhook_params(w, &serde_json::json!({"pusher": {"name": "ada"}, "psi": "ignored"})).unwrap();
        assert_eq!(got, vec![("who".into(), "ada".into())]);
    }

    #[test]
    fn upstream_runs_fire_over_the_threshold_only() {
        let p = pipeline_with("{pipeline: {name: up, when: \"metrics.psi > 0.2\", params: {psi: metrics.psi}}}");
        let TriggerKind::Pipeline(t) = &p.triggers()[0].kind else { panic!() };
        let run = |psi: f64| Upstream {
            steps: vec![("monitor".into(), BTreeMap::from([("psi".to_string(), psi)]))],
            params: BTreeMap::new(),
        };
        assert_eq!(upstream(t, &run(0.5)), Fire::Start(vec![("psi".into(), "0.5".into())]));
        assert_eq!(explain(t, &run(0.5)), "metrics.psi > 0.2 (metrics.psi=0.5)");
        assert!(matches!(upstream(t, &run(0.1)), Fire::Skip(r) if r.contains("is false")));
        assert!(matches!(upstream(t, &Upstream::default()), Fire::Skip(r) if r.contains("cannot be evaluated")));
    }
}
