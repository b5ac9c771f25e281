//! Explanations on the web UI: a model version's (or a step's) feature importances as SVG
//! bars, and two versions' comparison as a table (rank changes, features that appeared or
//! vanished). Rendering only: the explanation comes from `server::explain` (the same values
//! `GetModel` and `DiffModelExplanations` carry), this module decides nothing.

use maud::{Markup, html};
use weir_core::explain::Explanation;

use crate::server::explain::ExplanationDiff;

/// How many features the bars show.
const TOP: usize = 15;
const BAR_WIDTH: f64 = 320.0;
const ROW: usize = 22;
const LABEL: usize = 180;

/// The top features as horizontal bars scaled to the largest absolute importance; every bar
/// carries its feature, rank and value (`data-feature`, `data-rank`, `data-importance`) and a
/// text label, so the chart reads without colour.
pub(super) fn bars(e: &Explanation) -> Markup {
    let shown: Vec<_> = e.importances.iter().take(TOP).collect();
    let max = shown.iter().map(|i| i.value.abs()).fold(0.0, f64::max);
    let height = shown.len() * ROW + 4;
    let width = LABEL + BAR_WIDTH as usize + 90;
    html! {
        p.muted {
            "Method " strong { (e.method.as_str()) }
            @if let Some(m) = &e.metric { " (" (m) ")" }
            "; top " (shown.len()) " of " (e.importances.len()) " features, by absolute importance."
        }
        div.plot.importances {
            svg.importance-bars width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="feature importances" {
                @for (n, i) in shown.iter().enumerate() {
                    @let y = n * ROW + 2;
                    @let w = if max > 0.0 { (i.value.abs() / max * BAR_WIDTH).max(1.0) } else { 1.0 };
                    g.bar data-feature=(i.feature) data-rank=(n + 1) data-importance=(i.value) {
                        text.tick x=(LABEL - 6) y=(y + 15) text-anchor="end" { (n + 1) ". " (i.feature) }
                        rect.pt.neg[i.value < 0.0] x=(LABEL) y=(y + 3) width=(format!("{w:.1}")) height=(ROW - 6) {
                            title { (i.feature) ": " (i.value) }
                        }
                        text.tick x=(format!("{:.1}", LABEL as f64 + w + 6.0)) y=(y + 15) { (weir_core::explain::shown(i.value)) }
                    }
                }
            }
        }
    }
}

/// Two versions compared: one row per feature.
pub(super) fn comparison(d: &ExplanationDiff) -> Markup {
    html! {
        p {
            "v" (d.from) " → v" (d.to) ": rank shift " strong.rank-shift { (d.rank_shift) }
            " (the largest rank move among either top 10; what " code { "explain.rank_shift" } " reads)"
            @if d.from_method != d.to_method { "; methods differ (" (d.from_method) " → " (d.to_method) "), so importances are not comparable as numbers" }
        }
        table #explain-diff {
            thead { tr { th { "Feature" } th { "Rank" } th { "Change" } th.num { "Importance" } } }
            tbody {
                @for c in &d.changes {
                    @let change = match (c.before, c.after) {
                        (None, _) => "appeared".to_string(),
                        (_, None) => "vanished".to_string(),
                        (Some(a), Some(b)) if a.0 == b.0 => "=".to_string(),
                        (Some(a), Some(b)) if b.0 < a.0 => format!("▲ up {}", a.0 - b.0),
                        (Some(a), Some(b)) => format!("▼ down {}", b.0 - a.0),
                    };
                    tr data-feature=(c.feature) data-change=(change) {
                        td { (c.feature) }
                        td { (rank(c.before)) " → " (rank(c.after)) }
                        td { (change) }
                        td.num { (value(c.before)) " → " (value(c.after)) }
                    }
                }
            }
        }
    }
}

fn rank(x: Option<(usize, f64)>) -> String {
    x.map_or_else(|| "-".to_string(), |(r, _)| r.to_string())
}

fn value(x: Option<(usize, f64)>) -> String {
    x.map_or_else(|| "-".to_string(), |(_, v)| weir_core::explain::shown(v))
}
