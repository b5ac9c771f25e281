//! The client's config file (`~/.config/weir/config.toml`) and the one rule that settles where a
//! command connects and which token it sends: a flag beats an environment variable, which beats
//! the selected profile, which beats the file's top-level keys, which beat the built-in default.
//!
//! The file holds a `server` URL and a `token_file`, at the top and in `[profiles.NAME]` tables
//! chosen with `--profile` / `WEIR_PROFILE`. A token itself never belongs in it (a config file is
//! copied and shared; a token file is `chmod 600`): a `token` key is refused. Unknown keys and an
//! unknown profile are errors naming the file, line and column and the known names. This module
//! reads the file and decides, and `weir config show` prints the outcome; it never prints a
//! token and never connects.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use weir_core::diag::{Diagnostic, Renderer, Span, did_you_mean};

/// Where a command connects when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// A config file larger than this is refused before it is read whole.
const MAX_BYTES: u64 = 1 << 20;

const TOP_KEYS: [&str; 3] = ["server", "token_file", "profiles"];
const PROFILE_KEYS: [&str; 2] = ["server", "token_file"];

pub const CONFIG_HELP: &str = "\
The config file (--config, WEIR_CONFIG, else $XDG_CONFIG_HOME/weir/config.toml, else
~/.config/weir/config.toml):

  server = \"http://weir.internal:7070\"
  token_file = \"~/.config/weir/token\"     # `client=TOKEN`; relative to this file's folder

  [profiles.staging]                      # chosen with --profile staging / WEIR_PROFILE
  server = \"http://staging:7070\"
  token_file = \"staging.token\"

Precedence: --flag, then environment (WEIR_SERVER, WEIR_TOKEN_FILE, WEIR_TOKEN), then the
profile, then the top level, then http://127.0.0.1:7070. A `token` key is refused: tokens live in
files only you can read (chmod 600).

Exit status:
  0  the settings are shown
  2  the config file, the profile or the token file has a problem (printed on stderr)";

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(clap::Subcommand, Debug)]
enum ConfigAction {
    /// Print the effective settings, each with where it came from; the token file is read to
    /// check it holds a client token, which is never printed.
    Show,
}

/// `weir config show`.
pub fn run(args: ConfigArgs, conn: &super::ConnArgs) -> std::process::ExitCode {
    let ConfigAction::Show = args.action;
    if let Some(dir) = &conn.local {
        println!("local:       the data folder {} of `weir run` (no server, no config file)", dir.display());
        return std::process::ExitCode::SUCCESS;
    }
    let effective = match conn.effective() {
        Ok(e) => e,
        Err(f) => return f.exit_code(),
    };
    let env = |var: &str| std::env::var_os(var);
    match (&effective.file, locate(&conn.given, &env)) {
        (Some(path), _) => println!("config file: {}", path.display()),
        (None, Some((path, _))) => println!("config file: none ({} does not exist)", path.display()),
        (None, None) => println!("config file: none (neither XDG_CONFIG_HOME nor HOME is set)"),
    }
    match &effective.profile {
        Some((name, origin)) => println!("profile:     {name} ({origin})"),
        None => println!("profile:     none"),
    }
    println!("server:      {} ({})", effective.server.0, effective.server.1);
    let mut ok = true;
    match &effective.token {
        TokenChoice::None => println!("token:       none (the server must run without one)"),
        TokenChoice::Literal(origin) => println!("token:       given by {origin} (not shown)"),
        TokenChoice::File(path, origin) => {
            let read = weir_proto::auth::TokenFile::read(path)
                .and_then(|f| f.token(weir_proto::auth::Role::Client).map(|_| ()).map_err(|e| vec![e]));
            let state = match read {
                Ok(()) => "holds a client token".to_string(),
                Err(problems) => {
                    ok = false;
                    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
                }
            };
            println!("token:       from the file {} ({origin}): {state}", path.display());
        }
    }
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) }
}

/// Where a setting came from, as `weir config show` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option (`--server`).
    Flag(&'static str),
    /// An environment variable (`WEIR_SERVER`).
    Env(&'static str),
    /// A `[profiles.NAME]` table of the file, at this line.
    Profile { name: String, line: u32 },
    /// The file's top-level keys, at this line.
    TopLevel { line: u32 },
    /// Nothing set it.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Env(var) => write!(f, "{var}"),
            Origin::Profile { name, line } => write!(f, "profile `{name}`, config line {line}"),
            Origin::TopLevel { line } => write!(f, "config line {line}"),
            Origin::Default => write!(f, "built-in default"),
        }
    }
}

