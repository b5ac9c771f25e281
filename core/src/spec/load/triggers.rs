//! Reads `on:`, the triggers beside `schedule:`: `files` (a folder on the engine's host),
//! `pipeline` (another pipeline's successful runs) and `webhook` (a signed POST). Each kind
//! takes one mapping or a list of them (`webhook` only one: its URL is the pipeline's). It
//! decides nothing about when a trigger fires: that is `crate::trigger` and the engine.

use std::collections::BTreeMap;

use super::step::expression;
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::expr::{Ref, Type};
use crate::schema::{FILES_TRIGGER_FIELDS, ON_FIELDS, PIPELINE_TRIGGER_FIELDS, WEBHOOK_TRIGGER_FIELDS};
use crate::spec::decode::{Cx, check_name};
use crate::spec::model::*;
use crate::spec::units::{self, DURATION_HELP};
use crate::spec::yaml::{Kind, NodeId};
use crate::trigger::glob_ok;

/// The most triggers of one kind.
const MAX_PER_KIND: usize = 32;

pub(super) fn triggers(cx: &mut Cx<'_>, id: NodeId, key: Span, params: &[Param], declared: &[String]) -> Vec<Trigger> {
    if !matches!(cx.doc.node(id).kind, Kind::Map(_)) {
        let found = cx.doc.describe(id);
        cx.push(
            Diagnostic::error("`on` must be a mapping of triggers")
                .at(cx.span(id), format!("found {found}"))
                .note("weir's triggers are `files` (new data), `pipeline` (another pipeline's result) and `webhook`")
                .help("write `on: {files: {path: /data/in, glob: \"*.csv\"}}`; for git events, send a webhook"),
        );
        return Vec::new();
    }
    let Some(fields) = cx.fields(id, "on", "trigger", ON_FIELDS) else { return Vec::new() };
    if fields.entries.is_empty() {
        cx.push(
            Diagnostic::error("`on` names no trigger")
                .at(key, "expected `files`, `pipeline` or `webhook`")
                .help("remove `on`, or add a trigger like `on: {files: {path: /data/in, glob: \"*.csv\"}}`"),
        );
    }
    let mut out = Vec::new();
    for (kind, _, value) in fields.entries {
        let items: Vec<(String, NodeId)> = match &cx.doc.node(value).kind {
            Kind::Seq(items) if kind != "webhook" => {
                if items.len() > MAX_PER_KIND {
                    cx.push(
                        Diagnostic::error(format!("more than {MAX_PER_KIND} `{kind}` triggers"))
                            .at(cx.span(value), "too many")
                            .help("watch a parent folder with a glob instead"),
                    );
                    continue;
                }
                items.iter().enumerate().map(|(i, n)| (format!("{kind}-{}", i + 1), *n)).collect()
            }
            _ => vec![(kind.to_string(), value)],
        };
        for (name, node) in items {
            let path = format!("on.{name}");
            let kind = match kind {
                "files" => files(cx, node, &path).map(TriggerKind::Files),
                "pipeline" => upstream(cx, node, &path, params, declared).map(TriggerKind::Pipeline),
                _ => webhook(cx, node, &path, declared).map(TriggerKind::Webhook),
            };
            if let Some(kind) = kind {
                out.push(Trigger { name, kind });
            }
        }
    }
    out
}

