//! The `explain.json` format: bytes to a validated [`Explanation`] and the warnings of what was
//! left out. Every limit is checked before the work it bounds; a problem never fails: it is a
//! warning naming the field (`importances.age must be a finite number, found a string`), and
//! the part it spoils is dropped. Without a usable `method` and `importances` there is no
//! explanation at all; a bad optional part (`partial_dependence`, `samples`, an entry of them)
//! is dropped alone. It only parses bytes; reading the file is the caller's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest `explain.json` accepted.
pub const MAX_EXPLAIN_BYTES: usize = 1 << 20;
/// The most features an explanation may rank.
pub const MAX_FEATURES: usize = 1000;
/// The most partial dependence points kept per feature.
pub const MAX_PD_POINTS: usize = 100;
/// The most per-prediction samples kept.
pub const MAX_SAMPLES: usize = 100;
/// The longest feature name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// How the importances were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Permutation,
    Shap,
    Coefficients,
    Gain,
    Other,
}

impl Method {
    const ALL: [Method; 5] = [Method::Permutation, Method::Shap, Method::Coefficients, Method::Gain, Method::Other];

    /// Its name in the file: `permutation`, `shap`, `coefficients`, `gain`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Permutation => "permutation",
            Method::Shap => "shap",
            Method::Coefficients => "coefficients",
            Method::Gain => "gain",
            Method::Other => "other",
        }
    }
}

/// One feature's global importance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub feature: String,
    pub value: f64,
}

/// One prediction's attributions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<f64>,
    pub attributions: BTreeMap<String, f64>,
}

/// A validated explanation. `importances` are in rank order: largest absolute value first,
/// ties by feature name, so rank 1 is the feature that mattered most whatever the sign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub method: Method,
    /// What an importance measures (`accuracy drop`), when the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub importances: Vec<Importance>,
    /// Per feature, `(x, prediction)` points in the file's order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partial_dependence: BTreeMap<String, Vec<(f64, f64)>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
}

impl Explanation {
    /// The importance of `feature`, if it is listed.
    pub fn importance(&self, feature: &str) -> Option<f64> {
        self.importances.iter().find(|i| i.feature == feature).map(|i| i.value)
    }

    /// The rank of `feature` (1 = most important), if it is listed.
    pub fn rank(&self, feature: &str) -> Option<usize> {
        self.importances.iter().position(|i| i.feature == feature).map(|p| p + 1)
    }
}

/// What [`parse`] made of a file: the explanation, if one survived, and every warning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub explanation: Option<Explanation>,
    pub warnings: Vec<String>,
}

/// Parses and validates `explain.json`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut warnings = Vec::new();
    let explanation = parse_into(bytes, &mut warnings);
    Parsed { explanation, warnings }
}

fn parse_into(bytes: &[u8], warn: &mut Vec<String>) -> Option<Explanation> {
    if bytes.len() > MAX_EXPLAIN_BYTES {
        warn.push(format!("explain.json is {} bytes, over the 1 MiB limit: no explanation kept", bytes.len()));
        return None;
    }
    let object = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => o,
        Ok(other) => {
            warn.push(format!("explain.json must hold a JSON object, found {}: no explanation kept", kind(&other)));
            return None;
        }
        Err(e) => {
            warn.push(format!("explain.json is not valid JSON: {e}: no explanation kept"));
            return None;
        }
    };
    for key in object.keys() {
        if !["format", "method", "metric", "importances", "partial_dependence", "samples"].contains(&key.as_str()) {
            warn.push(format!(
                "unknown field `{}` ignored (expected format, method, metric, importances, partial_dependence, samples)",
                short(key)
            ));
        }
    }
    match object.get("format") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(v) => {
            warn.push(format!("`format` must be 1, found {}: no explanation kept", describe(v)));
            return None;
        }
    }
    let method = method(object.get("method"), warn);
    let metric = match object.get("metric") {
        None | Some(Value::Null) => None,
        // Shown in `weir models show` on a terminal: no control characters (an escape sequence).
        Some(Value::String(s)) if s.chars().count() <= MAX_NAME_CHARS && !s.chars().any(char::is_control) => {
            Some(s.clone())
        }
        Some(v) => {
            warn.push(format!(
                "`metric` must be a string of at most {MAX_NAME_CHARS} characters and no control characters, found {}: ignored",
                describe(v)
            ));
            None
        }
    };
    let importances = importances(object.get("importances"), warn);
    let (method, importances) = (method?, importances?);
    let partial_dependence = partial_dependence(object.get("partial_dependence"), warn);
    let samples = samples(object.get("samples"), warn);
    Some(Explanation { method, metric, importances, partial_dependence, samples })
}

