//! Pipeline files: YAML text in, a validated [`Pipeline`] or every problem out.
//!
//! `yaml` builds a spanned tree under budgets, `decode` reads typed fields from it recording
//! diagnostics, `load` maps the tree onto the model field by field, `check` does the
//! cross-references (needs, cycles, templates, expressions, limits), and `model` holds the
//! result. Nothing here does I/O: callers read the file and pass its bytes to [`source_text`]
//! (the CLI's `source::read`), and nothing here knows about sled, gRPC or processes.

pub use weir_data::capabilities;
mod check;
pub mod cron;
mod decode;
mod load;
pub mod model;
pub mod notify;
mod script;
pub mod secrets;
pub mod units;
pub mod yaml;
mod yaml_help;

pub use decode::check_name;
pub use model::*;
pub use notify::{Notify, NotifyOn, NotifyTarget};

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
            // A problem inherited by several steps (e.g. from `defaults`) is reported once.
            diags.dedup_by(|a, b| a.span == b.span && a.message == b.message);
            Err(diags)
        }
    }
}

/// Any YAML text as JSON (YAML 1.2 core schema), under the same budgets as [`load()`].
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

/// A pipeline file's text from the bytes its caller read: at most `limits.max_file_bytes + 1` of
/// them (read no more: the extra byte is what tells an over-long file), and `len_on_disk`, the
/// file's size, for the message. Refuses a file over the limit or not valid UTF-8, pointing at
/// the first bad byte. Reading the file is the caller's job (the CLI's `source::read`).
pub fn source_text(bytes: Vec<u8>, len_on_disk: u64, limits: &Limits) -> Result<String, Diagnostic> {
    if bytes.len() > limits.max_file_bytes {
        return Err(too_large(len_on_disk.max(bytes.len() as u64), limits));
    }
    String::from_utf8(bytes).map_err(|e| {
        let prefix = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(prefix);
        let line = text.matches('\n').count() as u32 + 1;
        let col = text.rsplit('\n').next().unwrap_or("").chars().count() as u32;
        Diagnostic::error("the file is not valid UTF-8").at(Span::on_line(line, col, 1), "invalid byte here")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(yaml: &str) -> Pipeline {
        load(yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"))
    }

    #[test]
    fn hash_ignores_formatting_but_not_meaning() {
        let a = ok("name: h\nsteps:\n  a:\n    run: 'true'\n    timeout: 90s\n");
        let b = ok("# a comment\nname: h\nsteps:\n  a: {timeout: 1m30s, run: \"true\"}\n");
        let c = ok("name: h\nsteps:\n  a:\n    run: 'true'\n    timeout: 91s\n");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn secrets_are_names_kept_in_order_and_hashed_only_when_present() {
        let p = ok(
            "name: s\nsteps:\n  a:\n    run: 'true'\n    secrets: [DB_PASSWORD, api_token]\n  b:\n    run: 'true'\n",
        );
        assert_eq!(p.step("a").unwrap().secrets, ["DB_PASSWORD", "api_token"]);
        assert!(p.step("b").unwrap().secrets.is_empty());
        // A pipeline written before `secrets:` existed keeps its hash.
        assert!(!serde_json::to_string(p.step("b").unwrap()).unwrap().contains("secrets"));
        for (name, ok) in [("A", true), ("_a1", true), ("", false), ("1A", false), ("A-B", false), ("weir_x", false)] {
            assert_eq!(secrets::check_name(name).is_ok(), ok, "{name:?}");
        }
        assert!(secrets::check_name(&"A".repeat(secrets::MAX_NAME)).is_ok());
        assert!(secrets::check_name(&"A".repeat(secrets::MAX_NAME + 1)).is_err());
    }

    #[test]
    fn capabilities_read_canonical_and_replace_the_default() {
        let p = ok("name: c
defaults:
  capabilities: [chown]
steps:
  one:
    run: 'true'
  two:
    run: 'true'
    capabilities: [CAP_SYS_CHROOT, chown, CHOWN]
  three:
    run: 'true'
    capabilities: []
");
        let caps = |name: &str| p.step(name).unwrap().capabilities.clone();
        assert_eq!(caps("one"), Some(vec!["CHOWN".to_string()]));
        assert_eq!(caps("two"), Some(vec!["CHOWN".to_string(), "SYS_CHROOT".to_string()]), "sorted, deduplicated");
        assert_eq!(caps("three"), Some(vec![]));
        let before = ok("name: c\nsteps:\n  a:\n    run: 'true'\n");
        assert!(before.step("a").unwrap().capabilities.is_none());
        assert!(
            !serde_json::to_string(before.step("a").unwrap()).unwrap().contains("capabilities"),
            "earlier pipelines keep their hash"
        );
    }

    #[test]
    fn defaults_apply_and_merge_per_field() {
        let p = ok("name: d
defaults:
  runtime: docker
  image: py:3
  retries: {limit: 2, backoff: 1s}
  timeout: 30m
  resources: {cpus: 1, memory: 1Gi}
  env: {A: a, B: b}
  runs_on: {pool: cpu}
  cache: true
steps:
  one:
    run: 'true'
  two:
    run: 'true'
    runtime: process
    retries: 0
    timeout: 1m
    resources: {memory: 2Gi, gpus: 1}
    env: {B: override, C: c}
    runs_on: {zone: eu}
    cache: false
");
        let one = p.step("one").unwrap();
        assert_eq!(one.runtime, Runtime::Docker);
        assert_eq!(one.image.as_ref().map(|t| t.source()), Some("py:3"));
        assert_eq!(one.retries.limit, 2);
        assert_eq!(one.retries.delay_after(1), std::time::Duration::from_secs(1));
        assert_eq!(one.retries.delay_after(3), std::time::Duration::from_secs(4));
        assert_eq!(one.resources, Resources { cpus_milli: Some(1000), memory_bytes: Some(1 << 30), gpus: 0 });
        assert!(one.cache.enabled);
        let two = p.step("two").unwrap();
        assert_eq!(two.runtime, Runtime::Process);
        assert_eq!(two.retries.limit, 0);
        assert_eq!(two.timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(two.resources, Resources { cpus_milli: Some(1000), memory_bytes: Some(2 << 30), gpus: 1 });
        let env: Vec<(&str, &str)> = two.env.iter().map(|(k, v)| (k.as_str(), v.source())).collect();
        assert_eq!(env, [("A", "a"), ("B", "override"), ("C", "c")]);
        assert_eq!(two.runs_on.len(), 2);
        assert!(!two.cache.enabled);
    }

    #[test]
    fn every_field_of_the_format_is_read() {
        let p = ok(r#"version: 1
name: full
description: all of it
x-anchors:
  common: &common {cpus: 2}
params:
  rows: 10
  model: {type: string, default: linear, enum: [linear, tree], description: which}
  lr: {type: float, default: 0.1, min: 0, max: 1}
  tag: {type: string, default: v1, pattern: "^v[0-9]+$"}
schedule:
  cron: "0 3 * * 1-5"
  timezone: Europe/Berlin
  catchup: true
  max_catchup: 7
  concurrency: replace
  params: {rows: 20}
steps:
  train:
    stage: training
    matrix: {lr: [0.01, 0.1]}
    command: [python3, train.py, "{{ matrix.lr }}"]
    outputs: [model.json, metrics.json, plots/]
    cache: {ttl: 7d}
    resources: *common
    runtime: docker
    image: "trainer:{{ params.tag }}"
    retries: {limit: 3, backoff: 2s, max_backoff: 1m}
    timeout: 1h30m
    when: "params.model == 'linear' && matrix.lr < 0.5"
    gate: "metrics.rmse < params.lr"
    runs_on: {gpu: h200, count: 2}
  pick:
    needs: [train]
    run: echo pick
    outputs: [model.json, metrics.json]
    register: {model: churn, file: model.json, alias: staging, when: "metrics.rmse < current.metrics.rmse"}
"#);
        assert_eq!(p.description(), Some("all of it"));
        let s = p.schedule().unwrap();
        assert_eq!(
            (s.cron.as_str(), s.timezone.name(), s.catchup, s.concurrency),
            ("0 3 * * 1-5", "Europe/Berlin", true, Concurrency::Replace)
        );
        assert_eq!(s.params.get("rows"), Some(&Value::Int(20)));
        assert_eq!(s.max_catchup, 7);
        let t = p.step("train").unwrap();
        assert_eq!(t.instance_count(), 2);
        assert_eq!(t.cache.ttl, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(t.resources.cpus_milli, Some(2000));
        let r = p.step("pick").unwrap().register.as_ref().unwrap();
        assert_eq!(r.alias.as_deref(), Some("staging"));
        assert_eq!(r.when.as_ref().map(|e| e.source()), Some("metrics.rmse < current.metrics.rmse"));
        assert_eq!(t.runs_on.get("count").map(String::as_str), Some("2"));
        assert_eq!(p.param("lr").unwrap().max, Some(1.0));
        assert!(p.param("tag").unwrap().pattern.is_some());
    }

    #[test]
    fn a_register_approval_protects_its_alias_and_needs_one() {
        let yaml =
            |reg: &str| format!("name: p\nsteps:\n  a:\n    run: x\n    outputs: [m.json]\n    register: {reg}\n");
        let p = load(
            &yaml("{model: m, file: m.json, alias: production, approval: {message: ship?, timeout: 2h}}"),
            &Limits::default(),
        )
        .unwrap();
        let a = p.step("a").unwrap().register.as_ref().unwrap().approval.clone().unwrap();
        assert_eq!((a.message.as_deref(), a.timeout), (Some("ship?"), Some(std::time::Duration::from_secs(7200))));
        let p = load(&yaml("{model: m, file: m.json, alias: prod, approval: {}}"), &Limits::default()).unwrap();
        assert_eq!(
            p.step("a").unwrap().register.as_ref().unwrap().approval,
            Some(AliasApproval { message: None, timeout: None })
        );
        let errors = |reg: &str| {
            load(&yaml(reg), &Limits::default())
                .unwrap_err()
                .iter()
                .map(|d| d.message.clone())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            errors("{model: m, file: m.json, approval: {}}")
                .contains("`steps.a.register.approval` protects an alias, but names no alias")
        );
        assert!(
            errors("{model: m, file: m.json, alias: p, approval: {timeout: soon}}")
                .contains("steps.a.register.approval.timeout")
        );
        assert!(errors("{model: m, file: m.json, alias: p, approval: {msg: x}}").contains("msg"));
    }
}
