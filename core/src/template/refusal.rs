//! Why a `{{ }}` cannot stand where it does in a `run:` script, and what to tell the author:
//! what the shell would do there, why that is unsafe, and what to write instead. Pure text.

use std::fmt;

/// A program that reads a word as code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Shell,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    R,
    Awk,
    Sed,
}

/// Why a reference cannot stand where it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    SingleQuotes,
    Heredoc {
        quoted: bool,
    },
    Arithmetic(&'static str),
    Expansion,
    Backticks,
    Code {
        program: String,
        lang: Lang,
    },
    VarName(String),
    /// The value of a prompt variable (`PS4`), which the shell expands again when it prints it.
    Prompt(String),
    /// Right after `\` or `$`, which would change what the reference means.
    Escaped,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::SingleQuotes => f.write_str("inside '...'"),
            Refusal::Heredoc { quoted: false } => f.write_str("in a heredoc body"),
            Refusal::Heredoc { quoted: true } => f.write_str("in a quoted heredoc body"),
            Refusal::Arithmetic(what) => write!(f, "inside {what}"),
            Refusal::Expansion => f.write_str("inside `${...}`"),
            Refusal::Backticks => f.write_str("inside backticks"),
            Refusal::Code { program, .. } => write!(f, "in code that `{program}` runs"),
            Refusal::VarName(cmd) => write!(f, "in a variable name given to `{cmd}`"),
            Refusal::Prompt(var) => write!(f, "in the value of `{var}`"),
            Refusal::Escaped => f.write_str("right after `\\` or `$`"),
        }
    }
}

impl Refusal {
    /// What the shell would do there (a label), why that is unsafe (a note) and what to write
    /// instead (a help), for the variable `var` that holds the value.
    pub fn explain(&self, var: &str) -> (String, String, String) {
        let env_help = |lang: Lang| match lang {
            Lang::Shell => format!(
                "read it as \"${var}\" in that script (the environment reaches nested shells), or pass it as an argument: sh -c '... \"$1\" ...' sh \"${var}\""
            ),
            Lang::Python => format!("read it from the environment: os.environ['{var}']"),
            Lang::Perl => format!("read it from the environment: $ENV{{{var}}}"),
            Lang::Ruby => format!("read it from the environment: ENV['{var}']"),
            Lang::Node => format!("read it from the environment: process.env.{var}"),
            Lang::Php => format!("read it from the environment: getenv('{var}')"),
            Lang::R => format!("read it from the environment: Sys.getenv('{var}')"),
            Lang::Awk => format!("read it from the environment: ENVIRON[\"{var}\"]"),
            Lang::Sed => format!(
                "sed cannot read the environment: use awk with ENVIRON[\"{var}\"], or \"${var}\" outside the script"
            ),
        };
        match self {
            Refusal::SingleQuotes => (
                "nothing expands inside '...'".into(),
                "the text there is often another program's code (awk, sed, sh -c), where a value would become code"
                    .into(),
                format!(
                    "end the quotes before it ('...'\"${var}\"'...') where the text is data; where it is a program, let the program read ${var} from its environment"
                ),
            ),
            Refusal::Heredoc { quoted } => (
                if *quoted {
                    "nothing expands in a quoted heredoc (<<'EOF')".into()
                } else {
                    "a heredoc body is the input of the command that reads it".into()
                },
                if *quoted {
                    "a value would have to be spliced into the text, where one holding the end marker would end the body early".into()
                } else {
                    "`python3 - <<EOF` makes the body Python source: a value there could become code".into()
                },
                format!(
                    "read it in that program from the environment: os.environ['{var}'] (Python), $ENV{{{var}}} (Perl), \"${var}\" (shell)"
                ),
            ),
            Refusal::Arithmetic(what) => (
                format!("the shell evaluates {what} as arithmetic"),
                "arithmetic runs the command substitutions of array subscripts: a value `a[$(cmd)]` runs cmd".into(),
                format!(
                    "declare the param `type: int` (an integer may stand here), or check that it is a number first (case \"${var}\" in ''|*[!0-9]*) exit 2;; esac), then write ${var} yourself"
                ),
            ),
            Refusal::Expansion => (
                "this is part of a parameter expansion".into(),
                "offsets and subscripts in `${...}` are arithmetic, where a value `a[$(cmd)]` runs cmd".into(),
                format!("write the variable yourself, e.g. ${{X:-\"${var}\"}}"),
            ),
            Refusal::Backticks => (
                "backticks strip a level of `\\` before their command is read".into(),
                "a reference there would not keep its quotes".into(),
                "use $( ... ) instead of backticks".into(),
            ),
            Refusal::Code { program, lang } => (
                format!("`{program}` runs this word as code"),
                "the value would become program text, which no quoting can make safe".into(),
                if matches!(lang, Lang::Shell) && !program.ends_with("sh") {
                    format!(
                        "give \"${var}\" to a command as an argument instead of building text that `{program}` runs"
                    )
                } else {
                    env_help(*lang)
                },
            ),
            Refusal::VarName(cmd) => (
                format!("`{cmd}` takes a variable name here"),
                "bash evaluates an array subscript in a name as arithmetic, where `a[$(cmd)]` runs cmd".into(),
                format!("name the variable yourself and assign the value: x=\"${var}\""),
            ),
            Refusal::Prompt(name) => (
                format!("the shell expands `{name}` again each time it uses it"),
                "a `$(cmd)` in the value would run".into(),
                format!("keep values out of `{name}`; print \"${var}\" yourself where you need it"),
            ),
            Refusal::Escaped => (
                "a `\\` or `$` before `{{` changes the reference".into(),
                format!(
                    "`{{{{ }}}}` becomes \"${var}\" in the script: a `\\` would escape its quote, a `$` would change its meaning"
                ),
                "remove the `\\` or `$` before `{{`".into(),
            ),
        }
    }
}
