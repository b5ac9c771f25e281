//! A step's live metric series (`$WEIR_METRICS`) as inline SVG line plots, one per series, on
//! the step's page: x is the point's `step` (its position in the series when it gave none),
//! y its value, with round ticks from `plot`. A series of thousands of points is thinned to at
//! most [`MAX_DRAWN`] for drawing (evenly, keeping the last); the table beside it says how many
//! there are. No script and no plotting crate.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped};

use super::page::escape;
use super::plot::{ticks, widen};
use crate::server::compare::number;
use crate::store::LivePoint;

/// The most points drawn per series.
pub(crate) const MAX_DRAWN: usize = 500;

const W: f64 = 480.0;
const H: f64 = 200.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 32.0;

/// The plot of one series named `name`.
pub(crate) fn svg(name: &str, points: &[LivePoint]) -> Markup {
    let xy: Vec<(f64, f64)> =
        points.iter().enumerate().map(|(i, p)| (p.step.map_or(i as f64, |s| s as f64), p.value)).collect();
    // One slot kept for the last point.
    let every = if xy.len() > MAX_DRAWN { xy.len().div_ceil(MAX_DRAWN - 1) } else { 1 };
    let mut drawn: Vec<(f64, f64)> = xy.iter().copied().step_by(every).collect();
    if let (Some(last), Some(shown)) = (xy.last(), drawn.last())
        && last != shown
    {
        drawn.push(*last);
    }
    let mut s = String::with_capacity(1024 + drawn.len() * 16);
    let _ = write!(
        s,
        r#"<svg class="plot live-series" data-series="{n}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{n} by step">"#,
        n = escape(name)
    );
    let _ = write!(s, "<title>{}</title>", escape(name));
    if drawn.is_empty() {
        s.push_str(r#"<text x="20" y="40">No values to plot.</text></svg>"#);
        return PreEscaped(s);
    }
    let (x0, x1) = widen(drawn.iter().map(|p| p.0), 1.0, false);
    let (ylo, yhi) = widen(drawn.iter().map(|p| p.1), 1.0, true);
    let yticks = ticks(ylo, yhi);
    let (y0, y1) = (yticks[0].min(ylo), yticks[yticks.len() - 1].max(yhi));
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
    let b = H - BOTTOM;
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>"#,
        r = W - RIGHT
    );
    for t in &yticks {
        let y = py(*t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{r}" y2="{y:.1}"/><text class="tick y" x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"#,
            r = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = escape(&number(*t))
        );
    }
    for t in ticks(x0, x1).into_iter().filter(|t| *t >= x0 && *t <= x1) {
        let x = px(t);
        let _ = write!(
            s,
            r#"<line class="axis" x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b2}"/><text class="tick x" x="{x:.1}" y="{ty}" text-anchor="middle">{v}</text>"#,
            b2 = b + 5.0,
            ty = b + 18.0,
            v = escape(&number(t))
        );
    }
    let line: Vec<String> = drawn.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
    let _ = write!(s, r#"<polyline class="series" fill="none" points="{}"/>"#, line.join(" "));
    s.push_str("</svg>");
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::run::Millis;

    fn p(value: f64, step: Option<u64>) -> LivePoint {
        LivePoint { name: "loss".into(), value, step, at: Millis(0) }
    }

    #[test]
    fn a_series_plots_by_step_and_a_long_one_is_thinned() {
        let short = svg("loss <&>", &[p(0.9, Some(1)), p(0.5, Some(2)), p(0.2, Some(3))]).into_string();
        assert!(short.contains(r#"data-series="loss &lt;&amp;&gt;""#), "{short}");
        let line = short.split(r#"points=""#).nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(line.split(' ').count(), 3, "{short}");
        let long: Vec<LivePoint> = (0..10_000).map(|i| p(f64::from(i), None)).collect();
        let long = svg("n", &long).into_string();
        let line = long.split(r#"points=""#).nth(1).unwrap().split('"').next().unwrap();
        let n = line.split(' ').count();
        assert!(n <= MAX_DRAWN && n > MAX_DRAWN * 9 / 10, "thinned to {n}: {long}");
        assert!(line.ends_with(" 468.0,12.0"), "the last point kept: {line}");
        let one = svg("one", &[p(1.0, None)]).into_string();
        assert!(one.contains("<polyline"), "a single point still plots: {one}");
    }
}
