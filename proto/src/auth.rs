//! Token files, read the same way by `weir server`, `weir-worker` and the `weir` client: lines
//! `NAME:ROLE=TOKEN` (a person or system with a role of [`ROLES`], server only),
//! `client=TOKEN` and `worker=TOKEN` (blank lines and `#` comments ignored), or a single bare
//! token, which a client or a worker takes as its own. Every problem is reported at once with
//! the file and line and what to do. A file that group or others can read or write gets one
//! warning when it is read.
//!
//! The server is stricter ([`TokenFile::server_tokens`]): it needs both roles with different
//! tokens (one token for both would let any worker start runs or promote models, and any client
//! report as a worker), and off loopback each token must have at least [`MIN_TOKEN_LEN`]
//! characters: 32 hex characters are 128 bits, out of reach of guessing over a network.
//!
//! Tokens never reach a message or a log: errors name lines and lengths, and [`Token`]'s
//! `Debug` prints neither.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The fewest characters a token may have on a server that listens off loopback: 128 bits
/// written in hex (`openssl rand -hex 16` makes exactly this; `-hex 32` makes 256 bits).
pub const MIN_TOKEN_LEN: usize = 32;

/// Who presents a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Worker,
}

impl Role {
    /// The line's key: `client` or `worker`.
    pub fn key(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// A bearer token. Its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, to send or to compare; never to print.
    pub fn secret(&self) -> &str {
        &self.0
    }

    pub fn into_secret(self) -> String {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} characters>)", self.0.len())
    }
}

/// What is wrong with a token file (or one of its lines).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error(
        "it holds no token: write the lines `client=TOKEN` and `worker=TOKEN` (generate each with `openssl rand -hex 32`)"
    )]
    Empty,
    /// `near` is the key and the role it resembles, when it resembles one; other keys are not
    /// shown, since a bare token holding `=` could start with one.
    #[error("unknown key{}", unknown_key(near))]
    UnknownKey { near: Option<(String, &'static str)> },
    #[error("a second `{role}=` line (the first is on line {first}): keep one")]
    Duplicate { role: &'static str, first: usize },
    #[error("`{role}=` has no token after it")]
    EmptyToken { role: &'static str },
    #[error(
        "a token without a role: a file of more than one line needs `client=TOKEN` and `worker=TOKEN` lines (a bare token is only allowed as the file's one line)"
    )]
    Bare,
    #[error(
        "the token holds a space or a character that is not visible ASCII, so it cannot be sent in a header: generate one with `openssl rand -hex 32`"
    )]
    BadChar,
    #[error("unknown role `{role}`: expected `viewer`, `operator`, `admin` or `worker` (`NAME:ROLE=TOKEN`)")]
    UnknownRole { role: String },
    #[error("the name `{name}` is not allowed: use 1 to 64 letters, digits, `-`, `_` or `.` (`NAME:ROLE=TOKEN`)")]
    BadName { name: String },
    #[error("a second token named `{name}` (the first is on line {first}): keep one")]
    DuplicateName { name: String, first: usize },
    #[error("the token on line {first} is used again here: give each name its own (`openssl rand -hex 32`)")]
    SameToken { first: usize },
    #[error("no `{role}=TOKEN` line: add one (generate the token with `openssl rand -hex 32`)")]
    Missing { role: &'static str },
    #[error(
        "one token for clients and workers alike: any worker could act as a client (start runs, promote models) and any client as a worker; write `client=TOKEN` and `worker=TOKEN` lines with different tokens (`openssl rand -hex 32` for each)"
    )]
    Shared,
    #[error(
        "the client token (line {client}) and the worker token (line {worker}) are the same: any worker could act as a client (start runs, promote models) and any client as a worker; give each its own (`openssl rand -hex 32`)"
    )]
    Same { client: usize, worker: usize },
    #[error(
        "the {role} token has {len} characters; listening on {listen} (off loopback) needs at least {MIN_TOKEN_LEN} (128 bits as hex) to resist guessing: generate one with `openssl rand -hex 32`"
    )]
    Short { role: &'static str, len: usize, listen: SocketAddr },
}

