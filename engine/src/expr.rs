//! The expression language of `when:` and `gate:` (see docs/expressions.md): parsing with
//! character-offset diagnostics, static type checking against the types of references, and
//! evaluation against a lookup of their values. Expressions are pure: no side effects, no
//! loops, at most [`MAX_LEN`] characters and [`MAX_DEPTH`] levels of nesting, so parsing and
//! evaluation are bounded and never panic. This module does no I/O; callers supply values.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

/// Longest accepted expression, in characters.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, unary operators and lists.
pub const MAX_DEPTH: usize = 64;
/// Tallest syntax tree, which bounds operator chains such as `a + b + c + ...`.
pub const MAX_HEIGHT: usize = 256;

const REF_FORMS: &str = "expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME";
/// Binary operators by precedence, loosest first; levels 2 and 3 do not associate.
const LEVELS: [&[&str]; 6] =
    [&["||"], &["&&"], &["==", "!="], &["<", "<=", ">", ">=", "in"], &["+", "-"], &["*", "/", "%"]];
/// Punctuation, longest first so that `<=` wins over `<`.
const SYMBOLS: [&str; 19] =
    ["||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", ","];

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

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Unsigned, so that `-9223372036854775808` can be folded.
    Int(u64),
    Lit(Value),
    Path(Vec<String>),
    Sym(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    offset: usize,
    len: usize,
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
    let toks = lex(&text.chars().collect::<Vec<_>>())?;
    if toks.len() == 1 {
        return Err(perr("empty expression", 0, 0));
    }
    let mut p = Parser { toks, pos: 0, depth: 0, source: text };
    let root = p.binary(0)?;
    let t = p.peek().clone();
    let message = match t.tok {
        Tok::End => return Ok(Expr { source: text.to_string(), root }),
        Tok::Sym(s @ (")" | "]")) => format!("unmatched `{s}`"),
        _ => format!("expected an operator, found {}", p.describe(&t)),
    };
    Err(perr(message, t.offset, t.len))
}

fn lex(c: &[char]) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&ch) = c.get(i) {
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        let is_at = |s: &&str| s.chars().enumerate().all(|(k, x)| c.get(i + k) == Some(&x));
        let (tok, width) = match (SYMBOLS.into_iter().find(is_at), ch) {
            (Some(s), _) => (Tok::Sym(s), s.len()),
            (_, '=' | '&' | '|') => {
                return Err(perr(format!("unexpected `{ch}`: did you mean `{ch}{ch}`?"), i, 1));
            }
            (_, '\'' | '"') => lex_string(c, i)?,
            (_, '0'..='9') => lex_number(c, i)?,
            (_, '.') if c.get(i + 1).is_some_and(char::is_ascii_digit) => {
                return Err(perr("a number needs a digit before `.`: write `0.5`", i, 1));
            }
            _ if ch.is_ascii_alphabetic() || ch == '_' => lex_path(c, i)?,
            _ => return Err(perr(format!("unexpected character `{ch}`"), i, 1)),
        };
        out.push(Token { tok, offset: i, len: width });
        i += width;
    }
    out.push(Token { tok: Tok::End, offset: c.len(), len: 0 });
    Ok(out)
}

