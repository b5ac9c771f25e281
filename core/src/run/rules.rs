//! What the run machine copies out of a validated pipeline and plan, so that it owns its data
//! and can live in a long-running engine loop: per step its retry policy, timeout and `when` /
//! `gate` expressions, per instance its typed matrix values. Also the evaluation of those
//! expressions into a [`Check`] whose messages name the expression and every value it read.
//! Pure: values come in as arguments.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::expr::{Expr, Ref, Value};
use crate::spec::{Retries, Step};

/// The rules of one step, shared by all its instances.
#[derive(Clone, Debug)]
pub(super) struct StepRules {
    pub name: String,
    pub retries: Retries,
    pub timeout: Option<Duration>,
    pub when: Option<Expr>,
    pub gate: Option<Expr>,
    /// With `approval:`, how long a decision may take (`None`: no limit).
    pub approval_timeout: Option<Duration>,
    /// The step's instances are `first..first + count` (the planner adds them in step order).
    pub first: u32,
    pub count: u32,
}

impl StepRules {
    pub fn new(step: &Step) -> StepRules {
        StepRules {
            name: step.name.clone(),
            retries: step.retries,
            timeout: step.timeout,
            when: step.when.clone(),
            gate: step.gate.clone(),
            approval_timeout: step.approval.as_ref().and_then(|a| a.timeout),
            first: 0,
            count: 0,
        }
    }
}

/// The typed values of one step's matrix cells, by axis and text, built once per step: looking
/// each instance's cells up in the axis lists was quadratic (a 10,000-value axis cost 50 million
/// string comparisons to start its run).
pub(super) struct MatrixIndex<'a>(HashMap<(&'a str, &'a str), Value>);

impl<'a> MatrixIndex<'a> {
    pub(super) fn of(step: &'a Step) -> MatrixIndex<'a> {
        let mut typed = HashMap::new();
        for axis in &step.matrix {
            for v in &axis.values {
                // The first axis of a key and the first value of a text win, as a search would.
                typed.entry((axis.key.as_str(), v.text.as_str())).or_insert_with(|| v.to_expr());
            }
        }
        MatrixIndex(typed)
    }
}

/// The typed value of a matrix cell, as the static check saw it (`0.01` is a float); a cell
/// the step does not declare stays a string.
pub(super) fn matrix_values(index: &MatrixIndex<'_>, cells: &[(String, String)]) -> Vec<(String, Value)> {
    cells
        .iter()
        .map(|(key, text)| {
            let value =
                index.0.get(&(key.as_str(), text.as_str())).cloned().unwrap_or_else(|| Value::Str(text.clone()));
            (key.clone(), value)
        })
        .collect()
}

/// The `approval.message` of an instance, its templates rendered as plain text (for people
/// only: it never reaches a script), or `None` for a step without `approval:`.
pub(super) fn approval_message(step: &Step, inst: &crate::plan::Instance, plan: &crate::plan::Plan) -> Option<String> {
    use crate::template::Ref;
    let approval = step.approval.as_ref()?;
    let params: Vec<(String, String)> = plan.params.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let lookup = |r: &Ref| -> &str {
        match r {
            Ref::Param(p) => params.iter().find(|(n, _)| n == p).map_or("", |(_, v)| v.as_str()),
            Ref::Matrix(k) => inst.matrix.iter().find(|(key, _)| key == k).map_or("", |(_, v)| v.as_str()),
            Ref::RunId => plan.run_id.as_str(),
            Ref::StepName => inst.name.as_str(),
        }
    };
    Some(approval.message.render_raw(&lookup))
}

/// Everything an expression of one instance may read.
pub(super) struct Scope<'a> {
    pub params: &'a [(String, Value)],
    pub matrix: &'a [(String, Value)],
    /// The instance's own metrics: only while judging its `gate`.
    pub metrics: Option<&'a BTreeMap<String, f64>>,
    /// The recorded metrics of an upstream step, by step name.
    pub upstream: &'a dyn Fn(&str) -> Option<&'a BTreeMap<String, f64>>,
    /// The instance's own explanation: only while judging its `gate`.
    pub explanation: Option<&'a crate::explain::Explanation>,
}

impl Scope<'_> {
    fn get(&self, r: &Ref) -> Option<Value> {
        let find = |list: &[(String, Value)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        match r {
            Ref::Param(name) => find(self.params, name),
            Ref::Matrix(key) => find(self.matrix, key),
            Ref::Metric(name) => self.metrics?.get(name).copied().map(Value::Float),
            Ref::StepMetric { step, metric } => (self.upstream)(step)?.get(metric).copied().map(Value::Float),
            // A gate reads its own explanation, without a champion (no `rank_shift`).
            Ref::Explain { current: false, item } => crate::explain::value(item, self.explanation?, None),
            // Only `register.when` reads a champion's; validation keeps them out of here.
            Ref::CurrentMetric(_) | Ref::Explain { current: true, .. } => None,
        }
    }
}

/// The outcome of evaluating a `when` or `gate`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Check {
    True,
    /// ``gate `metrics.rmse < 0.5` is false: metrics.rmse = 0.71``
    False(String),
    /// ``when `steps.a.metrics.x > 1` cannot be evaluated: steps.a.metrics.x is not set``
    Error(String),
}

