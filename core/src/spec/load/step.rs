//! Reads one step: what it runs (`run` or `command`), its own fields layered over
//! `defaults:`, its outputs, matrix, `when`/`gate` expressions and `register`, into a
//! [`StepDraft`]. It must not check references between steps (`needs`, templates,
//! expressions): `check` does that once every step is read.

use std::collections::HashMap;

use super::fields::{
    cache, capabilities, duration, env, image, label_map, pull, resources, retries, runtime, template,
};
use super::{Defaults, StepDraft};
use crate::diag::Diagnostic;
use crate::expr::{self, Expr};
use crate::schema::{ALIAS_APPROVAL_FIELDS, APPROVAL_FIELDS, REGISTER_FIELDS, STEP_FIELDS};
use crate::spec::Limits;
use crate::spec::decode::{Cx, check_name, suggest_name};
use crate::spec::model::*;
use crate::spec::yaml::{Kind, NodeId, Scalar};
use crate::template::Template;

/// Why an output path is not acceptable, if it is not: the shared rule of [`weir_data::relpath`],
/// worded for outputs; a trailing `/` declares a folder.
fn check_output(name: &str) -> Result<(), &'static str> {
    use weir_data::relpath::Unsafe;
    let trimmed = name.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(name);
    weir_data::relpath::check(trimmed).map_err(|why| match why {
        Unsafe::Empty => "an output name cannot be empty",
        Unsafe::Absolute => "absolute paths are not allowed: name a file inside $WEIR_OUTPUTS",
        Unsafe::Parent => "`..` would leave the outputs folder",
        other => other.describe(),
    })
}

