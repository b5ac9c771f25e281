//! A spanned YAML tree built from saphyr-parser's event stream, under explicit budgets.
//!
//! This is the only place that touches the YAML parser. It keeps every node's position, rejects
//! duplicate keys, several documents and non-scalar keys, and enforces the nesting-depth and
//! alias-expansion budgets while events arrive, so a billion-laughs file or 100k nested `[`
//! stop early and in constant stack. Aliases share the anchored node (no copy is made); the
//! expanded size is computed arithmetically. No I/O: it takes text.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use crate::diag::{Diagnostic, Span};
use crate::spec::Limits;

pub type NodeId = usize;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A scalar and whether it was quoted or a block scalar (then it is always a string).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<NodeId>),
    /// Entries in file order: (key node, value node); keys are scalars.
    Map(Vec<(NodeId, NodeId)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
    /// The style of a scalar: quoted scalars map positions one to one after the quote.
    pub style: Style,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Block,
    Collection,
}

/// A parsed YAML document: an arena of nodes and its root.
#[derive(Debug)]
pub struct Doc {
    pub nodes: Vec<Node>,
    pub root: NodeId,
}

/// What a plain scalar means under the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// "an integer", "a string", ... for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Scalar::Null => "nothing (null)",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
        }
    }
}

impl Kind {
    /// Number of items or entries of a collection.
    pub fn items(&self) -> Option<usize> {
        match self {
            Kind::Seq(items) => Some(items.len()),
            Kind::Map(entries) => Some(entries.len()),
            Kind::Scalar { .. } => None,
        }
    }
}

impl Doc {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The scalar at `id` resolved by the YAML 1.2 core schema; `None` for collections.
    pub fn scalar(&self, id: NodeId) -> Option<Scalar<'_>> {
        match &self.nodes[id].kind {
            Kind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            Kind::Scalar { text, plain: false } => Some(Scalar::Str(text)),
            _ => None,
        }
    }

    /// The raw text of a scalar, whatever its type.
    pub fn text(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[id].kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The node as JSON under the YAML 1.2 core schema (for checking files against the JSON
    /// Schema). Aliases are expanded, so call it only on a tree that passed the budgets.
    pub fn to_json(&self, id: NodeId) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.nodes[id].kind {
            Kind::Seq(items) => J::Array(items.iter().map(|&i| self.to_json(i)).collect()),
            Kind::Map(entries) => J::Object(
                entries.iter().map(|&(k, v)| (self.text(k).unwrap_or("").to_string(), self.to_json(v))).collect(),
            ),
            Kind::Scalar { .. } => match self.scalar(id) {
                Some(Scalar::Null) | None => J::Null,
                Some(Scalar::Bool(b)) => J::Bool(b),
                Some(Scalar::Int(i)) => J::from(i),
                Some(Scalar::Float(f)) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
                Some(Scalar::Str(s)) => J::String(s.to_string()),
            },
        }
    }

    /// "a mapping", "a list", "a string", ... for messages.
    pub fn describe(&self, id: NodeId) -> String {
        match &self.nodes[id].kind {
            Kind::Map(_) => "a mapping".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Scalar { .. } => match self.scalar(id) {
                Some(Scalar::Str(s)) => format!("the string `{}`", ellipsis(s, 40)),
                Some(Scalar::Null) | None => "nothing".into(),
                Some(other) => format!("{} `{}`", other.describe(), self.text(id).unwrap_or("")),
            },
        }
    }

    /// The span of `len` characters at character `offset` inside the scalar at `id`, when the
    /// source maps one to one (plain and quoted single-line scalars without escapes); otherwise
    /// the first occurrence of `needle` inside the scalar's source; otherwise the whole scalar.
    pub fn sub_span(&self, source: &str, id: NodeId, offset: usize, len: usize, needle: &str) -> Span {
        let node = &self.nodes[id];
        let span = node.span;
        let Kind::Scalar { text, .. } = &node.kind else { return span };
        let line_text = source.lines().nth(span.line.saturating_sub(1) as usize).unwrap_or("");
        let skip = match node.style {
            Style::SingleQuoted | Style::DoubleQuoted => 1,
            _ => 0,
        };
        if span.line == span.end_line && !text.contains('\n') {
            let raw: String = line_text.chars().skip(span.col as usize + skip).take(text.chars().count()).collect();
            if raw == *text {
                let col = span.col + (skip + offset) as u32;
                return Span::on_line(span.line, col, len.max(1) as u32);
            }
        }
        if !needle.is_empty() {
            // The needle may occur several times: take the occurrence with the same rank in
            // the source as the one at `offset` has in the value.
            let byte = text.char_indices().nth(offset).map_or(text.len(), |(b, _)| b);
            let rank = text[..byte].matches(needle).count();
            let mut seen = 0usize;
            for (i, line) in source.lines().enumerate().skip(span.line.saturating_sub(1) as usize) {
                let number = i as u32 + 1;
                if number > span.end_line.max(span.line) {
                    break;
                }
                for (byte, _) in line.match_indices(needle) {
                    let col = line[..byte].chars().count() as u32;
                    if number == span.line && col < span.col {
                        continue;
                    }
                    if seen == rank {
                        return Span::on_line(number, col, needle.chars().count() as u32);
                    }
                    seen += 1;
                }
            }
        }
        span
    }
}