fn files(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<FilesTrigger> {
    let fields = cx.fields(id, path, "files trigger", FILES_TRIGGER_FIELDS)?;
    let folder = cx.require(&fields, "path", path, "an absolute folder on the engine's host", cx.span(id));
    let folder = folder.and_then(|n| {
        let text = cx.string(n, &format!("{path}.path"))?;
        if !text.starts_with('/') || text.split('/').any(|c| c == "..") {
            cx.push(
                Diagnostic::error(format!("`{path}.path` must be an absolute folder"))
                    .at(cx.span(n), "expected a path starting with `/`, without `..`")
                    .note("the engine reads it on its own host, whatever folder it was started in"),
            );
            return None;
        }
        Some(text.trim_end_matches('/').to_string()).map(|t| if t.is_empty() { "/".to_string() } else { t })
    });
    let glob = match fields.get("glob") {
        None => Some("*".to_string()),
        Some(n) => cx.string(n, &format!("{path}.glob")).and_then(|text| match glob_ok(text) {
            Ok(()) => Some(text.to_string()),
            Err(e) => {
                cx.push(
                    Diagnostic::error(format!("`{path}.glob` is not a file name pattern"))
                        .at(cx.span(n), e)
                        .help("use `*` and `?` within one file name, like `*.parquet`"),
                );
                None
            }
        }),
    };
    let settle = match fields.get("settle") {
        None => Some(std::time::Duration::from_secs(30)),
        Some(n) => cx.parsed(n, &format!("{path}.settle"), "a duration", DURATION_HELP, units::parse_duration),
    };
    Some(FilesTrigger { path: folder?, glob: glob?, settle: settle? })
}

/// The static type of what an upstream expression may read.
fn upstream_type(r: &Ref) -> Option<Type> {
    match r {
        Ref::Metric(_) | Ref::StepMetric { .. } => Some(Type::Float),
        Ref::Param(_) => Some(Type::Any),
        Ref::Matrix(_) | Ref::CurrentMetric(_) | Ref::Explain { .. } => None,
    }
}

/// Reports what an upstream expression cannot read: `matrix.*`, `current.metrics.*`, types.
fn check_upstream(cx: &mut Cx<'_>, e: &crate::expr::Expr, node: NodeId, path: &str, boolean: bool) -> bool {
    let mut ok = true;
    for u in e.refs() {
        if upstream_type(&u.reference).is_none() {
            let needle: String = e.source().chars().skip(u.offset).take(u.len).collect();
            cx.push(
                Diagnostic::error(format!("`{path}` cannot read `{needle}`"))
                    .at(cx.sub_span(node, u.offset, u.len, &needle), "not known of an upstream run")
                    .help("use `metrics.NAME`, `steps.STEP.metrics.NAME` or `params.NAME` of the upstream run"),
            );
            ok = false;
        }
    }
    if !ok {
        return false;
    }
    let checked = if boolean { e.check_bool(&upstream_type) } else { e.check(&upstream_type).map(|_| ()) };
    if let Err(err) = checked {
        let needle: String = e.source().chars().skip(err.offset).take(err.len.max(1)).collect();
        cx.push(
            Diagnostic::error(format!("`{path}` does not type-check"))
                .at(cx.sub_span(node, err.offset, err.len, &needle), err.message.clone()),
        );
        return false;
    }
    true
}

fn upstream(cx: &mut Cx<'_>, id: NodeId, path: &str, params: &[Param], declared: &[String]) -> Option<PipelineTrigger> {
    let fields = cx.fields(id, path, "pipeline trigger", PIPELINE_TRIGGER_FIELDS)?;
    let name = cx.require(&fields, "name", path, "the upstream pipeline's name", cx.span(id));
    let name = name.and_then(|n| {
        let text = cx.string(n, &format!("{path}.name"))?;
        match check_name(text) {
            Ok(()) => Some(text.to_string()),
            Err(e) => {
                cx.push(
                    Diagnostic::error(format!("invalid pipeline name `{text}` in `{path}.name`")).at(cx.span(n), e),
                );
                None
            }
        }
    });
    let mut ok = true;
    let when = match fields.get("when") {
        None => None,
        Some(n) => {
            let p = format!("{path}.when");
            let e = expression(cx, n, &p);
            ok &= e.as_ref().is_some_and(|e| check_upstream(cx, e, n, &p, true));
            e
        }
    };
    let mut values = BTreeMap::new();
    if let Some(n) = fields.get("params")
        && let Some(entries) = cx.map(n, &format!("{path}.params"))
    {
        for &(k, v) in entries {
            let param = cx.doc.text(k).unwrap_or("").to_string();
            if !params.iter().any(|p| p.name == param) {
                if !declared.contains(&param) {
                    cx.push(
                        Diagnostic::error(format!("unknown param `{param}` in `{path}.params`"))
                            .at(cx.span(k), "not a declared param of this pipeline")
                            .help_opt(did_you_mean(&param, declared.iter().map(String::as_str))),
                    );
                }
                ok = false;
                continue;
            }
            let p = format!("{path}.params.{param}");
            match expression(cx, v, &p) {
                Some(e) if check_upstream(cx, &e, v, &p, false) => {
                    values.insert(param, e);
                }
                _ => ok = false,
            }
        }
    }
    let name = name?;
    ok.then_some(PipelineTrigger { pipeline: name, when, params: values })
}

fn webhook(cx: &mut Cx<'_>, id: NodeId, path: &str, declared: &[String]) -> Option<WebhookTrigger> {
    if matches!(&cx.doc.node(id).kind, Kind::Seq(_)) {
        cx.push(
            Diagnostic::error(format!("`{path}` must be one mapping, not a list"))
                .at(cx.span(id), "a pipeline has one webhook URL")
                .help("write `webhook: {}`, or map payload fields with `webhook: {params: {NAME: /json/pointer}}`"),
        );
        return None;
    }
    let fields = cx.fields(id, path, "webhook trigger", WEBHOOK_TRIGGER_FIELDS)?;
    let mut values = BTreeMap::new();
    let mut ok = true;
    if let Some(n) = fields.get("params")
        && let Some(entries) = cx.map(n, &format!("{path}.params"))
    {
        for &(k, v) in entries {
            let param = cx.doc.text(k).unwrap_or("").to_string();
            if !declared.contains(&param) {
                cx.push(
                    Diagnostic::error(format!("unknown param `{param}` in `{path}.params`"))
                        .at(cx.span(k), "not a declared param of this pipeline")
                        .help_opt(did_you_mean(&param, declared.iter().map(String::as_str))),
                );
                ok = false;
                continue;
            }
            match cx.string(v, &format!("{path}.params.{param}")) {
                Some(p) if p.is_empty() || p.starts_with('/') => {
                    values.insert(param, p.to_string());
                }
                Some(_) => {
                    cx.push(
                        Diagnostic::error(format!("`{path}.params.{param}` must be a JSON pointer"))
                            .at(cx.span(v), "expected a path into the payload starting with `/`")
                            .help("write `/field` or `/outer/inner`, as RFC 6901 spells it"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    ok.then_some(WebhookTrigger { params: values })
}

#[cfg(test)]
mod tests {
    use crate::spec::{Limits, TriggerKind, load};

    const HEAD: &str = "name: p\nparams:\n  psi: {type: float, default: 0.0}\n  rows: {type: int, default: 1}\n";

    fn check(on: &str, expect: Result<&[(&str, &str)], &str>) {
        let yaml = format!("{HEAD}{on}\nsteps:\n  a:\n    run: echo hi\n");
        match (load(&yaml, &Limits::default()), expect) {
            (Ok(p), Ok(names)) => {
                let got: Vec<(&str, &str)> = p.triggers().iter().map(|t| (t.name.as_str(), t.kind.kind())).collect();
                assert_eq!(got, names, "{on}");
            }
            (Err(diags), Err(text)) => {
                let all = format!("{diags:?}");
                assert!(all.contains(text), "{on}: {all}");
                assert!(diags.iter().all(|d| d.span.is_some()), "{on}: a diagnostic has no place");
            }
            (Ok(p), Err(text)) => panic!("{on}: accepted, expected {text}: {:?}", p.triggers()),
            (Err(d), Ok(_)) => panic!("{on}: refused: {d:?}"),
        }
    }

    #[test]
    fn on_reads_every_kind_and_names_them() {
        check("on: {files: {path: /data/in, glob: \"*.csv\", settle: 5s}}", Ok(&[("files", "files")]));
        check(
            "on:\n  files: [{path: /a}, {path: /b}]\n  webhook: {}\n  pipeline: {name: up, when: \"metrics.psi > 0.2\", params: {psi: metrics.psi}}",
            Ok(&[("files-1", "files"), ("files-2", "files"), ("webhook", "webhook"), ("pipeline", "pipeline")]),
        );
        check("on: {webhook: {params: {rows: /batch/rows}}}", Ok(&[("webhook", "webhook")]));
    }

    #[test]
    fn on_refuses_what_cannot_work_with_a_place() {
        check("on: {files: {path: data/in}}", Err("must be an absolute folder"));
        check("on: {files: {path: /data/../etc}}", Err("must be an absolute folder"));
        check("on: {files: {path: /in, glob: \"a/*.csv\"}}", Err("is not a file name pattern"));
        check("on: {files: {path: /in, settle: soon}}", Err("on.files.settle"));
        check("on: {file: {path: /in}}", Err("unknown field `file`"));
        check("on: {pipeline: {when: \"true\"}}", Err("missing field `name`"));
        check("on: {pipeline: {name: up, when: \"metrics.psi +\"}}", Err("invalid expression"));
        check("on: {pipeline: {name: up, when: \"matrix.k > 1\"}}", Err("cannot read `matrix.k`"));
        check("on: {pipeline: {name: up, when: \"metrics.psi\"}}", Err("does not type-check"));
        check("on: {pipeline: {name: up, params: {nope: metrics.psi}}}", Err("unknown param `nope`"));
        check("on: {webhook: [{}, {}]}", Err("one mapping, not a list"));
        check("on: {webhook: {params: {rows: rows}}}", Err("must be a JSON pointer"));
        check("on: {webhook: {params: {rowz: /rows}}}", Err("did you mean"));
        check("on: {}", Err("names no trigger"));
        check("on: push", Err("`on` must be a mapping of triggers"));
    }

    #[test]
    fn no_on_leaves_the_hash_as_it_was_and_on_changes_it() {
        let plain = format!("{HEAD}steps:\n  a:\n    run: echo hi\n");
        let with = format!("{HEAD}on: {{webhook: {{}}}}\nsteps:\n  a:\n    run: echo hi\n");
        let (a, b) = (load(&plain, &Limits::default()).unwrap(), load(&with, &Limits::default()).unwrap());
        assert_ne!(a.hash(), b.hash());
        assert!(matches!(b.webhook(), Some((t, _)) if t.name == "webhook"));
        assert!(matches!(b.triggers()[0].kind, TriggerKind::Webhook(_)));
    }
}
