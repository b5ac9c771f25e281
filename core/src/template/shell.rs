//! Where each `{{ }}` of a `run:` script stands, as the shell will read the script, so that
//! it renders as a reference to the environment variable that holds its value, never as the
//! value: `"${VAR}"` as (part of) a word or in a comment, `${VAR}` inside `"..."`. A place
//! where a reference cannot keep the value out of code is a [`Refusal`], which validation
//! reports: single quotes and heredoc bodies (nothing expands, or the text is another
//! program's input), arithmetic (`$(( ))`, `(( ))`, `let`, `[[ ]]`, array subscripts, `${ }`),
//! backticks, a word that a program runs as code (`sh -c`, `python -c`, `eval`, ...) and a
//! word that names a variable (`read`, `unset`, `printf -v`). Pure: no I/O, and no value ever
//! reaches this module, so nothing here can quote one wrongly.

use super::commands::classify;
pub use super::refusal::{Lang, Refusal};

/// Where an accepted reference stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A word or part of one: rendered `"${VAR}"`, one argument, never split or globbed.
    Word,
    /// Inside `"..."`: rendered `${VAR}`.
    Quoted,
    /// A comment: rendered `"${VAR}"`, which the shell never reads.
    Comment,
}

/// A piece of a script: text, or a reference (which the scanner treats as an opaque word part).
pub(super) enum Piece<'a> {
    Text(&'a str),
    Ref,
}

/// Where each reference of `pieces` stands, in order.
pub(super) fn places<'a>(pieces: impl IntoIterator<Item = Piece<'a>>) -> Vec<Result<Place, Refusal>> {
    let mut s = Scanner::default();
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => text.chars().for_each(|c| s.step(c)),
            Piece::Ref => {
                out.push(s.place());
                s.reference();
            }
        }
    }
    out
}

/// Stands for a reference inside the words the scanner keeps.
const MARK: char = '\0';

#[derive(Debug, Default)]
struct SimpleCmd {
    words: Vec<String>,
    cur: String,
    in_word: bool,
    /// The current word so far is an identifier (an array subscript may follow).
    plain: bool,
    /// The words of an array literal `a=( ... )`, where `[k]=v` has an arithmetic subscript.
    array: bool,
    /// Inside `[[ ... ]]` (after `if`, `!`, ... too), whose `&&` and `||` do not end the command.
    dbl_bracket: bool,
}

impl SimpleCmd {
    fn start_word(&mut self) {
        if !self.in_word {
            self.in_word = true;
            self.plain = true;
            self.cur.clear();
        }
    }
    fn push(&mut self, c: char) {
        self.start_word();
        if !(c.is_ascii_alphanumeric() || c == '_') {
            self.plain = false;
        }
        self.cur.push(c);
    }
    fn end_word(&mut self) {
        if self.in_word {
            self.in_word = false;
            let w = std::mem::take(&mut self.cur);
            if w == "[[" {
                self.dbl_bracket = true;
            } else if w == "]]" {
                self.dbl_bracket = false;
            }
            self.words.push(w);
        }
    }
    fn end_command(&mut self) {
        self.end_word();
        if !self.dbl_bracket {
            self.words.clear();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    End,
    Paren,
    Backtick,
}

#[derive(Debug)]
enum Frame {
    /// A command list: the script, `$( )`, `( )` or a backtick substitution.
    Cmd {
        cmd: SimpleCmd,
        close: Close,
        depth: u32,
        fresh: bool,
    },
    /// `'...'`, or `$'...'` (`ansi`), where `\` escapes the next character.
    Single {
        ansi: bool,
    },
    Double,
    /// `$(( ))` or `(( ))` (closed by `))`), or `$[ ]` (closed by `]`).
    Arith {
        depth: u32,
        what: &'static str,
    },
    /// `${ ... }`.
    Brace {
        depth: u32,
    },
    /// `name[ ... ]`.
    Subscript {
        depth: u32,
    },
}

#[derive(Debug)]
struct Heredoc {
    delim: String,
    strip_tabs: bool,
    quoted: bool,
}

#[derive(Debug, Default)]
struct DelimReader {
    strip_tabs: bool,
    text: String,
    quoted: bool,
    started: bool,
    quote: Option<char>,
    escaped: bool,
    fresh: bool,
}

#[derive(Debug)]
struct Scanner {
    stack: Vec<Frame>,
    escaped: bool,
    dollar: bool,
    comment: bool,
    lt: bool,
    swallow_paren: bool,
    delim: Option<DelimReader>,
    pending: Vec<Heredoc>,
    /// Reading heredoc bodies: the current line.
    body: Option<String>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            stack: vec![Frame::Cmd { cmd: SimpleCmd::default(), close: Close::End, depth: 0, fresh: false }],
            escaped: false,
            dollar: false,
            comment: false,
            lt: false,
            swallow_paren: false,
            delim: None,
            pending: Vec::new(),
            body: None,
        }
    }
}