fn lex_string(c: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let unterminated = || perr("unterminated string", start, c.len() - start);
    let (quote, mut s, mut i) = (c.get(start), String::new(), start + 1);
    loop {
        match c.get(i) {
            None => return Err(unterminated()),
            q if q == quote => return Ok((Tok::Lit(Value::Str(s)), i + 1 - start)),
            Some('\\') => {
                s.push(match c.get(i + 1) {
                    Some(e @ ('\\' | '\'' | '"')) => *e,
                    Some('n') => '\n',
                    Some('t') => '\t',
                    None => return Err(unterminated()),
                    Some(o) => {
                        let msg = format!(r#"unknown escape `\{o}`: use \\, \', \", \n or \t"#);
                        return Err(perr(msg, i, 2));
                    }
                });
                i += 2;
            }
            Some(o) => {
                s.push(*o);
                i += 1;
            }
        }
    }
}

fn lex_number(c: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let digit = |i: usize| c.get(i).is_some_and(char::is_ascii_digit);
    let digits = |mut i: usize| {
        while digit(i) {
            i += 1;
        }
        i
    };
    let (mut i, mut float) = (digits(start), false);
    if c.get(i) == Some(&'.') && digit(i + 1) {
        (i, float) = (digits(i + 1), true);
    }
    if matches!(c.get(i), Some('e' | 'E')) {
        let j = if matches!(c.get(i + 1), Some('+' | '-')) { i + 2 } else { i + 1 };
        if digit(j) {
            (i, float) = (digits(j), true);
        }
    }
    let word = |ch: &char| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '.';
    if c.get(i).is_some_and(word) {
        let end = (i..=c.len()).find(|&e| !c.get(e).is_some_and(word)).unwrap_or(c.len());
        let bad: String = c[start..end].iter().collect();
        return Err(perr(format!("invalid number `{bad}`"), start, end - start));
    }
    let text: String = c[start..i].iter().collect();
    let range = || perr(format!("number `{text}` is out of range"), start, i - start);
    let tok = match text.parse::<f64>() {
        Ok(x) if float && x.is_finite() => Tok::Lit(Value::Float(x)),
        _ if float => return Err(range()),
        _ => Tok::Int(text.parse().map_err(|_| range())?),
    };
    Ok((tok, i - start))
}

/// A dotted path or keyword. Only the segment right after `steps.` may hold `-` or start
/// with a digit (step names are `[a-z0-9_-]+`), so `a-b` elsewhere stays a subtraction.
fn lex_path(c: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let mut segs: Vec<String> = Vec::new();
    let mut i = start;
    loop {
        let step = segs.len() == 1 && segs[0] == "steps";
        let seg = i;
        while let Some(&ch) = c.get(i) {
            let ok = ch.is_ascii_alphanumeric() || ch == '_' || (step && ch == '-');
            if !ok || (i == seg && !step && ch.is_ascii_digit()) {
                break;
            }
            i += 1;
        }
        if i == seg {
            return Err(perr("expected a name after `.`", i, usize::from(i < c.len())));
        }
        segs.push(c[seg..i].iter().collect());
        if c.get(i) != Some(&'.') {
            break;
        }
        i += 1;
    }
    let tok = match segs.as_slice() {
        [w] if w == "true" || w == "false" => Tok::Lit(Value::Bool(w == "true")),
        [w] if w == "and" => Tok::Sym("&&"),
        [w] if w == "or" => Tok::Sym("||"),
        [w] if w == "not" => Tok::Sym("!"),
        [w] if w == "in" => Tok::Sym("in"),
        _ => Tok::Path(segs),
    };
    Ok((tok, i - start))
}

fn to_ref(segs: &[String]) -> Option<Ref> {
    Some(match segs {
        [r, n] if r == "params" => Ref::Param(n.clone()),
        [r, n] if r == "matrix" => Ref::Matrix(n.clone()),
        [r, n] if r == "metrics" => Ref::Metric(n.clone()),
        [r, s, m, n] if r == "steps" && m == "metrics" => Ref::StepMetric { step: s.clone(), metric: n.clone() },
        _ => return None,
    })
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    source: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_sym(&self) -> Option<&'static str> {
        if let Tok::Sym(s) = self.peek().tok { Some(s) } else { None }
    }

    /// Returns the current token and moves past it (never past the end).
    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += usize::from(t.tok != Tok::End);
        t
    }

    fn describe(&self, t: &Token) -> String {
        match t.tok {
            Tok::End => "end of input".to_string(),
            _ => format!("`{}`", snippet(self.source, t.offset, t.len)),
        }
    }

    fn enter(&mut self, t: &Token) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let msg = format!("expression is nested too deeply (more than {MAX_DEPTH} levels)");
            return Err(perr(msg, t.offset, t.len));
        }
        Ok(())
    }

    fn binary(&mut self, level: usize) -> Result<Node, ParseError> {
        let Some(ops) = LEVELS.get(level) else { return self.unary() };
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.peek_sym().filter(|s| ops.contains(s)) {
            let op_tok = self.advance();
            let right = match (op, self.peek_sym()) {
                ("in", Some("[")) => self.list()?,
                _ => self.binary(level + 1)?,
            };
            let height = 1 + left.height.max(right.height);
            if height > MAX_HEIGHT {
                let msg = format!("expression is too complex (more than {MAX_HEIGHT} operations)");
                return Err(perr(msg, op_tok.offset, op_tok.len));
            }
            let (offset, end) = (left.offset, right.offset + right.len);
            left = node(Kind::Bin(op, Box::new(left), Box::new(right)), offset, end, height);
            let t = self.peek();
            if (level == 2 || level == 3) && self.peek_sym().is_some_and(|s| ops.contains(&s)) {
                let msg = match level {
                    2 => "`==` and `!=` cannot be chained: add parentheses",
                    _ => "comparisons cannot be chained: write `a < b && b < c`",
                };
                return Err(perr(msg, t.offset, t.len));
            }
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let Some(op @ ("!" | "-")) = self.peek_sym() else { return self.primary() };
        let t = self.advance();
        self.enter(&t)?;
        // i64::MIN has no positive literal, so `-9223372036854775808` is read as one
        if op == "-" && self.peek().tok == Tok::Int(1 << 63) {
            let lit = self.advance();
            self.depth -= 1;
            let end = lit.offset + lit.len;
            return Ok(node(Kind::Lit(Value::Int(i64::MIN)), t.offset, end, 0));
        }
        let operand = self.unary()?;
        self.depth -= 1;
        let (offset, end) = (t.offset, operand.offset + operand.len);
        let folded = match (op, &operand.kind) {
            ("-", Kind::Lit(Value::Int(n))) => n.checked_neg().map(Value::Int),
            ("-", Kind::Lit(Value::Float(x))) => Some(Value::Float(-x)),
            _ => None,
        };
        let height = operand.height + 1;
        Ok(match folded {
            Some(v) => node(Kind::Lit(v), offset, end, 0),
            None => node(Kind::Unary(op, Box::new(operand)), offset, end, height),
        })
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let t = self.advance();
        let (offset, end) = (t.offset, t.offset + t.len);
        match t.tok {
            Tok::Lit(v) => Ok(node(Kind::Lit(v), offset, end, 0)),
            Tok::Int(n) => match i64::try_from(n) {
                Ok(i) => Ok(node(Kind::Lit(Value::Int(i)), offset, end, 0)),
                Err(_) => Err(perr(format!("number `{n}` is out of range"), offset, t.len)),
            },
            Tok::Path(segs) => {
                let Some(r) = to_ref(&segs) else {
                    let text = snippet(self.source, offset, t.len);
                    let hint = match segs.len() {
                        1 => format!(" (for text, write '{text}')"),
                        _ => String::new(),
                    };
                    let msg = format!("unknown reference `{text}`: {REF_FORMS}{hint}");
                    return Err(perr(msg, offset, t.len));
                };
                Ok(node(Kind::Ref(r), offset, end, 0))
            }
            Tok::Sym("(") => {
                self.enter(&t)?;
                let mut inner = self.binary(0)?;
                self.depth -= 1;
                let close = self.advance();
                match close.tok {
                    Tok::Sym(")") => {
                        (inner.offset, inner.len) = (offset, close.offset + 1 - offset);
                        Ok(inner)
                    }
                    Tok::End => Err(perr("unclosed `(`", offset, 1)),
                    _ => {
                        let msg = format!("expected `)`, found {}", self.describe(&close));
                        Err(perr(msg, close.offset, close.len))
                    }
                }
            }
            Tok::Sym("[") => Err(perr("a list is only allowed on the right of `in`", offset, 1)),
            _ => {
                let msg = format!("expected an operand, found {}", self.describe(&t));
                Err(perr(msg, offset, t.len))
            }
        }
    }

    fn list(&mut self) -> Result<Node, ParseError> {
        let open = self.advance();
        self.enter(&open)?;
        let mut items: Vec<Node> = Vec::new();
        let end = loop {
            if self.peek_sym() == Some("]") {
                break self.advance();
            }
            items.push(self.binary(0)?);
            let t = self.advance();
            match t.tok {
                Tok::Sym(",") => {}
                Tok::Sym("]") => break t,
                Tok::End => return Err(perr("unclosed `[`", open.offset, 1)),
                _ => {
                    let msg = format!("expected `,` or `]`, found {}", self.describe(&t));
                    return Err(perr(msg, t.offset, t.len));
                }
            }
        };
        self.depth -= 1;
        let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
        Ok(node(Kind::List(items), open.offset, end.offset + 1, height))
    }
}