pub(super) fn step(cx: &mut Cx<'_>, key: NodeId, v: NodeId, defaults: &Defaults, limits: &Limits) -> Option<StepDraft> {
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
            pull: defaults.pull.unwrap_or_default(),
            capabilities: defaults.capabilities.clone(),
            retries: defaults.retries.unwrap_or_default(),
            timeout: defaults.timeout,
            when: None,
            gate: None,
            register: None,
            approval: None,
            runs_on: defaults.runs_on.clone(),
            notify: Vec::new(),
            secrets: Vec::new(),
            span: cx.span(key),
        },
        needs_nodes: Vec::new(),
        templates: Vec::new(),
        run_node: None,
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
    let mut secrets: Vec<(String, NodeId)> = Vec::new();
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
                    draft.run_node = Some(r);
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
            "pull" => pull(cx, v, &path).map(|p| draft.step.pull = p).is_some(),
            "capabilities" => capabilities(cx, v, &path).map(|c| draft.step.capabilities = Some(c)).is_some(),
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
            "notify" => super::notify::notify(cx, v, &path, true).map(|n| draft.step.notify = n).is_some(),
            "approval" => {
                let (a, message) = approval(cx, v, &path);
                // The message's templates are checked even when another part has problems.
                draft.templates.extend(message);
                a.map(|a| draft.step.approval = Some(a)).is_some()
            }
            "secrets" => crate::spec::secrets::load(cx, v, &path).map(|s| secrets = s).is_some(),
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
    // A secret arrives as the variable of its name: one `env:` sets as well would hide it.
    for (name, node) in secrets {
        if let Some((_, _, env_node)) = env_vars.iter().find(|(k, _, _)| *k == name) {
            cx.push(
                Diagnostic::error(format!("step `{}` names `{name}` both as a secret and in `env`", draft.step.name))
                    .at(cx.span(node), "the secret arrives as the environment variable of this name")
                    .related(cx.span(*env_node), "`env` sets it here")
                    .help("rename the `env` variable, or drop it: the secret's value is what the step sees"),
            );
            continue;
        }
        draft.step.secrets.push(name);
    }
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
    let mut vars: HashMap<String, NodeId> = HashMap::new();
    for &(k, v) in entries {
        let Some(key) = cx.ident_key(k, "matrix key") else {
            ok = false;
            continue;
        };
        let var = crate::template::matrix_var(&key);
        if let Some(&first) = vars.get(&var) {
            cx.push(
                Diagnostic::error(format!("matrix key `{key}` clashes with another key's environment variable"))
                    .at(cx.span(k), format!("both become `{var}`"))
                    .related(cx.span(first), "the other key")
                    .note("a matrix value reaches its step as `WEIR_MATRIX_<KEY>`, the key upper-cased"),
            );
            ok = false;
            continue;
        }
        vars.insert(var, k);
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

pub(super) fn expression(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Expr> {
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
    let when = match fields.get("when") {
        Some(n) => {
            let e = expression(cx, n, &format!("{path}.when"))?;
            if alias.is_none() {
                cx.push(
                    Diagnostic::error(format!("`{path}.when` gates a promotion, but names no alias"))
                        .at(cx.span(n), "`when` needs `alias`")
                        .help("add `alias: production` (or any name): `when` decides whether it moves"),
                );
                return None;
            }
            Some(e)
        }
        None => None,
    };
    let approval = match fields.get("approval") {
        Some(n) => {
            let a = alias_approval(cx, n, &format!("{path}.approval"))?;
            if alias.is_none() {
                cx.push(
                    Diagnostic::error(format!("`{path}.approval` protects an alias, but names no alias"))
                        .at(cx.span(n), "`approval` needs `alias`")
                        .help("add `alias: production`: its moves then wait for `weir models approve`"),
                );
                return None;
            }
            Some(a)
        }
        None => None,
    };
    Some(Register { model: model?, file: file?, alias, when, approval })
}

/// `register.approval: {message, timeout}` (both optional; `{}` protects with defaults).
fn alias_approval(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<AliasApproval> {
    let fields = cx.fields(id, path, "alias approval", ALIAS_APPROVAL_FIELDS)?;
    let timeout = match fields.get("timeout") {
        Some(n) => Some(duration(cx, n, &format!("{path}.timeout"))?),
        None => None,
    };
    let message = match fields.get("message") {
        Some(n) => {
            let text = cx.string(n, &format!("{path}.message"))?;
            if text.trim().is_empty() {
                cx.push(
                    Diagnostic::error(format!("`{path}.message` is empty"))
                        .at(cx.span(n), "expected the text shown to the approver, or leave `message` out"),
                );
                return None;
            }
            Some(text.to_string())
        }
        None => None,
    };
    Some(AliasApproval { message, timeout })
}

/// `approval: {message, timeout}` when valid, and `message` as a template with its node when it
/// parses (its references are checked with the step's other templates).
fn approval(cx: &mut Cx<'_>, id: NodeId, path: &str) -> (Option<Approval>, Option<(Template, NodeId)>) {
    let Some(fields) = cx.fields(id, path, "step approval", APPROVAL_FIELDS) else { return (None, None) };
    let at = cx.span(id);
    let node = cx.require(&fields, "message", path, "the text shown to the approver", at);
    // Each part is checked even when another has problems, so one pass reports them all.
    let (timeout, timeout_ok) = match fields.get("timeout") {
        Some(n) => {
            let d = duration(cx, n, &format!("{path}.timeout"));
            (d, d.is_some())
        }
        None => (None, true),
    };
    let message = node.and_then(|node| {
        let text = cx.string(node, &format!("{path}.message"))?;
        if text.trim().is_empty() {
            cx.push(
                Diagnostic::error(format!("`{path}.message` is empty"))
                    .at(cx.span(node), "expected the text shown to the approver"),
            );
            return None;
        }
        template(cx, node, text, &format!("{path}.message"))
    });
    match (message, node) {
        (Some(message), Some(node)) => {
            let approval = timeout_ok.then(|| Approval { message: message.clone(), timeout });
            (approval, Some((message, node)))
        }
        _ => (None, None),
    }
}
