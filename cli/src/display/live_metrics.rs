//! `weir metrics RUN STEP`: one attempt's live metrics (the series a step wrote to
//! `$WEIR_METRICS`) as a table of series with a sparkline each, or as JSON lines (`--json`).
//! Pure: takes the answer, returns text.

use std::fmt::Write as _;

use weir_proto::v1::GetStepMetricsResponse;

use super::tracking::{number, sparkline};
use super::{Table, millis};

/// The table: per series its points, first, last, min and max value and last step, then a
/// sparkline per series when it fits in `width`, then what was refused or malformed.
pub fn step_metrics(m: &GetStepMetricsResponse, width: usize) -> String {
    let mut out = String::new();
    let points: usize = m.series.iter().map(|s| s.points.len()).sum();
    let _ = writeln!(
        out,
        "{} attempt {} of {}: {} series, {} point{}",
        m.instance,
        m.attempt,
        m.attempts,
        m.series.len(),
        points,
        if points == 1 { "" } else { "s" }
    );
    if m.series.is_empty() {
        out.push_str("no live metrics: a step writes them to $WEIR_METRICS, one JSON object a line\n");
    } else {
        let mut t = Table::new(&["SERIES", "POINTS", "FIRST", "LAST", "MIN", "MAX", "LAST STEP"]);
        for s in &m.series {
            let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
            let (lo, hi) =
                values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            t.push(vec![
                s.name.clone(),
                values.len().to_string(),
                values.first().map_or_else(|| "-".into(), |v| number(*v)),
                values.last().map_or_else(|| "-".into(), |v| number(*v)),
                number(lo),
                number(hi),
                s.points.last().and_then(|p| p.step).map_or_else(|| "-".into(), |s| s.to_string()),
            ]);
        }
        out.push_str(&t.render());
        let pad = m.series.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &m.series {
            let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
            let shown = values.len().min(width.saturating_sub(pad + 2));
            if values.len() > 1 && shown > 1 {
                // The most recent points that fit.
                let _ = writeln!(out, "{:pad$}  {}", s.name, sparkline(&values[values.len() - shown..]));
            }
        }
    }
    match m.malformed {
        0 => {}
        1 => out.push_str("1 line of $WEIR_METRICS was not a metric point and was ignored (the step's log says why)\n"),
        n => {
            let _ = writeln!(
                out,
                "{n} lines of $WEIR_METRICS were not metric points and were ignored (the step's log says why)"
            );
        }
    }
    if m.refused > 0 {
        let _ = writeln!(out, "{} points were refused past the bound of {} per attempt", m.refused, m.limit);
    }
    out
}

/// One JSON object a line: `{"name":"loss","step":12,"time_ms":…,"value":0.31}`, series by
/// series, each in the order written.
pub fn json_lines(m: &GetStepMetricsResponse) -> String {
    let mut out = String::new();
    for s in &m.series {
        for p in &s.points {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), s.name.clone().into());
            o.insert("value".into(), p.value.into());
            if let Some(step) = p.step {
                o.insert("step".into(), step.into());
            }
            if let Some(ms) = millis(p.time.as_ref()) {
                o.insert("time_ms".into(), ms.into());
            }
            let _ = writeln!(out, "{}", serde_json::Value::Object(o));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::v1::{LiveMetricPoint, LiveMetricSeries};

    fn series(name: &str, values: &[f64]) -> LiveMetricSeries {
        let points = values
            .iter()
            .enumerate()
            .map(|(i, v)| LiveMetricPoint { name: name.into(), value: *v, step: Some(i as u64 + 1), time: None })
            .collect();
        LiveMetricSeries { name: name.into(), points }
    }

    #[test]
    fn a_table_of_series_with_sparklines_and_what_was_left_out() {
        let m = GetStepMetricsResponse {
            instance: "train".into(),
            attempt: 2,
            attempts: 2,
            series: vec![series("acc", &[0.5]), series("loss", &[0.9, 0.5, 0.2])],
            refused: 4,
            malformed: 1,
            limit: 10_000,
        };
        let text = step_metrics(&m, 80);
        assert!(text.starts_with("train attempt 2 of 2: 2 series, 4 points\n"), "{text}");
        assert!(text.contains("\nloss    3       0.9    0.2   0.2  0.9  3"), "{text}");
        assert!(text.contains("\nloss  █▄▁\n"), "a sparkline for the series with more than one point: {text}");
        assert_eq!(text.lines().count(), 7, "none for a single point: {text}");
        assert!(text.contains("1 line of $WEIR_METRICS was not a metric point and was ignored"), "{text}");
        assert!(text.contains("4 points were refused past the bound of 10000 per attempt"), "{text}");
        assert_eq!(
            json_lines(&m),
            "{\"name\":\"acc\",\"step\":1,\"value\":0.5}\n{\"name\":\"loss\",\"step\":1,\"value\":0.9}\n\
             {\"name\":\"loss\",\"step\":2,\"value\":0.5}\n{\"name\":\"loss\",\"step\":3,\"value\":0.2}\n"
        );
    }
}
