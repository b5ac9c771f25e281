//! Reads `notify:` (a list of `{on: [EVENT, ...], webhook: URL | slack: URL, secret: NAME}`) at
//! the pipeline's top level and in a step, and the pipeline's `sla:`. Run-wide events
//! (`run_failed`, `run_succeeded`, `sla_missed`) are refused in a step's list. It sends
//! nothing and knows no secret: a secret is only a name the engine resolves.

use std::time::Duration;

use crate::diag::{Diagnostic, did_you_mean};
use crate::schema::NOTIFY_FIELDS;
use crate::spec::decode::{Cx, check_name};
use crate::spec::notify::{Notify, NotifyOn, NotifyTarget, check_url};
use crate::spec::yaml::NodeId;

/// The most entries one `notify:` list takes.
const MAX_ENTRIES: usize = 32;

/// `notify:` at `path` (`notify` or `steps.NAME.notify`); `step` when it is a step's.
pub(super) fn notify(cx: &mut Cx<'_>, id: NodeId, path: &str, step: bool) -> Option<Vec<Notify>> {
    let items = cx.seq(id, path)?;
    if items.len() > MAX_ENTRIES {
        cx.push(
            Diagnostic::error(format!("`{path}` has {} entries", items.len()))
                .at(cx.span(id), format!("expected at most {MAX_ENTRIES}")),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (n, &item) in items.iter().enumerate() {
        match entry(cx, item, &format!("{path}[{n}]"), step) {
            Some(e) => out.push(e),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn entry(cx: &mut Cx<'_>, id: NodeId, path: &str, step: bool) -> Option<Notify> {
    let fields = cx.fields(id, path, "notify entry", NOTIFY_FIELDS)?;
    let at = cx.span(id);
    let on = cx.require(&fields, "on", path, "the events to notify, like `[run_failed]`", at);
    let on = on.and_then(|n| events(cx, n, &format!("{path}.on"), step));
    let target = match (fields.get("webhook"), fields.get("slack")) {
        (Some(_), Some(s)) => {
            cx.push(
                Diagnostic::error(format!("`{path}` names both `webhook` and `slack`"))
                    .at(cx.span(s), "expected one receiver per entry")
                    .help("write a second entry for the second receiver"),
            );
            None
        }
        (None, None) => {
            cx.push(
                Diagnostic::error(format!("`{path}` names no receiver"))
                    .at(at, "expected `webhook: URL` or `slack: URL`"),
            );
            None
        }
        (Some(w), None) => url(cx, w, &format!("{path}.webhook")).map(NotifyTarget::Webhook),
        (None, Some(s)) => url(cx, s, &format!("{path}.slack")).map(NotifyTarget::Slack),
    };
    let secret_site = fields.get("secret").map(|n| (format!("{path}.secret"), cx.span(n)));
    let secret = match fields.get("secret") {
        None => Some(None),
        Some(n) => {
            let text = cx.string(n, &format!("{path}.secret"))?;
            if matches!(target, Some(NotifyTarget::Slack(_))) {
                cx.push(
                    Diagnostic::error(format!("`{path}.secret` signs nothing on a `slack` receiver"))
                        .at(cx.span(n), "Slack's incoming webhooks take no signature")
                        .help("remove `secret`, or use `webhook:` for a signed receiver"),
                );
                None
            } else if let Err(e) = check_name(text) {
                cx.push(
                    Diagnostic::error(format!("invalid secret name `{text}` in `{path}.secret`"))
                        .at(cx.span(n), e)
                        .help("name a line of the engine's --notify-secrets file; the secret itself never goes in a pipeline"),
                );
                None
            } else {
                Some(Some(text.to_string()))
            }
        }
    };
    Some(Notify { on: on?, target: target?, secret: secret?, secret_site })
}

fn events(cx: &mut Cx<'_>, id: NodeId, path: &str, step: bool) -> Option<Vec<NotifyOn>> {
    let items = cx.seq(id, path)?;
    if items.is_empty() {
        cx.push(Diagnostic::error(format!("`{path}` is empty")).at(cx.span(id), "expected at least one event"));
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for &item in items {
        let Some(text) = cx.string(item, path) else {
            ok = false;
            continue;
        };
        match NotifyOn::from_name(text) {
            Some(e) if step && !e.of_a_step() => {
                cx.push(
                    Diagnostic::error(format!("`{text}` is a run's event, not a step's"))
                        .at(cx.span(item), "a step's `notify` takes step_failed, gate_refused, model_promoted, model_refused, approval_requested")
                        .help("move it to the pipeline's top-level `notify:`"),
                );
                ok = false;
            }
            Some(e) => {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
            None => {
                let names: Vec<&str> = NotifyOn::ALL.iter().map(|e| e.name()).collect();
                cx.push(
                    Diagnostic::error(format!("unknown notify event `{text}`"))
                        .at(cx.span(item), format!("expected one of {}", names.join(", ")))
                        .help_opt(did_you_mean(text, names.iter().copied())),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn url(cx: &mut Cx<'_>, id: NodeId, path: &str) -> Option<String> {
    let text = cx.string(id, path)?;
    match check_url(text) {
        Ok(_) => Some(text.to_string()),
        Err(e) => {
            cx.push(
                Diagnostic::error(format!("`{path}` is not a receiver weir can reach"))
                    .at(cx.span(id), format!("expected {e}")),
            );
            None
        }
    }
}

/// `sla:`: how long a run may take before `sla_missed` is sent.
pub(super) fn sla(cx: &mut Cx<'_>, id: NodeId) -> Option<Duration> {
    super::fields::duration(cx, id, "sla")
}

#[cfg(test)]
mod tests {
    use crate::spec::{Limits, NotifyOn, NotifyTarget, load};

    fn errors(yaml: &str) -> String {
        match load(yaml, &Limits::default()) {
            Ok(_) => panic!("{yaml}: loaded"),
            Err(diags) => {
                assert!(diags.iter().all(|d| d.span.is_some()), "{yaml}: a diagnostic has no place");
                format!("{diags:?}")
            }
        }
    }

    fn pipeline(top: &str, step: &str) -> String {
        format!("name: p\n{top}\nsteps:\n  a:\n    run: echo hi\n{step}\n")
    }

    #[test]
    fn notify_reads_events_receivers_and_secret_names_at_both_levels() {
        let yaml = pipeline(
            "sla: 2h\nnotify:\n  - {on: [run_failed, sla_missed, run_failed], webhook: \"http://127.0.0.1:9/h\", secret: hooks}\n  - {on: [gate_refused], slack: \"http://chat/services/x\"}",
            "    notify:\n      - {on: [step_failed], webhook: \"http://h/\"}",
        );
        let p = load(&yaml, &Limits::default()).unwrap();
        assert_eq!(p.sla(), Some(std::time::Duration::from_secs(7200)));
        let n = p.notify();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].on(), [NotifyOn::RunFailed, NotifyOn::SlaMissed]);
        assert_eq!(n[0].target(), &NotifyTarget::Webhook("http://127.0.0.1:9/h".into()));
        assert_eq!(n[0].secret(), Some("hooks"));
        assert_eq!(n[1].target(), &NotifyTarget::Slack("http://chat/services/x".into()));
        assert_eq!(p.steps()[0].notify[0].on(), [NotifyOn::StepFailed]);
    }

    #[test]
    fn bad_notify_entries_say_what_was_expected() {
        let top = |n: &str| pipeline(&format!("notify:\n  - {n}"), "");
        assert!(errors(&top("{on: [run_faild], webhook: \"http://h/\"}")).contains("did you mean `run_failed`"));
        assert!(errors(&top("{on: [], webhook: \"http://h/\"}")).contains("expected at least one event"));
        assert!(errors(&top("{on: [run_failed]}")).contains("names no receiver"));
        assert!(errors(&top("{on: [run_failed], webhook: \"http://h/\", slack: \"http://h/\"}")).contains("both"));
        assert!(errors(&top("{on: [run_failed], webhook: \"https://h/\"}")).contains("https is not supported yet"));
        assert!(errors(&top("{on: [run_failed], slack: \"http://h/\", secret: s}")).contains("signs nothing"));
        assert!(
            errors(&top("{on: [run_failed], webhook: \"http://h/\", secret: \"a b\"}")).contains("invalid secret name")
        );
        assert!(errors(&top("{on: [run_failed], webhook: \"http://h/\", token: x}")).contains("token"));
        let step = pipeline("", "    notify:\n      - {on: [run_failed], webhook: \"http://h/\"}");
        assert!(errors(&step).contains("is a run's event, not a step's"));
        assert!(errors(&pipeline("sla: soon", "")).contains("`sla` must be a duration"));
    }

    #[test]
    fn no_notify_and_no_sla_leave_the_hash_as_it_was() {
        let p = load(&pipeline("", ""), &Limits::default()).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("notify") && !json.contains("sla"), "{json}");
    }
}