fn ellipsis(s: &str, max: usize) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
pub fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x")
        && digits(hex, 16)
    {
        return i64::from_str_radix(hex, 16).map_or(Scalar::Str(text), Scalar::Int);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && digits(oct, 8)
    {
        return i64::from_str_radix(oct, 8).map_or(Scalar::Str(text), Scalar::Int);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned, 10) {
        // Too large for i64: keep it as a float rather than a string.
        return text
            .parse::<i64>()
            .map(Scalar::Int)
            .unwrap_or_else(|_| text.parse::<f64>().map_or(Scalar::Str(text), Scalar::Float));
    }
    // Core-schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let looks_float = !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && unsigned.as_bytes()[0] != b'e'
        && unsigned.as_bytes()[0] != b'E'
        && bytes.iter().any(u8::is_ascii_digit);
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Scalar::Float(f);
    }
    Scalar::Str(text)
}

/// What went wrong while reading the YAML itself; always one diagnostic. The parser's own
/// wording is replaced where ours says more.
fn scan_error(e: &ScanError, source: &str, limits: &Limits) -> Diagnostic {
    let m = e.marker();
    let span = Span::on_line(m.line() as u32, m.col() as u32, 1);
    let info = e.info();
    if info.contains("recursion limit exceeded") {
        return depth_error(span, limits);
    }
    if info.contains("unknown anchor") {
        // Underline the whole `*name`.
        let line = source.lines().nth(span.line.saturating_sub(1) as usize).unwrap_or("");
        let rest: String = line.chars().skip(span.col as usize).collect();
        let len = rest.chars().take_while(|c| !c.is_whitespace() && !",]}".contains(*c)).count().max(1);
        let name: String = rest.chars().take(len).collect();
        return Diagnostic::error(format!("alias `{name}` refers to no anchor defined before it"))
            .at(Span::on_line(span.line, span.col, len as u32), "unknown alias")
            .help(format!("define `&{}` on an earlier node, or remove the alias", name.trim_start_matches('*')));
    }
    let line = source.lines().nth(span.line.saturating_sub(1) as usize).unwrap_or("");
    let mut d = Diagnostic::error(format!("invalid YAML: {info}")).at(span, "here");
    if let Some((open, bracket)) = unclosed_flow(source, span) {
        return d
            .related(open, format!("this `{bracket}` is never closed"))
            .help(format!("close it with `{}` before this point", if bracket == '[' { ']' } else { '}' }));
    }
    if line.chars().take(span.col as usize + 1).any(|c| c == '\t') && line.trim_start_matches(' ').starts_with('\t') {
        d = d.help("YAML indentation must use spaces, not tabs");
    } else if info.contains("mapping values are not allowed")
        && let Some(help) = super::yaml_help::colon_in_plain_value(line, span.col as usize)
    {
        d = d.help(help);
    } else if info.contains("did not find expected key") || info.contains("mapping values are not allowed") {
        d = d.help("check the indentation of this line against the lines above it");
    } else if info.contains("did not find expected ',' or ']'") || info.contains("did not find expected ',' or '}'") {
        d = d.help("a `[` or `{` above is not closed");
    }
    d
}

/// The innermost `[` or `{` still open at `at`, scanning the source before it (quotes and
/// comments skipped), when the error sits on a later line than that bracket.
fn unclosed_flow(source: &str, at: Span) -> Option<(Span, char)> {
    let mut open: Vec<(Span, char)> = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let number = i as u32 + 1;
        if number > at.line {
            break;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (col, c) in line.chars().enumerate() {
            if number == at.line && col as u32 >= at.col {
                break;
            }
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if prev == ' ' => break,
                (None, '[' | '{') => open.push((Span::on_line(number, col as u32, 1), c)),
                (None, ']' | '}') => {
                    open.pop();
                }
                _ => {}
            }
            prev = c;
        }
    }
    open.pop().filter(|(s, _)| s.line < at.line)
}