impl std::str::FromStr for Expr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
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
        Checker { source: &self.source, types }.ty(&self.root)
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
        let mut ev = Evaluator { source: &self.source, lookup, trace: Vec::new() };
        let result = ev.eval(&self.root);
        (result, ev.trace)
    }

    /// Like [`Expr::eval_traced`], and the result must be a boolean.
    pub fn eval_bool_traced(&self, lookup: Lookup<'_>) -> (Result<bool, EvalError>, Trace) {
        let (result, trace) = self.eval_traced(lookup);
        let result = result.and_then(|v| match v {
            Value::Bool(b) => Ok(b),
            v => Err(eerr(format!("expected a boolean result, found {} {v}", v.type_of()))),
        });
        (result, trace)
    }

    /// Like [`Expr::eval`], and the result must be a boolean.
    pub fn eval_bool(&self, lookup: Lookup<'_>) -> Result<bool, EvalError> {
        self.eval_bool_traced(lookup).0
    }
}

fn eerr(message: String) -> EvalError {
    EvalError { message }
}

fn eq_compatible(a: Type, b: Type) -> bool {
    use Type::*;
    a == b || matches!((a, b), (Any, _) | (_, Any) | (Int | Float, Int | Float))
}

fn ordered(a: Type, b: Type) -> bool {
    use Type::*;
    match (a, b) {
        (Bool | List, _) | (_, Bool | List) => false,
        (Any, _) | (_, Any) | (Str, Str) => true,
        (Str, _) | (_, Str) => false,
        _ => true,
    }
}

struct Checker<'a> {
    source: &'a str,
    types: Types<'a>,
}

