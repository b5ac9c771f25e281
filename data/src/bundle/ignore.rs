//! `.weirignore`: which paths of a pipeline folder stay out of its bundle. A hand-written
//! subset of gitignore, matched against `/`-separated paths relative to the bundle root. It
//! owns parsing and matching only and does no I/O beyond reading the one file in [`Ignore::load`].
//!
//! Rules, as in gitignore: `#` starts a comment line and blank lines are skipped; `\` escapes
//! the next character (`\#`, `\!`, `\ `); unescaped trailing spaces are dropped; `!` re-includes
//! what an earlier pattern excluded; a trailing `/` matches directories only; a pattern with a
//! `/` at its start or middle is anchored at the bundle root, one without matches at any depth;
//! `*` and `?` never match `/`; `[abc]`, `[a-z]` and `[!a]` (or `[^a]`) are classes; a `**`
//! segment matches any number of directories (`**/x`, `a/**/b`, and `a/**` for everything
//! inside `a`). The last matching pattern wins. As in git, a path inside an excluded directory
//! stays excluded whatever later patterns say, because the walk never enters the directory.
//!
//! [`DEFAULTS`] come before the file's own lines, so `!target/` in `.weirignore` brings a
//! `target` folder back. Only the `.weirignore` at the bundle root is read; it is itself bundled.

use std::path::Path;

use super::Error;

/// Always ignored unless re-included with `!`: version control, weir's own state, Rust build
/// output, Python bytecode and macOS folder metadata.
pub const DEFAULTS: &[&str] = &[".git/", ".weir/", "target/", "__pycache__/", "*.pyc", ".DS_Store"];

/// The compiled patterns of one bundle root: [`DEFAULTS`] followed by `.weirignore`.
#[derive(Clone, Debug)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    negate: bool,
    dir_only: bool,
    segs: Vec<Seg>,
}

#[derive(Clone, Debug)]
enum Seg {
    /// A whole `**` segment: zero or more path segments.
    Any,
    Glob(Vec<Tok>),
}

#[derive(Clone, Debug)]
enum Tok {
    Lit(char),
    One,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Ignore {
    /// The defaults followed by the patterns in `text` (the contents of a `.weirignore`).
    pub fn new(text: &str) -> Self {
        let rules = DEFAULTS.iter().copied().chain(text.lines()).filter_map(Rule::parse).collect();
        Self { rules }
    }

    /// Reads `dir/.weirignore` if there is one; the defaults alone otherwise.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(".weirignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self::new(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new("")),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// Whether the patterns exclude this very path, ignoring its parent directories.
    pub fn matched(&self, path: &str, is_dir: bool) -> bool {
        let segs: Vec<Vec<char>> = path.split('/').map(|s| s.chars().collect()).collect();
        let mut ignored = false;
        for rule in &self.rules {
            if (!rule.dir_only || is_dir) && rule.matches(&segs) {
                ignored = !rule.negate;
            }
        }
        ignored
    }

    /// Whether `path` stays out of the bundle: it, or a directory above it, is excluded.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let parents = path.match_indices('/').map(|(i, _)| &path[..i]);
        parents.into_iter().any(|p| self.matched(p, true)) || self.matched(path, is_dir)
    }
}

impl Rule {
    fn parse(line: &str) -> Option<Rule> {
        let mut line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            return None;
        }
        while line.ends_with(' ') && !line.ends_with("\\ ") {
            line = &line[..line.len() - 1];
        }
        let (negate, line) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let trimmed = line.trim_end_matches('/');
        let dir_only = trimmed.len() != line.len();
        if trimmed.is_empty() {
            return None;
        }
        let anchored = trimmed.contains('/');
        let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
        let mut segs: Vec<Seg> = Vec::new();
        if !anchored {
            segs.push(Seg::Any);
        }
        segs.extend(body.split('/').map(|s| if s == "**" { Seg::Any } else { Seg::Glob(tokens(s)) }));
        Some(Rule { negate, dir_only, segs })
    }

    /// Segment-wise match, `**` by dynamic programming so no pattern can take exponential time.
    /// `can[j]` means "the pattern from segment `i` on matches the path from segment `j` on".
    fn matches(&self, path: &[Vec<char>]) -> bool {
        let (n, m) = (self.segs.len(), path.len());
        let mut can = vec![false; m + 1];
        can[m] = true;
        for i in (0..n).rev() {
            let mut next = vec![false; m + 1];
            for j in (0..=m).rev() {
                next[j] = match &self.segs[i] {
                    // A trailing `**` needs something inside: `out/**` is not `out` itself.
                    Seg::Any if i == n - 1 => j < m,
                    Seg::Any => can[j] || (j < m && next[j + 1]),
                    Seg::Glob(toks) => j < m && can[j + 1] && glob(toks, &path[j]),
                };
            }
            can = next;
        }
        can[0]
    }
}

fn tokens(seg: &str) -> Vec<Tok> {
    let chars: Vec<char> = seg.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\\' if i < chars.len() => {
                toks.push(Tok::Lit(chars[i]));
                i += 1;
            }
            '*' if matches!(toks.last(), Some(Tok::Star)) => {}
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '[' => match class(&chars[i..]) {
                Some((tok, used)) => {
                    toks.push(tok);
                    i += used;
                }
                None => toks.push(Tok::Lit('[')),
            },
            c => toks.push(Tok::Lit(c)),
        }
    }
    toks
}