/// What the command line and the environment said, each with where it came from; `None` when
/// neither set it (a clap default does not count).
#[derive(Clone, Debug, Default)]
pub struct Given {
    pub server: Option<(String, Origin)>,
    pub token: Option<Origin>,
    pub token_file: Option<(PathBuf, Origin)>,
    pub profile: Option<(String, Origin)>,
    pub config: Option<(PathBuf, Origin)>,
}

/// One table's settings (the top level or a profile), with the line of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    server: Option<(String, u32)>,
    token_file: Option<(PathBuf, u32)>,
}

/// A parsed config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    path: PathBuf,
    top: Entry,
    profiles: Vec<(String, Entry)>,
}

/// Where the token comes from, once decided. Never the token itself for a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenChoice {
    None,
    /// `--token` or `WEIR_TOKEN`, already in the connection arguments.
    Literal(Origin),
    File(PathBuf, Origin),
}

/// The settings a command connects with, and where each came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    pub profile: Option<(String, Origin)>,
    pub server: (String, Origin),
    pub token: TokenChoice,
}

/// Why the settings could not be decided: a message ready to print (with the file's lines).
#[derive(Debug)]
pub struct Error(pub String);

/// The config file to read: `--config` / `WEIR_CONFIG` (which must exist), else
/// `$XDG_CONFIG_HOME/weir/config.toml`, else `~/.config/weir/config.toml` (either may be absent).
/// Returns the path and whether it was named explicitly.
pub fn locate(given: &Given, env: &dyn Fn(&str) -> Option<OsString>) -> Option<(PathBuf, bool)> {
    if let Some((path, _)) = &given.config {
        return Some((path.clone(), true));
    }
    let absolute = |var: &str| env(var).filter(|v| !v.is_empty()).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute("XDG_CONFIG_HOME") {
        return Some((xdg.join("weir").join("config.toml"), false));
    }
    absolute("HOME").map(|home| (home.join(".config").join("weir").join("config.toml"), false))
}

/// Reads and parses the file at `path`; `Ok(None)` when it does not exist and was not named.
pub fn read(path: &Path, explicit: bool) -> Result<Option<ConfigFile>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(Error(format!(
                "cannot read the config file `{}`: {e}; fix --config / WEIR_CONFIG or create it",
                path.display()
            )));
        }
    };
    let cannot = |e: std::io::Error| Error(format!("cannot read the config file `{}`: {e}", path.display()));
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Error(format!(
            "the config file `{}` is larger than {MAX_BYTES} bytes: is it the right file?",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error(format!("the config file `{}` is not UTF-8 text", path.display())))?;
    parse(path, &text).map(Some).map_err(|diags| {
        let shown = path.display().to_string();
        let source = redact(&text);
        let renderer = Renderer { path: &shown, source: &source, color: false };
        Error(renderer.render_all(&diags).trim_end().to_string())
    })
}