fn method(v: Option<&Value>, warn: &mut Vec<String>) -> Option<Method> {
    let names = Method::ALL.map(Method::as_str).join(", ");
    let found = match v {
        None => "nothing".to_string(),
        Some(Value::String(s)) => match Method::ALL.into_iter().find(|m| m.as_str() == s.to_ascii_lowercase()) {
            Some(m) => return Some(m),
            None => format!("\"{}\"", short(s)),
        },
        Some(v) => describe(v),
    };
    warn.push(format!("`method` must be one of {names}, found {found}: no explanation kept"));
    None
}

fn importances(v: Option<&Value>, warn: &mut Vec<String>) -> Option<Vec<Importance>> {
    let map = match v {
        Some(Value::Object(m)) => m,
        Some(v) => {
            warn.push(format!(
                "`importances` must be an object of feature name to number, found {}: no explanation kept",
                describe(v)
            ));
            return None;
        }
        None => {
            warn.push("`importances` is missing (an object of feature name to number): no explanation kept".into());
            return None;
        }
    };
    if map.len() > MAX_FEATURES {
        warn.push(format!(
            "`importances` lists {} features, over the limit of {MAX_FEATURES}: no explanation kept",
            map.len()
        ));
        return None;
    }
    let mut out = Vec::with_capacity(map.len());
    for (feature, value) in map {
        match feature_problem(feature).or_else(|| number(value).err()) {
            Some(p) => warn.push(format!("`importances.{}` {p}: left out", short(feature))),
            None => out.push(Importance { feature: feature.clone(), value: number(value).unwrap_or_default() }),
        }
    }
    if out.is_empty() {
        warn.push("`importances` lists no usable feature: no explanation kept".into());
        return None;
    }
    out.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()).then_with(|| a.feature.cmp(&b.feature)));
    Some(out)
}

fn partial_dependence(v: Option<&Value>, warn: &mut Vec<String>) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out = BTreeMap::new();
    let map = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(v) => {
            warn.push(format!(
                "`partial_dependence` must be an object of feature name to [[x, y], ...], found {}: ignored",
                describe(v)
            ));
            return out;
        }
    };
    if map.len() > MAX_FEATURES {
        warn.push(format!(
            "`partial_dependence` has {} features, over the limit of {MAX_FEATURES}: ignored",
            map.len()
        ));
        return out;
    }
    for (feature, points) in map {
        let field = format!("partial_dependence.{}", short(feature));
        if let Some(p) = feature_problem(feature) {
            warn.push(format!("`{field}` {p}: left out"));
            continue;
        }
        match pd_points(points) {
            Ok(p) => {
                out.insert(feature.clone(), p);
            }
            Err(p) => warn.push(format!("`{field}` {p}: left out")),
        }
    }
    out
}

fn pd_points(v: &Value) -> Result<Vec<(f64, f64)>, String> {
    let Value::Array(items) = v else {
        return Err(format!("must be a list of [x, y] pairs, found {}", describe(v)));
    };
    if items.len() > MAX_PD_POINTS {
        return Err(format!("has {} points, over the limit of {MAX_PD_POINTS}", items.len()));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Array(pair) if pair.len() == 2 => match (number(&pair[0]), number(&pair[1])) {
                (Ok(x), Ok(y)) => out.push((x, y)),
                (Err(p), _) | (_, Err(p)) => return Err(format!("point {i} {p}")),
            },
            other => return Err(format!("point {i} must be an [x, y] pair, found {}", describe(other))),
        }
    }
    Ok(out)
}

fn samples(v: Option<&Value>, warn: &mut Vec<String>) -> Vec<Sample> {
    let items = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(v) => {
            warn.push(format!(
                "`samples` must be a list of {{\"attributions\": {{...}}}} objects, found {}: ignored",
                describe(v)
            ));
            return Vec::new();
        }
    };
    if items.len() > MAX_SAMPLES {
        warn.push(format!(
            "`samples` has {} rows, over the limit of {MAX_SAMPLES}: the first {MAX_SAMPLES} kept",
            items.len()
        ));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().take(MAX_SAMPLES).enumerate() {
        match sample(item) {
            Ok(s) => out.push(s),
            Err(p) => warn.push(format!("`samples[{i}]{p}: left out")),
        }
    }
    out
}