/// A problem at a place in a token file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token file `{}`{}: {problem}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct Error {
    pub path: PathBuf,
    /// 1-based; `None` when the problem is the whole file's.
    pub line: Option<usize>,
    pub problem: Problem,
}

/// A token and the line it came from.
#[derive(Clone, Debug)]
struct Entry {
    token: Token,
    line: usize,
}

/// A named token line, `NAME:ROLE=TOKEN`, or `client=`/`worker=` as the names `client`
/// (role `admin`) and `worker` (role `worker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// One of [`ROLES`].
    pub role: String,
    pub token: Token,
    pub line: usize,
}

/// The roles a named token can have, least to most: `viewer` reads, `operator` also starts,
/// cancels, retries, approves and pauses, `admin` also submits pipelines, moves registry aliases
/// and manages tokens; `worker` calls only the worker RPCs.
pub const ROLES: [&str; 4] = ["viewer", "operator", "admin", "worker"];

/// Whether `name` may name a token (and appear in the audit log as is).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A parsed token file.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// `NAME:ROLE=TOKEN` lines.
    named: Vec<Named>,
    /// The file's one line when it has no role: the reader's own token.
    bare: Option<Entry>,
    client: Option<Entry>,
    worker: Option<Entry>,
}

impl TokenFile {
    /// Reads and parses `path`; warns (once, here, whatever it holds) when group or others can
    /// read or write it.
    pub fn read(path: &Path) -> Result<TokenFile, Vec<Error>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Error { path: path.to_path_buf(), line: None, problem: Problem::Unreadable(e.to_string()) }]
        })?;
        if let Some(mode) = loose_mode(path) {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:03o}"),
                "token file can be read or changed by other users: `chmod 600` it"
            );
        }
        TokenFile::parse(path, &text)
    }

    /// Parses the text of the file at `path` (named in errors only).
    pub fn parse(path: &Path, text: &str) -> Result<TokenFile, Vec<Error>> {
        let mut problems = Vec::new();
        let err = |line: Option<usize>, problem| Error { path: path.to_path_buf(), line, problem };
        let (mut bare, mut client, mut worker): (Vec<Entry>, Option<Entry>, Option<Entry>) = (Vec::new(), None, None);
        let mut named: Vec<Named> = Vec::new();
        let mut keyed = 0;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some((name, role, value)) = named_line(l) {
                keyed += 1;
                if !valid_name(name) {
                    problems.push(err(Some(line), Problem::BadName { name: name.to_string() }));
                } else if !ROLES.contains(&role) {
                    problems.push(err(Some(line), Problem::UnknownRole { role: role.to_string() }));
                } else if let Some(first) = named.iter().find(|n: &&Named| n.name == name) {
                    problems
                        .push(err(Some(line), Problem::DuplicateName { name: name.to_string(), first: first.line }));
                } else if value.is_empty() {
                    problems.push(err(Some(line), Problem::EmptyToken { role: "NAME:ROLE" }));
                } else {
                    match checked(value) {
                        Ok(token) => named.push(Named { name: name.into(), role: role.into(), token, line }),
                        Err(p) => problems.push(err(Some(line), p)),
                    }
                }
                continue;
            }
            let Some((key, value)) = l.split_once('=').filter(|(k, _)| is_key(k.trim())) else {
                match checked(l) {
                    Ok(token) => bare.push(Entry { token, line }),
                    Err(p) => problems.push(err(Some(line), p)),
                }
                continue;
            };
            keyed += 1;
            let (key, value) = (key.trim(), value.trim());
            let slot = match key {
                "client" => &mut client,
                "worker" => &mut worker,
                _ => {
                    let near = closest(key).map(|r| (key.to_string(), r));
                    problems.push(err(Some(line), Problem::UnknownKey { near }));
                    continue;
                }
            };
            let role = if key == "client" { "client" } else { "worker" };
            if let Some(first) = slot {
                problems.push(err(Some(line), Problem::Duplicate { role, first: first.line }));
                continue;
            }
            if value.is_empty() {
                problems.push(err(Some(line), Problem::EmptyToken { role }));
                continue;
            }
            match checked(value) {
                Ok(token) => *slot = Some(Entry { token, line }),
                Err(p) => problems.push(err(Some(line), p)),
            }
        }
        if keyed > 0 || bare.len() > 1 {
            let skip = usize::from(keyed == 0); // with only bare lines, the first one is fine
            for e in bare.iter().skip(skip) {
                problems.push(err(Some(e.line), Problem::Bare));
            }
        }
        let nothing = bare.is_empty() && keyed == 0;
        if nothing && problems.is_empty() {
            problems.push(err(None, Problem::Empty));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let bare = if keyed == 0 { bare.into_iter().next() } else { None };
        Ok(TokenFile { path: path.to_path_buf(), named, bare, client, worker })
    }

    /// The token a client or worker sends: its role's line, else the file's one bare token.
    pub fn token(&self, role: Role) -> Result<Token, Error> {
        let entry = match role {
            Role::Client => &self.client,
            Role::Worker => &self.worker,
        };
        // A file of one named token (a person's or a system's own file) is that token.
        let only_named = match self.named.as_slice() {
            [n] if (n.role == "worker") == (role == Role::Worker) => Some(n.token.clone()),
            _ => None,
        };
        match entry.as_ref().or(self.bare.as_ref()).map(|e| e.token.clone()).or(only_named) {
            Some(token) => Ok(token),
            None => Err(self.error(None, Problem::Missing { role: role.key() })),
        }
    }

    /// The client and worker tokens of a server listening on `listen`: both roles present, with
    /// different tokens, and long enough when `listen` is off loopback.
    pub fn server_tokens(&self, listen: SocketAddr) -> Result<(Token, Token), Vec<Error>> {
        if let Some(bare) = &self.bare {
            return Err(vec![self.error(Some(bare.line), Problem::Shared)]);
        }
        let mut problems = Vec::new();
        for (entry, role) in [(&self.client, Role::Client), (&self.worker, Role::Worker)] {
            match entry {
                None => problems.push(self.error(None, Problem::Missing { role: role.key() })),
                Some(e) if !listen.ip().is_loopback() && e.token.0.len() < MIN_TOKEN_LEN => problems
                    .push(self.error(Some(e.line), Problem::Short { role: role.key(), len: e.token.0.len(), listen })),
                Some(_) => {}
            }
        }
        if let (Some(c), Some(w)) = (&self.client, &self.worker)
            && c.token == w.token
        {
            problems.push(self.error(None, Problem::Same { client: c.line, worker: w.line }));
        }
        match (&self.client, &self.worker) {
            (Some(c), Some(w)) if problems.is_empty() => Ok((c.token.clone(), w.token.clone())),
            _ => Err(problems),
        }
    }

    /// Every token a server accepts, named, with its role: `client=` as `client` (admin),
    /// `worker=` as `worker` (worker), then the `NAME:ROLE=` lines. Refused: a bare token, no
    /// token at all, a name or a token used twice, and off loopback a token shorter than
    /// [`MIN_TOKEN_LEN`].
    pub fn server_principals(&self, listen: SocketAddr) -> Result<Vec<Named>, Vec<Error>> {
        if let Some(bare) = &self.bare {
            return Err(vec![self.error(Some(bare.line), Problem::Shared)]);
        }
        let mut all = Vec::new();
        for (entry, name, role) in [(&self.client, "client", "admin"), (&self.worker, "worker", "worker")] {
            if let Some(e) = entry {
                all.push(Named { name: name.into(), role: role.into(), token: e.token.clone(), line: e.line });
            }
        }
        let mut problems = Vec::new();
        for n in &self.named {
            match all.iter().find(|a: &&Named| a.name == n.name) {
                Some(first) => problems
                    .push(self.error(Some(n.line), Problem::DuplicateName { name: n.name.clone(), first: first.line })),
                None => all.push(n.clone()),
            }
        }
        // Both sides need a token, or one would be open to anyone who can connect.
        if !all.iter().any(|n| n.role != "worker") {
            problems.push(self.error(None, Problem::Missing { role: "client" }));
        }
        if !all.iter().any(|n| n.role == "worker") {
            problems.push(self.error(None, Problem::Missing { role: "worker" }));
        }
        for (i, n) in all.iter().enumerate() {
            if let Some(first) = all[..i].iter().find(|a| a.token == n.token) {
                let problem = if first.name == "client" && n.name == "worker" {
                    Problem::Same { client: first.line, worker: n.line }
                } else {
                    Problem::SameToken { first: first.line }
                };
                problems.push(self.error(Some(n.line), problem));
            }
            if !listen.ip().is_loopback() && n.token.0.len() < MIN_TOKEN_LEN {
                let role = if n.name == "worker" { "worker" } else { "client" };
                problems.push(self.error(Some(n.line), Problem::Short { role, len: n.token.0.len(), listen }));
            }
        }
        if problems.is_empty() { Ok(all) } else { Err(problems) }
    }

    fn error(&self, line: Option<usize>, problem: Problem) -> Error {
        Error { path: self.path.clone(), line, problem }
    }
}

