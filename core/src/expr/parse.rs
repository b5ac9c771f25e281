//! The parser: tokens to a syntax tree by precedence climbing, with bounded depth and tree
//! height, and every syntax error pointing at its characters. It also decides what a dotted
//! path refers to. It must not read characters (that is `lex`) nor judge types or values
//! (`check`, `eval`).

use super::lex::{Tok, Token};
use super::{ExplainItem, Kind, MAX_DEPTH, MAX_HEIGHT, Node, ParseError, Ref, Value, node, perr, snippet};

const REF_FORMS: &str = "expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME";
const EXPLAIN_FORMS: &str = " (an explanation reads explain.top, explain.method, explain.rank_shift, explain.importance.FEATURE or explain.rank.FEATURE)";
/// Binary operators by precedence, loosest first; levels 2 and 3 do not associate.
const LEVELS: [&[&str]; 6] =
    [&["||"], &["&&"], &["==", "!="], &["<", "<=", ">", ">=", "in"], &["+", "-"], &["*", "/", "%"]];

/// The syntax tree of `toks`, the tokens of `source` (which ends with [`Tok::End`]).
pub(super) fn tree(toks: Vec<Token>, source: &str) -> Result<Node, ParseError> {
    if let [end] = toks.as_slice() {
        return Err(perr("empty expression", end.offset, 0));
    }
    let mut p = Parser { toks, pos: 0, depth: 0, source };
    let root = p.expr(0)?;
    let t = p.peek().clone();
    let message = match t.tok {
        Tok::End => return Ok(root),
        Tok::Sym(s @ (")" | "]")) => format!("unmatched `{s}`"),
        _ => format!("expected an operator, found {}", p.describe(&t)),
    };
    Err(perr(message, t.offset, t.len))
}

fn to_ref(segs: &[String]) -> Option<Ref> {
    Some(match segs {
        [r, n] if r == "params" => Ref::Param(n.clone()),
        [r, n] if r == "matrix" => Ref::Matrix(n.clone()),
        [r, n] if r == "metrics" => Ref::Metric(n.clone()),
        [r, s, m, n] if r == "steps" && m == "metrics" => Ref::StepMetric { step: s.clone(), metric: n.clone() },
        [r, m, n] if r == "current" && m == "metrics" => Ref::CurrentMetric(n.clone()),
        [r, rest @ ..] if r == "explain" => Ref::Explain { current: false, item: explain_item(rest)? },
        [c, r, rest @ ..] if c == "current" && r == "explain" => {
            Ref::Explain { current: true, item: explain_item(rest)? }
        }
        _ => return None,
    })
}

fn explain_item(segs: &[String]) -> Option<ExplainItem> {
    Some(match segs {
        [i] if i == "top" => ExplainItem::Top,
        [i] if i == "method" => ExplainItem::Method,
        [i] if i == "rank_shift" => ExplainItem::RankShift,
        [i, f] if i == "importance" => ExplainItem::Importance(f.clone()),
        [i, f] if i == "rank" => ExplainItem::Rank(f.clone()),
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
                    let hint = match segs.as_slice() {
                        [word] => match bool_word(word) {
                            Some(b) => format!(" (did you mean `{b}`?)"),
                            None => format!(" (for text, write '{text}')"),
                        },
                        [e, ..] | [_, e, ..] if e == "explain" => EXPLAIN_FORMS.to_string(),
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

/// The boolean that a YAML 1.1 style word such as `yes` or `off` stands for, if it is one.
fn bool_word(word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "yes" | "on" | "y" => Some(true),
        "no" | "off" | "n" => Some(false),
        _ => None,
    }
}
