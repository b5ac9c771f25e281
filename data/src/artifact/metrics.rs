//! [`metrics_from_json`]: a step's `metrics.json` into the numbers its `gate` and the run's
//! records use. The file must be one JSON object of at most 1 MiB; every finite number at the
//! top level becomes a metric, and everything else is listed in [`Metrics::skipped`] so the
//! engine can warn. Nested objects are skipped, not flattened: the expression language names a
//! metric as `metrics.NAME`, one segment, so `val.rmse` could never be used by a gate.
//! It only parses bytes; reading the file is the caller's job.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Error;

/// The largest `metrics.json` accepted.
pub const MAX_METRICS_BYTES: usize = 1 << 20;

/// A step's metrics, and the keys that were not numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub values: BTreeMap<String, f64>,
    /// Keys left out, sorted, each with what it held: `"notes (a string)"`.
    pub skipped: Vec<String>,
}

/// Parses `metrics.json`.
pub fn metrics_from_json(bytes: &[u8]) -> Result<Metrics, Error> {
    if bytes.len() > MAX_METRICS_BYTES {
        return Err(Error::MetricsTooLarge(bytes.len()));
    }
    let object = match serde_json::from_slice(bytes).map_err(Error::MetricsJson)? {
        Value::Object(object) => object,
        other => return Err(Error::MetricsNotObject(kind(&other))),
    };
    let mut metrics = Metrics::default();
    for (key, value) in object {
        // Without serde_json's `arbitrary_precision`, every JSON number converts (large
        // integers approximately), and JSON has no NaN or infinity; check anyway.
        match value.as_f64() {
            Some(x) if x.is_finite() => {
                metrics.values.insert(key, x);
            }
            Some(_) => metrics.skipped.push(format!("{key} (a number out of range)")),
            None => metrics.skipped.push(format!("{key} ({})", kind(&value))),
        }
    }
    metrics.skipped.sort();
    Ok(metrics)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_float_a_step_writes_reads_back_exactly() {
        // serde_json's default float parser is off by one ulp on some of these (issue 18).
        let text = "{\"acc\": 0.9283333333333333, \"sum\": 0.30000000000000004, \"tiny\": 1e-300, \
                    \"subnormal\": 5e-324, \"huge\": 1.7976931348623157e308, \"third\": 0.3333333333333333}";
        let m = super::metrics_from_json(text.as_bytes()).unwrap();
        for (key, want) in [
            ("acc", 0.9283333333333333f64),
            ("sum", 0.1 + 0.2),
            ("tiny", 1e-300),
            ("subnormal", 5e-324),
            ("huge", f64::MAX),
            ("third", 1.0 / 3.0),
        ] {
            assert_eq!(m.values[key].to_bits(), want.to_bits(), "{key}: {}", m.values[key]);
        }
    }

    use super::*;

    /// The metrics and skipped keys expected, or the start of the error message.
    type Expect<'a> = Result<(&'a [(&'a str, f64)], &'a [&'a str]), &'a str>;

    fn check(json: &str, expect: Expect<'_>) {
        let got = metrics_from_json(json.as_bytes()).map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(m), Ok((values, skipped))) => {
                let values: BTreeMap<String, f64> = values.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                assert_eq!(m.values, values, "{json}");
                assert_eq!(m.skipped, skipped, "{json}");
            }
            (Err(e), Err(want)) => assert!(e.starts_with(want), "{json}: {e}"),
            (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn numbers_become_metrics() {
        check(
            r#"{"rmse": 0.31, "epochs": 200, "delta": -3, "big": 18446744073709551615, "tiny": 1e-300}"#,
            Ok((
                &[
                    ("rmse", 0.31),
                    ("epochs", 200.0),
                    ("delta", -3.0),
                    ("big", 18446744073709551615.0),
                    ("tiny", 1e-300),
                ],
                &[],
            )),
        );
        check("{}", Ok((&[], &[])));
        check(" {\"a\": 1} \n", Ok((&[("a", 1.0)], &[])));
    }

    #[test]
    fn non_numbers_are_skipped_and_listed() {
        check(
            r#"{"rmse": 0.3, "model": "linear", "ok": true, "none": null, "curve": [1, 2], "val": {"rmse": 0.4}}"#,
            Ok((
                &[("rmse", 0.3)],
                &["curve (an array)", "model (a string)", "none (null)", "ok (a boolean)", "val (an object)"],
            )),
        );
    }

    #[test]
    fn refusals() {
        check("[1, 2]", Err("metrics.json must hold a JSON object, found an array"));
        check("0.5", Err("metrics.json must hold a JSON object, found a number"));
        check("null", Err("metrics.json must hold a JSON object, found null"));
        check("\"x\"", Err("metrics.json must hold a JSON object, found a string"));
        check("", Err("metrics.json is not valid JSON: "));
        check("{\"rmse\": NaN}", Err("metrics.json is not valid JSON: "));
        check("{\"rmse\": 1e400}", Err("metrics.json is not valid JSON: "));
        check("{\"a\": 1} {}", Err("metrics.json is not valid JSON: "));
        let big = format!("{{\"a\": 1, \"pad\": \"{}\"}}", "x".repeat(MAX_METRICS_BYTES));
        check(&big, Err(&format!("metrics.json is {} bytes, over the 1 MiB limit", big.len())));
    }
}