/// One sample, or the rest of the message after `samples[i]`.
fn sample(v: &Value) -> Result<Sample, String> {
    let Value::Object(o) = v else {
        return Err(format!("` must be an object, found {}", describe(v)));
    };
    let prediction = match o.get("prediction") {
        None | Some(Value::Null) => None,
        Some(p) => Some(number(p).map_err(|p| format!(".prediction` {p}"))?),
    };
    let attributions: &Map<String, Value> = match o.get("attributions") {
        Some(Value::Object(a)) => a,
        Some(v) => {
            return Err(format!(".attributions` must be an object of feature name to number, found {}", describe(v)));
        }
        None => return Err(".attributions` is missing".into()),
    };
    if attributions.len() > MAX_FEATURES {
        return Err(format!(".attributions` has {} features, over the limit of {MAX_FEATURES}", attributions.len()));
    }
    let mut out = Sample { prediction, attributions: BTreeMap::new() };
    for (feature, value) in attributions {
        let problem = feature_problem(feature).or_else(|| number(value).err());
        if let Some(p) = problem {
            return Err(format!(".attributions.{}` {p}", short(feature)));
        }
        out.attributions.insert(feature.clone(), number(value).unwrap_or_default());
    }
    Ok(out)
}

/// Why `name` cannot name a feature, if it cannot.
fn feature_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("has an empty feature name".into())
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some(format!("names a feature longer than {MAX_NAME_CHARS} characters"))
    } else if name.chars().any(char::is_control) {
        Some("names a feature with a control character".into())
    } else {
        None
    }
}

fn number(v: &Value) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("must be a finite number, found {}", describe(v))),
    }
}

/// A value for a message: its kind, and a short text of a string or number.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string \"{}\"", short(s)),
        Value::Number(n) => format!("the number {n}"),
        other => kind(other).to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A name cut for a message, control characters shown as `?`.
