//! The readers of fields that steps and `defaults:` share: runtime, image, pull, capabilities,
//! retries, timeout
//! and other durations, resources, cache, `runs_on` labels, env and the templates inside them,
//! plus `defaults:` itself. Each reads one field and reports its own problems; none of them
//! knows which step it is reading for or merges values: `step` does that.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Defaults, PartialResources};
use crate::diag::{Diagnostic, did_you_mean};
use crate::schema::{CACHE_FIELDS, DEFAULTS_FIELDS, RESOURCE_FIELDS, RETRY_FIELDS};
use crate::spec::capabilities::{self, Refusal};
use crate::spec::decode::{Cx, quote_path};
use crate::spec::model::*;
use crate::spec::units::{self, CPUS_HELP, DURATION_HELP, MEMORY_HELP};
use crate::spec::yaml::{Kind, NodeId, Scalar};
use crate::template::{self, Template};

pub(super) fn runtime(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Runtime> {
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

pub(super) fn pull(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<PullPolicy> {
    let text = cx.string(id, path)?;
    match text {
        "if-not-present" => Some(PullPolicy::IfNotPresent),
        "always" => Some(PullPolicy::Always),
        "never" => Some(PullPolicy::Never),
        other => {
            cx.push(
                Diagnostic::error(format!("unknown pull policy `{other}`"))
                    .at(cx.span(id), "expected if-not-present, always or never")
                    .help_opt(did_you_mean(other, ["if-not-present", "always", "never"])),
            );
            None
        }
    }
}

/// The capabilities a docker step's container keeps: a list of names from
/// [`capabilities::SAFE`], read case-insensitively with or without `CAP_`; returned canonical,
/// sorted and deduplicated.
pub(super) fn capabilities(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Vec<String>> {
    let items = cx.seq(id, path)?;
    let allowed = capabilities::SAFE.join(", ");
    let mut out = Vec::new();
    let mut ok = true;
    for (i, &item) in items.iter().enumerate() {
        let Some(name) = cx.string(item, &format!("{path}[{i}]")) else {
            ok = false;
            continue;
        };
        match capabilities::parse(name) {
            Ok(c) => out.push(c.to_string()),
            Err(Refusal::Unsafe(c)) => {
                ok = false;
                cx.push(
                    Diagnostic::error(format!("capability `{c}` in {} is refused", quote_path(path)))
                        .at(cx.span(item), "it reaches past the container into the host")
                        .help(format!("a step may keep only these: {allowed}")),
                );
            }
            Err(Refusal::Unknown) => {
                ok = false;
                let upper = name.trim().to_ascii_uppercase();
                let guess =
                    did_you_mean(upper.strip_prefix("CAP_").unwrap_or(&upper), capabilities::SAFE.iter().copied());
                cx.push(
                    Diagnostic::error(format!("unknown capability `{name}` in {}", quote_path(path)))
                        .at(cx.span(item), "not a Linux capability a step may keep")
                        .help(guess.unwrap_or_else(|| format!("a step may keep only these: {allowed}"))),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    ok.then_some(out)
}

pub(super) fn duration(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Duration> {
    let d = cx.parsed(id, path, "a duration", DURATION_HELP, units::parse_duration)?;
    if d.is_zero() {
        cx.push(Diagnostic::error(format!("`{path}` must be longer than 0")).at(cx.span(id), "zero duration"));
        return None;
    }
    Some(d)
}

pub(super) fn retries(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Retries> {
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

pub(super) fn resources(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<PartialResources> {
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

pub(super) fn cache(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Cache> {
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

pub(super) fn label_map(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<BTreeMap<String, String>> {
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
                    .at(cx.span(k), "expected letters, digits, `_`, `.`, `-` or `/`, at most 63 characters"),
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

pub(super) fn template(cx: &mut Cx<'_>, id: NodeId, text: &str, path: &str) -> Option<Template> {
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

pub(super) fn env(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Vec<(String, Template, NodeId)>> {
    let entries = cx.map(id, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for &(k, v) in entries {
        let Some(key) = cx.ident_key(k, "environment variable name") else {
            ok = false;
            continue;
        };
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

pub(super) fn image(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<(Template, NodeId)> {
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

pub(super) fn defaults(cx: &mut Cx<'_>, id: NodeId) -> Defaults {
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
            "pull" => d.pull = pull(cx, v, &path),
            "capabilities" => d.capabilities = capabilities(cx, v, &path),
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