/// The text as a diagnostic may quote it: the value of any `token = ...` line hidden, so a
/// refused token is not printed back.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line.trim_start().trim_start_matches(['"', '\'']);
        let is_token = key
            .strip_prefix("token")
            .is_some_and(|rest| rest.trim_start_matches(['"', '\'']).trim_start().starts_with('='));
        match line.find('=').filter(|_| is_token) {
            Some(eq) => {
                out.push_str(&line[..=eq]);
                out.push_str(" <hidden>");
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Parses the text of a config file, reporting every problem at once.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Vec<Diagnostic>> {
    let lines = Lines::new(text);
    let table = DeTable::parse(text).map_err(|e| {
        let span = e.span().map(|s| lines.span(s)).unwrap_or_default();
        let message = e.message().trim().to_string();
        vec![Diagnostic::error(format!("the config file is not valid TOML: {message}")).at(span, "here")]
    })?;
    let mut diags = Vec::new();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut own = DeTable::new();
    let mut profiles = Vec::new();
    for (key, value) in table.get_ref().iter() {
        if key.get_ref() != "profiles" {
            own.insert(key.clone(), value.clone());
            continue;
        }
        let DeValue::Table(table) = value.get_ref() else {
            diags.push(
                Diagnostic::error("`profiles` is not a table")
                    .at(lines.span(key.span()), "expected [profiles.NAME] tables"),
            );
            continue;
        };
        for (name, profile) in table.iter() {
            let DeValue::Table(fields) = profile.get_ref() else {
                diags.push(
                    Diagnostic::error(format!("profile `{}` is not a table", name.get_ref()))
                        .at(lines.span(name.span()), "expected a [profiles.NAME] table")
                        .help(format!("write `[profiles.{}]` on a line of its own, its keys below it", name.get_ref())),
                );
                continue;
            };
            let entry = entry(fields, base, &lines, Some(name.get_ref()), &mut diags);
            profiles.push((name.get_ref().to_string(), entry));
        }
    }
    let top = entry(&own, base, &lines, None, &mut diags);
    diags.sort_by_key(|d| d.span);
    if diags.is_empty() { Ok(ConfigFile { path: path.to_path_buf(), top, profiles }) } else { Err(diags) }
}

/// Reads `server` and `token_file` from one table; anything else is a diagnostic.
fn entry(table: &DeTable<'_>, base: &Path, lines: &Lines, profile: Option<&str>, diags: &mut Vec<Diagnostic>) -> Entry {
    let mut entry = Entry::default();
    let place = match profile {
        Some(name) => format!("in [profiles.{name}]"),
        None => "at the top level".to_string(),
    };
    for (key, value) in table.iter() {
        let name: &str = key.get_ref().as_ref();
        let at = lines.span(key.span());
        match name {
            "server" => {
                if let Some(url) = string(value, lines, name, &place, diags) {
                    entry.server = Some((url, at.line));
                }
            }
            "token_file" => {
                if let Some(file) = string(value, lines, name, &place, diags) {
                    entry.token_file = Some((resolve_path(&file, base), at.line));
                }
            }
            "token" => diags.push(
                Diagnostic::error(format!("a token does not belong in the config file ({place})"))
                    .at(at, "refused: tokens live in files only you can read")
                    .note("a config file is copied and shared; a token in it leaks with it")
                    .help(
                        "write the token to a file (`umask 077; echo client=TOKEN > ~/.config/weir/token`) and set \
                         `token_file = \"~/.config/weir/token\"` instead",
                    ),
            ),
            _ => {
                let known: &[&str] = if profile.is_some() { &PROFILE_KEYS } else { &TOP_KEYS };
                let expected = format!("expected one of: {}", known.join(", "));
                diags.push(
                    Diagnostic::error(format!("unknown key `{name}` {place}"))
                        .at(at, expected)
                        .help_opt(did_you_mean(name, known.iter().copied())),
                );
            }
        }
    }
    entry
}

/// A string value, or a diagnostic saying the key wants one.
fn string(
    value: &Spanned<DeValue<'_>>,
    lines: &Lines,
    key: &str,
    place: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    match value.get_ref() {
        DeValue::String(s) if !s.is_empty() => Some(s.to_string()),
        DeValue::String(_) => {
            diags.push(
                Diagnostic::error(format!("`{key}` {place} is empty")).at(lines.span(value.span()), "expected a value"),
            );
            None
        }
        _ => {
            diags.push(
                Diagnostic::error(format!("`{key}` {place} is not a string"))
                    .at(lines.span(value.span()), "expected a quoted string"),
            );
            None
        }
    }
}

/// `~/x` is under the home folder; a relative path is relative to the config file's folder.
fn resolve_path(path: &str, base: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty())
    {
        return PathBuf::from(home).join(rest);
    }
    let path = PathBuf::from(path);
    if path.is_absolute() { path } else { base.join(path) }
}

impl ConfigFile {
    fn profile(&self, name: &str) -> Option<&Entry> {
        self.profiles.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|(n, _)| n.as_str())
    }
}