fn depth_error(span: Span, limits: &Limits) -> Diagnostic {
    Diagnostic::error(format!("YAML nesting is deeper than {} levels", limits.max_depth))
        .at(span, "too deep")
        .note("a pipeline needs only a few levels; this limit protects the parser")
}

enum Pending {
    /// A mapping waits for its next key (or a sequence for its next item).
    Nothing,
    /// A mapping got a key and waits for its value.
    Key(NodeId),
    /// A mapping got a duplicate or complex key: its value is dropped.
    Discard,
}

struct Open {
    id: NodeId,
    anchor: usize,
    pending: Pending,
    /// Keys of a large mapping, to reject duplicates in O(1); small mappings (most of them)
    /// are scanned instead, which is cheaper than hashing and allocating.
    keys: Option<HashMap<String, NodeId>>,
    /// Expanded size (nodes after alias expansion) of the children so far.
    size: u64,
}

/// Parses `source` into a tree. Problems that leave the tree usable (duplicate keys, complex
/// keys) come back beside it; the error is the one problem that stopped reading.
pub fn parse(source: &str, limits: &Limits) -> Result<(Doc, Vec<Diagnostic>), Diagnostic> {
    let mut parser = Parser::new_from_str(source);
    let mut nodes: Vec<Node> = Vec::new();
    let mut sizes: Vec<u64> = Vec::new();
    let mut anchors: HashMap<usize, NodeId> = HashMap::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<NodeId> = None;
    let mut documents = 0usize;
    let mut problems = Vec::new();

    while let Some(next) = parser.next_event() {
        let (event, espan) = next.map_err(|e| scan_error(&e, source, limits))?;
        let span = Span::new(
            espan.start.line() as u32,
            espan.start.col() as u32,
            espan.end.line() as u32,
            espan.end.col() as u32,
        );
        // A new node (or a shared one, for an alias) to attach to the open parent.
        let (id, size) = match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error("a pipeline file holds one YAML document")
                        .at(span, "a second document starts here")
                        .help("split the documents into separate files"));
                }
                continue;
            }
            Event::Alias(anchor) => match anchors.get(&anchor) {
                Some(&target) => (target, sizes[target]),
                None => {
                    return Err(Diagnostic::error(
                        "alias refers to an anchor that is not defined before it, or to itself",
                    )
                    .at(span, "unknown or recursive alias"));
                }
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let (plain, style) = match style {
                    ScalarStyle::Plain => (true, Style::Plain),
                    ScalarStyle::SingleQuoted => (false, Style::SingleQuoted),
                    ScalarStyle::DoubleQuoted => (false, Style::DoubleQuoted),
                    _ => (false, Style::Block),
                };
                let id = nodes.len();
                nodes.push(Node { span, kind: Kind::Scalar { text: text.into_owned(), plain }, style });
                sizes.push(1);
                if anchor > 0 {
                    anchors.insert(anchor, id);
                }
                (id, 1)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= limits.max_depth {
                    return Err(depth_error(span, limits));
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    Kind::Seq(Vec::new())
                } else {
                    Kind::Map(Vec::new())
                };
                let id = nodes.len();
                nodes.push(Node { span, kind, style: Style::Collection });
                sizes.push(1);
                stack.push(Open { id, anchor, pending: Pending::Nothing, keys: None, size: 1 });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = stack.pop() else { continue };
                sizes[open.id] = open.size;
                nodes[open.id].span.end_line = span.end_line;
                nodes[open.id].span.end_col = span.end_col;
                if open.anchor > 0 {
                    anchors.insert(open.anchor, open.id);
                }
                (open.id, open.size)
            }
        };

        let Some(parent) = stack.last_mut() else {
            root = Some(id);
            continue;
        };
        parent.size = parent.size.saturating_add(size);
        if parent.size > limits.max_yaml_nodes {
            return Err(Diagnostic::error(format!(
                "YAML expands to more than {} nodes (aliases included)",
                limits.max_yaml_nodes
            ))
            .at(span, "the budget runs out here")
            .note("aliases that nest other aliases grow exponentially (a \"billion laughs\" file)"));
        }
        let pid = parent.id;
        if let Kind::Seq(items) = &mut nodes[pid].kind {
            items.push(id);
            continue;
        }
        match std::mem::replace(&mut parent.pending, Pending::Nothing) {
            Pending::Key(key) => {
                if let Kind::Map(entries) = &mut nodes[pid].kind {
                    entries.push((key, id));
                }
            }
            Pending::Discard => {}
            Pending::Nothing => {
                let (Kind::Scalar { text, .. }, Kind::Map(entries)) = (&nodes[id].kind, &nodes[pid].kind) else {
                    problems
                        .push(Diagnostic::error("mapping keys must be strings").at(nodes[id].span, "a complex key"));
                    parent.pending = Pending::Discard;
                    continue;
                };
                // Small mappings (nearly all) are scanned; large ones get a hash index.
                const SCAN: usize = 16;
                let first = match &parent.keys {
                    Some(keys) => keys.get(text).copied(),
                    None => entries
                        .iter()
                        .map(|&(k, _)| k)
                        .find(|&k| matches!(&nodes[k].kind, Kind::Scalar { text: t, .. } if t == text)),
                };
                if let Some(first) = first {
                    problems.push(
                        Diagnostic::error(format!("duplicate key `{text}`"))
                            .at(nodes[id].span, "defined again here")
                            .related(nodes[first].span, "first defined here")
                            .help("a key may appear once in a mapping; remove or rename one"),
                    );
                    parent.pending = Pending::Discard;
                    continue;
                }
                if let Some(keys) = &mut parent.keys {
                    keys.insert(text.clone(), id);
                } else if entries.len() >= SCAN {
                    let mut keys: HashMap<String, NodeId> = entries
                        .iter()
                        .filter_map(|&(k, _)| match &nodes[k].kind {
                            Kind::Scalar { text, .. } => Some((text.clone(), k)),
                            _ => None,
                        })
                        .collect();
                    keys.insert(text.clone(), id);
                    parent.keys = Some(keys);
                }
                parent.pending = Pending::Key(id);
            }
        }
    }
    match root {
        Some(root) => Ok((Doc { nodes, root }, problems)),
        None => Err(Diagnostic::error("the file is empty")
            .at(Span::on_line(1, 0, 1), "expected a pipeline: a mapping with `name` and `steps`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_follow_the_yaml_1_2_core_schema() {
        let cases = [
            ("", Scalar::Null),
            ("~", Scalar::Null),
            ("true", Scalar::Bool(true)),
            ("False", Scalar::Bool(false)),
            ("on", Scalar::Str("on")),
            ("yes", Scalar::Str("yes")),
            ("42", Scalar::Int(42)),
            ("-7", Scalar::Int(-7)),
            ("0x1f", Scalar::Int(31)),
            ("0o17", Scalar::Int(15)),
            ("0.5", Scalar::Float(0.5)),
            ("1e-3", Scalar::Float(0.001)),
            (".inf", Scalar::Float(f64::INFINITY)),
            ("1.2.3", Scalar::Str("1.2.3")),
            ("e5", Scalar::Str("e5")),
            ("2Gi", Scalar::Str("2Gi")),
            ("90s", Scalar::Str("90s")),
        ];
        for (text, expected) in cases {
            assert_eq!(resolve_plain(text), expected, "{text:?}");
        }
    }

    #[test]
    fn tree_keeps_positions_and_reports_duplicates_without_stopping() {
        let text = "a: 1\nb:\n  - x\n  - 'y'\na: 2\nc: {d: *no}\n";
        let err = parse(text, &Limits::default()).unwrap_err();
        assert!(err.message.contains("alias"), "{err:?}");
        let (doc, problems) = parse("a: 1\nb:\n  - x\n  - 'y'\na: 2\n", &Limits::default()).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].message, "duplicate key `a`");
        assert_eq!(problems[0].span, Some(Span::new(5, 0, 5, 1)));
        let Kind::Map(entries) = &doc.node(doc.root).kind else { panic!("root is a map") };
        assert_eq!(entries.len(), 2, "the duplicate's value is dropped");
        let Kind::Seq(items) = &doc.node(entries[1].1).kind else { panic!("b is a list") };
        assert_eq!(doc.node(items[1]).span.line, 4);
        assert_eq!(doc.node(items[1]).style, Style::SingleQuoted);
    }

    #[test]
    fn budgets_stop_bombs_and_deep_nesting() {
        let limits = Limits::default();
        let deep = "[".repeat(100_000);
        assert!(parse(&deep, &limits).unwrap_err().message.contains("nesting is deeper than 64"));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in
            ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert!(parse(&bomb, &limits).unwrap_err().message.contains("expands to more than"));
        assert!(parse("a: 1\n---\nb: 2\n", &limits).unwrap_err().message.contains("one YAML document"));
    }
}
