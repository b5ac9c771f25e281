//! `weir secrets set NAME | list | rm NAME`: the server's step secrets (the `WeirSecrets`
//! RPCs). `set` reads the value from stdin: to its end when piped, one line without echo on a
//! terminal; one trailing newline is dropped. No command prints, logs or puts in an error
//! message a value.

use std::io::{IsTerminal, Read};

use weir_proto::v1;

use super::conn::{Hints, SecretsClient, refused};
use super::{ConnArgs, Failure, SecretsAction, print_out};
use crate::display::{Table, datetime, millis};

const HINTS: Hints<'static> =
    Hints { not_found: "`weir secrets list` shows the secrets set", invalid: "", precondition: "see docs/secrets.md" };

pub(super) async fn dispatch(
    client: &mut SecretsClient,
    conn: &ConnArgs,
    action: SecretsAction,
) -> Result<(), Failure> {
    match action {
        SecretsAction::Set { name } => {
            let value = read_value(&name)?;
            let r = client
                .set_secret(v1::SetSecretRequest { name: name.clone(), value })
                .await
                .map_err(|s| refused(&s, conn, HINTS))?
                .into_inner();
            eprintln!("{} secret {name}", if r.replaced { "replaced" } else { "set" });
            Ok(())
        }
        SecretsAction::List => {
            let r = client
                .list_secrets(v1::ListSecretsRequest {})
                .await
                .map_err(|s| refused(&s, conn, HINTS))?
                .into_inner();
            if r.secrets.is_empty() {
                eprintln!("no secrets: set one with `weir secrets set NAME < FILE`");
                return Ok(());
            }
            print_out(&table(&r.secrets));
            Ok(())
        }
        SecretsAction::Rm { name } => {
            client
                .delete_secret(v1::DeleteSecretRequest { name: name.clone() })
                .await
                .map_err(|s| refused(&s, conn, HINTS))?;
            eprintln!("deleted secret {name}");
            Ok(())
        }
    }
}

/// The value on stdin: all of it when piped, one line without echo on a terminal.
fn read_value(name: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let mut bytes = Vec::new();
    let read = if stdin.is_terminal() {
        eprint!("value of {name} (not shown): ");
        let _quiet = NoEcho::start();
        let mut line = String::new();
        let r = stdin.read_line(&mut line).map(|_| bytes = line.into_bytes());
        eprintln!();
        r
    } else {
        stdin.lock().read_to_end(&mut bytes).map(drop)
    };
    if let Err(e) = read {
        eprintln!("error: cannot read the value of {name} from stdin: {e}");
        return Err(Failure::Usage);
    }
    value_of(bytes).map_err(|why| {
        eprintln!("error: the value of {name} {why}: pipe it in (`weir secrets set {name} < FILE`)");
        Failure::Usage
    })
}

/// The value from what stdin held: one trailing newline (`\n` or `\r\n`) dropped; UTF-8 and
/// not empty.
fn value_of(mut bytes: Vec<u8>) -> Result<String, &'static str> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err("is empty");
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text")
}

/// Terminal echo off for as long as it lives (stdin a terminal).
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn start() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios the call fills in; failures are
        // checked and leave the terminal as it was.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return NoEcho(None);
            }
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes read in `start`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

/// NAME CREATED UPDATED, in name order as the server sends them.
fn table(secrets: &[v1::SecretInfo]) -> String {
    let mut t = Table::new(&["NAME", "CREATED", "UPDATED"]);
    for s in secrets {
        let when = |ts: Option<&prost_types::Timestamp>| millis(ts).map_or("-".to_string(), datetime);
        t.push(vec![s.name.clone(), when(s.created_at.as_ref()), when(s.updated_at.as_ref())]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped_and_empty_or_binary_values_refused() {
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (b"s3cret\n", Ok("s3cret")),
            (b"s3cret\r\n", Ok("s3cret")),
            (b"s3cret\n\n", Ok("s3cret\n")),
            (b"two\nlines", Ok("two\nlines")),
            (b"\n", Err("is empty")),
            (b"", Err("is empty")),
            (b"\xff\xfe", Err("is not UTF-8 text")),
        ];
        for (input, want) in cases {
            assert_eq!(value_of(input.to_vec()).as_deref(), want.as_deref(), "{input:?}");
        }
    }
}