/// Settles every setting: flag > environment > profile > top level > default.
pub fn decide(given: &Given, file: Option<&ConfigFile>) -> Result<Effective, Error> {
    let profile = match (&given.profile, file) {
        (None, _) => None,
        (Some((name, origin)), None) => {
            return Err(Error(format!(
                "{origin} names profile `{name}`, but there is no config file; create ~/.config/weir/config.toml \
                 (or name one with --config / WEIR_CONFIG) with a [profiles.{name}] table"
            )));
        }
        (Some((name, origin)), Some(file)) => match file.profile(name) {
            Some(entry) => Some((name.clone(), origin.clone(), entry)),
            None => {
                let names: Vec<&str> = file.names().collect();
                let known = if names.is_empty() {
                    "it has no [profiles.NAME] tables".to_string()
                } else {
                    format!("its profiles: {}", names.join(", "))
                };
                let hint = did_you_mean(name, names.iter().copied()).map(|h| format!("; {h}")).unwrap_or_default();
                return Err(Error(format!(
                    "no profile `{name}` ({origin}) in the config file `{}`: {known}{hint}",
                    file.path.display()
                )));
            }
        },
    };
    let in_profile = |pick: fn(&Entry) -> Option<(String, u32)>| {
        profile
            .as_ref()
            .and_then(|(name, _, entry)| pick(entry).map(|(v, line)| (v, Origin::Profile { name: name.clone(), line })))
    };
    let at_top = |pick: fn(&Entry) -> Option<(String, u32)>| {
        file.and_then(|f| pick(&f.top)).map(|(v, line)| (v, Origin::TopLevel { line }))
    };
    let server = given
        .server
        .clone()
        .or_else(|| in_profile(|e| e.server.clone()))
        .or_else(|| at_top(|e| e.server.clone()))
        .unwrap_or_else(|| (DEFAULT_SERVER.to_string(), Origin::Default));

    let file_of = |e: &Entry| e.token_file.as_ref().map(|(p, l)| (p.to_string_lossy().into_owned(), *l));
    let flag = |o: &Origin| matches!(o, Origin::Flag(_));
    let token = match (&given.token_file, &given.token) {
        (Some((path, o)), _) if flag(o) => TokenChoice::File(path.clone(), o.clone()),
        (_, Some(o)) if flag(o) => TokenChoice::Literal(o.clone()),
        (Some((path, o)), _) => TokenChoice::File(path.clone(), o.clone()),
        (None, Some(o)) => TokenChoice::Literal(o.clone()),
        (None, None) => match in_profile(file_of).or_else(|| at_top(file_of)) {
            Some((path, origin)) => TokenChoice::File(PathBuf::from(path), origin),
            None => TokenChoice::None,
        },
    };
    Ok(Effective {
        file: file.map(|f| f.path.clone()),
        profile: profile.map(|(name, origin, _)| (name, origin)),
        server,
        token,
    })
}

