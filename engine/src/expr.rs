//! The expression language of `when:` and `gate:` (see docs/expressions.md): parsing with
//! character-offset diagnostics, static type checking against the types of references, and
//! evaluation against a lookup of their values. Expressions are pure: no side effects, no
//! loops, at most [`MAX_LEN`] characters and [`MAX_DEPTH`] levels of nesting, so parsing and
//! evaluation are bounded and never panic. This module does no I/O; callers supply values.

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
    if let [end] = toks.as_slice() {
        return Err(perr("empty expression", end.offset, 0));
    }
    let mut p = Parser { toks, pos: 0, depth: 0, source: text };
    let root = p.expr(0)?;
    let t = p.peek().clone();
    let message = match t.tok {
        Tok::End => {
            return Ok(Expr { source: text.to_string(), root });
        }
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
                let msg = format!("unexpected `{ch}`: did you mean `{ch}{ch}`?");
                return Err(perr(msg, i, 1));
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

/// A number is the longest run of `[0-9A-Za-z_.]` (and a sign right after an exponent's
/// `e`), so `1x` or `1.2.3` is one invalid token rather than a surprising split.
fn lex_number(c: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let mut i = start;
    while let Some(&ch) = c.get(i) {
        let sign = (ch == '+' || ch == '-') && matches!(c[i - 1], 'e' | 'E');
        if !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || sign) {
            break;
        }
        i += 1;
    }
    let text: String = c[start..i].iter().collect();
    let fail = |what: &str| perr(format!("{what} `{text}`"), start, i - start);
    let tok = if text.bytes().all(|b| b.is_ascii_digit()) {
        Tok::Int(text.parse().map_err(|_| fail("number out of range:"))?)
    } else {
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Tok::Lit(Value::Float(x)),
            Ok(_) => return Err(fail("number out of range:")),
            Err(_) => return Err(fail("invalid number")),
        }
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
            let len = usize::from(i < c.len());
            return Err(perr("expected a name after `.`", i, len));
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

    fn peek_op(&self) -> Option<(&'static str, usize)> {
        let op = self.peek_sym()?;
        LEVELS.iter().position(|ops| ops.contains(&op)).map(|level| (op, level))
    }

    /// Precedence climbing over operators of level `min` or tighter. It recurses only into
    /// parentheses, unary operators, lists and tighter levels, so its depth is bounded; the
    /// recursive functions keep their frames small and leave the rest to helpers.
    fn expr(&mut self, min: usize) -> Result<Node, ParseError> {
        let mut left = self.unary()?;
        while let Some((op, level)) = self.peek_op().filter(|&(_, level)| level >= min) {
            let op_tok = self.advance();
            let right = match (op, self.peek_sym()) {
                ("in", Some("[")) => self.list()?,
                _ => self.expr(level + 1)?,
            };
            left = join(op, &op_tok, left, right)?;
            if (level == 2 || level == 3) && self.peek_op().is_some_and(|(_, l)| l == level) {
                return Err(self.chained(level));
            }
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let Some(op @ ("!" | "-")) = self.peek_sym() else {
            return self.primary();
        };
        let t = self.advance();
        self.enter(&t)?;
        let operand = if op == "-" && self.peek().tok == Tok::Int(1 << 63) {
            // i64::MIN has no positive literal, so `-9223372036854775808` is read as one
            let lit = self.advance();
            let end = lit.offset + lit.len;
            Ok(node(Kind::Lit(Value::Int(i64::MIN)), t.offset, end, 0))
        } else {
            self.unary().map(|operand| apply_unary(op, &t, operand))
        };
        self.depth -= 1;
        operand
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let open = self.advance();
        if open.tok != Tok::Sym("(") {
            return self.atom(open);
        }
        self.enter(&open)?;
        let inner = self.expr(0)?;
        self.depth -= 1;
        self.close(&open, inner)
    }

    fn list(&mut self) -> Result<Node, ParseError> {
        let open = self.advance();
        self.enter(&open)?;
        let mut items: Vec<Node> = Vec::new();
        let end = loop {
            if self.peek_sym() == Some("]") {
                break self.advance();
            }
            items.push(self.expr(0)?);
            let t = self.advance();
            match t.tok {
                Tok::Sym(",") => {}
                Tok::Sym("]") => break t,
                _ => return Err(self.list_error(&open, &t)),
            }
        };
        self.depth -= 1;
        let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
        Ok(node(Kind::List(items), open.offset, end.offset + 1, height))
    }

    /// A literal or reference; anything else is an error.
    #[inline(never)]
    fn atom(&self, t: Token) -> Result<Node, ParseError> {
        let (offset, end) = (t.offset, t.offset + t.len);
        match t.tok {
            Tok::Lit(v) => Ok(node(Kind::Lit(v), offset, end, 0)),
            Tok::Int(n) => match i64::try_from(n) {
                Ok(i) => Ok(node(Kind::Lit(Value::Int(i)), offset, end, 0)),
                Err(_) => Err(perr(format!("number out of range: `{n}`"), offset, t.len)),
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
            Tok::Sym("[") => Err(perr("a list is only allowed right of `in`", offset, 1)),
            _ => {
                let msg = format!("expected an operand, found {}", self.describe(&t));
                Err(perr(msg, offset, t.len))
            }
        }
    }

    /// Expects the `)` closing `open`; the node's span then includes both parentheses.
    #[inline(never)]
    fn close(&mut self, open: &Token, mut inner: Node) -> Result<Node, ParseError> {
        let t = self.advance();
        match t.tok {
            Tok::Sym(")") => {
                (inner.offset, inner.len) = (open.offset, t.offset + 1 - open.offset);
                Ok(inner)
            }
            Tok::End => Err(perr("unclosed `(`", open.offset, 1)),
            _ => Err(self.unexpected("`)`", &t)),
        }
    }

    #[cold]
    fn list_error(&self, open: &Token, t: &Token) -> ParseError {
        match t.tok {
            Tok::End => perr("unclosed `[`", open.offset, 1),
            _ => self.unexpected("`,` or `]`", t),
        }
    }

    #[cold]
    fn unexpected(&self, expected: &str, t: &Token) -> ParseError {
        perr(format!("expected {expected}, found {}", self.describe(t)), t.offset, t.len)
    }

    #[cold]
    fn chained(&self, level: usize) -> ParseError {
        let t = self.peek();
        let msg = match level {
            2 => "`==` and `!=` cannot be chained: add parentheses",
            _ => "comparisons cannot be chained: write `a < b && b < c`",
        };
        perr(msg, t.offset, t.len)
    }
}

/// The node for `left op right`, unless the tree would grow taller than [`MAX_HEIGHT`].
#[inline(never)]
fn join(op: &'static str, op_tok: &Token, left: Node, right: Node) -> Result<Node, ParseError> {
    let height = 1 + left.height.max(right.height);
    if height > MAX_HEIGHT {
        let msg = format!("expression is too complex (more than {MAX_HEIGHT} operations)");
        return Err(perr(msg, op_tok.offset, op_tok.len));
    }
    let (offset, end) = (left.offset, right.offset + right.len);
    let kind = Kind::Bin(op, Box::new(left), Box::new(right));
    Ok(node(kind, offset, end, height))
}

/// The node for `op operand`, folding a negated number literal into a literal.
#[inline(never)]
fn apply_unary(op: &'static str, t: &Token, operand: Node) -> Node {
    let (offset, end) = (t.offset, operand.offset + operand.len);
    let folded = match (op, &operand.kind) {
        ("-", Kind::Lit(Value::Int(n))) => n.checked_neg().map(Value::Int),
        ("-", Kind::Lit(Value::Float(x))) => Some(Value::Float(-x)),
        _ => None,
    };
    let height = operand.height + 1;
    match folded {
        Some(v) => node(Kind::Lit(v), offset, end, 0),
        None => node(Kind::Unary(op, Box::new(operand)), offset, end, height),
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
            v => Err(eerr(format!("expected a boolean result, found {}", kind(&v)))),
        });
        (result, trace)
    }

    /// Like [`Expr::eval`], and the result must be a boolean.
    pub fn eval_bool(&self, lookup: Lookup<'_>) -> Result<bool, EvalError> {
        self.eval_bool_traced(lookup).0
    }
}

