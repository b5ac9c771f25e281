//! The lexer: expression text, as characters, to tokens with character offsets. It knows
//! punctuation, string and number literals, dotted paths and the keyword spellings of
//! operators (`and`, `or`, `not`, `in`). It must not know precedence or what a path refers to:
//! that is the parser's job (`parse`).

use super::{ParseError, Value, perr};

/// Punctuation, longest first so that `<=` wins over `<`.
const SYMBOLS: [&str; 19] =
    ["||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", ","];

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// Unsigned, so that `-9223372036854775808` can be folded.
    Int(u64),
    Lit(Value),
    Path(Vec<String>),
    Sym(&'static str),
    End,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) offset: usize,
    pub(super) len: usize,
}

pub(super) fn lex(c: &[char]) -> Result<Vec<Token>, ParseError> {
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
