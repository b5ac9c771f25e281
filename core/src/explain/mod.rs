//! Explanations as values: what a step's `explain.json` says drives its model (global feature
//! importances with the method that measured them, optional partial dependence and a bounded
//! sample of per-prediction attributions), how two explanations compare, and the values the
//! `explain.*` references of an expression read (a step's `gate`, `register.when`). See docs/explainability.md for the format.
//!
//! `format` parses and validates the file's bytes (every problem becomes a warning naming the
//! field; what is wrong is left out, never a panic or a failed step); `compare` ranks and diffs
//! two explanations. This module does no I/O: reading the file and storing the result are the
//! engine's.

mod compare;
mod format;

pub use compare::{Diff, FeatureChange, RANK_SHIFT_TOP, diff, rank_shift};
pub use format::{
    Explanation, Importance, MAX_EXPLAIN_BYTES, MAX_FEATURES, MAX_NAME_CHARS, MAX_PD_POINTS, MAX_SAMPLES, Method,
    Parsed, Sample, parse,
};

use crate::expr::{ExplainItem, Value};

/// The file a step writes among its outputs for its explanation to be collected.
pub const FILE: &str = "explain.json";

/// An importance as the CLI's charts and the web UI's bars show it: four decimals at most,
/// trailing zeros dropped, scientific below 0.001.
pub fn shown(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-3 {
        return format!("{x:.3e}");
    }
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

/// The value of `explain.ITEM` for `explanation`, with `champion` the explanation of the model
/// version an alias holds (for `rank_shift`). `None` when the value does not exist: the method
/// has no top feature (no importances), a rank of a feature it does not list, a rank shift with
/// no champion explanation. An importance of a feature it does not list is 0.0: the feature
/// did not matter.
pub fn value(item: &ExplainItem, explanation: &Explanation, champion: Option<&Explanation>) -> Option<Value> {
    match item {
        ExplainItem::Top => explanation.importances.first().map(|i| Value::Str(i.feature.clone())),
        ExplainItem::Method => Some(Value::Str(explanation.method.as_str().to_string())),
        ExplainItem::Importance(f) => Some(Value::Float(explanation.importance(f).unwrap_or(0.0))),
        ExplainItem::Rank(f) => explanation.rank(f).map(|r| Value::Int(r as i64)),
        ExplainItem::RankShift => champion.map(|c| Value::Int(rank_shift(c, explanation) as i64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Explanation {
        let p = parse(json.as_bytes());
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        p.explanation.unwrap()
    }

    #[test]
    fn values_an_expression_reads() {
        let champion = parsed(r#"{"method": "permutation", "importances": {"income": 0.3, "age": 0.1}}"#);
        let leaky = parsed(r#"{"method": "shap", "importances": {"customer_id": 0.9, "income": 0.2, "age": 0.1}}"#);
        let v = |item: ExplainItem, champ: Option<&Explanation>| value(&item, &leaky, champ);
        assert_eq!(v(ExplainItem::Top, None), Some(Value::Str("customer_id".into())));
        assert_eq!(v(ExplainItem::Method, None), Some(Value::Str("shap".into())));
        assert_eq!(v(ExplainItem::Importance("income".into()), None), Some(Value::Float(0.2)));
        assert_eq!(v(ExplainItem::Importance("zip".into()), None), Some(Value::Float(0.0)));
        assert_eq!(v(ExplainItem::Rank("age".into()), None), Some(Value::Int(3)));
        assert_eq!(v(ExplainItem::Rank("zip".into()), None), None);
        assert_eq!(v(ExplainItem::RankShift, None), None);
        // customer_id: absent from the champion (rank 3, one past its last) to rank 1.
        assert_eq!(v(ExplainItem::RankShift, Some(&champion)), Some(Value::Int(2)));
    }
}