/// A value with its kind, for messages: `int 1`, `string 'a'`.
fn kind(v: &Value) -> String {
    format!("{} {v}", v.type_of())
}

fn eerr(message: String) -> EvalError {
    EvalError { message }
}

fn eq_compatible(a: Type, b: Type) -> bool {
    use Type::*;
    a == b || matches!((a, b), (Any, _) | (_, Any) | (Int | Float, Int | Float))
}

/// Describes an operand for a message, on demand.
type Desc<'a> = &'a dyn Fn() -> String;

/// The typing rule of a unary operator, also applied to each operand of `&&` and `||`;
/// `a` describes the operand for the message.
fn unary_rule(op: &str, t: Type, a: Desc<'_>) -> Result<Type, String> {
    match (op, t) {
        ("-", Type::Int | Type::Float | Type::Any) => Ok(t),
        ("-", _) => Err(format!("`-` needs a number, found {}", a())),
        (_, Type::Bool | Type::Any) => Ok(Type::Bool),
        _ => Err(format!("`{op}` needs a boolean, found {}", a())),
    }
}

/// The typing rule of a binary operator, shared by [`Expr::check`] (on static types) and
/// [`Expr::eval`] (on the kinds of values); `a` and `b` describe the operands.
fn binary_rule(op: &str, lt: Type, rt: Type, a: Desc<'_>, b: Desc<'_>) -> Result<Type, String> {
    use Type::*;
    let unordered = |p| matches!(p, (Bool | List, _) | (_, Bool | List) | (Str, Int | Float));
    let ordered = !unordered((lt, rt)) && !unordered((rt, lt));
    Err(match (op, lt, rt) {
        ("==" | "!=", ..) if eq_compatible(lt, rt) => return Ok(Bool),
        ("==" | "!=", ..) => format!("cannot compare {} with {}", a(), b()),
        ("<" | "<=" | ">" | ">=", ..) if ordered => return Ok(Bool),
        ("<" | "<=" | ">" | ">=", ..) => {
            format!("cannot compare {} with {} using `{op}`", a(), b())
        }
        ("in", _, List | Any) | ("in", Str | Any, Str) => return Ok(Bool),
        ("in", _, Str) => format!("`in` on a string needs a string on the left, found {}", a()),
        ("in", ..) => format!("`in` needs a list or a string on the right, found {}", b()),
        ("+", Str, Str | Any) | ("+", Any, Str) => return Ok(Str),
        (_, Int, Int) => return Ok(Int),
        (_, Float, Int | Float) | (_, Int, Float) => return Ok(Float),
        (_, Int | Float | Any, Int | Float | Any) => return Ok(Any),
        _ => format!("cannot apply `{op}` to {} and {}", a(), b()),
    })
}

