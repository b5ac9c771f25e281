//! Static typing: the typing rules of the operators, shared with evaluation (which applies
//! them to the kinds of values), and the checker that applies them to a syntax tree against
//! the declared types of references. It must not evaluate anything nor report unknown
//! references: callers do that from `Expr::refs`.

use super::{Kind, Node, Type, TypeError, Types, snippet};

/// The type of the tree `root` of `source`; see `Expr::check`.
pub(super) fn check(source: &str, types: Types<'_>, root: &Node) -> Result<Type, TypeError> {
    Checker { source, types }.ty(root)
}

/// Whether values of types `a` and `b` may meet in `==`, `!=` or a list right of `in`.
pub(super) fn eq_compatible(a: Type, b: Type) -> bool {
    use Type::*;
    a == b || matches!((a, b), (Any, _) | (_, Any) | (Int | Float, Int | Float))
}

/// Describes an operand for a message, on demand.
pub(super) type Desc<'a> = &'a dyn Fn() -> String;

/// The typing rule of a unary operator, also applied to each operand of `&&` and `||`;
/// `a` describes the operand for the message.
pub(super) fn unary_rule(op: &str, t: Type, a: Desc<'_>) -> Result<Type, String> {
    match (op, t) {
        ("-", Type::Int | Type::Float | Type::Any) => Ok(t),
        ("-", _) => Err(format!("`-` needs a number, found {}", a())),
        (_, Type::Bool | Type::Any) => Ok(Type::Bool),
        _ => Err(format!("`{op}` needs a boolean, found {}", a())),
    }
}

/// The typing rule of a binary operator, shared by `Expr::check` (on static types) and
/// `Expr::eval` (on the kinds of values); `a` and `b` describe the operands.
pub(super) fn binary_rule(op: &str, lt: Type, rt: Type, a: Desc<'_>, b: Desc<'_>) -> Result<Type, String> {
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

pub(super) fn in_list_error(a: &str, b: &str) -> String {
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