/// A `NAME:ROLE=TOKEN` line as its three parts (trimmed).
fn named_line(l: &str) -> Option<(&str, &str, &str)> {
    let (key, value) = l.split_once('=')?;
    let (name, role) = key.split_once(':')?;
    let (name, role) = (name.trim(), role.trim());
    // A word before and after the colon: a bare token holding `:` and `=` is not a named line.
    let word =
        |w: &str| !w.is_empty() && w.len() <= 64 && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    (word(name) && word(role)).then(|| (name, role, value.trim()))
}

/// The rest of [`Problem::UnknownKey`]'s message.
fn unknown_key(near: &Option<(String, &'static str)>) -> String {
    match near {
        Some((key, role)) => format!(" `{key}`: expected `client=TOKEN` or `worker=TOKEN` (did you mean `{role}`?)"),
        None => ": expected `client=TOKEN` or `worker=TOKEN` (a bare token cannot start with letters and `=`)".into(),
    }
}

/// A line's key: a short word, not the start of a token that happens to hold `=` (base64
/// padding, for one).
fn is_key(k: &str) -> bool {
    (1..=16).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
}

/// A token as read: visible ASCII only, since it travels in an `authorization` header.
fn checked(s: &str) -> Result<Token, Problem> {
    if s.bytes().all(|b| b.is_ascii_graphic()) { Ok(Token(s.to_string())) } else { Err(Problem::BadChar) }
}

/// The permission bits of `path` when group or others have any access to it.
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The role a misspelt key most likely meant (`clinet`, `Worker`, `workers`): at most two edits
/// away, letter case ignored.
fn closest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    ["client", "worker"].into_iter().find(|r| strsim::osa_distance(&key, r) <= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = "127.0.0.1:7070";
    const OPEN: &str = "0.0.0.0:7070";
    const HEX32: &str = "0123456789abcdef0123456789abcdef";
    const HEX32B: &str = "fedcba9876543210fedcba9876543210";

    fn parse(text: &str) -> Result<TokenFile, Vec<String>> {
        TokenFile::parse(Path::new("tokens"), text).map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    /// What a client and a worker read from `text`: their tokens, or the first problem.
    fn roles(text: &str) -> (String, String) {
        let show = |r: Result<Token, Error>| r.map_or_else(|e| e.to_string(), Token::into_secret);
        match parse(text) {
            Ok(f) => (show(f.token(Role::Client)), show(f.token(Role::Worker))),
            Err(es) => (es[0].clone(), es[0].clone()),
        }
    }

    fn server(text: &str, listen: &str) -> Result<(String, String), Vec<String>> {
        let file = parse(text)?;
        file.server_tokens(listen.parse().unwrap())
            .map(|(c, w)| (c.into_secret(), w.into_secret()))
            .map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn clients_and_workers_take_their_line_or_the_one_bare_token() {
        let cases: &[(&str, (&str, &str))] = &[
            ("s3cret\n", ("s3cret", "s3cret")),
            ("# tokens\nclient=abc\n\nworker = def\n", ("abc", "def")),
            (
                "worker=def\n",
                (
                    "token file `tokens`: no `client=TOKEN` line: add one (generate the token with `openssl rand -hex 32`)",
                    "def",
                ),
            ),
            // base64 padding is part of a bare token, not a key
            ("QUJDREVGR0hJSktMTU5PUA==\n", ("QUJDREVGR0hJSktMTU5PUA==", "QUJDREVGR0hJSktMTU5PUA==")),
            ("client=YWJj==\nworker=ZGVm\n", ("YWJj==", "ZGVm")),
        ];
        for (text, (client, worker)) in cases {
            assert_eq!(roles(text), (client.to_string(), worker.to_string()), "{text:?}");
        }
    }

    #[test]
    fn bad_files_name_every_problem_with_its_line() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["token file `tokens`: it holds no token"]),
            ("# only a comment\n\n", &["token file `tokens`: it holds no token"]),
            (
                "client=a\nclient=b\nworker=c\n",
                &["token file `tokens`:2: a second `client=` line (the first is on line 1): keep one"],
            ),
            (
                "client=a\nworker=b\nworker=c\nclient=d\n",
                &[
                    "tokens`:3: a second `worker=` line (the first is on line 2)",
                    "tokens`:4: a second `client=` line (the first is on line 1)",
                ],
            ),
            (
                "clinet=a\nworker=b\n",
                &[
                    "token file `tokens`:1: unknown key `clinet`: expected `client=TOKEN` or `worker=TOKEN` (did you mean `client`?)",
                ],
            ),
            (
                "wroker=abc\n",
                &[
                    "tokens`:1: unknown key `wroker`: expected `client=TOKEN` or `worker=TOKEN` (did you mean `worker`?)",
                ],
            ),
            ("admin=abc\nclient=x\n", &["tokens`:1: unknown key: expected `client=TOKEN` or `worker=TOKEN`"]),
            ("client=\nworker=b\n", &["tokens`:1: `client=` has no token after it"]),
            ("a\nb\n", &["tokens`:2: a token without a role"]),
            ("client=a\nxyz\n", &["tokens`:2: a token without a role"]),
            ("client=a b\n", &["tokens`:1: the token holds a space or a character that is not visible ASCII"]),
            ("client=a\nclient=b\nfoo=c\n", &["tokens`:2: a second `client=`", "tokens`:3: unknown key: expected"]),
        ];
        for (text, wanted) in cases {
            let got = parse(text).err().unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert_eq!(got.len(), wanted.len(), "{text:?}: {got:#?}");
            for (g, w) in got.iter().zip(wanted.iter()) {
                assert!(g.contains(w), "{text:?}: {g:?} should contain {w:?}");
            }
        }
    }

    #[test]
    fn the_server_wants_two_different_tokens_long_enough_off_loopback() {
        let both = format!("client={HEX32}\nworker={HEX32B}\n");
        assert_eq!(server(&both, OPEN), Ok((HEX32.to_string(), HEX32B.to_string())));
        assert_eq!(server("client=c-1\nworker=w-2\n", LOOPBACK), Ok(("c-1".into(), "w-2".into())));

        let refused: &[(&str, &str, &[&str])] = &[
            (
                "client=abc\nworker=abc\n",
                LOOPBACK,
                &["the client token (line 1) and the worker token (line 2) are the same"],
            ),
            ("s3cret\n", LOOPBACK, &["tokens`:1: one token for clients and workers alike"]),
            ("worker=abc\n", LOOPBACK, &["no `client=TOKEN` line"]),
            (
                "client=short\nworker=0123456789abcdef0123456789abcde\n",
                OPEN,
                &[
                    "tokens`:1: the client token has 5 characters; listening on 0.0.0.0:7070 (off loopback) needs at least 32",
                    "tokens`:2: the worker token has 31 characters",
                ],
            ),
        ];
        for (text, listen, wanted) in refused {
            let got = server(text, listen).expect_err(text);
            assert_eq!(got.len(), wanted.len(), "{text:?}: {got:#?}");
            for (g, w) in got.iter().zip(wanted.iter()) {
                assert!(g.contains(w), "{text:?}: {g:?} should contain {w:?}");
            }
        }
    }

    fn principals(text: &str, listen: &str) -> Result<Vec<(String, String, String)>, Vec<String>> {
        let file = parse(text)?;
        file.server_principals(listen.parse().unwrap())
            .map(|all| all.into_iter().map(|n| (n.name, n.role, n.token.into_secret())).collect())
            .map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn named_lines_give_each_token_a_name_and_a_role() {
        let got =
            principals("client=c1\nworker=w1\nalice:operator=a1\n bob : viewer = b1\nci.bot:worker=x1\n", LOOPBACK);
        let want = [
            ("client", "admin", "c1"),
            ("worker", "worker", "w1"),
            ("alice", "operator", "a1"),
            ("bob", "viewer", "b1"),
            ("ci.bot", "worker", "x1"),
        ];
        assert_eq!(got.unwrap(), want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).to_vec());
        // a file of one named line is its holder's token
        let f = parse("alice:operator=a1\n").unwrap();
        assert_eq!(f.token(Role::Client).map(Token::into_secret), Ok("a1".to_string()));
        assert!(f.token(Role::Worker).is_err());
        // named lines alone make a server (no client= or worker= needed), with both sides
        assert_eq!(principals("ann:admin=a\nci:worker=b\n", LOOPBACK).unwrap().len(), 2);

        let refused: &[(&str, &str, &[&str])] = &[
            ("ann:admin=a\n", LOOPBACK, &["no `worker=TOKEN` line"]),
            ("ci:worker=a\n", LOOPBACK, &["no `client=TOKEN` line"]),
            (
                "alice:root=a\nw:worker=x\n",
                LOOPBACK,
                &["tokens`:1: unknown role `root`: expected `viewer`, `operator`"],
            ),
            (
                "alice:viewer=a\nalice:admin=b\nw:worker=x\n",
                LOOPBACK,
                &["tokens`:2: a second token named `alice` (the first is on line 1)"],
            ),
            (
                "client=a\nclient:viewer=b\nworker=x\n",
                LOOPBACK,
                &["tokens`:2: a second token named `client` (the first is on line 1)"],
            ),
            (
                "alice:viewer=a\nbob:admin=a\nw:worker=x\n",
                LOOPBACK,
                &["tokens`:2: the token on line 1 is used again here"],
            ),
            ("alice:viewer=\nb:admin=y\nw:worker=x\n", LOOPBACK, &["tokens`:1: `NAME:ROLE=` has no token after it"]),
            (
                "alice:viewer=short\nw:worker=0123456789abcdef0123456789abcdef\n",
                OPEN,
                &["tokens`:1: the client token has 5 characters"],
            ),
            ("s3cret\n", LOOPBACK, &["one token for clients and workers alike"]),
        ];
        for (text, listen, wanted) in refused {
            let got = principals(text, listen).expect_err(text);
            assert_eq!(got.len(), wanted.len(), "{text:?}: {got:#?}");
            for (g, w) in got.iter().zip(wanted.iter()) {
                assert!(g.contains(w), "{text:?}: {g:?} should contain {w:?}");
            }
        }
    }

    #[test]
    fn no_message_or_debug_output_holds_a_token() {
        let secret = "Zq9SECRETxyzZq9SECRETxyz";
        let texts = [
            format!("client={secret}\nworker={secret}\n"),
            format!("{secret}\n"),
            format!("client={secret}\nclient={secret}x\n"),
            format!("client={secret}\n{secret}\n"),
            format!("client={secret} x\n"),
            // a short base64 token: its start reads as a key, which is not shown
            "ZqSECRET==\n".to_string(),
            format!("client={secret}\nworker=short\n"),
        ];
        for text in &texts {
            let mut shown: Vec<String> = match parse(text) {
                Err(es) => es,
                Ok(f) => {
                    let mut out = vec![format!("{f:?}")];
                    if let Err(es) = server(text, OPEN) {
                        out.extend(es);
                    }
                    out
                }
            };
            shown.push(format!("{:?}", Token(secret.to_string())));
            for s in &shown {
                assert!(!s.contains("SECRET"), "{text:?} shows its token: {s}");
            }
        }
    }
}
