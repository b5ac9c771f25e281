//! The expression language of `when:` and `gate:` (see docs/expressions.md): parsing with
//! character-offset diagnostics, static type checking against the types of references, and
//! evaluation against a lookup of their values. Expressions are pure: no side effects, no
//! loops, at most [`MAX_LEN`] characters and [`MAX_DEPTH`] levels of nesting, so parsing and
//! evaluation are bounded and never panic. This module does no I/O; callers supply values.
//!
//! This file owns the public surface: the value, type, reference and error types, the syntax
//! tree they share, [`parse()`] and the [`Expr`] API. The work is in the submodules: `lex`
//! (characters to tokens), `parse` (tokens to tree), `check` (typing rules, static checks) and
//! `eval` (evaluation). It must not grow grammar, typing or evaluation logic of its own.

use std::fmt::{self, Write as _};

mod check;
mod eval;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

/// Longest accepted expression, in characters.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, unary operators and lists.
pub const MAX_DEPTH: usize = 64;
/// Tallest syntax tree, which bounds operator chains such as `a + b + c + ...`.
pub const MAX_HEIGHT: usize = 256;

/// A parsed expression: its source text and syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    source: String,
    root: Node,
}

/// A reference to a value supplied by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    /// `params.NAME`
    Param(String),
    /// `matrix.KEY`
    Matrix(String),
    /// `metrics.NAME`: the current step's metrics (in a gate)
    Metric(String),
    /// `steps.STEP.metrics.NAME`: an upstream step's metrics
    StepMetric { step: String, metric: String },
    /// `current.metrics.NAME`: in `register.when`, the metrics of the model version the alias
    /// holds now (the champion)
    CurrentMetric(String),
    /// `explain.ITEM`: the step's explanation (`explain.json`, see `crate::explain`); with
    /// `current`, `current.explain.ITEM`: that of the model version the alias holds now
    Explain { current: bool, item: ExplainItem },
}

/// What an `explain.*` reference reads of an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExplainItem {
    /// `explain.top`: the name of the most important feature (a string)
    Top,
    /// `explain.method`: `permutation`, `shap`, `coefficients`, `gain` or `other`
    Method,
    /// `explain.importance.FEATURE`: its importance (0.0 when the explanation does not list it)
    Importance(String),
    /// `explain.rank.FEATURE`: its rank, from 1 (an int)
    Rank(String),
    /// `explain.rank_shift`: in `register.when`, the largest rank move of a top feature
    /// against the version the alias holds now (an int)
    RankShift,
}

impl ExplainItem {
    /// The static type of its value.
    pub fn type_of(&self) -> Type {
        match self {
            ExplainItem::Top | ExplainItem::Method => Type::Str,
            ExplainItem::Importance(_) => Type::Float,
            ExplainItem::Rank(_) | ExplainItem::RankShift => Type::Int,
        }
    }
}

impl fmt::Display for ExplainItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExplainItem::Top => f.write_str("top"),
            ExplainItem::Method => f.write_str("method"),
            ExplainItem::Importance(n) => write!(f, "importance.{n}"),
            ExplainItem::Rank(n) => write!(f, "rank.{n}"),
            ExplainItem::RankShift => f.write_str("rank_shift"),
        }
    }
}

/// One occurrence of a reference, with the character span of its path in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUse {
    pub reference: Ref,
    pub offset: usize,
    pub len: usize,
}

/// The static type of a (sub)expression; `Any` is unknown and unifies with everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    Float,
    Str,
    Bool,
    List,
    Any,
}

/// A runtime value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    List(Vec<Value>),
}

macro_rules! spanned_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        /// `offset` and `len` count characters (not bytes) of the source; `len` is 0 only at
        /// the end of input.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            pub message: String,
            pub offset: usize,
            pub len: usize,
        }
        impl $name {
            /// The message, then the source with the offending span underlined by `^`.
            pub fn render(&self, source: &str) -> String {
                let line: String =
                    source.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                let (pad, marks) = (" ".repeat(self.offset), "^".repeat(self.len.max(1)));
                format!("{}\n  {line}\n  {pad}{marks}", self.message)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} (column {})", self.message, self.offset + 1)
            }
        }
        impl std::error::Error for $name {}
    };
}

spanned_error!(
    /// Malformed expression text.
    ParseError
);
spanned_error!(
    /// Operand types that cannot work, found before anything runs.
    TypeError
);

/// A failure while evaluating: a missing reference, mismatched kinds, overflow, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for EvalError {}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Param(n) => write!(f, "params.{n}"),
            Ref::Matrix(n) => write!(f, "matrix.{n}"),
            Ref::Metric(n) => write!(f, "metrics.{n}"),
            Ref::StepMetric { step, metric } => write!(f, "steps.{step}.metrics.{metric}"),
            Ref::CurrentMetric(n) => write!(f, "current.metrics.{n}"),
            Ref::Explain { current, item } => write!(f, "{}explain.{item}", if *current { "current." } else { "" }),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Str => "string",
            Type::Bool => "bool",
            Type::List => "list",
            Type::Any => "any",
        })
    }
}