fn short(s: &str) -> String {
    let cut: String = s.chars().take(60).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > 60 { format!("{cut}...") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The features in rank order (or None), and the warnings, each checked by its start.
    fn check(json: &str, features: Option<&[&str]>, warnings: &[&str]) {
        let p = parse(json.as_bytes());
        let json: String = json.chars().take(200).collect();
        let got = p.explanation.as_ref().map(|e| e.importances.iter().map(|i| i.feature.as_str()).collect::<Vec<_>>());
        assert_eq!(got.as_deref(), features, "{json}: {:?}", p.warnings);
        assert_eq!(p.warnings.len(), warnings.len(), "{json}: {:?}", p.warnings);
        for (got, want) in p.warnings.iter().zip(warnings) {
            assert!(got.starts_with(want), "{json}:\n got {got}\nwant {want}");
        }
    }

    #[test]
    fn a_full_file_parses_in_rank_order() {
        let json = r#"{"format": 1, "method": "SHAP", "metric": "mean |shap|",
            "importances": {"age": 0.1, "income": -0.4, "zip": 0.1, "tenure": 0.25},
            "partial_dependence": {"income": [[10000, 0.2], [20000, 0.45]]},
            "samples": [{"prediction": 0.8, "attributions": {"income": 0.3, "age": -0.1}}, {"attributions": {}}]}"#;
        check(json, Some(&["income", "tenure", "age", "zip"]), &[]);
        let e = parse(json.as_bytes()).explanation.unwrap();
        assert_eq!((e.method, e.metric.as_deref()), (Method::Shap, Some("mean |shap|")));
        assert_eq!(e.partial_dependence["income"], [(10000.0, 0.2), (20000.0, 0.45)]);
        assert_eq!((e.samples.len(), e.samples[0].prediction, e.samples[1].prediction), (2, Some(0.8), None));
        assert_eq!((e.rank("zip"), e.importance("income"), e.rank("nope")), (Some(4), Some(-0.4), None));
        // Stored as JSON and read back unchanged.
        let back: Explanation = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn without_method_or_importances_there_is_no_explanation() {
        check("[1]", None, &["explain.json must hold a JSON object, found a list"]);
        check("{", None, &["explain.json is not valid JSON: "]);
        check(
            r#"{"importances": {"a": 1}}"#,
            None,
            &["`method` must be one of permutation, shap, coefficients, gain, other, found nothing"],
        );
        check(
            r#"{"method": "lime", "importances": {"a": 1}}"#,
            None,
            &["`method` must be one of permutation, shap, coefficients, gain, other, found \"lime\""],
        );
        check(r#"{"method": "gain"}"#, None, &["`importances` is missing"]);
        check(
            r#"{"method": "gain", "importances": [0.3]}"#,
            None,
            &["`importances` must be an object of feature name to number, found a list"],
        );
        check(r#"{"method": "gain", "importances": {}}"#, None, &["`importances` lists no usable feature"]);
        check(
            r#"{"format": 2, "method": "gain", "importances": {"a": 1}}"#,
            None,
            &["`format` must be 1, found the number 2"],
        );
        check(
            r#"{"method": "gain", "importances": {"a": "high"}}"#,
            None,
            &[
                "`importances.a` must be a finite number, found a string \"high\": left out",
                "`importances` lists no usable feature",
            ],
        );
    }

    #[test]
    fn a_bad_entry_or_optional_part_is_dropped_with_a_warning_naming_it() {
        check(
            r#"{"method": "permutation", "importances": {"a": 0.5, "b": null, "": 1}, "colour": "red"}"#,
            Some(&["a"]),
            &[
                "unknown field `colour` ignored",
                "`importances.` has an empty feature name",
                "`importances.b` must be a finite number, found null",
            ],
        );
        check(
            r#"{"method": "gain", "importances": {"a": 1}, "partial_dependence": {"a": [[1, 2], [3]], "b": [[0, 1]]}}"#,
            Some(&["a"]),
            &["`partial_dependence.a` point 1 must be an [x, y] pair, found a list: left out"],
        );
        check(
            r#"{"method": "gain", "importances": {"a": 1}, "samples": [{"attributions": {"a": "x"}}, 3, {"prediction": true, "attributions": {}}]}"#,
            Some(&["a"]),
            &[
                "`samples[0].attributions.a` must be a finite number, found a string \"x\": left out",
                "`samples[1]` must be an object, found the number 3: left out",
                "`samples[2].prediction` must be a finite number, found a boolean: left out",
            ],
        );
        check(
            r#"{"method": "gain", "importances": {"a": 1}, "samples": {}}"#,
            Some(&["a"]),
            &["`samples` must be a list"],
        );
    }

    #[test]
    fn sizes_are_bounded_before_the_work() {
        let many: Vec<String> = (0..=MAX_FEATURES).map(|i| format!("\"f{i}\": 1")).collect();
        let json = format!("{{\"method\": \"gain\", \"importances\": {{{}}}}}", many.join(","));
        check(&json, None, &["`importances` lists 1001 features, over the limit of 1000"]);
        let points = vec!["[1, 2]"; MAX_PD_POINTS + 1].join(",");
        let json = format!(
            "{{\"method\": \"gain\", \"importances\": {{\"a\": 1}}, \"partial_dependence\": {{\"a\": [{points}]}}}}"
        );
        check(&json, Some(&["a"]), &["`partial_dependence.a` has 101 points, over the limit of 100"]);
        let rows = vec!["{\"attributions\": {\"a\": 1}}"; MAX_SAMPLES + 5].join(",");
        let json = format!("{{\"method\": \"gain\", \"importances\": {{\"a\": 1}}, \"samples\": [{rows}]}}");
        check(&json, Some(&["a"]), &["`samples` has 105 rows, over the limit of 100: the first 100 kept"]);
        assert_eq!(parse(json.as_bytes()).explanation.unwrap().samples.len(), MAX_SAMPLES);
        let big = format!(
            "{{\"method\": \"gain\", \"importances\": {{\"a\": 1}}, \"pad\": \"{}\"}}",
            "x".repeat(MAX_EXPLAIN_BYTES)
        );
        check(&big, None, &[&format!("explain.json is {} bytes, over the 1 MiB limit", big.len())]);
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let json = format!("{{\"method\": \"gain\", \"importances\": {{\"a\": 1, \"{long}\": 2}}}}");
        check(&json, Some(&["a"]), &["`importances.xxxxx"]);
        // Names and the metric reach a terminal: an escape sequence is refused in either.
        let json = r#"{"method": "gain", "metric": "\u001b[2Jgone", "importances": {"a": 1, "\u001b[31mb": 2}}"#;
        check(
            json,
            Some(&["a"]),
            &[
                "`metric` must be a string of at most 200 characters and no control characters, found a string \"?[2Jgone\": ignored",
                "`importances.",
            ],
        );
        assert_eq!(parse(json.as_bytes()).explanation.unwrap().metric, None);
    }
}
