//! Reads `params:`: each param's name, type, default and constraints (`min`, `max`,
//! `pattern`, `enum`), and YAML scalars as values of a param's type (also used for
//! `schedule.params`). It must not resolve overrides given at run time: that is `plan`'s job.

use std::collections::HashMap;

use crate::diag::{Diagnostic, did_you_mean};
use crate::schema::PARAM_FIELDS;
use crate::spec::decode::{Cx, is_ident};
use crate::spec::model::*;
use crate::spec::yaml::{Kind, NodeId, Scalar};

/// The valid params, and the names of all declared ones (a param with a problem is still
/// declared: references to it are not reported again as unknown).
pub(super) fn params(cx: &mut Cx<'_>, id: NodeId) -> (Vec<Param>, Vec<String>) {
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
pub(super) fn typed_value(cx: &mut Cx<'_>, id: NodeId, param: &Param, path: &str) -> Option<Value> {
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
