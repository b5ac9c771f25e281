//! `{{ ... }}` templates in `run`, `command`, `env` and `image`: parsing with positions, and
//! rendering for each destination.
//!
//! A value never becomes shell text: in a `run:` script each `{{ }}` renders as a reference to
//! the environment variable that holds its value (`"${WEIR_PARAM_ROWS}"`, see [`Ref::var`]),
//! and [`shell`] finds the places where even a reference is unsafe, which validation refuses.
//! In an argv item or an environment value the value is inserted as is: it is never split.
//! Pure code: no I/O, no knowledge of where values come from (the caller passes a lookup).

mod commands;
mod refusal;
pub mod shell;

use std::fmt;

/// What a `{{ }}` refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Param(String),
    Matrix(String),
    RunId,
    StepName,
}

impl Ref {
    /// The environment variable that holds this reference's value in a step:
    /// `WEIR_PARAM_<NAME>`, `WEIR_MATRIX_<KEY>` (names upper-cased; validation refuses two
    /// that would clash), `WEIR_RUN_ID`, `WEIR_INSTANCE` (what `step.name` renders).
    pub fn var(&self) -> String {
        match self {
            Ref::Param(name) => param_var(name),
            Ref::Matrix(key) => matrix_var(key),
            Ref::RunId => "WEIR_RUN_ID".into(),
            Ref::StepName => "WEIR_INSTANCE".into(),
        }
    }
}

/// `WEIR_PARAM_<NAME>`: the variable that carries param `name` into every step.
pub fn param_var(name: &str) -> String {
    format!("WEIR_PARAM_{}", name.to_ascii_uppercase())
}

/// `WEIR_MATRIX_<KEY>`: the variable that carries a matrix instance's value of `key`.
pub fn matrix_var(key: &str) -> String {
    format!("WEIR_MATRIX_{}", key.to_ascii_uppercase())
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Param(name) => write!(f, "params.{name}"),
            Ref::Matrix(key) => write!(f, "matrix.{key}"),
            Ref::RunId => f.write_str("run.id"),
            Ref::StepName => f.write_str("step.name"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A reference, with the character offset and length of its whole `{{ ... }}`.
    Ref {
        reference: Ref,
        offset: usize,
        len: usize,
    },
}

/// A parsed template. Plain text without `{{` is a template with one text part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A problem in a template, at a character offset of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub offset: usize,
    pub len: usize,
    /// The exact text at fault, to locate it in the file.
    pub snippet: String,
}

/// A reference and where it stands, for the validator to check it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUse<'a> {
    pub reference: &'a Ref,
    pub offset: usize,
    pub len: usize,
}

const EXPECTED: &str = "expected params.NAME, matrix.KEY, run.id, step.name or a quoted literal";

impl Template {
    /// Parses `text`, reporting every malformed `{{ }}` at once.
    pub fn parse(text: &str) -> Result<Template, Vec<Error>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0usize; // in chars
        while let Some(open) = rest.find("{{") {
            literal.push_str(&rest[..open]);
            offset += rest[..open].chars().count();
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                errors.push(Error {
                    message: "unclosed `{{`: expected `}}`".into(),
                    offset,
                    len: 2,
                    snippet: "{{".into(),
                });
                rest = "";
                break;
            };
            let inner = &after[..close];
            let whole = &rest[open..open + 2 + close + 2];
            let len = whole.chars().count();
            match parse_inner(inner.trim()) {
                Ok(Inner::Literal(text)) => literal.push_str(text),
                Ok(Inner::Ref(reference)) => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Ref { reference, offset, len });
                }
                Err(message) => errors.push(Error { message, offset, len, snippet: whole.to_string() }),
            }
            offset += len;
            rest = &after[close + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if errors.is_empty() { Ok(Template { source: text.to_string(), parts }) } else { Err(errors) }
    }

    /// The text as written in the pipeline file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every reference in order of appearance.
    pub fn refs(&self) -> impl Iterator<Item = RefUse<'_>> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref { reference, offset, len } => Some(RefUse { reference, offset: *offset, len: *len }),
            Part::Text(_) => None,
        })
    }

    /// True when rendering needs no lookup at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders for an argv item, an environment value or an image: values go in unchanged.
    pub fn render_raw<'v>(&self, lookup: &dyn Fn(&Ref) -> &'v str) -> String {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref { reference, .. } => out.push_str(lookup(reference)),
            }
        }
        out
    }

    /// Where each reference stands in this text read as a `sh -c` script, in order of
    /// appearance: accepted, or refused with the reason.
    pub fn shell_places(&self) -> Vec<(RefUse<'_>, Result<shell::Place, shell::Refusal>)> {
        let pieces = self.parts.iter().map(|p| match p {
            Part::Text(text) => shell::Piece::Text(text),
            Part::Ref { .. } => shell::Piece::Ref,
        });
        self.refs().zip(shell::places(pieces)).collect()
    }

    /// Renders a `sh -c` script: each reference becomes its variable, `"${VAR}"`, or
    /// `${VAR}` inside `"..."` and, for a reference `integer` says holds only digits, inside
    /// arithmetic. No value is ever part of the script. A reference in a place validation
    /// refuses still renders as `"${VAR}"`.
    pub fn render_script(&self, integer: &dyn Fn(&Ref) -> bool) -> String {
        let mut places = self.shell_places().into_iter().map(|(_, p)| p);
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref { reference, .. } => {
                    let var = reference.var();
                    match places.next() {
                        Some(Ok(shell::Place::Quoted)) => out.push_str(&format!("${{{var}}}")),
                        Some(Err(shell::Refusal::Arithmetic(_))) if integer(reference) => {
                            out.push_str(&format!("${{{var}}}"))
                        }
                        _ => out.push_str(&format!("\"${{{var}}}\"")),
                    }
                }
            }
        }
        out
    }
}