fn in_list_error(a: &str, b: &str) -> String {
    format!("cannot compare {a} with {b} in the list")
}

fn terr(n: &Node, message: String) -> TypeError {
    TypeError { message, offset: n.offset, len: n.len }
}

struct Checker<'a> {
    source: &'a str,
    types: Types<'a>,
}

impl Checker<'_> {
    fn ty(&self, n: &Node) -> Result<Type, TypeError> {
        match &n.kind {
            Kind::Lit(v) => Ok(v.type_of()),
            Kind::Ref(r) => Ok((self.types)(r).unwrap_or(Type::Any)),
            Kind::List(items) => self.list(None, items),
            Kind::Unary(op, x) => {
                let t = self.ty(x)?;
                self.unary(op, x, t)
            }
            Kind::Bin(op, l, r) => match (*op, &r.kind) {
                ("in", Kind::List(items)) => {
                    let lt = self.ty(l)?;
                    self.list(Some((l, lt)), items)
                }
                _ => {
                    let (lt, rt) = (self.ty(l)?, self.ty(r)?);
                    self.binary(n, op, (l, lt), (r, rt))
                }
            },
        }
    }

    /// A list literal; on the right of `in`, each item must be comparable with `left`.
    fn list(&self, left: Option<(&Node, Type)>, items: &[Node]) -> Result<Type, TypeError> {
        for item in items {
            let it = self.ty(item)?;
            if let Some(left) = left {
                self.member(left, (item, it))?;
            }
        }
        Ok(if left.is_some() { Type::Bool } else { Type::List })
    }

    fn desc(&self, n: &Node, t: Type) -> String {
        format!("{t} `{}`", snippet(self.source, n.offset, n.len))
    }

    #[inline(never)]
    fn unary(&self, op: &str, x: &Node, t: Type) -> Result<Type, TypeError> {
        unary_rule(op, t, &|| self.desc(x, t)).map_err(|m| terr(x, m))
    }

    #[inline(never)]
    fn member(&self, (l, lt): (&Node, Type), (item, it): (&Node, Type)) -> Result<(), TypeError> {
        if eq_compatible(lt, it) {
            return Ok(());
        }
        let message = in_list_error(&self.desc(l, lt), &self.desc(item, it));
        Err(terr(item, message))
    }

    #[inline(never)]
    fn binary(&self, n: &Node, op: &str, l: (&Node, Type), r: (&Node, Type)) -> Result<Type, TypeError> {
        if op == "&&" || op == "||" {
            self.unary(op, l.0, l.1)?;
            return self.unary(op, r.0, r.1);
        }
        let (a, b) = (|| self.desc(l.0, l.1), || self.desc(r.0, r.1));
        binary_rule(op, l.1, r.1, &a, &b).map_err(|m| terr(n, m))
    }
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
            1 && true => eval: `&&` needs a boolean, found int 1
            false or params.n => eval: `||` needs a boolean, found int `params.n` (3)
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
        check(" \n ", "parse@3+0: empty expression");
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
            9223372036854775808 => parse@0+19: number out of range: `9223372036854775808`
            99999999999999999999 => parse@0+20: number out of range: `99999999999999999999`
            1e999 => parse@0+5: number out of range: `1e999`
            [1, 2] => parse@0+1: a list is only allowed right of `in`
            1 in [[1]] => parse@6+1: a list is only allowed right of `in`
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
        check(&format!("'{}", "a".repeat(4095)), "parse@0+4096: unterminated string");
    }

    #[test]
    fn worst_cases_fit_in_a_small_stack() {
        let mut parens = "1".to_string();
        for _ in 0..63 {
            parens = format!("(1+1+1+{parens})");
        }
        let cases = [format!("{}1", "1+".repeat(255)), format!("{}true", "true&&".repeat(255)), parens];
        let run = move || {
            for text in &cases {
                let expr = parse(text).unwrap();
                assert!(expr.eval(&env).is_ok() && expr.check(&types).is_ok());
            }
        };
        std::thread::Builder::new().stack_size(1 << 20).spawn(run).unwrap().join().unwrap();
    }

    #[test]
    fn never_panics() {
        let parts = "(~)~'~\"~\\~[~]~,~1~0~1.5~-~!~in ~not ~é~params.n~steps.a-b.metrics.x~==~=~&&~<~ ~.~e~/~%~9223372036854775808~params.big~'s'~params.tags";
        let parts: Vec<&str> = parts.split('~').collect();
        let run = |text: &str| {
            if let Ok(expr) = parse(text) {
                let _ = (expr.eval_traced(&env), expr.check_bool(&types), expr.refs());
            }
        };
        for a in &parts {
            for b in &parts {
                for c in &parts {
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
        assert_eq!(expr.source(), "params.a && (steps.train-x.metrics.rmse < params.a + matrix.k)");
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
    }
}
