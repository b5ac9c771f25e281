//! A step's live metric series (`$WEIR_METRICS`) as inline SVG line plots, one per series, on
//! the step's page: x is the point's `step` (its position in the series when it gave none),
//! y its value, with round ticks from `plot`. A series of thousands of points is thinned to at
//! most [`MAX_DRAWN`] for drawing (evenly, keeping the last); the table beside it says how many
//! there are. No script and no plotting crate.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped};

use super::page::escape;
use super::plot::{Dims, Frame, ticks, widen};
use crate::server::compare::number;
use crate::store::LivePoint;

/// The most points drawn per series.
pub(crate) const MAX_DRAWN: usize = 500;

const DIMS: Dims = Dims { w: 480.0, h: 200.0, left: 60.0, right: 12.0, top: 12.0, bottom: 32.0 };

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
        r#"<svg class="plot live-series" data-series="{n}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{n} by step">"#,
        n = escape(name),
        w = DIMS.w,
        h = DIMS.h
    );
    let _ = write!(s, "<title>{}</title>", escape(name));
    if drawn.is_empty() {
        s.push_str(r#"<text x="20" y="40">No values to plot.</text></svg>"#);
        return PreEscaped(s);
    }
    let xs = widen(drawn.iter().map(|p| p.0), 1.0, false);
    let frame = Frame::new(DIMS, xs, widen(drawn.iter().map(|p| p.1), 1.0, true));
    let xticks = ticks(xs.0, xs.1).into_iter().filter(|t| *t >= xs.0 && *t <= xs.1).map(|t| (t, number(t)));
    frame.axes(&mut s, xticks);
    let line: Vec<String> = drawn.iter().map(|(x, y)| format!("{:.1},{:.1}", frame.px(*x), frame.py(*y))).collect();
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
