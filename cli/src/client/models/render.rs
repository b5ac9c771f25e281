//! Pure rendering of the registry's answers (`weir models`, `show`, a move, a download):
//! what the server said in, text out.

use weir_proto::v1;

use crate::display::{Table, datetime, millis, short};

/// `production=v2, staging=v3`, or `-`.
fn aliases(map: &std::collections::HashMap<String, u64>) -> String {
    let mut pairs: Vec<(&String, &u64)> = map.iter().collect();
    pairs.sort();
    if pairs.is_empty() {
        return "-".into();
    }
    pairs.iter().map(|(a, v)| format!("{a}=v{v}")).collect::<Vec<_>>().join(", ")
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    millis(t).map_or_else(|| "-".into(), datetime)
}

/// `weir models`: NAME LATEST ALIASES UPDATED, by name.
pub fn models_table(models: &[v1::ModelSummary]) -> String {
    let mut sorted: Vec<&v1::ModelSummary> = models.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut t = Table::new(&["NAME", "LATEST", "ALIASES", "UPDATED"]);
    for m in sorted {
        t.push(vec![
            m.name.clone(),
            format!("v{}", m.latest_version),
            aliases(&m.aliases),
            when(m.updated_at.as_ref()),
        ]);
    }
    t.render()
}

/// A metric for a table: at most four decimals (`0.6396`), integers bare (`4`), tiny
/// values in scientific notation (`1.234e-5`).
fn number(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-3 {
        return format!("{x:.3e}");
    }
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

/// At most three metrics, by name: `auc=0.91 rmse=0.3 (+2)`.
fn key_metrics(metrics: &std::collections::HashMap<String, f64>) -> String {
    let mut pairs: Vec<(&String, &f64)> = metrics.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    if pairs.is_empty() {
        return "-".into();
    }
    let mut text = pairs.iter().take(3).map(|(k, v)| format!("{k}={}", number(**v))).collect::<Vec<_>>().join(" ");
    if pairs.len() > 3 {
        text.push_str(&format!(" (+{})", pairs.len() - 3));
    }
    text
}

/// `v1 -> v2`, `new -> v1`.
fn from_to(e: &v1::AliasEvent) -> String {
    let from = if e.from_version == 0 { "new".to_string() } else { format!("v{}", e.from_version) };
    format!("{from} -> v{}", e.to_version)
}

/// `weir models show NAME`: a heading, the versions, then the alias history.
pub fn model(m: &v1::GetModelResponse) -> String {
    let latest = m.versions.iter().map(|v| v.version).max().unwrap_or(0);
    let mut out = format!("model {}: latest v{latest}, aliases {}\n\n", m.name, aliases(&m.aliases));
    let mut t = Table::new(&["VERSION", "DIGEST", "RUN", "STEP", "METRICS", "ALIASES", "CREATED"]);
    for v in m.versions.iter().rev() {
        let mut names = v.aliases.clone();
        names.sort();
        t.push(vec![
            format!("v{}", v.version),
            short(&v.digest).to_string(),
            v.run_id.clone(),
            v.step.clone(),
            key_metrics(&v.metrics),
            if names.is_empty() { "-".into() } else { names.join(", ") },
            when(v.created_at.as_ref()),
        ]);
    }
    out.push_str(&t.render());
    // The newest version that keeps an explanation: its top features as bars.
    if let Some((v, e)) = m.versions.iter().rev().find_map(|v| Some((v.version, v.explanation.as_ref()?))) {
        out.push('\n');
        out.push_str(&super::explain::chart(v, e));
    }
    let waiting = pending(m);
    if !waiting.is_empty() {
        out.push('\n');
        out.push_str(&waiting);
    }
    out.push_str("\nalias history (oldest first):\n");
    if m.history.is_empty() {
        out.push_str("  none: no alias has pointed at a version yet\n");
    }
    let mut h = Table::new(&["TIME", "ALIAS", "MOVE", "OUTCOME", "BY", "REASON"]);
    for e in &m.history {
        h.push(vec![
            when(e.time.as_ref()),
            e.alias.clone(),
            from_to(e),
            outcome(e),
            if e.by.is_empty() { "-".into() } else { e.by.clone() },
            e.reason.clone(),
        ]);
    }
    if !m.history.is_empty() {
        for line in h.render().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// After `promote`, `rollback` or `approve`: `churn: production v2 -> v3 (promoted by
/// hand: ...)`; a move that awaits approval, or was rejected, says so first.
pub fn moved(name: &str, e: &v1::AliasEvent) -> String {
    let line = format!("{name}: {} {} ({})\n", e.alias, from_to(e), e.reason);
    if e.awaiting_approval {
        let id = e.request_id;
        format!(
            "{name}: {} is protected: the move awaits approval as request {id}\n{line}\
             approve: weir models approve {name} {id} [--comment TEXT]\n\
             reject:  weir models approve {name} {id} --reject [--comment TEXT]\n",
            e.alias
        )
    } else if e.refused {
        format!("{name}: {} did not move\n{line}", e.alias)
    } else {
        line
    }
}

/// The "awaiting approval" block of `weir models show`: one line per pending move.
fn pending(m: &v1::GetModelResponse) -> String {
    let mut out = String::new();
    let mut protected: Vec<(&String, &v1::AliasProtection)> = m.protected.iter().collect();
    protected.sort_by(|a, b| a.0.cmp(b.0));
    for (alias, p) in protected {
        let timeout = match p.timeout_ms {
            0 => "no timeout".to_string(),
            ms => format!("timeout {}", weir_core::spec::units::format_duration(std::time::Duration::from_millis(ms))),
        };
        out.push_str(&format!("protected: {alias} (moves await approval; {timeout}; declared by {})\n", p.declared_by));
    }
    if m.pending.is_empty() {
        return out;
    }
    out.push_str("\nawaiting approval (`weir models approve NAME ID [--reject]`):\n");
    let mut t = Table::new(&["ID", "ALIAS", "MOVE", "REQUESTED", "DUE", "REASON"]);
    for p in &m.pending {
        let from = if p.from_version == 0 { "new".to_string() } else { format!("v{}", p.from_version) };
        t.push(vec![
            p.id.to_string(),
            p.alias.clone(),
            format!("{from} -> v{}", p.to_version),
            when(p.requested_at.as_ref()),
            when(p.due_at.as_ref()),
            p.reason.clone(),
        ]);
    }
    for line in t.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The OUTCOME column of the alias history.
fn outcome(e: &v1::AliasEvent) -> String {
    let comment = if e.comment.is_empty() { String::new() } else { format!(": {}", e.comment) };
    let by = format!("by {}{comment}", e.decided_by);
    match (e.awaiting_approval, e.refused, e.decided_by.as_str()) {
        (true, _, _) => format!("AWAITING APPROVAL (request {})", e.request_id),
        (_, true, "") => "REFUSED".into(),
        (_, true, "timeout") => "REFUSED (timed out)".into(),
        (_, true, "superseded") => "REFUSED (superseded)".into(),
        (_, true, _) => format!("REJECTED {by}"),
        (_, false, "") => "moved".into(),
        (_, false, _) => format!("moved, approved {by}"),
    }
}

/// After `get`: which version went where.
pub fn fetched(v: &v1::ModelVersion, target: &str, to: &str) -> String {
    format!(
        "{target} is {} v{} ({}, {} bytes, digest {}, from run {} step {}): written to {to}",
        v.model,
        v.version,
        v.file,
        v.size,
        short(&v.digest),
        v.run_id,
        v.step
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_780_801_000; // 2026-11-27 12:00:01 UTC

    fn ts(ms: u64) -> Option<prost_types::Timestamp> {
        Some(weir_engine::api::convert::timestamp(weir_core::run::Millis(ms)))
    }

    fn version(n: u64, rmse: f64, aliases: &[&str]) -> v1::ModelVersion {
        v1::ModelVersion {
            model: "churn".into(),
            version: n,
            digest: format!("{n}{}", "ab".repeat(31)),
            file: "model.json".into(),
            size: 10,
            run_id: format!("ml-{n}"),
            step: "deploy".into(),
            metrics: [("rmse".to_string(), rmse)].into(),
            params: Default::default(),
            created_at: ts(T0 + n * 1000),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            explanation: None,
        }
    }

    fn event(from: u64, to: u64, at: u64, refused: bool, reason: &str) -> v1::AliasEvent {
        v1::AliasEvent {
            alias: "production".into(),
            from_version: from,
            to_version: to,
            time: ts(at),
            reason: reason.into(),
            refused,
            ..Default::default()
        }
    }

    #[test]
    fn the_models_table_sorts_by_name_and_lists_aliases() {
        let m = |name: &str, latest: u64, aliases: &[(&str, u64)]| v1::ModelSummary {
            name: name.into(),
            latest_version: latest,
            updated_at: ts(T0),
            aliases: aliases.iter().map(|(a, v)| (a.to_string(), *v)).collect(),
            pending_moves: 0,
        };
        let text = models_table(&[m("fraud", 1, &[]), m("churn", 3, &[("staging", 3), ("production", 2)])]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME   LATEST  ALIASES                    UPDATED",
                "churn  v3      production=v2, staging=v3  2026-11-27 12:00:01",
                "fraud  v1      -                          2026-11-27 12:00:01",
            ]
        );
    }

    #[test]
    fn show_lists_versions_newest_first_then_the_history_with_refusals_and_their_values() {
        let m = v1::GetModelResponse {
            name: "churn".into(),
            versions: vec![version(1, 0.5, &[]), version(2, 0.3, &["production"]), version(3, 0.9, &[])],
            aliases: [("production".to_string(), 2)].into(),
            history: vec![
                event(0, 1, T0 + 1000, false, "registered by run ml-1 step deploy"),
                event(1, 2, T0 + 2000, false, "registered by run ml-2 step deploy"),
                event(
                    2,
                    3,
                    T0 + 3000,
                    true,
                    "promotion refused: `metrics.rmse < current.metrics.rmse` is false with metrics.rmse = 0.9, current.metrics.rmse = 0.3",
                ),
            ],
            ..Default::default()
        };
        let mut m = m;
        m.history[1].by = "ada".into();
        let text = model(&m);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "model churn: latest v3, aliases production=v2");
        assert!(lines[2].starts_with("VERSION  DIGEST        RUN   STEP    METRICS   ALIASES     CREATED"), "{text}");
        assert_eq!(lines[3], "v3       3abababababa  ml-3  deploy  rmse=0.9  -           2026-11-27 12:00:04");
        assert_eq!(lines[4], "v2       2abababababa  ml-2  deploy  rmse=0.3  production  2026-11-27 12:00:03");
        assert_eq!(lines[7], "alias history (oldest first):");
        assert_eq!(lines[8], "  TIME                 ALIAS       MOVE       OUTCOME  BY   REASON");
        assert_eq!(
            lines[9],
            "  2026-11-27 12:00:02  production  new -> v1  moved    -    registered by run ml-1 step deploy"
        );
        assert!(lines[10].contains("moved    ada  registered by run ml-2"), "{}", lines[10]);
        assert_eq!(
            lines[11],
            "  2026-11-27 12:00:04  production  v2 -> v3   REFUSED  -    promotion refused: \
             `metrics.rmse < current.metrics.rmse` is false with metrics.rmse = 0.9, current.metrics.rmse = 0.3"
        );
    }

    #[test]
    fn show_lists_protected_aliases_pending_moves_and_who_decided() {
        let decided = |refused: bool, by: &str, comment: &str| v1::AliasEvent {
            decided_by: by.into(),
            comment: comment.into(),
            request_id: 1,
            ..event(1, 2, T0 + 5000, refused, "promoted by hand")
        };
        let m = v1::GetModelResponse {
            name: "churn".into(),
            versions: vec![version(1, 0.5, &["production"]), version(2, 0.3, &[])],
            aliases: [("production".to_string(), 1)].into(),
            history: vec![
                v1::AliasEvent { awaiting_approval: true, request_id: 1, ..event(1, 2, T0 + 4000, false, "by hand") },
                decided(true, "bob (client token)", "worse on eu"),
                decided(false, "alice (client token)", ""),
                decided(true, "timeout", ""),
            ],
            pending: vec![v1::PendingAliasMove {
                id: 3,
                alias: "production".into(),
                from_version: 1,
                to_version: 2,
                requested_at: ts(T0 + 6000),
                reason: "registered by run ml-2 step deploy".into(),
                rollback: false,
                due_at: ts(T0 + 3_606_000),
            }],
            protected: [(
                "production".to_string(),
                v1::AliasProtection {
                    message: "ship?".into(),
                    timeout_ms: 3_600_000,
                    declared_by: "run ml-1 step deploy".into(),
                    since: ts(T0),
                },
            )]
            .into(),
        };
        let text = model(&m);
        assert!(
            text.contains(
                "protected: production (moves await approval; timeout 1h; declared by run ml-1 step deploy)\n"
            ),
            "{text}"
        );
        assert!(text.contains("awaiting approval (`weir models approve NAME ID [--reject]`):\n"), "{text}");
        assert!(
            text.contains(
                "  3   production  v1 -> v2  2026-11-27 12:00:07  2026-11-27 13:00:07  registered by run ml-2 step deploy"
            ),
            "{text}"
        );
        for outcome in [
            "AWAITING APPROVAL (request 1)",
            "REJECTED by bob (client token): worse on eu",
            "moved, approved by alice (client token)",
            "REFUSED (timed out)",
        ] {
            assert!(text.contains(outcome), "{outcome} in {text}");
        }
        let asked = v1::AliasEvent { awaiting_approval: true, request_id: 3, ..event(1, 2, T0, false, "why") };
        assert_eq!(
            moved("churn", &asked),
            "churn: production is protected: the move awaits approval as request 3\n\
             churn: production v1 -> v2 (why)\n\
             approve: weir models approve churn 3 [--comment TEXT]\n\
             reject:  weir models approve churn 3 --reject [--comment TEXT]\n"
        );
    }

    #[test]
    fn a_model_without_moves_says_so_and_metrics_are_capped_at_three() {
        let mut v = version(1, 0.5, &[]);
        v.metrics = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("e", 5.0)]
            .into_iter()
            .map(|(k, x)| (k.to_string(), x))
            .collect();
        let m = v1::GetModelResponse { name: "m".into(), versions: vec![v], ..Default::default() };
        let text = model(&m);
        assert!(text.contains("a=1 b=2 c=3 (+2)"), "{text}");
        let shown: Vec<String> = [0.6396416124515925, 4.0, 0.00001234, -0.00001, 1234.5, 0.0].map(number).into();
        assert_eq!(shown, ["0.6396", "4", "1.234e-5", "-1.000e-5", "1234.5", "0"]);
        assert!(
            text.ends_with("alias history (oldest first):\n  none: no alias has pointed at a version yet\n"),
            "{text}"
        );
        assert_eq!(
            moved("churn", &event(3, 2, T0, false, "rollback: bad canary")),
            "churn: production v3 -> v2 (rollback: bad canary)\n"
        );
        assert_eq!(
            fetched(&version(2, 0.3, &[]), "churn@production", "out.json"),
            "churn@production is churn v2 (model.json, 10 bytes, digest 2abababababa, from run ml-2 step deploy): written to out.json"
        );
    }
}