impl Scanner {
    fn cmd_mut(&mut self) -> Option<&mut SimpleCmd> {
        self.stack.iter_mut().rev().find_map(|f| match f {
            Frame::Cmd { cmd, .. } => Some(cmd),
            _ => None,
        })
    }

    fn word_char(&mut self, c: char) {
        if let Some(cmd) = self.cmd_mut() {
            cmd.push(c);
        }
    }

    fn place(&self) -> Result<Place, Refusal> {
        if self.body.is_some() {
            return Err(Refusal::Heredoc { quoted: self.pending.first().is_some_and(|h| h.quoted) });
        }
        if self.delim.is_some() {
            return Err(Refusal::Heredoc { quoted: true });
        }
        if self.comment {
            return Ok(Place::Comment);
        }
        if self.escaped || self.dollar {
            return Err(Refusal::Escaped);
        }
        for frame in &self.stack {
            match frame {
                Frame::Single { .. } => return Err(Refusal::SingleQuotes),
                Frame::Arith { what, .. } => return Err(Refusal::Arithmetic(what)),
                Frame::Brace { .. } => return Err(Refusal::Expansion),
                Frame::Subscript { .. } => return Err(Refusal::Arithmetic("an array subscript")),
                Frame::Cmd { close: Close::Backtick, .. } => return Err(Refusal::Backticks),
                Frame::Cmd { cmd, .. } => {
                    if let Some(r) = classify(&cmd.words, &cmd.cur, cmd.dbl_bracket) {
                        return Err(r);
                    }
                }
                Frame::Double => {}
            }
        }
        match self.stack.last() {
            Some(Frame::Double) => Ok(Place::Quoted),
            _ => Ok(Place::Word),
        }
    }

    /// A reference is an opaque part of the word it stands in.
    fn reference(&mut self) {
        self.dollar = false;
        self.escaped = false;
        self.lt = false;
        if let Some(line) = &mut self.body {
            line.push(MARK);
        } else if let Some(d) = &mut self.delim {
            d.started = true;
            d.text.push(MARK);
        } else if !self.comment {
            self.word_char(MARK);
        }
    }

