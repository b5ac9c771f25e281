//! A metric across runs as an SVG line plot, built here in Rust (no script, no crate: a
//! few hundred bytes of arithmetic beat a plotting dependency for one kind of chart). Time
//! runs along x, the value up y; both axes get about five "nice" ticks (1, 2 or 5 times a
//! power of ten). Each point is a link to its run with a tooltip (value and run id). A single
//! point or a flat series gets a range around it; values that are not finite are left out and
//! counted, for the page to say so.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped};

use super::page::escape;
use crate::server::compare::number;

/// One value of the series.
pub(crate) struct PlotPoint {
    /// Milliseconds since the epoch.
    pub at: u64,
    pub value: f64,
    pub href: String,
    pub tip: String,
}

/// The size and margins of the runs plot.
const DIMS: Dims = Dims { w: 720.0, h: 320.0, left: 70.0, right: 20.0, top: 16.0, bottom: 40.0 };

/// The plot of `points` (in time order) and how many were skipped for not being finite.
pub(crate) fn svg(points: &[PlotPoint]) -> (Markup, usize) {
    let shown: Vec<&PlotPoint> = points.iter().filter(|p| p.value.is_finite()).collect();
    let skipped = points.len() - shown.len();
    let mut s = String::with_capacity(1024 + shown.len() * 200);
    let _ = write!(
        s,
        r#"<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="the metric across runs over time">"#,
        w = DIMS.w,
        h = DIMS.h
    );
    if shown.is_empty() {
        s.push_str(r#"<text x="20" y="40">No values to plot.</text></svg>"#);
        return (PreEscaped(s), skipped);
    }
    let xs = widen(shown.iter().map(|p| p.at as f64), 60_000.0, false);
    let frame = Frame::new(DIMS, xs, widen(shown.iter().map(|p| p.value), 1.0, true));
    let xticks = ticks(xs.0, xs.1).into_iter().map(|t| {
        let label = chrono::DateTime::from_timestamp_millis(t as i64)
            .map(|d| d.format("%m-%d %H:%M").to_string())
            .unwrap_or_default();
        (t, label)
    });
    frame.axes(&mut s, xticks);
    let line: Vec<String> =
        shown.iter().map(|p| format!("{:.1},{:.1}", frame.px(p.at as f64), frame.py(p.value))).collect();
    let _ = write!(s, r#"<polyline class="series" fill="none" points="{}"/>"#, line.join(" "));
    for p in &shown {
        let _ = write!(
            s,
            r#"<a class="point" href="{}"><circle cx="{:.1}" cy="{:.1}" r="4"><title>{}</title></circle></a>"#,
            escape(&p.href),
            frame.px(p.at as f64),
            frame.py(p.value),
            escape(&p.tip)
        );
    }
    s.push_str("</svg>");
    (PreEscaped(s), skipped)
}

/// A plot's size and margins, in SVG units.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub w: f64,
    pub h: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

/// Where values land in a plot: the x range as given, the y range stretched to its round ticks.
pub(super) struct Frame {
    d: Dims,
    x: (f64, f64),
    y: (f64, f64),
    yticks: Vec<f64>,
}

impl Frame {
    /// A frame of `d` over x in `x` and y covering `y` (both from [`widen`]).
    pub(super) fn new(d: Dims, x: (f64, f64), y: (f64, f64)) -> Frame {
        let yticks = ticks(y.0, y.1);
        let y = (yticks[0].min(y.0), yticks[yticks.len() - 1].max(y.1));
        Frame { d, x, y, yticks }
    }

    pub(super) fn px(&self, x: f64) -> f64 {
        self.d.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.d.w - self.d.left - self.d.right)
    }

    pub(super) fn py(&self, y: f64) -> f64 {
        self.d.h - self.d.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.d.h - self.d.top - self.d.bottom)
    }

    /// Writes both axes, the y grid with its labels, and a tick with its label at each x.
    pub(super) fn axes(&self, s: &mut String, xticks: impl Iterator<Item = (f64, String)>) {
        let Dims { w, h, left, right, top, bottom } = self.d;
        let b = h - bottom;
        let _ = write!(
            s,
            r#"<line class="axis" x1="{left}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{b}"/>"#,
            r = w - right
        );
        for t in &self.yticks {
            let y = self.py(*t);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{left}" y1="{y:.1}" x2="{r}" y2="{y:.1}"/><text class="tick y" x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"#,
                r = w - right,
                tx = left - 6.0,
                ty = y + 4.0,
                v = escape(&number(*t))
            );
        }
        for (t, label) in xticks {
            let x = self.px(t);
            let _ = write!(
                s,
                r#"<line class="axis" x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b2}"/><text class="tick x" x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"#,
                b2 = b + 5.0,
                ty = b + 18.0,
                l = escape(&label)
            );
        }
    }
}

/// The range of `values`; a single value is widened by `pad` (with `relative`, by its tenth
/// unless zero) so that a flat series sits in the middle.
pub(super) fn widen(values: impl Iterator<Item = f64>, pad: f64, relative: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if hi > lo {
        return (lo, hi);
    }
    let d = if relative && lo != 0.0 { lo.abs() / 10.0 } else { pad };
    (lo - d, hi + d)
}

/// About five round values covering `[lo, hi]`.
pub(super) fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| raw <= *s).unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut t = first;
    while t <= hi + step * 0.5 && out.len() < 12 {
        out.push(t);
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64, value: f64) -> PlotPoint {
        PlotPoint { at, value, href: format!("/runs/r{at}"), tip: format!("{value} <r{at}>") }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = ticks(13.0, 87.0);
        assert!(t[0] <= 13.0 && *t.last().unwrap() >= 87.0 - 10.0, "{t:?}");
    }

    #[test]
    fn one_point_flat_series_and_non_finite_values_still_plot() {
        let (one, skipped) = svg(&[point(1000, 0.5)]);
        assert_eq!(skipped, 0);
        assert_eq!(one.0.matches("<circle").count(), 1);
        assert!(!one.0.contains("NaN"), "{}", one.0);
        let (flat, _) = svg(&[point(1000, 2.0), point(2000, 2.0)]);
        assert!(!flat.0.contains("NaN") && !flat.0.contains("inf"), "{}", flat.0);
        let (some, skipped) = svg(&[point(1000, 1.0), point(2000, f64::NAN), point(3000, f64::INFINITY)]);
        assert_eq!((skipped, some.0.matches("<circle").count()), (2, 1));
        assert!(some.0.contains("&lt;r1000&gt;"), "tooltips are escaped");
    }
}
