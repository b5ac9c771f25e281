//! Pure rendering of explanations (`weir models show`'s importance bars, `weir models diff`):
//! what the server said in, text out. The bars are Unicode block characters in eighths, so a
//! terminal without colour still shows the proportions.

use weir_proto::v1;

use crate::display::Table;

/// How many features `weir models show` charts.
pub const TOP: usize = 10;
/// The widest bar, in terminal cells.
const WIDTH: usize = 30;

/// A bar of `fraction` (0..=1) of [`WIDTH`] cells, in eighths of a cell.
fn bar(fraction: f64) -> String {
    let eighths = (fraction.clamp(0.0, 1.0) * (WIDTH * 8) as f64).round() as usize;
    let mut out = "█".repeat(eighths / 8);
    if let Some(part) = (eighths % 8).checked_sub(1) {
        out.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][part]);
    }
    if out.is_empty() { "▏".into() } else { out }
}

/// The explanation block of `weir models show`: which version, how it was measured, and its
/// top features as bars scaled to the largest absolute importance.
pub fn chart(version: u64, e: &v1::Explanation) -> String {
    let metric = if e.metric.is_empty() { String::new() } else { format!(", {}", e.metric) };
    let shown = e.importances.len().min(TOP);
    let mut out =
        format!("explanation of v{version} ({}{metric}): top {shown} of {} features\n", e.method, e.importances.len());
    let max = e.importances.iter().map(|i| i.importance.abs()).fold(0.0, f64::max);
    let name_width = e.importances.iter().take(TOP).map(|i| i.feature.chars().count()).max().unwrap_or(0);
    for i in e.importances.iter().take(TOP) {
        let fraction = if max > 0.0 { i.importance.abs() / max } else { 0.0 };
        let b = bar(fraction);
        let pad = WIDTH + 1 - b.chars().count();
        out.push_str(&format!(
            "  {:>2}  {:<name_width$}  {b}{}{}\n",
            i.rank,
            i.feature,
            " ".repeat(pad),
            weir_core::explain::shown(i.importance)
        ));
    }
    out
}

/// `weir models diff NAME A B`: a heading with the methods and the rank shift, then every
/// feature's rank and importance in both versions.
pub fn diff(d: &v1::DiffModelExplanationsResponse) -> String {
    let methods = if d.from_method == d.to_method {
        d.to_method.clone()
    } else {
        format!("{} -> {}, importances not comparable as numbers", d.from_method, d.to_method)
    };
    let mut out = format!(
        "{} v{} -> v{} explanations ({methods}): rank shift {} (the largest rank move among either top 10)\n\n",
        d.model, d.from_version, d.to_version, d.rank_shift
    );
    let mut t = Table::new(&["FEATURE", "RANK", "CHANGE", "IMPORTANCE"]);
    let rank = |r: u32| if r == 0 { "-".to_string() } else { r.to_string() };
    let value = |r: u32, v: f64| if r == 0 { "-".to_string() } else { weir_core::explain::shown(v) };
    for c in &d.changes {
        let change = match (c.from_rank, c.to_rank) {
            (0, _) => "appeared".to_string(),
            (_, 0) => "vanished".to_string(),
            (a, b) if a == b => "=".to_string(),
            (a, b) if b < a => format!("up {}", a - b),
            (a, b) => format!("down {}", b - a),
        };
        t.push(vec![
            c.feature.clone(),
            format!("{} -> {}", rank(c.from_rank), rank(c.to_rank)),
            change,
            format!("{} -> {}", value(c.from_rank, c.from_importance), value(c.to_rank, c.to_importance)),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn importance(feature: &str, importance: f64, rank: u32) -> v1::FeatureImportance {
        v1::FeatureImportance { feature: feature.into(), importance, rank }
    }

    #[test]
    fn bars_scale_to_the_largest_importance() {
        let e = v1::Explanation {
            method: "permutation".into(),
            metric: "accuracy drop".into(),
            importances: vec![importance("income", 0.4, 1), importance("age", -0.1, 2), importance("zip", 0.0, 3)],
            ..Default::default()
        };
        let text = chart(3, &e);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "explanation of v3 (permutation, accuracy drop): top 3 of 3 features");
        assert_eq!(lines[1], format!("   1  income  {} 0.4", "█".repeat(30)));
        assert_eq!(
            lines[2],
            format!("   2  age     {}{} -0.1", "█".repeat(7), "▌").replace("▌ ", &format!("▌{}", " ".repeat(23)))
        );
        assert!(lines[3].starts_with("   3  zip     ▏"), "{}", lines[3]);
        assert!(lines[3].ends_with(" 0"), "{}", lines[3]);
    }

    #[test]
    fn the_diff_says_what_moved_appeared_and_vanished() {
        let change = |feature: &str, from_rank, to_rank, from_importance, to_importance| v1::FeatureChange {
            feature: feature.into(),
            from_rank,
            to_rank,
            from_importance,
            to_importance,
        };
        let d = v1::DiffModelExplanationsResponse {
            model: "churn".into(),
            from_version: 1,
            to_version: 2,
            from_method: "permutation".into(),
            to_method: "permutation".into(),
            rank_shift: 3,
            changes: vec![
                change("customer_id", 0, 1, 0.0, 0.5),
                change("age", 2, 2, 0.1, 0.1),
                change("income", 1, 3, 0.3, 0.05),
                change("zip", 3, 0, 0.01, 0.0),
            ],
        };
        let text = diff(&d);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "churn v1 -> v2 explanations (permutation): rank shift 3 (the largest rank move among either top 10)",
                "",
                "FEATURE      RANK    CHANGE    IMPORTANCE",
                "customer_id  - -> 1  appeared  - -> 0.5",
                "age          2 -> 2  =         0.1 -> 0.1",
                "income       1 -> 3  down 2    0.3 -> 0.05",
                "zip          3 -> -  vanished  0.01 -> -",
            ]
        );
    }
}