    fn step(&mut self, c: char) {
        if let Some(line) = &mut self.body {
            if c == '\n' {
                let strip = self.pending.first().is_some_and(|h| h.strip_tabs);
                let text = if strip { line.trim_start_matches('\t') } else { line.as_str() };
                if self.pending.first().is_some_and(|h| h.delim == text) {
                    self.pending.remove(0);
                }
                line.clear();
                if self.pending.is_empty() {
                    self.body = None;
                }
            } else {
                line.push(c);
            }
            return;
        }
        if let Some(d) = &mut self.delim {
            let fresh = std::mem::take(&mut d.fresh);
            if !d.started {
                if fresh && c == '<' {
                    self.delim = None; // `<<<`: a here-string, one word
                    return;
                }
                if fresh && c == '-' {
                    d.strip_tabs = true;
                    return;
                }
                if c == ' ' || c == '\t' {
                    return;
                }
                d.started = true;
            }
            if d.escaped {
                d.escaped = false;
                d.text.push(c);
                return;
            }
            if let Some(q) = d.quote {
                if c == q {
                    d.quote = None;
                } else {
                    d.text.push(c);
                }
                return;
            }
            match c {
                '\\' => {
                    d.escaped = true;
                    d.quoted = true;
                    return;
                }
                '\'' | '"' => {
                    d.quote = Some(c);
                    d.quoted = true;
                    return;
                }
                c if c.is_whitespace() || ";&|<>()".contains(c) => {
                    let d = self.delim.take().unwrap_or_default();
                    self.pending.push(Heredoc { delim: d.text, strip_tabs: d.strip_tabs, quoted: d.quoted });
                    // and `c` goes on below
                }
                _ => {
                    d.text.push(c);
                    return;
                }
            }
        }
        if self.comment {
            if c != '\n' {
                return;
            }
            self.comment = false;
        }
        if std::mem::take(&mut self.swallow_paren) && c == ')' {
            return;
        }
        if std::mem::take(&mut self.escaped) {
            if c != '\n' {
                self.word_char(c);
            }
            return;
        }
        let was_dollar = std::mem::take(&mut self.dollar);
        let was_lt = std::mem::take(&mut self.lt);
        let Some(top) = self.stack.last_mut() else { return };
        match top {
            Frame::Single { ansi } => {
                if c == '\'' {
                    self.stack.pop();
                } else {
                    if *ansi && c == '\\' {
                        self.escaped = true;
                    }
                    self.word_char(c);
                }
            }
            Frame::Double => match c {
                '"' => {
                    self.stack.pop();
                }
                _ => self.expanding(c, was_dollar),
            },
            Frame::Arith { depth, what } => match c {
                '(' if !was_dollar => *depth += 1,
                ')' if *depth > 0 => *depth -= 1,
                ')' if *what != "$[ ]" => {
                    self.stack.pop();
                    self.swallow_paren = true;
                }
                '[' if *what == "$[ ]" => *depth += 1,
                ']' if *what == "$[ ]" && *depth > 0 => *depth -= 1,
                ']' if *what == "$[ ]" => {
                    self.stack.pop();
                }
                _ => self.expanding(c, was_dollar),
            },
            Frame::Brace { depth } => match c {
                '{' if !was_dollar => *depth += 1,
                '}' if *depth > 0 => *depth -= 1,
                '}' => {
                    self.stack.pop();
                }
                _ => self.expanding(c, was_dollar),
            },
            Frame::Subscript { depth } => match c {
                '[' => *depth += 1,
                ']' if *depth > 0 => *depth -= 1,
                ']' => {
                    self.stack.pop();
                    self.word_char(c);
                }
                _ => self.expanding(c, was_dollar),
            },
            Frame::Cmd { cmd, close, depth, fresh } => {
                let was_fresh = std::mem::take(fresh);
                let close = *close;
                if was_fresh && c == '(' {
                    let what = if was_dollar_paren(&self.stack) { "$(( ))" } else { "(( ))" };
                    if let Some(f) = self.stack.last_mut() {
                        *f = Frame::Arith { depth: 0, what };
                    }
                    return;
                }
                match c {
                    '\\' => {
                        cmd.start_word();
                        cmd.plain = false;
                        self.escaped = true;
                    }
                    '$' if was_dollar => cmd.push('$'),
                    '$' => {
                        cmd.start_word();
                        cmd.plain = false;
                        self.dollar = true;
                    }
                    '(' if was_dollar => self.stack.push(Frame::Cmd {
                        cmd: SimpleCmd::default(),
                        close: Close::Paren,
                        depth: 0,
                        fresh: true,
                    }),
                    '{' if was_dollar => self.stack.push(Frame::Brace { depth: 0 }),
                    '[' if was_dollar => self.stack.push(Frame::Arith { depth: 0, what: "$[ ]" }),
                    '\'' => {
                        cmd.push('\'');
                        cmd.plain = false;
                        self.stack.push(Frame::Single { ansi: was_dollar });
                    }
                    '"' => {
                        cmd.push('"');
                        cmd.plain = false;
                        self.stack.push(Frame::Double);
                    }
                    '`' if close == Close::Backtick => {
                        self.stack.pop();
                        self.word_char('`');
                    }
                    '`' => {
                        cmd.push('`');
                        self.stack.push(Frame::Cmd {
                            cmd: SimpleCmd::default(),
                            close: Close::Backtick,
                            depth: 0,
                            fresh: false,
                        });
                    }
                    '#' if !cmd.in_word => self.comment = true,
                    '[' if (cmd.in_word && cmd.plain && !cmd.cur.is_empty()) || (cmd.array && !cmd.in_word) => {
                        cmd.push('[');
                        self.stack.push(Frame::Subscript { depth: 0 });
                    }
                    '(' => {
                        // A subshell, or `((` (also after `for`, `if`, `while`).
                        if !cmd.in_word {
                            self.stack.push(Frame::Cmd {
                                cmd: SimpleCmd::default(),
                                close: Close::Paren,
                                depth: 0,
                                fresh: true,
                            });
                        } else if cmd.in_word && cmd.cur.ends_with('=') {
                            cmd.push('(');
                            self.stack.push(Frame::Cmd {
                                cmd: SimpleCmd { array: true, ..SimpleCmd::default() },
                                close: Close::Paren,
                                depth: 0,
                                fresh: false,
                            });
                        } else {
                            // `f()`: a function's body is a new command.
                            cmd.end_command();
                            *depth += 1;
                        }
                    }
                    ')' if *depth > 0 => {
                        cmd.end_command();
                        *depth -= 1;
                    }
                    ')' if close == Close::Paren => {
                        cmd.end_word();
                        self.stack.pop();
                        self.word_char(')');
                    }
                    ')' => cmd.end_command(), // a `case` pattern
                    '<' if was_lt => {
                        cmd.end_word();
                        self.delim = Some(DelimReader { fresh: true, ..DelimReader::default() });
                    }
                    '<' => {
                        cmd.end_word();
                        self.lt = true;
                    }
                    '>' => cmd.end_word(),
                    '\n' => {
                        cmd.end_command();
                        if !self.pending.is_empty() {
                            self.body = Some(String::new());
                        }
                    }
                    ';' | '&' | '|' => cmd.end_command(),
                    c if c.is_whitespace() => cmd.end_word(),
                    c => cmd.push(c),
                }
            }
        }
    }