impl Value {
    /// The type of this value (never `Any`).
    pub fn type_of(&self) -> Type {
        match self {
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Str(_) => Type::Str,
            Value::Bool(_) => Type::Bool,
            Value::List(_) => Type::List,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }
}

/// Writes values as an expression would: `0.5`, `2.0`, `'it\'s'`, `true`, `[1, 2]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => {
                f.write_char('\'')?;
                for c in s.chars() {
                    match c {
                        '\\' | '\'' => write!(f, "\\{c}")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('\'')
            }
            Value::List(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    write!(f, "{}{item}", if i > 0 { ", " } else { "" })?;
                }
                f.write_char(']')
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Node {
    kind: Kind,
    offset: usize,
    len: usize,
    height: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Lit(Value),
    Ref(Ref),
    List(Vec<Node>),
    Unary(&'static str, Box<Node>),
    Bin(&'static str, Box<Node>, Box<Node>),
}

/// A node spanning characters `offset..end`.
fn node(kind: Kind, offset: usize, end: usize, height: usize) -> Node {
    Node { kind, offset, len: end - offset, height }
}

fn perr(message: impl Into<String>, offset: usize, len: usize) -> ParseError {
    ParseError { message: message.into(), offset, len }
}

/// `len` characters of `source` from `offset`, shortened for messages.
fn snippet(source: &str, offset: usize, len: usize) -> String {
    let text: String = source.chars().skip(offset).take(len.min(40)).collect();
    if len > 40 { format!("{}...", text.chars().take(37).collect::<String>()) } else { text }
}

/// Parses an expression; see docs/expressions.md for the grammar.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.chars().nth(MAX_LEN).is_some() {
        let n = text.chars().count();
        let msg = format!("expression is too long: {n} characters, the limit is {MAX_LEN}");
        return Err(perr(msg, MAX_LEN, n - MAX_LEN));
    }
    let toks = lex::lex(&text.chars().collect::<Vec<_>>())?;
    let root = parse::tree(toks, text)?;
    Ok(Expr { source: text.to_string(), root })
}

/// A lookup of reference types for [`Expr::check`]: None means unknown (treated as `Any`).
pub type Types<'a> = &'a dyn Fn(&Ref) -> Option<Type>;
/// A lookup of reference values for [`Expr::eval`]: None means not set (an error).
pub type Lookup<'a> = &'a dyn Fn(&Ref) -> Option<Value>;
/// The value of each reference read by an evaluation, each once, in the order first read.
pub type Trace = Vec<(Ref, Value)>;

impl Expr {
    /// The original text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every reference in source order, duplicates kept.
    pub fn refs(&self) -> Vec<RefUse> {
        fn walk(n: &Node, out: &mut Vec<RefUse>) {
            match &n.kind {
                Kind::Lit(_) => {}
                Kind::Ref(r) => {
                    out.push(RefUse { reference: r.clone(), offset: n.offset, len: n.len });
                }
                Kind::List(items) => items.iter().for_each(|i| walk(i, out)),
                Kind::Unary(_, x) => walk(x, out),
                Kind::Bin(_, l, r) => {
                    walk(l, out);
                    walk(r, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Static check: `types` gives the type of each reference (None = unknown reference: the
    /// caller reports those itself via refs(), so None is treated as `Type::Any` here).
    pub fn check(&self, types: Types<'_>) -> Result<Type, TypeError> {
        check::check(&self.source, types, &self.root)
    }

    /// Like [`Expr::check`], and the whole expression must be a boolean (or `Any`).
    pub fn check_bool(&self, types: Types<'_>) -> Result<(), TypeError> {
        match self.check(types)? {
            Type::Bool | Type::Any => Ok(()),
            t => Err(TypeError {
                message: format!("expected a boolean expression, found {t}"),
                offset: self.root.offset,
                len: self.root.len,
            }),
        }
    }

    /// Evaluates; a reference for which `lookup` gives None is an error naming it.
    pub fn eval(&self, lookup: Lookup<'_>) -> Result<Value, EvalError> {
        self.eval_traced(lookup).0
    }

    /// Like [`Expr::eval`], plus the value of every reference read (each once, in the order
    /// first read; references skipped by `&&`/`||` short-circuiting are absent).
    pub fn eval_traced(&self, lookup: Lookup<'_>) -> (Result<Value, EvalError>, Trace) {
        eval::eval(&self.source, lookup, &self.root)
    }

    /// Like [`Expr::eval_traced`], and the result must be a boolean.
    pub fn eval_bool_traced(&self, lookup: Lookup<'_>) -> (Result<bool, EvalError>, Trace) {
        let (result, trace) = self.eval_traced(lookup);
        let result = result.and_then(|v| match v {
            Value::Bool(b) => Ok(b),
            v => Err(eval::eerr(format!("expected a boolean result, found {}", eval::kind(&v)))),
        });
        (result, trace)
    }

    /// Like [`Expr::eval`], and the result must be a boolean.
    pub fn eval_bool(&self, lookup: Lookup<'_>) -> Result<bool, EvalError> {
        self.eval_bool_traced(lookup).0
    }
}
