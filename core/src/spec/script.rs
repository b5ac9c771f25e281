//! Validation of `run:` scripts: every `{{ }}` must stand where the reference it renders as
//! (`"${WEIR_PARAM_NAME}"`) keeps its value out of code. Each refused place is reported at the
//! template's file:line:column with what to write instead. An int param or all-integer matrix
//! key may stand in arithmetic (`$(( {{ params.n }} + 1 ))`): its value is digits. The reading of the script is
//! `template::shell`'s; this module only turns its refusals into diagnostics.

use crate::diag::Diagnostic;
use crate::spec::decode::Cx;
use crate::spec::load::StepDraft;
use crate::spec::model::{Action, Param, holds_integer};
use crate::template::shell::Refusal;

pub(crate) fn check(cx: &mut Cx<'_>, d: &StepDraft, params: &[Param]) {
    let (Action::Run(t), Some(node)) = (&d.step.action, d.run_node) else { return };
    for (r, place) in t.shell_places() {
        let Err(refusal) = place else { continue };
        // Digits cannot run anything, even where the shell evaluates arithmetic.
        if matches!(refusal, Refusal::Arithmetic(_)) && holds_integer(params, &d.step, r.reference) {
            continue;
        }
        let var = r.reference.var();
        let (label, why, instead) = refusal.explain(&var);
        let needle: String = t.source().chars().skip(r.offset).take(r.len).collect();
        let span = cx.sub_span(node, r.offset, r.len, &needle);
        cx.push(
            Diagnostic::error(format!(
                "`{{{{ {} }}}}` cannot stand {refusal} in `steps.{}.run`",
                r.reference, d.step.name
            ))
            .at(span, label)
            .note(format!("in `run:` it becomes \"${var}\", a variable that holds the value; {why}"))
            .help(instead),
        );
    }
}