/// Evaluates `expr` (the `field` of a step) in `scope`, tracing what it read.
pub(super) fn evaluate(field: &str, expr: &Expr, scope: &Scope<'_>) -> Check {
    let (result, trace) = expr.eval_bool_traced(&|r| scope.get(r));
    match result {
        Ok(true) => Check::True,
        Ok(false) if trace.is_empty() => Check::False(format!("{field} `{}` is false", expr.source())),
        Ok(false) => {
            let seen: Vec<String> = trace.iter().map(|(r, v)| format!("{r} = {v}")).collect();
            Check::False(format!("{field} `{}` is false: {}", expr.source(), seen.join(", ")))
        }
        Err(e) => Check::Error(format!("{field} `{}` cannot be evaluated: {e}", expr.source())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    #[test]
    fn matrix_cells_take_their_declared_type_and_unknown_ones_stay_text() {
        let yaml = "name: m\nsteps:\n  t:\n    matrix: {lr: [0.01, 2, '3'], opt: [adam, true]}\n    run: 'true'\n";
        let p = crate::spec::load(yaml, &Default::default()).unwrap_or_else(|d| panic!("{d:?}"));
        let index = MatrixIndex::of(&p.steps()[0]);
        let cells: Vec<(String, String)> =
            [("lr", "0.01"), ("lr", "2"), ("lr", "3"), ("opt", "adam"), ("opt", "true"), ("x", "y")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let typed: Vec<Value> = matrix_values(&index, &cells).into_iter().map(|(_, v)| v).collect();
        let want: Vec<Value> = vec![
            Value::Float(0.01),
            Value::Int(2),
            p.steps()[0].matrix[0].values[2].to_expr(),
            Value::Str("adam".into()),
            p.steps()[0].matrix[1].values[1].to_expr(),
            Value::Str("y".into()),
        ];
        assert_eq!(typed, want, "as the static check typed each value; an undeclared cell is text");
    }

    #[test]
    fn checks_name_the_expression_and_the_values_read() {
        let params = [("max_rmse".to_string(), Value::Float(0.5)), ("deploy".to_string(), Value::Bool(true))];
        let matrix = [("lr".to_string(), Value::Float(0.1))];
        let metrics = BTreeMap::from([("rmse".to_string(), 0.71)]);
        let up = BTreeMap::from([("acc".to_string(), 0.9)]);
        let upstream = |step: &str| (step == "eval").then_some(&up);
        let scope =
            Scope { params: &params, matrix: &matrix, metrics: Some(&metrics), upstream: &upstream, explanation: None };
        let false_ = |m: &str| Check::False(m.to_string());
        let error = |m: &str| Check::Error(m.to_string());
        let cases = [
            (
                "metrics.rmse < params.max_rmse",
                false_("gate `metrics.rmse < params.max_rmse` is false: metrics.rmse = 0.71, params.max_rmse = 0.5"),
            ),
            ("metrics.rmse > params.max_rmse && matrix.lr == 0.1", Check::True),
            (
                "steps.eval.metrics.acc > 0.95",
                false_("gate `steps.eval.metrics.acc > 0.95` is false: steps.eval.metrics.acc = 0.9"),
            ),
            ("1 > 2", false_("gate `1 > 2` is false")),
            ("metrics.f1 > 0.5", error("gate `metrics.f1 > 0.5` cannot be evaluated: metrics.f1 is not set")),
            (
                "!params.deploy || steps.x.metrics.y > 1",
                error(
                    "gate `!params.deploy || steps.x.metrics.y > 1` cannot be evaluated: steps.x.metrics.y is not set",
                ),
            ),
        ];
        for (source, expected) in cases {
            let expr = parse(source).unwrap();
            assert_eq!(evaluate("gate", &expr, &scope), expected, "{source}");
        }
    }

    #[test]
    fn a_gate_reads_its_own_explanation() {
        let json = r#"{"method": "shap", "importances": {"customer_id": 0.7, "income": 0.3}}"#;
        let explanation = crate::explain::parse(json.as_bytes()).explanation.unwrap();
        let upstream = |_: &str| None;
        let mut scope = Scope { params: &[], matrix: &[], metrics: None, upstream: &upstream, explanation: None };
        let expr = parse("explain.top != 'customer_id'").unwrap();
        let unset = "gate `explain.top != 'customer_id'` cannot be evaluated: explain.top is not set";
        assert_eq!(evaluate("gate", &expr, &scope), Check::Error(unset.into()));
        scope.explanation = Some(&explanation);
        let refused = "gate `explain.top != 'customer_id'` is false: explain.top = 'customer_id'";
        assert_eq!(evaluate("gate", &expr, &scope), Check::False(refused.into()));
        let expr = parse("explain.rank.income == 2 && explain.importance.age == 0.0").unwrap();
        assert_eq!(evaluate("gate", &expr, &scope), Check::True);
        // No champion in a gate: a rank shift is never set (validation refuses it there).
        let expr = parse("explain.rank_shift < 3").unwrap();
        assert!(matches!(evaluate("gate", &expr, &scope), Check::Error(_)));
    }
}
