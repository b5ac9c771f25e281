//! Evaluation: computes the value of a syntax tree against a lookup of reference values,
//! short-circuiting `&&` and `||` and tracing the references it reads. Operand kinds go
//! through the same typing rules as the static check (`check`), so both report alike. It must
//! not parse, and it must never panic: overflow, division by zero and unset references are
//! errors.

use super::check::{binary_rule, eq_compatible, in_list_error, unary_rule};
use super::{EvalError, Kind, Lookup, Node, Ref, Trace, Value, snippet};

/// The value of the tree `root` of `source`, and its trace; see `Expr::eval_traced`.
pub(super) fn eval(source: &str, lookup: Lookup<'_>, root: &Node) -> (Result<Value, EvalError>, Trace) {
    let mut ev = Evaluator { source, lookup, trace: Vec::new() };
    let result = ev.eval(root);
    (result, ev.trace)
}

/// A value with its kind, for messages: `int 1`, `string 'a'`.
pub(super) fn kind(v: &Value) -> String {
    format!("{} {v}", v.type_of())
}

pub(super) fn eerr(message: String) -> EvalError {
    EvalError { message }
}

/// Equality of values whose kinds [`eq_compatible`] accepts; numbers compare numerically.
fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b, a.as_f64(), b.as_f64()) {
        (Value::Float(_), _, Some(x), Some(y)) | (_, Value::Float(_), Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

struct Evaluator<'a> {
    source: &'a str,
    lookup: Lookup<'a>,
    trace: Trace,
}

impl Evaluator<'_> {
    fn eval(&mut self, n: &Node) -> Result<Value, EvalError> {
        match &n.kind {
            Kind::Lit(v) => Ok(v.clone()),
            Kind::Ref(r) => self.reference(r),
            Kind::List(items) => self.list(items),
            Kind::Unary(op, x) => {
                let v = self.eval(x)?;
                self.unary(n, op, x, v)
            }
            Kind::Bin(op @ ("&&" | "||"), l, r) => self.logic(op, l, r),
            Kind::Bin(op, l, r) => {
                let (lv, rv) = (self.eval(l)?, self.eval(r)?);
                self.binary(n, op, (l, &lv), (r, &rv))
            }
        }
    }

    fn list(&mut self, items: &[Node]) -> Result<Value, EvalError> {
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            values.push(self.eval(item)?);
        }
        Ok(Value::List(values))
    }

    /// `&&` and `||`, short-circuiting.
    fn logic(&mut self, op: &str, l: &Node, r: &Node) -> Result<Value, EvalError> {
        let left = self.eval(l)?;
        if self.truth(op, l, &left)? == (op == "||") {
            return Ok(left);
        }
        let right = self.eval(r)?;
        self.truth(op, r, &right)?;
        Ok(right)
    }

    /// `int 1` for a literal, else ``string `params.model` ('linear')``.
    fn desc(&self, n: &Node, v: &Value) -> String {
        let text = snippet(self.source, n.offset, n.len);
        match n.kind {
            Kind::Lit(_) => kind(v),
            _ => format!("{} `{text}` ({v})", v.type_of()),
        }
    }

    fn fail(&self, why: &str, n: &Node) -> EvalError {
        let text = snippet(self.source, n.offset, n.len);
        eerr(format!("{why} in `{text}`"))
    }

    #[inline(never)]
    fn reference(&mut self, r: &Ref) -> Result<Value, EvalError> {
        let v = (self.lookup)(r).ok_or_else(|| eerr(format!("{r} is not set")))?;
        if !self.trace.iter().any(|(seen, _)| seen == r) {
            self.trace.push((r.clone(), v.clone()));
        }
        Ok(v)
    }

    /// An operand of `&&` or `||`, which must be a boolean.
    #[inline(never)]
    fn truth(&self, op: &str, n: &Node, v: &Value) -> Result<bool, EvalError> {
        unary_rule(op, v.type_of(), &|| self.desc(n, v)).map_err(eerr)?;
        Ok(*v == Value::Bool(true))
    }

    #[inline(never)]
    fn unary(&self, n: &Node, op: &str, x: &Node, v: Value) -> Result<Value, EvalError> {
        unary_rule(op, v.type_of(), &|| self.desc(x, &v)).map_err(eerr)?;
        match v {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(|| self.fail("integer overflow", n)),
            Value::Float(f) => Ok(Value::Float(-f)),
            v => Err(eerr(format!("`{op}` cannot apply to {v}"))), // unary_rule admits no other
        }
    }

    #[inline(never)]
    fn binary(&self, n: &Node, op: &str, l: (&Node, &Value), r: (&Node, &Value)) -> Result<Value, EvalError> {
        use Value::*;
        let (lv, rv) = (l.1, r.1);
        let (a, b) = (|| self.desc(l.0, lv), || self.desc(r.0, rv));
        binary_rule(op, lv.type_of(), rv.type_of(), &a, &b).map_err(eerr)?;
        let cmp = || match (lv, rv) {
            (Int(x), Int(y)) => Some(x.cmp(y)),
            (Str(x), Str(y)) => Some(x.cmp(y)),
            _ => lv.as_f64().zip(rv.as_f64()).and_then(|(x, y)| x.partial_cmp(&y)),
        };
        Ok(match (op, lv, rv) {
            ("==", ..) => Bool(values_eq(lv, rv)),
            ("!=", ..) => Bool(!values_eq(lv, rv)),
            ("<", ..) => Bool(cmp().is_some_and(|o| o.is_lt())),
            ("<=", ..) => Bool(cmp().is_some_and(|o| o.is_le())),
            (">", ..) => Bool(cmp().is_some_and(|o| o.is_gt())),
            (">=", ..) => Bool(cmp().is_some_and(|o| o.is_ge())),
            ("in", _, List(items)) => {
                if let Some(bad) = items.iter().find(|i| !eq_compatible(lv.type_of(), i.type_of())) {
                    return Err(eerr(in_list_error(&a(), &kind(bad))));
                }
                Bool(items.iter().any(|i| values_eq(lv, i)))
            }
            ("in", Str(x), Str(y)) => Bool(y.contains(x.as_str())),
            ("+", Str(x), Str(y)) => Str(format!("{x}{y}")),
            ("/" | "%", Int(_), Int(0)) => return Err(self.fail("division by zero", n)),
            (_, Int(x), Int(y)) => {
                let out = match op {
                    "+" => x.checked_add(*y),
                    "-" => x.checked_sub(*y),
                    "*" => x.checked_mul(*y),
                    "/" => x.checked_div(*y),
                    _ => x.checked_rem(*y),
                };
                out.map(Int).ok_or_else(|| self.fail("integer overflow", n))?
            }
            _ => {
                // binary_rule admitted two numbers, at least one of them a float
                let (x, y) = (lv.as_f64().unwrap_or(0.0), rv.as_f64().unwrap_or(0.0));
                if y == 0.0 && (op == "/" || op == "%") {
                    return Err(self.fail("division by zero", n));
                }
                Float(match op {
                    "+" => x + y,
                    "-" => x - y,
                    "*" => x * y,
                    "/" => x / y,
                    _ => x % y,
                })
            }
        })
    }
}