impl Checker<'_> {
    fn desc(&self, n: &Node, t: Type) -> String {
        format!("{t} `{}`", snippet(self.source, n.offset, n.len))
    }

    fn fail<T>(&self, n: &Node, message: String) -> Result<T, TypeError> {
        Err(TypeError { message, offset: n.offset, len: n.len })
    }

    fn want(&self, op: &str, n: &Node, ok: &[Type], what: &str) -> Result<Type, TypeError> {
        match self.ty(n)? {
            t if ok.contains(&t) || t == Type::Any => Ok(t),
            t => self.fail(n, format!("`{op}` needs {what}, found {}", self.desc(n, t))),
        }
    }

    fn ty(&self, n: &Node) -> Result<Type, TypeError> {
        use Type::*;
        let (op, l, r) = match &n.kind {
            Kind::Lit(v) => return Ok(v.type_of()),
            Kind::Ref(r) => return Ok((self.types)(r).unwrap_or(Any)),
            Kind::List(items) => {
                items.iter().try_for_each(|i| self.ty(i).map(drop))?;
                return Ok(List);
            }
            Kind::Unary("!", x) => return self.want("!", x, &[Bool], "a boolean").map(|_| Bool),
            Kind::Unary(op, x) => return self.want(op, x, &[Int, Float], "a number"),
            Kind::Bin(op @ ("&&" | "||"), l, r) => {
                self.want(op, l, &[Bool], "a boolean")?;
                return self.want(op, r, &[Bool], "a boolean").map(|_| Bool);
            }
            Kind::Bin(op, l, r) => (*op, l, r),
        };
        let lt = self.ty(l)?;
        if let Kind::List(items) = &r.kind {
            for item in items {
                let it = self.ty(item)?;
                if !eq_compatible(lt, it) {
                    let (a, b) = (self.desc(l, lt), self.desc(item, it));
                    return self.fail(item, format!("cannot compare {a} with {b} in the list"));
                }
            }
            return Ok(Bool);
        }
        let rt = self.ty(r)?;
        let (a, b) = (self.desc(l, lt), self.desc(r, rt));
        let message = match (op, lt, rt) {
            ("==" | "!=", ..) if eq_compatible(lt, rt) => return Ok(Bool),
            ("==" | "!=", ..) => format!("cannot compare {a} with {b}"),
            ("<" | "<=" | ">" | ">=", ..) if ordered(lt, rt) => return Ok(Bool),
            ("<" | "<=" | ">" | ">=", ..) => format!("cannot compare {a} with {b} using `{op}`"),
            ("in", _, List | Any) | ("in", Str | Any, Str) => return Ok(Bool),
            ("in", _, Str) => format!("`in` on a string needs a string on the left, found {a}"),
            ("in", ..) => format!("`in` needs a list or a string on the right, found {b}"),
            ("+", Str, Str | Any) | ("+", Any, Str) => return Ok(Str),
            (_, Int, Int) => return Ok(Int),
            (_, Float, Int | Float) | (_, Int, Float) => return Ok(Float),
            (_, Int | Float | Any, Int | Float | Any) => return Ok(Any),
            _ => format!("cannot apply `{op}` to {a} and {b}"),
        };
        self.fail(n, message)
    }
}

/// Equality across kinds: None when the kinds cannot be compared.
fn values_eq(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x == y),
        (Value::Str(x), Value::Str(y)) => Some(x == y),
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::List(x), Value::List(y)) => {
            let mut all = x.len() == y.len();
            for (p, q) in x.iter().zip(y) {
                all &= values_eq(p, q)?;
            }
            Some(all)
        }
        _ => Some(a.as_f64()? == b.as_f64()?),
    }
}

/// Ordering: None when the kinds cannot be ordered, Some(None) when a float is NaN.
fn values_cmp(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(Some(x.cmp(y))),
        (Value::Str(x), Value::Str(y)) => Some(Some(x.cmp(y))),
        _ => Some(a.as_f64()?.partial_cmp(&b.as_f64()?)),
    }
}

struct Evaluator<'a> {
    source: &'a str,
    lookup: Lookup<'a>,
    trace: Trace,
}