/// Parses a class after its `[`; returns it and the characters used, `]` included, or `None`
/// when it never closes (the `[` is then literal).
fn class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let start = i;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && i > start {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

impl Tok {
    fn accepts(&self, c: char) -> bool {
        match self {
            Tok::Lit(l) => *l == c,
            Tok::One => true,
            Tok::Star => false,
            Tok::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        }
    }
}

/// One segment against one glob: `*` with a single backtrack point, linear in practice.
fn glob(toks: &[Tok], text: &[char]) -> bool {
    let (mut t, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        if let Some(tok) = toks.get(t) {
            if matches!(tok, Tok::Star) {
                star = Some((t, s));
                t += 1;
                continue;
            }
            if tok.accepts(text[s]) {
                t += 1;
                s += 1;
                continue;
            }
        }
        match star {
            Some((st, ss)) => {
                star = Some((st, ss + 1));
                t = st + 1;
                s = ss + 1;
            }
            None => return false,
        }
    }
    toks[t..].iter().all(|k| matches!(k, Tok::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(path, is_dir, ignored)` rows checked against the defaults plus `patterns`.
    fn check(patterns: &str, rows: &[(&str, bool, bool)]) {
        let ignore = Ignore::new(patterns);
        for &(path, is_dir, expect) in rows {
            let got = ignore.is_ignored(path, is_dir);
            assert_eq!(got, expect, "patterns {patterns:?}: {path} (dir: {is_dir}) ignored = {got}");
        }
    }

    #[test]
    fn defaults() {
        check(
            "",
            &[
                (".git", true, true),
                (".git/config", false, true),
                ("sub/.git/HEAD", false, true),
                (".weir/db", false, true),
                ("target", true, true),
                ("target", false, false),
                ("rust/target/debug/x", false, true),
                ("__pycache__/m.cpython-312.pyc", false, true),
                ("a/b/c.pyc", false, true),
                ("c.py", false, false),
                (".DS_Store", false, true),
                ("pipeline.yaml", false, false),
                ("steps/train.py", false, false),
                (".weirignore", false, false),
            ],
        );
    }

    #[test]
    fn defaults_can_be_re_included() {
        check(
            "!target/\n!keep.pyc",
            &[("target", true, false), ("target/x", false, false), ("keep.pyc", false, false)],
        );
    }

    #[test]
    fn unanchored_and_anchored() {
        check("*.csv", &[("data.csv", false, true), ("a/b/data.csv", false, true), ("data.csvx", false, false)]);
        check("/data", &[("data", false, true), ("data/x", false, true), ("a/data", false, false)]);
        check("data", &[("data", true, true), ("a/data", false, true), ("a/data/x", false, true)]);
        check("docs/*.md", &[("docs/a.md", false, true), ("docs/x/a.md", false, false), ("a/docs/a.md", false, false)]);
        check("/a*b", &[("axb", false, true), ("ab", false, true), ("ax/b", false, false)]);
    }

    #[test]
    fn directories_only() {
        check(
            "data/",
            &[("data", true, true), ("data", false, false), ("a/data/x", false, true), ("a/data", false, false)],
        );
    }

    #[test]
    fn double_star() {
        check("**/logs", &[("logs", true, true), ("a/b/logs", true, true), ("a/logs/x", false, true)]);
        check(
            "a/**/b",
            &[("a/b", false, true), ("a/x/y/b", false, true), ("c/a/b", false, false), ("a/x/c", false, false)],
        );
        check("out/**", &[("out", true, false), ("out/x", false, true), ("out/a/b", false, true)]);
        check("a/**/*.tmp", &[("a/x.tmp", false, true), ("a/b/c/x.tmp", false, true), ("b/x.tmp", false, false)]);
    }

    #[test]
    fn wildcards_and_classes() {
        check("file?.txt", &[("file1.txt", false, true), ("file12.txt", false, false), ("file.txt", false, false)]);
        check("[abc].py", &[("a.py", false, true), ("d.py", false, false)]);
        check("[!a].py", &[("b.py", false, true), ("a.py", false, false)]);
        check("[a-c]x", &[("bx", false, true), ("dx", false, false)]);
        check("x[", &[("x[", false, true), ("x", false, false)]);
        check("*.tar.*", &[("a.tar.gz", false, true), ("a.tgz", false, false)]);
        check("a*b*c", &[("abc", false, true), ("axxbyyc", false, true), ("axxbyy", false, false)]);
    }

    #[test]
    fn comments_blanks_escapes_spaces() {
        check("# *.py\n\n\\#hash\nfoo   \n", &[("x.py", false, false), ("#hash", false, true), ("foo", false, true)]);
        check("\\!bang", &[("!bang", false, true)]);
        check("!", &[("x", false, false)]);
    }

    #[test]
    fn last_match_wins_and_parents_stay_excluded() {
        check("*.log\n!keep.log", &[("x.log", false, true), ("keep.log", false, false)]);
        check("!keep.log\n*.log", &[("keep.log", false, true)]);
        check("build/\n!build/keep.txt", &[("build/keep.txt", false, true)]);
        check("build/*\n!build/keep.txt", &[("build/keep.txt", false, false), ("build/x", false, true)]);
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let pattern = "**/".repeat(50) + "x";
        let path = vec!["a"; 200].join("/") + "/y";
        check(&pattern, &[(&path, false, false)]);
    }
}