enum Inner<'a> {
    Literal(&'a str),
    Ref(Ref),
}

fn parse_inner(inner: &str) -> Result<Inner<'_>, String> {
    if inner.is_empty() {
        return Err(format!("empty template `{{{{ }}}}`: {EXPECTED}"));
    }
    for quote in ['\'', '"'] {
        if let Some(body) = inner.strip_prefix(quote) {
            return match body.strip_suffix(quote) {
                Some(text) if !text.contains(quote) => Ok(Inner::Literal(text)),
                _ => Err(format!("malformed literal `{inner}`: expected text between matching quotes")),
            };
        }
    }
    let mut segments = inner.split('.');
    let root = segments.next().unwrap_or("");
    let rest: Vec<&str> = segments.collect();
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let unknown = || format!("unknown template reference `{inner}`: {EXPECTED}");
    match (root, rest.as_slice()) {
        ("params", [name]) if ident(name) => Ok(Inner::Ref(Ref::Param((*name).to_string()))),
        ("matrix", [key]) if ident(key) => Ok(Inner::Ref(Ref::Matrix((*key).to_string()))),
        ("run", ["id"]) => Ok(Inner::Ref(Ref::RunId)),
        ("step", ["name"]) => Ok(Inner::Ref(Ref::StepName)),
        ("params" | "matrix", _) => Err(format!("malformed reference `{inner}`: expected `{root}.NAME`")),
        ("run", _) => Err(format!("unknown reference `{inner}`: the run offers only `run.id`")),
        ("step", _) => Err(format!("unknown reference `{inner}`: the step offers only `step.name`")),
        ("param", [name]) => Err(format!("unknown template reference `{inner}`: did you mean `params.{name}`?")),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(r: &Ref) -> &'static str {
        match r {
            Ref::Param(p) if p == "evil" => "\"; touch /tmp/pwned #",
            Ref::Param(_) => "500",
            Ref::Matrix(_) => "0.01",
            Ref::RunId => "r-1",
            Ref::StepName => "train[lr=0.01]",
        }
    }

    #[test]
    fn scripts_hold_references_never_values() {
        let cases = [
            ("echo {{ params.rows }}", r#"echo "${WEIR_PARAM_ROWS}""#),
            ("echo --lr={{matrix.lr}}x", r#"echo --lr="${WEIR_MATRIX_LR}"x"#),
            (r#"echo "a {{ params.evil }} b""#, r#"echo "a ${WEIR_PARAM_EVIL} b""#),
            (r#"echo "$(echo {{ run.id }})""#, r#"echo "$(echo "${WEIR_RUN_ID}")""#),
            ("# {{ step.name }}\necho", "# \"${WEIR_INSTANCE}\"\necho"),
            ("echo {{ 'literal {{' }} x", "echo literal {{ x"),
            // Refused by validation; still no value.
            ("echo '{{ params.evil }}'", r#"echo '"${WEIR_PARAM_EVIL}"'"#),
        ];
        let arith = Template::parse("echo $(( {{ params.n }} + 1 ))").expect("valid");
        assert_eq!(arith.render_script(&|_| true), "echo $(( ${WEIR_PARAM_N} + 1 ))", "an integer: unquoted");
        assert_eq!(arith.render_script(&|_| false), r#"echo $(( "${WEIR_PARAM_N}" + 1 ))"#, "refused anyway");
        for (input, expected) in cases {
            let t = Template::parse(input).expect("valid");
            assert_eq!(t.render_script(&|_| false), expected, "input: {input}");
        }
    }

    #[test]
    fn raw_rendering_keeps_values_whole() {
        let t = Template::parse("--lr={{ matrix.lr }} {{ params.evil }}").unwrap();
        assert_eq!(t.render_raw(&lookup), "--lr=0.01 \"; touch /tmp/pwned #");
    }

    #[test]
    fn reports_every_bad_reference_with_its_offset() {
        let errors = Template::parse("a {{ params.nope.x }} b {{ foo }} {{ run.idx }} {{").unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.offset, e.snippet.as_str())).collect();
        assert_eq!(got, vec![(2, "{{ params.nope.x }}"), (24, "{{ foo }}"), (34, "{{ run.idx }}"), (48, "{{")]);
        assert!(errors[1].message.contains("expected params.NAME"), "{}", errors[1].message);
    }

    #[test]
    fn lists_references() {
        let t = Template::parse("{{ params.a }}-{{ matrix.b }}-{{run.id}}").unwrap();
        let refs: Vec<String> = t.refs().map(|r| r.reference.to_string()).collect();
        assert_eq!(refs, ["params.a", "matrix.b", "run.id"]);
        assert!(Template::parse("plain }} text").unwrap().is_literal());
    }
}
