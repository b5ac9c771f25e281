//! Diagnostics: structured problems with source positions, rendered in one place in the
//! style of rustc (`file:line:column`, the source line, a caret, what was expected, a help).
//!
//! Everything that finds a problem in a pipeline file builds a [`Diagnostic`]; nothing else
//! formats error text for users. This module does no I/O: rendering returns a `String`.

use std::fmt::Write as _;

/// A region of the source: 1-based line, 0-based column in characters; `end` is exclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub end_line: u32,
    pub end_col: u32,
}

impl Span {
    pub fn new(line: u32, col: u32, end_line: u32, end_col: u32) -> Self {
        Span { line, col, end_line, end_col }
    }

    /// A span of `len` characters on one line.
    pub fn on_line(line: u32, col: u32, len: u32) -> Self {
        Span { line, col, end_line: line, end_col: col + len }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A secondary location, e.g. where a duplicate was first defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub span: Span,
    pub label: String,
}

/// One problem found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    /// Text beside the caret: usually what was expected.
    pub label: String,
    pub related: Vec<Related>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: String::new(),
            related: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push(Related { span, label: label.into() });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }
}

/// `help: did you mean ...` for the candidate closest to `got`, if one is close enough.
pub fn did_you_mean<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(got, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `got` by edit distance, when the distance is small for its length.
pub fn closest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let got_lower = got.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c.eq_ignore_ascii_case(got) {
            return Some(c);
        }
        // Optimal string alignment: a swap of two letters (`trian`) counts as one edit.
        let distance = strsim::osa_distance(&got_lower, &c.to_ascii_lowercase());
        let allowed = (c.chars().count().max(got.chars().count()) / 3).max(1);
        if distance > allowed {
            continue;
        }
        let score = strsim::jaro_winkler(&got_lower, &c.to_ascii_lowercase()) - distance as f64;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Renders diagnostics against their source text. `color` adds ANSI colours.
pub struct Renderer<'a> {
    pub path: &'a str,
    pub source: &'a str,
    pub color: bool,
}

/// How many diagnostics of one file are shown before the rest are only counted.
pub const MAX_SHOWN: usize = 50;

impl Renderer<'_> {
    /// Renders every diagnostic (up to [`MAX_SHOWN`]), separated by blank lines, then a
    /// summary line saying the file is invalid.
    pub fn render_all(&self, diags: &[Diagnostic]) -> String {
        self.render_all_as(diags, &format!("`{}` is invalid", self.path))
    }

    /// Like [`Self::render_all`] with the summary's subject given: "parameters for `p.yaml` are invalid".
    pub fn render_all_as(&self, diags: &[Diagnostic], subject: &str) -> String {
        let mut out = String::new();
        for d in diags.iter().take(MAX_SHOWN) {
            out.push_str(&self.render(d));
            out.push('\n');
        }
        let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
        if diags.len() > MAX_SHOWN {
            let _ = writeln!(out, "note: {} more not shown", diags.len() - MAX_SHOWN);
        }
        if errors > 0 {
            let plural = if errors == 1 { "" } else { "s" };
            let _ = writeln!(out, "{}: {subject}: {errors} error{plural}", self.paint("error", "1;31"));
        }
        out
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// Renders one diagnostic.
    pub fn render(&self, d: &Diagnostic) -> String {
        let (word, code) = match d.severity {
            Severity::Error => ("error", "1;31"),
            Severity::Warning => ("warning", "1;33"),
        };
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", self.paint(word, code), self.paint(&d.message, "1"));
        let lines = d.span.iter().chain(d.related.iter().map(|r| &r.span)).map(|s| s.line).max().unwrap_or(0);
        let width = lines.max(1).to_string().len();
        let pad = " ".repeat(width);
        match d.span {
            Some(span) => {
                let _ =
                    writeln!(out, "{pad}{} {}:{}:{}", self.paint("-->", "1;34"), self.path, span.line, span.col + 1);
                self.snippet(&mut out, &pad, span, &d.label, '^', code);
            }
            None => {
                let _ = writeln!(out, "{pad}{} {}", self.paint("-->", "1;34"), self.path);
            }
        }
        for r in &d.related {
            let _ =
                writeln!(out, "{pad}{} {}:{}:{}", self.paint(":::", "1;34"), self.path, r.span.line, r.span.col + 1);
            self.snippet(&mut out, &pad, r.span, &r.label, '-', "1;34");
        }
        let bar = self.paint("|", "1;34");
        if !d.notes.is_empty() || d.help.is_some() {
            let _ = writeln!(out, "{pad} {bar}");
        }
        for n in &d.notes {
            let _ = writeln!(out, "{pad} = {}: {n}", self.paint("note", "1"));
        }
        if let Some(h) = &d.help {
            let _ = writeln!(out, "{pad} = {}: {h}", self.paint("help", "1"));
        }
        out
    }

    fn snippet(&self, out: &mut String, pad: &str, span: Span, label: &str, mark: char, code: &str) {
        let bar = self.paint("|", "1;34");
        let text = self.source.lines().nth(span.line.saturating_sub(1) as usize).unwrap_or("");
        // Tabs would misplace the caret; show them as one space each.
        let mut text: String = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
        let chars = text.chars().count() as u32;
        let mut start = span.col.min(chars);
        let mut end = if span.end_line == span.line { span.end_col.min(chars) } else { chars };
        // A very long line is shown as a window around the caret.
        const WINDOW: u32 = 100;
        if chars > WINDOW + 20 {
            let from = start.saturating_sub(WINDOW / 2);
            let to = (from + WINDOW).min(chars);
            let cut: String = text.chars().skip(from as usize).take((to - from) as usize).collect();
            let prefix = if from > 0 { "..." } else { "" };
            let suffix = if to < chars { "..." } else { "" };
            text = format!("{prefix}{cut}{suffix}");
            let shift = prefix.len() as u32;
            start = start - from + shift;
            end = end.clamp(from, to) - from + shift;
        }
        let len = end.saturating_sub(start).max(1);
        let _ = writeln!(out, "{pad} {bar}");
        let number = format!("{:>w$}", span.line, w = pad.len());
        let _ = writeln!(out, "{} {bar} {}", self.paint(&number, "1;34"), text.trim_end());
        let marks: String = std::iter::repeat_n(mark, len as usize).collect();
        let underline = " ".repeat(start as usize) + &self.paint(&marks, code);
        if label.is_empty() {
            let _ = writeln!(out, "{pad} {bar} {underline}");
        } else {
            let _ = writeln!(out, "{pad} {bar} {underline} {}", self.paint(label, code));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let source = "name: x\nsteps:\n  a:\n    neds: [b]\n";
        let d = Diagnostic::error("unknown field `neds` in step `a`")
            .at(Span::on_line(4, 4, 4), "not a step field")
            .help("did you mean `needs`?");
        let r = Renderer { path: "p.yaml", source, color: false };
        assert_eq!(
            r.render(&d),
            "error: unknown field `neds` in step `a`\n \
             --> p.yaml:4:5\n  \
             |\n\
             4 |     neds: [b]\n  \
             |     ^^^^ not a step field\n  \
             |\n  \
             = help: did you mean `needs`?\n"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let fields = ["needs", "stage", "run", "command", "outputs"];
        assert_eq!(closest("neds", fields), Some("needs"));
        assert_eq!(closest("comand", fields), Some("command"));
        assert_eq!(closest("Needs", fields), Some("needs"));
        assert_eq!(closest("zzzzzz", fields), None);
        assert_eq!(closest("x", fields), None);
    }
}
