//! `{{ ... }}` templates in `run`, `command`, `env` and `image`: parsing with positions, and
//! rendering with the quoting each destination needs.
//!
//! In a shell script every substituted value is quoted for the place it lands (a bare word,
//! inside `"..."`, inside `'...'`, inside `$(...)`), so no value can inject shell syntax. In an
//! argv item or an environment value the value is inserted as is: it is never split. Pure code:
//! no I/O, no knowledge of where values come from (the caller passes a lookup).

use std::fmt;

/// What a `{{ }}` refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Param(String),
    Matrix(String),
    RunId,
    StepName,
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

    /// Renders a `sh -c` script: each value is quoted for the shell context it lands in.
    pub fn render_shell<'v>(&self, lookup: &dyn Fn(&Ref) -> &'v str) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        let mut shell = ShellContext::default();
        for part in &self.parts {
            match part {
                Part::Text(text) => {
                    shell.feed(text);
                    out.push_str(text);
                }
                Part::Ref { reference, .. } => {
                    let value = lookup(reference);
                    let mut quoted = match shell.quoting() {
                        Quoting::Bare => shell_quote(value),
                        Quoting::Double => double_quote_body(value),
                        Quoting::Single => value.replace('\'', r"'\''"),
                    };
                    // Old-style `...` substitution strips one level of `\` before its command
                    // is parsed: escape once more per enclosing backtick.
                    for _ in 0..shell.backticks() {
                        quoted = backtick_escape(&quoted);
                    }
                    out.push_str(&quoted);
                    // A value is one opaque word; the context does not change.
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

/// Quotes `value` as one shell word: unchanged when it holds only safe characters, else in
/// single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Text that reads back as `text` after a backtick substitution's `\\` pass.
fn backtick_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The body of a `"..."` word that reads back as `value`.
fn double_quote_body(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// Outside quotes; the number counts open `(` inside a `$(...)`.
    Bare(u32),
    Single,
    Double,
    /// Inside a `` `...` `` command substitution.
    Backtick,
}

/// A small tracker of the POSIX shell quoting state at the end of the text fed so far. It
/// understands quotes, backslashes, comments, `$(...)` and backticks; heredoc bodies are
/// treated as script text (a value there is quoted as a bare word).
#[derive(Debug)]
struct ShellContext {
    stack: Vec<Frame>,
    escaped: bool,
    comment: bool,
    dollar: bool,
    word_start: bool,
}

impl Default for ShellContext {
    fn default() -> Self {
        ShellContext { stack: vec![Frame::Bare(0)], escaped: false, comment: false, dollar: false, word_start: true }
    }
}

impl ShellContext {
    fn quoting(&self) -> Quoting {
        match self.stack.last() {
            Some(Frame::Single) => Quoting::Single,
            Some(Frame::Double) => Quoting::Double,
            _ => Quoting::Bare,
        }
    }

    fn backticks(&self) -> usize {
        self.stack.iter().filter(|f| **f == Frame::Backtick).count()
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.step(c);
        }
    }

    fn step(&mut self, c: char) {
        let was_dollar = std::mem::take(&mut self.dollar);
        let word_start = std::mem::replace(&mut self.word_start, false);
        if self.comment {
            if c == '\n' {
                self.comment = false;
                self.word_start = true;
            }
            return;
        }
        if self.escaped {
            self.escaped = false;
            return;
        }
        let top = self.stack.last().copied().unwrap_or(Frame::Bare(0));
        match (top, c) {
            (Frame::Single, '\'') => {
                self.stack.pop();
            }
            (Frame::Single, _) => {}
            (Frame::Double, '"') => {
                self.stack.pop();
            }
            (Frame::Double | Frame::Bare(_) | Frame::Backtick, '\\') => self.escaped = true,
            (Frame::Double | Frame::Bare(_) | Frame::Backtick, '$') => self.dollar = true,
            (Frame::Double | Frame::Bare(_), '`') => self.stack.push(Frame::Backtick),
            (Frame::Backtick, '`') => {
                self.stack.pop();
            }
            (_, '(') if was_dollar => self.stack.push(Frame::Bare(0)),
            (Frame::Double, _) => {}
            (Frame::Bare(_) | Frame::Backtick, '\'') => self.stack.push(Frame::Single),
            (Frame::Bare(_) | Frame::Backtick, '"') => self.stack.push(Frame::Double),
            (Frame::Bare(depth), '(') => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Frame::Bare(depth + 1);
                }
            }
            (Frame::Bare(depth), ')') => {
                if depth > 0 {
                    if let Some(top) = self.stack.last_mut() {
                        *top = Frame::Bare(depth - 1);
                    }
                } else if self.stack.len() > 1 {
                    self.stack.pop();
                }
            }
            (Frame::Bare(_) | Frame::Backtick, '#') if word_start => self.comment = true,
            (Frame::Bare(_) | Frame::Backtick, c) if c.is_whitespace() || ";&|<>".contains(c) => {
                self.word_start = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(r: &Ref) -> &'static str {
        match r {
            Ref::Param(p) if p == "evil" => "\"; touch /tmp/pwned #",
            Ref::Param(p) if p == "sub" => "$(id)",
            Ref::Param(p) if p == "tick" => "`id`",
            Ref::Param(p) if p == "nl" => "a\nb",
            Ref::Param(p) if p == "quote" => "it's",
            Ref::Param(_) => "500",
            Ref::Matrix(_) => "0.01",
            Ref::RunId => "r-1",
            Ref::StepName => "train[lr=0.01]",
        }
    }

    fn shell(text: &str) -> String {
        Template::parse(text).expect("valid template").render_shell(&lookup)
    }

    #[test]
    fn quotes_for_each_shell_context() {
        let cases = [
            ("echo {{ params.rows }}", "echo 500"),
            ("echo {{params.evil}}", r#"echo '"; touch /tmp/pwned #'"#),
            (r#"echo "{{ params.evil }}""#, r#"echo "\"; touch /tmp/pwned #""#),
            ("echo '{{ params.quote }}'", r"echo 'it'\''s'"),
            ("echo {{ params.sub }}", "echo '$(id)'"),
            (r#"echo "$(echo {{ params.sub }})""#, r#"echo "$(echo '$(id)')""#),
            ("echo `echo {{ params.tick }}`", r"echo `echo '\`id\`'`"),
            ("echo {{ step.name }}", "echo 'train[lr=0.01]'"),
            ("echo {{ 'literal {{' }} x", "echo literal {{ x"),
            ("# {{ params.evil }}\necho {{ params.rows }}", "# '\"; touch /tmp/pwned #'\necho 500"),
        ];
        for (input, expected) in cases {
            assert_eq!(shell(input), expected, "input: {input}");
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