    /// A character inside `"..."`, `$(( ))`, `${ }` or a subscript, where `$`, quotes and
    /// substitutions still work.
    fn expanding(&mut self, c: char, was_dollar: bool) {
        let top_is_double = matches!(self.stack.last(), Some(Frame::Double));
        // The character belongs to the word being built, not to a substitution it opens.
        self.word_char(c);
        match c {
            '\\' => self.escaped = true,
            '$' => self.dollar = true,
            '(' if was_dollar => {
                self.stack.push(Frame::Cmd { cmd: SimpleCmd::default(), close: Close::Paren, depth: 0, fresh: true })
            }
            '{' if was_dollar => self.stack.push(Frame::Brace { depth: 0 }),
            '[' if was_dollar => self.stack.push(Frame::Arith { depth: 0, what: "$[ ]" }),
            '`' => self.stack.push(Frame::Cmd {
                cmd: SimpleCmd::default(),
                close: Close::Backtick,
                depth: 0,
                fresh: false,
            }),
            '"' if !top_is_double => self.stack.push(Frame::Double),
            '\'' if !top_is_double => self.stack.push(Frame::Single { ansi: was_dollar }),
            _ => {}
        }
    }
}

/// Whether the fresh `(` frame on top was opened by `$(` (rather than a subshell `(`): the
/// enclosing command's current word then ends in `$`.
fn was_dollar_paren(stack: &[Frame]) -> bool {
    stack.iter().rev().skip(1).find_map(|f| match f {
        Frame::Cmd { cmd, .. } => Some(cmd.in_word),
        Frame::Double | Frame::Brace { .. } | Frame::Arith { .. } | Frame::Subscript { .. } => Some(true),
        Frame::Single { .. } => None,
    }) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `@` marks where a reference stands.
    fn check(script: &str) -> Vec<Result<Place, Refusal>> {
        let mut pieces = Vec::new();
        let mut parts = script.split('@').peekable();
        while let Some(text) = parts.next() {
            pieces.push(Piece::Text(text));
            if parts.peek().is_some() {
                pieces.push(Piece::Ref);
            }
        }
        places(pieces)
    }

    fn code(program: &str, lang: Lang) -> Result<Place, Refusal> {
        Err(Refusal::Code { program: program.into(), lang })
    }

    #[test]
    fn accepts_words_quotes_and_comments() {
        use Place::*;
        let cases: &[(&str, &[Result<Place, Refusal>])] = &[
            ("echo @", &[Ok(Word)]),
            ("echo --x=@ \"a @ b\" @x", &[Ok(Word), Ok(Quoted), Ok(Word)]),
            ("# about @\necho @", &[Ok(Comment), Ok(Word)]),
            ("echo a#@", &[Ok(Word)]),
            ("x=@ y=\"$(echo \"@\")\" cmd @ > @", &[Ok(Word), Ok(Quoted), Ok(Word), Ok(Word)]),
            ("echo \"$(printf '%s' @)\"", &[Ok(Word)]),
            ("for f in @; do echo \"$f\"; done", &[Ok(Word)]),
            ("case @ in a) echo @;; esac", &[Ok(Word), Ok(Word)]),
            ("cat <<EOF\nbody\nEOF\necho @", &[Ok(Word)]),
            ("cat <<-'EOF'\n\tbody\n\tEOF\necho @", &[Ok(Word)]),
            ("cat <<< @", &[Ok(Word)]),
            ("bash script.sh @ && sh -c 'echo \"$1\"' sh @", &[Ok(Word), Ok(Word)]),
            ("python3 train.py --lr @", &[Ok(Word)]),
            ("echo $((1 + 2)) @", &[Ok(Word)]),
            ("[ @ = x ] && test @ -eq 1", &[Ok(Word), Ok(Word)]),
            ("export X=@; local y=\"@\"; declare -r z=@", &[Ok(Word), Ok(Quoted), Ok(Word)]),
            ("f () { echo @; }; (echo @)", &[Ok(Word), Ok(Word)]),
            ("a=(@ \"@\" [1]=x)", &[Ok(Word), Ok(Quoted)]),
            ("echo 'it''s' @", &[Ok(Word)]),
            ("echo $'it\\'s' @ 'a\\' @", &[Ok(Word), Ok(Word)]),
            ("(cd dir && echo @)", &[Ok(Word)]),
        ];
        for (script, expected) in cases {
            assert_eq!(check(script), *expected, "script: {script:?}");
        }
    }

    #[test]
    fn refuses_where_a_value_could_become_code() {
        use Refusal::*;
        let cases: &[(&str, Result<Place, Refusal>)] = &[
            ("echo '@'", Err(SingleQuotes)),
            ("printf '%s' 'a @ b'", Err(SingleQuotes)),
            ("echo $'@'", Err(SingleQuotes)),
            ("echo $'a\\' @ '", Err(SingleQuotes)),
            ("python3 - <<EOF\nprint('@')\nEOF", Err(Heredoc { quoted: false })),
            ("cat <<'EOF' > f\n@\nEOF", Err(Heredoc { quoted: true })),
            ("cat <<-\"END\"\n\t@\n\tEND", Err(Heredoc { quoted: true })),
            ("cat <<A <<B\na\nA\n@\nB", Err(Heredoc { quoted: false })),
            ("echo $(( @ + 1 ))", Err(Arithmetic("$(( ))"))),
            ("(( n = @ ))", Err(Arithmetic("(( ))"))),
            ("echo $[ @ ]", Err(Arithmetic("$[ ]"))),
            ("let n=@", Err(Arithmetic("`let`"))),
            ("[[ @ -eq 1 ]]", Err(Arithmetic("[[ ]]"))),
            ("[[ a && @ ]]", Err(Arithmetic("[[ ]]"))),
            ("if [[ @ -eq 1 ]]; then :; fi", Err(Arithmetic("[[ ]]"))),
            ("for (( i = 0; i < @; i++ )); do :; done", Err(Arithmetic("(( ))"))),
            ("while (( @ )); do :; done", Err(Arithmetic("(( ))"))),
            ("declare @", Err(VarName("declare".into()))),
            ("f() { local \"@\"; }", Err(VarName("local".into()))),
            ("PS4=\"@\"; set -x", Err(Prompt("PS4".into()))),
            ("export PROMPT_COMMAND=@", Err(Prompt("PROMPT_COMMAND".into()))),
            ("a[@]=1", Err(Arithmetic("an array subscript"))),
            ("a=([@]=1)", Err(Arithmetic("an array subscript"))),
            ("declare -i n=@", Err(Arithmetic("an integer, array or name declaration"))),
            ("echo ${x:-@}", Err(Expansion)),
            ("echo \"${a[@]}\"", Err(Expansion)),
            ("echo `echo @`", Err(Backticks)),
            ("echo \"`echo @`\"", Err(Backticks)),
            ("eval echo @", code("eval", Lang::Shell)),
            ("if eval \"@\"; then :; fi", code("eval", Lang::Shell)),
            ("trap \"rm @\" EXIT", code("trap", Lang::Shell)),
            ("ssh host rm @", code("ssh", Lang::Shell)),
            ("sh -c 'echo @'", code("sh", Lang::Shell)),
            ("sh -c \"echo @\"", code("sh", Lang::Shell)),
            ("bash -ec \"echo $(echo @)\"", code("bash", Lang::Shell)),
            ("timeout 5 /bin/bash -c \"x @\"", code("bash", Lang::Shell)),
            ("find . -exec sh -c \"echo @\" \\;", code("sh", Lang::Shell)),
            ("docker run img sh -c @", code("sh", Lang::Shell)),
            ("python3 -u -c \"print('@')\"", code("python3", Lang::Python)),
            ("perl -ne \"print '@'\"", code("perl", Lang::Perl)),
            ("node -e \"x('@')\"", code("node", Lang::Node)),
            ("awk \"{print \\\"@\\\"}\" f", code("awk", Lang::Awk)),
            ("awk -F, \"{print @}\" f", code("awk", Lang::Awk)),
            ("sed \"s/a/@/\" f", code("sed", Lang::Sed)),
            ("sed -e \"s/a/@/\" f", code("sed", Lang::Sed)),
            ("read @", Err(VarName("read".into()))),
            ("printf -v @ x", Err(VarName("printf -v".into()))),
            ("echo \\@", Err(Escaped)),
            ("echo $@", Err(Escaped)),
        ];
        for (script, expected) in cases {
            assert_eq!(check(script), vec![expected.clone()], "script: {script:?}");
        }
    }

    #[test]
    fn any_prefix_of_a_tricky_script_is_read_without_panicking() {
        let script = "a[x]=$(( (1) )) ${y:-\"$(sh -c 'e' `b`)\"} <<-'E' && python3 -c \"p\" # c\n\tE\n\
                      [[ x && y ]]; (( z )); $[1]; let q; read r; printf -v s; f() { eval \"$*\"; }; é漢 \\";
        for (i, _) in script.char_indices() {
            let got = check(&format!("{}@", &script[..i]));
            assert_eq!(got.len(), 1, "prefix {i}");
        }
    }

    #[test]
    fn heredoc_ends_where_the_shell_ends_it() {
        assert_eq!(check("cat <<EOF\n@\nEOF\necho @")[1], Ok(Place::Word));
        assert_eq!(check("cat <<-EOF\n\t@\n\tEOF\necho @")[1], Ok(Place::Word));
        // A line that merely contains the marker does not end the body.
        assert_eq!(check("cat <<EOF\n EOF\n@\nEOF")[0], Err(Refusal::Heredoc { quoted: false }));
    }
}