/// Byte offsets to 1-based lines and 0-based character columns.
struct Lines<'a> {
    text: &'a str,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { text }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() as u32 + 1;
        let start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[start..].chars().count() as u32)
    }

    fn span(&self, range: std::ops::Range<usize>) -> Span {
        let (line, col) = self.position(range.start);
        let (end_line, end_col) = self.position(range.end.max(range.start));
        if end_line == line { Span::new(line, col, line, end_col.max(col + 1)) } else { Span::on_line(line, col, 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        parse(Path::new("/etc/weir/config.toml"), text).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn errors(text: &str) -> String {
        let diags = parse(Path::new("c.toml"), text).expect_err("expected problems");
        Renderer { path: "c.toml", source: text, color: false }.render_all(&diags)
    }

    fn given(server: Option<(&str, Origin)>, profile: Option<&str>) -> Given {
        Given {
            server: server.map(|(s, o)| (s.to_string(), o)),
            profile: profile.map(|p| (p.to_string(), Origin::Flag("--profile"))),
            ..Given::default()
        }
    }

    const TEXT: &str = "server = \"http://top:1\"\ntoken_file = \"top.token\"\n\n[profiles.prod]\nserver = \"http://prod:2\"\ntoken_file = \"/secrets/prod\"\n\n[profiles.bare]\n";

    #[test]
    fn precedence_is_flag_then_env_then_profile_then_top_level_then_default() {
        let f = file(TEXT);
        let check = |g: Given, config: Option<&ConfigFile>, want: (&str, Origin)| {
            let got = decide(&g, config).unwrap().server;
            assert_eq!(got, (want.0.to_string(), want.1));
        };
        check(
            given(Some(("http://flag:9", Origin::Flag("--server"))), Some("prod")),
            Some(&f),
            ("http://flag:9", Origin::Flag("--server")),
        );
        check(
            given(Some(("http://env:9", Origin::Env("WEIR_SERVER"))), Some("prod")),
            Some(&f),
            ("http://env:9", Origin::Env("WEIR_SERVER")),
        );
        check(given(None, Some("prod")), Some(&f), ("http://prod:2", Origin::Profile { name: "prod".into(), line: 5 }));
        check(given(None, Some("bare")), Some(&f), ("http://top:1", Origin::TopLevel { line: 1 }));
        check(given(None, None), Some(&f), ("http://top:1", Origin::TopLevel { line: 1 }));
        check(given(None, None), None, (DEFAULT_SERVER, Origin::Default));
    }

    #[test]
    fn token_files_are_relative_to_the_config_folder_and_flags_beat_the_environment() {
        let f = file(TEXT);
        let token = |g: Given| decide(&g, Some(&f)).unwrap().token;
        assert_eq!(
            token(given(None, None)),
            TokenChoice::File("/etc/weir/top.token".into(), Origin::TopLevel { line: 2 })
        );
        assert_eq!(
            token(given(None, Some("prod"))),
            TokenChoice::File("/secrets/prod".into(), Origin::Profile { name: "prod".into(), line: 6 })
        );
        let env_file = Given {
            token_file: Some(("/env/token".into(), Origin::Env("WEIR_TOKEN_FILE"))),
            ..given(None, Some("prod"))
        };
        assert_eq!(token(env_file.clone()), TokenChoice::File("/env/token".into(), Origin::Env("WEIR_TOKEN_FILE")));
        let flag_token = Given { token: Some(Origin::Flag("--token")), ..env_file };
        assert_eq!(token(flag_token.clone()), TokenChoice::Literal(Origin::Flag("--token")));
        let flag_file = Given { token_file: Some(("/f".into(), Origin::Flag("--token-file"))), ..flag_token };
        assert_eq!(token(flag_file), TokenChoice::File("/f".into(), Origin::Flag("--token-file")));
    }

    #[test]
    fn an_unknown_profile_names_the_file_and_the_known_ones() {
        let f = file(TEXT);
        let err = decide(&given(None, Some("prd")), Some(&f)).unwrap_err().0;
        assert!(err.contains("no profile `prd`"), "{err}");
        assert!(err.contains("/etc/weir/config.toml"), "{err}");
        assert!(err.contains("bare, prod"), "{err}");
        assert!(err.contains("did you mean `prod`?"), "{err}");
        let err = decide(&given(None, Some("prod")), None).unwrap_err().0;
        assert!(err.contains("there is no config file"), "{err}");
    }

    #[test]
    fn unknown_keys_wrong_types_and_tokens_are_reported_together_with_line_and_column() {
        let text = "sever = \"http://x\"\ntoken = \"abc\"\n[profiles.prod]\nserver = 7\ntokn_file = \"x\"\n";
        let out = errors(text);
        assert!(out.contains("unknown key `sever` at the top level"), "{out}");
        assert!(out.contains("c.toml:1:1"), "{out}");
        assert!(out.contains("did you mean `server`?"), "{out}");
        assert!(out.contains("a token does not belong in the config file"), "{out}");
        assert!(out.contains("c.toml:2:1"), "{out}");
        assert!(out.contains("`server` in [profiles.prod] is not a string"), "{out}");
        assert!(out.contains("c.toml:4:10"), "{out}");
        assert!(out.contains("unknown key `tokn_file` in [profiles.prod]"), "{out}");
        assert!(out.contains("did you mean `token_file`?"), "{out}");
        assert!(out.contains("4 errors"), "{out}");
    }

    #[test]
    fn a_token_line_is_hidden_when_quoted_back() {
        let text = "server = \"x\"\ntoken = \"SECRET\"\n  \"token\"=\"SECRET\"\ntoken_file = \"f\"\n";
        assert_eq!(redact(text), "server = \"x\"\ntoken = <hidden>\n  \"token\"= <hidden>\ntoken_file = \"f\"\n");
    }

    #[test]
    fn broken_toml_is_reported_at_its_place() {
        let out = errors("server = \"http://x\"\n[profiles.prod\n");
        assert!(out.contains("not valid TOML"), "{out}");
        assert!(out.contains("c.toml:2:"), "{out}");
    }

    #[test]
    fn the_file_is_looked_for_in_xdg_then_home_and_a_named_one_wins() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
        };
        let none = Given::default();
        assert_eq!(
            locate(&none, &env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some((PathBuf::from("/x/weir/config.toml"), false))
        );
        assert_eq!(
            locate(&none, &env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")])),
            Some((PathBuf::from("/h/.config/weir/config.toml"), false))
        );
        assert_eq!(locate(&none, &env(&[])), None);
        let named = Given { config: Some(("/c.toml".into(), Origin::Flag("--config"))), ..Given::default() };
        assert_eq!(locate(&named, &env(&[("HOME", "/h")])), Some((PathBuf::from("/c.toml"), true)));
    }
}
