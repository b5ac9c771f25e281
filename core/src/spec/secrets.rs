//! Step secrets as a pipeline names them: `secrets: [DB_PASSWORD]` on a step. Only names live
//! here: the values are the server's (`weir secrets set`), delivered to the worker that runs
//! the step as environment variables of the same name, and never part of a pipeline, a plan or
//! a run record. [`check_name`] is the one rule for a secret's name, shared by the loader and
//! the engine's secret store. Pure: it reads no secret and does no I/O.

use crate::diag::Diagnostic;
use crate::spec::decode::Cx;
use crate::spec::yaml::NodeId;

/// The longest secret name.
pub const MAX_NAME: usize = 128;
/// The most secrets one step may name.
pub const MAX_PER_STEP: usize = 64;

/// Why `name` cannot name a secret, if it cannot: it becomes an environment variable name, so
/// `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME`] bytes, and not `WEIR_…` (weir's own).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a secret name cannot be empty");
    }
    if name.len() > MAX_NAME {
        return Err("a secret name has at most 128 characters");
    }
    if !super::decode::is_ident_text(name) {
        return Err("expected letters, digits and `_`, not starting with a digit (it becomes an environment variable)");
    }
    if name.to_ascii_uppercase().starts_with("WEIR_") {
        return Err("names starting with `WEIR_` are set by weir");
    }
    Ok(())
}

/// Reads a step's `secrets:`: a list of distinct names. Records a diagnostic per problem.
pub(crate) fn load(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<Vec<(String, NodeId)>> {
    let items = cx.seq(id, path)?;
    let mut out: Vec<(String, NodeId)> = Vec::new();
    let mut ok = true;
    if items.len() > MAX_PER_STEP {
        cx.push(
            Diagnostic::error(format!("`{path}` names {} secrets", items.len()))
                .at(cx.span(id), format!("at most {MAX_PER_STEP} per step")),
        );
        return None;
    }
    for (i, &item) in items.iter().enumerate() {
        let Some(name) = cx.string(item, &format!("{path}[{i}]")) else {
            ok = false;
            continue;
        };
        if let Err(why) = check_name(name) {
            cx.push(Diagnostic::error(format!("invalid secret name `{name}` in `{path}`")).at(cx.span(item), why));
            ok = false;
            continue;
        }
        if let Some((_, first)) = out.iter().find(|(n, _)| n == name) {
            cx.push(
                Diagnostic::error(format!("secret `{name}` is named twice in `{path}`"))
                    .at(cx.span(item), "named again here")
                    .related(cx.span(*first), "first named here"),
            );
            ok = false;
            continue;
        }
        out.push((name.to_string(), item));
    }
    ok.then_some(out)
}
