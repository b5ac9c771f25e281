//! Which words of a simple command a program evaluates: code (`sh -c`, `python -c`, `eval`,
//! an `awk` program, ...), arithmetic (`let`, `[[ ]]`, `declare -i`) or a variable name
//! (`read`, `printf -v`). Found by the command's name after assignments, keywords and wrappers
//! (`sudo`, `timeout`, ...), and for interpreters anywhere in the command (`docker run IMG sh
//! -c`, `find -exec sh -c`). A table, not a shell: what it does not list it does not refuse.

use super::refusal::{Lang, Refusal};

/// Words that come before the command they run.
const WRAPPERS: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "command", "builtin", "exec", "env",
    "nohup", "nice", "sudo", "doas", "xargs", "stdbuf", "setsid", "timeout", "ionice", "chrt", "taskset",
];

/// Commands that run the text of their arguments as shell code.
const EVALUATORS: &[&str] = &["eval", "trap", "alias", "ssh", "watch", "su", "script"];

fn base(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let name = name.split('[').next().unwrap_or(name);
            !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

fn lang_of(name: &str) -> Option<Lang> {
    let versioned = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Some(match name {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "mksh" | "yash" | "fish" | "csh" | "tcsh" => Lang::Shell,
        "perl" => Lang::Perl,
        "ruby" => Lang::Ruby,
        "node" | "nodejs" | "deno" | "bun" => Lang::Node,
        "php" => Lang::Php,
        "Rscript" => Lang::R,
        "awk" | "gawk" | "mawk" | "nawk" => Lang::Awk,
        "sed" | "gsed" => Lang::Sed,
        _ if versioned("python") || versioned("pypy") => Lang::Python,
        _ => return None,
    })
}

/// Whether `word` is the option after which `lang` reads code.
fn code_flag(lang: Lang, word: &str) -> bool {
    let short = word.starts_with('-') && !word.starts_with("--") && word.len() > 1;
    let letters = || word[1..].chars().all(|c| c.is_ascii_alphabetic());
    match lang {
        Lang::Shell => short && letters() && word.contains('c'),
        Lang::Python => short && letters() && word.ends_with('c'),
        Lang::Perl => short && (word.ends_with('e') || word.ends_with('E')),
        Lang::Ruby => short && word.ends_with('e'),
        Lang::Node => matches!(word, "-e" | "-p" | "-pe" | "--eval" | "--print"),
        Lang::Php => word == "-r",
        Lang::R => word == "-e",
        Lang::Awk | Lang::Sed => false,
    }
}

/// Variables whose value the shell expands again each time it uses it.
const PROMPTS: &[&str] = &["PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND"];

/// Whether the word after `words` (the one being built, `cur` so far) of a simple command is
/// one whose text a program evaluates: its code, arithmetic or a variable name.
/// `dbl_bracket`: inside `[[ ]]`.
pub(super) fn classify(words: &[String], cur: &str, dbl_bracket: bool) -> Option<Refusal> {
    let idx = words.len();
    if dbl_bracket {
        return Some(Refusal::Arithmetic("[[ ]]"));
    }
    if let Some((name, _)) = cur.split_once('=')
        && PROMPTS.contains(&name)
    {
        return Some(Refusal::Prompt(name.into()));
    }
    // The command itself, after assignments, keywords and wrappers.
    let mut i = 0;
    while i < idx {
        let w = base(&words[i]);
        if is_assignment(&words[i]) {
            i += 1;
        } else if WRAPPERS.contains(&w) {
            i += 1;
            while i < idx
                && (words[i].starts_with('-')
                    || is_assignment(&words[i])
                    || words[i].starts_with(|c: char| c.is_ascii_digit()))
            {
                i += 1;
            }
        } else {
            break;
        }
    }
    if i < idx {
        let name = base(&words[i]);
        let options = || words[i + 1..idx].iter().filter(|w| w.starts_with('-'));
        match name {
            n if EVALUATORS.contains(&n) => return Some(Refusal::Code { program: n.into(), lang: Lang::Shell }),
            "let" => return Some(Refusal::Arithmetic("`let`")),
            "unset" | "read" | "mapfile" | "readarray" | "getopts" => return Some(Refusal::VarName(name.into())),
            "printf" if words[idx - 1] == "-v" => return Some(Refusal::VarName("printf -v".into())),
            "declare" | "typeset" | "local" | "readonly" | "export"
                if options().any(|w| w.chars().any(|c| "iaAn".contains(c))) =>
            {
                return Some(Refusal::Arithmetic("an integer, array or name declaration"));
            }
            // `declare "a[$(cmd)]=1"` runs cmd: a value may follow `NAME=`, never be the name.
            "declare" | "typeset" | "local" | "readonly" | "export" if !cur.contains('=') => {
                return Some(Refusal::VarName(name.into()));
            }
            _ => {}
        }
    }
    // Interpreters anywhere in the command (`docker run img sh -c`, `find -exec sh -c`).
    for j in 0..idx {
        let name = base(&words[j]);
        let Some(lang) = lang_of(name) else { continue };
        let refused = || Some(Refusal::Code { program: name.into(), lang });
        match lang {
            Lang::Awk | Lang::Sed => {
                let mut k = j + 1;
                let mut by_flag = false;
                while k < idx {
                    let w = words[k].as_str();
                    if w == "-f" || w == "--file" {
                        by_flag = true;
                        k += 2;
                    } else if lang == Lang::Sed && (w == "-e" || w == "--expression") {
                        if k + 1 == idx {
                            return refused();
                        }
                        by_flag = true;
                        k += 2;
                    } else if lang == Lang::Awk && (w == "-F" || w == "-v") {
                        k += 2;
                    } else if w.starts_with('-') {
                        k += 1;
                    } else {
                        break;
                    }
                }
                if !by_flag && k == idx {
                    return refused();
                }
            }
            _ => {
                for (k, w) in words.iter().enumerate().take(idx).skip(j + 1) {
                    if code_flag(lang, w) {
                        if k + 1 == idx {
                            return refused();
                        }
                        break;
                    }
                    if !w.starts_with('-') {
                        break;
                    }
                }
            }
        }
    }
    None
}