impl Evaluator<'_> {
    /// `int 1` for a literal, else `string `params.model` ('linear')`.
    fn desc(&self, n: &Node, v: &Value) -> String {
        let text = snippet(self.source, n.offset, n.len);
        match n.kind {
            Kind::Lit(_) => format!("{} {v}", v.type_of()),
            _ => format!("{} `{text}` ({v})", v.type_of()),
        }
    }

    fn boolean(&mut self, op: &str, n: &Node, what: &str) -> Result<bool, EvalError> {
        match self.eval(n)? {
            Value::Bool(b) => Ok(b),
            v => Err(eerr(format!("`{op}` needs {what}, found {}", self.desc(n, &v)))),
        }
    }

    fn fail(&self, why: &str, n: &Node) -> EvalError {
        eerr(format!("{why} in `{}`", snippet(self.source, n.offset, n.len)))
    }

    fn eval(&mut self, n: &Node) -> Result<Value, EvalError> {
        match &n.kind {
            Kind::Lit(v) => Ok(v.clone()),
            Kind::Ref(r) => {
                let v = (self.lookup)(r).ok_or_else(|| eerr(format!("{r} is not set")))?;
                if !self.trace.iter().any(|(seen, _)| seen == r) {
                    self.trace.push((r.clone(), v.clone()));
                }
                Ok(v)
            }
            Kind::List(items) => {
                let values = items.iter().map(|i| self.eval(i)).collect::<Result<_, _>>()?;
                Ok(Value::List(values))
            }
            Kind::Unary("!", x) => Ok(Value::Bool(!self.boolean("!", x, "a boolean")?)),
            Kind::Unary(_, x) => match self.eval(x)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(|| self.fail("integer overflow", n)),
                Value::Float(f) => Ok(Value::Float(-f)),
                v => Err(eerr(format!("`-` needs a number, found {}", self.desc(x, &v)))),
            },
            Kind::Bin(op @ ("&&" | "||"), l, r) => {
                let left = self.boolean(op, l, "booleans")?;
                if left == (*op == "||") {
                    return Ok(Value::Bool(left));
                }
                Ok(Value::Bool(self.boolean(op, r, "booleans")?))
            }
            Kind::Bin(op, l, r) => {
                let (lv, rv) = (self.eval(l)?, self.eval(r)?);
                self.binary(n, op, (l, &lv), (r, &rv))
            }
        }
    }

    fn binary(&self, n: &Node, op: &str, l: (&Node, &Value), r: (&Node, &Value)) -> Result<Value, EvalError> {
        let (lv, rv) = (l.1, r.1);
        let (a, b) = (|| self.desc(l.0, lv), || self.desc(r.0, rv));
        let ok = |b: bool| Ok(Value::Bool(b));
        let err = |msg: String| Err(eerr(msg));
        match (op, lv, rv) {
            ("==" | "!=", ..) => match values_eq(lv, rv) {
                Some(same) => ok(same == (op == "==")),
                None => err(format!("cannot compare {} with {}", a(), b())),
            },
            ("<" | "<=" | ">" | ">=", ..) => match values_cmp(lv, rv) {
                Some(ord) => ok(ord.is_some_and(|o| match op {
                    "<" => o.is_lt(),
                    "<=" => o.is_le(),
                    ">" => o.is_gt(),
                    _ => o.is_ge(),
                })),
                None => err(format!("cannot compare {} with {} using `{op}`", a(), b())),
            },
            ("in", _, Value::List(items)) => {
                let mut found = false;
                for item in items {
                    let Some(same) = values_eq(lv, item) else {
                        let it = format!("{} {item}", item.type_of());
                        return err(format!("cannot compare {} with {it} in the list", a()));
                    };
                    found |= same;
                }
                ok(found)
            }
            ("in", Value::Str(x), Value::Str(y)) => ok(y.contains(x.as_str())),
            ("in", _, Value::Str(_)) => err(format!("`in` on a string needs a string on the left, found {}", a())),
            ("in", ..) => err(format!("`in` needs a list or a string on the right, found {}", b())),
            ("+", Value::Str(x), Value::Str(y)) => Ok(Value::Str(format!("{x}{y}"))),
            (_, Value::Int(_), Value::Int(0)) if op == "/" || op == "%" => Err(self.fail("division by zero", n)),
            (_, Value::Int(x), Value::Int(y)) => {
                let out = match op {
                    "+" => x.checked_add(*y),
                    "-" => x.checked_sub(*y),
                    "*" => x.checked_mul(*y),
                    "/" => x.checked_div(*y),
                    _ => x.checked_rem(*y),
                };
                out.map(Value::Int).ok_or_else(|| self.fail("integer overflow", n))
            }
            _ => match (lv.as_f64(), rv.as_f64()) {
                (Some(_), Some(y)) if y == 0.0 && (op == "/" || op == "%") => Err(self.fail("division by zero", n)),
                (Some(x), Some(y)) => Ok(Value::Float(match op {
                    "+" => x + y,
                    "-" => x - y,
                    "*" => x * y,
                    "/" => x / y,
                    _ => x % y,
                })),
                _ => err(format!("cannot apply `{op}` to {} and {}", a(), b())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(r: &Ref) -> Option<Value> {
        let s = |s: &str| Value::Str(s.into());
        Some(match r.to_string().as_str() {
            "params.model" => s("linear"),
            "params.deploy" => Value::Bool(true),
            "params.fast" => Value::Bool(false),
            "params.max_rmse" => Value::Float(0.5),
            "params.baseline" => Value::Float(1.0),
            "params.n" => Value::Int(3),
            "params.big" => Value::Int(i64::MAX),
            "params.tags" => Value::List(vec![s("a"), s("b")]),
            "matrix.lr" => Value::Float(0.1),
            "metrics.rmse" => Value::Float(0.71),
            "metrics.accuracy" => Value::Float(0.93),
            "metrics.loss" => Value::Float(1.2),
            "steps.validate.metrics.rmse" => Value::Float(0.2),
            "steps.train-a.metrics.x" => Value::Int(1),
            _ => return None,
        })
    }

    fn types(r: &Ref) -> Option<Type> {
        env(r).map(|v| v.type_of())
    }

    /// Parses `input` and evaluates it against `env`, then compares the value or the error
    /// (`parse@OFFSET+LEN: message` or `eval: message`) with `expected`.
    fn check(input: &str, expected: &str) {
        let got = match parse(input) {
            Err(e) => format!("parse@{}+{}: {}", e.offset, e.len, e.message),
            Ok(expr) => match expr.eval(&env) {
                Ok(v) => v.to_string(),
                Err(e) => format!("eval: {e}"),
            },
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    /// Like `check` for `Expr::check` against `types`: the type or `type@OFFSET+LEN: message`.
    fn check_type(input: &str, expected: &str) {
        let got = match parse(input).map(|e| e.check(&types)) {
            Err(e) => format!("parse: {e}"),
            Ok(Ok(t)) => t.to_string(),
            Ok(Err(e)) => format!("type@{}+{}: {}", e.offset, e.len, e.message),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    /// Runs `f` on each `input => expected` line of `table`.
    fn table(f: fn(&str, &str), table: &str) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (input, expected) = line.split_once(" => ").expect("a case is `input => expected`");
            f(input, expected);
        }
    }

    #[test]
    fn evaluates() {
        table(
            check,
            r#"
            params.model == 'linear' => true
            params.deploy && steps.validate.metrics.rmse < 0.3 => true
            metrics.rmse < params.max_rmse => false
            metrics.accuracy >= 0.9 && metrics.loss < 1.5 * params.baseline => true
            matrix.lr in [0.01, 0.1] || !params.fast => true
            1 + 2 * 3 => 7
            (1 + 2) * 3 => 9
            2 - 1 - 1 => 0
            7 / 2 => 3
            -7 % 3 => -1
            7.0 / 2 => 3.5
            -3 - -3 => 0
            - - 2 => 2
            -(2.5) => -2.5
            1e-3 => 0.001
            2.5E+2 => 250.0
            -9223372036854775808 => -9223372036854775808
            'a' + "b" => 'ab'
            'it\'s' + "\"\\\n\t" => 'it\'s"\\\n\t'
            '日本' + 'é' => '日本é'
            1 == 1.0 => true
            1 != 2 => true
            'abc' < 'abd' => true
            1 >= 1 && 1 <= 1.5 && 2 > 1 => true
            !(1 < 2) => false
            2 > 1 == true => true
            0.1 + 0.2 > 0.3 => true
            'lin' in params.model => true
            'a' in params.tags => true
            'c' in params.tags => false
            'x' in [] => false
            2 in [1, 1 + 1,] => true
            params.n in [1.0, 3.0] => true
            true and not false => true
            false or true => true
            params.fast && metrics.f1 > 1 => false
            params.deploy || metrics.f1 => true
            steps.train-a.metrics.x - 1 => 0
            params.n-1 => 2
            params.n*-1 => -3
            "#,
        );
    }

    #[test]
    fn eval_errors() {
        table(
            check,
            r#"
            metrics.f1 > 0.5 => eval: metrics.f1 is not set
            steps.x.metrics.y => eval: steps.x.metrics.y is not set
            params.model == 1 => eval: cannot compare string `params.model` ('linear') with int 1
            true != 'true' => eval: cannot compare bool true with string 'true'
            1 / 0 => eval: division by zero in `1 / 0`
            1.5 % (1 - 1) => eval: division by zero in `1.5 % (1 - 1)`
            params.big + 1 => eval: integer overflow in `params.big + 1`
            -params.big - 2 => eval: integer overflow in `-params.big - 2`
            - -9223372036854775808 => eval: integer overflow in `- -9223372036854775808`
            -9223372036854775808 % -1 => eval: integer overflow in `-9223372036854775808 % -1`
            true < false => eval: cannot compare bool true with bool false using `<`
            'a' >= 1 => eval: cannot compare string 'a' with int 1 using `>=`
            1 && true => eval: `&&` needs booleans, found int 1
            false or params.n => eval: `||` needs booleans, found int `params.n` (3)
            !1 => eval: `!` needs a boolean, found int 1
            -params.model => eval: `-` needs a number, found string `params.model` ('linear')
            'a' - 'b' => eval: cannot apply `-` to string 'a' and string 'b'
            'a' + 1 => eval: cannot apply `+` to string 'a' and int 1
            1 in 2 => eval: `in` needs a list or a string on the right, found int 2
            1 in 'abc' => eval: `in` on a string needs a string on the left, found int 1
            'b' in ['a', 1] => eval: cannot compare string 'b' with int 1 in the list
            'a' in ['a', 1] => eval: cannot compare string 'a' with int 1 in the list
            "#,
        );
    }

    #[test]
    fn parse_errors() {
        check("", "parse@0+0: empty expression");
        check(" \n ", "parse@0+0: empty expression");
        table(
            check,
            r#"
            ( => parse@1+0: expected an operand, found end of input
            ) => parse@0+1: expected an operand, found `)`
            (1 + 2 => parse@0+1: unclosed `(`
            (1 2) => parse@3+1: expected `)`, found `2`
            1 + 2) => parse@5+1: unmatched `)`
            1 in [1]] => parse@8+1: unmatched `]`
            1 + => parse@3+0: expected an operand, found end of input
            1 2 => parse@2+1: expected an operator, found `2`
            && true => parse@0+2: expected an operand, found `&&`
            'abc => parse@0+4: unterminated string
            ' => parse@0+1: unterminated string
            "a' => parse@0+3: unterminated string
            'a\ => parse@0+3: unterminated string
            'a\q' => parse@2+2: unknown escape `\q`: use \\, \', \", \n or \t
            params.x = 1 => parse@9+1: unexpected `=`: did you mean `==`?
            params.x & true => parse@9+1: unexpected `&`: did you mean `&&`?
            a | b => parse@2+1: unexpected `|`: did you mean `||`?
            foo.x => parse@0+5: unknown reference `foo.x`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
            params.a.b => parse@0+10: unknown reference `params.a.b`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
            steps.t.rmse => parse@0+12: unknown reference `steps.t.rmse`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
            params.a-b.x => parse@9+3: unknown reference `b.x`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
            linear => parse@0+6: unknown reference `linear`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (for text, write 'linear')
            params. => parse@7+0: expected a name after `.`
            params.1 > 0 => parse@7+1: expected a name after `.`
            1 < 2 < 3 => parse@6+1: comparisons cannot be chained: write `a < b && b < c`
            1 == 1 != 1 => parse@7+2: `==` and `!=` cannot be chained: add parentheses
            1.x => parse@0+3: invalid number `1.x`
            1abc => parse@0+4: invalid number `1abc`
            1.5.3 => parse@0+5: invalid number `1.5.3`
            1e => parse@0+2: invalid number `1e`
            .5 => parse@0+1: a number needs a digit before `.`: write `0.5`
            9223372036854775808 => parse@0+19: number `9223372036854775808` is out of range
            99999999999999999999 => parse@0+20: number `99999999999999999999` is out of range
            1e999 => parse@0+5: number `1e999` is out of range
            [1, 2] => parse@0+1: a list is only allowed on the right of `in`
            1 in [[1]] => parse@6+1: a list is only allowed on the right of `in`
            1 in [1, 2 => parse@5+1: unclosed `[`
            1 in [1 2] => parse@8+1: expected `,` or `]`, found `2`
            1 in [,] => parse@6+1: expected an operand, found `,`
            'é' == ü => parse@7+1: unexpected character `ü`
            1 # 2 => parse@2+1: unexpected character `#`
            "#,
        );
    }

    #[test]
    fn bounds() {
        let deep = |at: usize| format!("parse@{at}+1: expression is nested too deeply (more than 64 levels)");
        let nest = |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        check(&"(".repeat(10_000), "parse@4096+5904: expression is too long: 10000 characters, the limit is 4096");
        check(&nest("(", ")", 64), "1");
        check(&nest("(", ")", 65), &deep(64));
        check(&nest("(", "", 4000), &deep(64));
        check(&nest("-", "", 65), &deep(64));
        check(&format!("{}true", "!".repeat(64)), "true");
        check(&format!("{}true", "!".repeat(4000)), &deep(64));
        check(
            &format!("{}true", "not ".repeat(100)),
            "parse@256+3: expression is nested too deeply (more than 64 levels)",
        );
        check(&format!("{}1", "1+".repeat(256)), "257");
        check(&format!("{}1", "1+".repeat(2000)), "parse@513+1: expression is too complex (more than 256 operations)");
        check(&"'".repeat(4096), "parse@4095+1: unterminated string");
    }

    #[test]
    fn never_panics() {
        let parts = [
            "(",
            ")",
            "'",
            "\"",
            "\\",
            "[",
            "]",
            ",",
            "1",
            "0",
            "1.5",
            "-",
            "!",
            "in ",
            "not ",
            "é",
            "params.n",
            "steps.a-b.metrics.x",
            "==",
            "=",
            "&&",
            "<",
            " ",
            ".",
            "e",
            "/",
            "%",
            "9223372036854775808",
            "params.big",
            "'s'",
            "params.tags",
        ];
        let run = |text: &str| {
            if let Ok(expr) = parse(text) {
                let _ = (expr.eval_traced(&env), expr.check_bool(&types), expr.refs());
            }
        };
        for a in parts {
            for b in parts {
                for c in parts {
                    run(&format!("{a}{b}{c}"));
                }
            }
        }
        let chars: Vec<char> =
            "matrix.lr in [0.01, 1] || !params.fast && 'a\\'b' != \"é\" + params.model".chars().collect();
        for i in 0..chars.len() {
            run(&chars[..i].iter().collect::<String>());
            run(&chars[i..].iter().collect::<String>());
        }
    }

    #[test]
    fn types_are_inferred() {
        table(
            check_type,
            r#"
            metrics.rmse < params.max_rmse => bool
            1 + 2 => int
            1 + 2.0 => float
            -params.n => int
            metrics.f1 + 1 => any
            'a' + metrics.f1 => string
            metrics.f1 => any
            params.n in params.tags => bool
            'x' in params.model => bool
            params.n in [1, 2.5, metrics.f1] => bool
            metrics.f1 && metrics.f2 == 'x' => bool
            params.model == 1 => type@0+17: cannot compare string `params.model` with int `1`
            !params.n => type@1+8: `!` needs a boolean, found int `params.n`
            params.deploy || 1 => type@17+1: `||` needs a boolean, found int `1`
            -params.model => type@1+12: `-` needs a number, found string `params.model`
            true < false => type@0+12: cannot compare bool `true` with bool `false` using `<`
            params.tags > 1 => type@0+15: cannot compare list `params.tags` with int `1` using `>`
            'a' * 2 => type@0+7: cannot apply `*` to string `'a'` and int `2`
            true + metrics.f1 => type@0+17: cannot apply `+` to bool `true` and any `metrics.f1`
            params.model in [1, 'a'] => type@17+1: cannot compare string `params.model` with int `1` in the list
            1 in params.model => type@0+17: `in` on a string needs a string on the left, found int `1`
            1 in (2) => type@0+8: `in` needs a list or a string on the right, found int `(2)`
            "#,
        );
        let bool_check = |input: &str| parse(input).map(|e| e.check_bool(&types));
        let message = "expected a boolean expression, found int".to_string();
        assert_eq!(bool_check(" (1 + 2) "), Ok(Err(TypeError { message, offset: 1, len: 7 })));
        assert_eq!(bool_check("metrics.f1"), Ok(Ok(())));
    }

    #[test]
    fn refs_in_source_order() {
        let expr = parse("params.a && (steps.train-x.metrics.rmse < params.a + matrix.k)").unwrap();
        let got: Vec<String> = expr.refs().iter().map(|u| format!("{}@{}+{}", u.reference, u.offset, u.len)).collect();
        let expected = ["params.a@0+8", "steps.train-x.metrics.rmse@13+26", "params.a@42+8", "matrix.k@53+8"];
        assert_eq!(got, expected);
        let step = Ref::StepMetric { step: "train-x".into(), metric: "rmse".into() };
        assert_eq!(expr.refs()[1].reference, step);
        assert_eq!(parse("'é' == metrics.m").unwrap().refs()[0].offset, 7);
        assert_eq!(expr.source(), expr.to_string());
    }

    #[test]
    fn traced_and_boolean_eval() {
        let expr = parse("metrics.rmse > 0 && metrics.rmse < params.max_rmse || params.fast").unwrap();
        let (result, trace) = expr.eval_traced(&env);
        assert_eq!(result, Ok(Value::Bool(false)));
        let seen: Vec<String> = trace.iter().map(|(r, v)| format!("{r} = {v}")).collect();
        assert_eq!(seen, ["metrics.rmse = 0.71", "params.max_rmse = 0.5", "params.fast = false"]);
        let (result, trace) = parse("params.n > 1 && metrics.nope").unwrap().eval_bool_traced(&env);
        assert_eq!(result, Err(EvalError { message: "metrics.nope is not set".into() }));
        assert_eq!(trace, [(Ref::Param("n".into()), Value::Int(3))]);
        let not_bool = parse("1 + 1").unwrap().eval_bool(&env).unwrap_err();
        assert_eq!(not_bool.to_string(), "expected a boolean result, found int 2");
        assert_eq!(parse("params.deploy").unwrap().eval_bool(&env), Ok(true));
    }

    #[test]
    fn displays() {
        let list = [Value::Int(1), Value::Float(0.5), Value::Float(2.0), Value::Str("a'b\\".into())];
        let list = Value::List([&list[..], &[Value::Bool(true)]].concat());
        assert_eq!(list.to_string(), r"[1, 0.5, 2.0, 'a\'b\\', true]");
        let e = parse("params.x = 1").unwrap_err();
        assert_eq!(e.to_string(), "unexpected `=`: did you mean `==`? (column 10)");
        let rendered = "unexpected `=`: did you mean `==`?\n  params.x = 1\n           ^";
        assert_eq!(e.render("params.x = 1"), rendered);
        assert_eq!(Ref::Matrix("lr".into()).to_string(), "matrix.lr");
        assert_eq!("1 < 2".parse::<Expr>().map(|e| e.eval(&env)), Ok(Ok(Value::Bool(true))));
    }
}
