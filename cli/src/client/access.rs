//! `weir tokens create|list|revoke` (named tokens with roles) and `weir audit` (who did what),
//! over the `WeirAccess` service; admin role. The created token is printed once, on stdout
//! alone so it can be captured (`weir tokens create ci --role operator > ci.token`); the
//! rest goes to stderr.

use clap::{Args, Subcommand};
use weir_proto::v1;

use super::conn::{AccessClient, Hints, refused};
use super::{ConnArgs, Failure, now_ms, print_out};
use crate::display::{Table, datetime};

/// `weir tokens`.
#[derive(Subcommand, Debug)]
pub enum TokensAction {
    /// Create a named token with a role and print it (once: the server keeps only its hash).
    ///
    /// Roles: `viewer` reads everything; `operator` also starts, cancels, retries and approves
    /// runs and pauses, resumes and backfills schedules; `admin` also submits pipelines, moves
    /// registry aliases, deletes, backs up and manages tokens; `worker` calls the worker RPCs
    /// only. See docs/auth.md.
    #[command(after_help = super::EXIT_CODES)]
    Create {
        /// Who holds it: 1 to 64 letters, digits, `-`, `_` or `.`; shown in the audit log, on
        /// runs and in registry history.
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin", "worker"])]
        role: String,
    },
    /// List the named tokens (never the tokens): the token file's and those created here.
    #[command(after_help = super::EXIT_CODES)]
    List,
    /// Revoke a created token: its calls and web sessions are refused from the moment this
    /// returns. A token of the server's token file is removed by editing the file.
    #[command(after_help = super::EXIT_CODES)]
    Revoke { name: String },
}

/// `weir audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only entries since this long ago (`90m`, `2h`, `7d`) or this UTC time
    /// (`2026-12-01T09:00:00Z`, `2026-12-01`).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only entries by this principal (a token's name; `anonymous` on a server without tokens).
    #[arg(long, value_name = "NAME")]
    pub who: Option<String>,
    /// At most this many, the newest.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn tokens(client: &mut AccessClient, conn: &ConnArgs, action: TokensAction) -> Result<(), Failure> {
    let hints = Hints::default();
    match action {
        TokensAction::Create { name, role } => {
            let r = client
                .create_token(v1::CreateTokenRequest { name, role })
                .await
                .map_err(|s| refused(&s, conn, hints))?
                .into_inner();
            eprintln!("created token `{}` ({}); it is shown once, below:", r.name, r.role);
            println!("{}", r.token);
        }
        TokensAction::List => {
            let r =
                client.list_tokens(v1::ListTokensRequest {}).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
            let mut t = Table::new(&["NAME", "ROLE", "SOURCE", "CREATED", "BY"]);
            for k in r.tokens {
                let created = if k.created_at_ms == 0 { "-".to_string() } else { datetime(k.created_at_ms) };
                let by = if k.created_by.is_empty() { "-".to_string() } else { k.created_by };
                t.push(vec![k.name, k.role, k.source, created, by]);
            }
            print_out(&t.render());
        }
        TokensAction::Revoke { name } => {
            client
                .revoke_token(v1::RevokeTokenRequest { name: name.clone() })
                .await
                .map_err(|s| refused(&s, conn, hints))?;
            eprintln!("revoked `{name}`: its calls and web sessions are refused from now on");
        }
    }
    Ok(())
}

pub(super) async fn audit(client: &mut AccessClient, conn: &ConnArgs, args: AuditArgs) -> Result<(), Failure> {
    let since_ms = match args.since.as_deref().map(|s| since(s, now_ms())) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("error: --since {e}");
            return Err(Failure::Usage);
        }
    };
    let request = v1::ListAuditRequest { since_ms, who: args.who.unwrap_or_default(), limit: args.limit };
    let r = client.list_audit(request).await.map_err(|s| refused(&s, conn, Hints::default()))?.into_inner();
    if args.json {
        let mut out = String::new();
        for e in &r.entries {
            let line = serde_json::json!({
                "id": e.id, "at_ms": e.at_ms, "at": datetime(e.at_ms), "who": e.who, "role": e.role,
                "action": e.action, "target": e.target, "outcome": e.outcome, "method": e.method,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        print_out(&out);
        return Ok(());
    }
    if r.entries.is_empty() {
        eprintln!("no audit entries match");
        return Ok(());
    }
    let mut t = Table::new(&["TIME (UTC)", "WHO", "ROLE", "ACTION", "TARGET", "OUTCOME"]);
    for e in r.entries {
        t.push(vec![
            datetime(e.at_ms),
            e.who,
            e.role,
            e.action,
            if e.target.is_empty() { "-".into() } else { e.target },
            e.outcome,
        ]);
    }
    print_out(&t.render());
    Ok(())
}

/// `--since`'s value as milliseconds since the epoch: a duration before `now_ms`, an RFC 3339
/// time or a date (midnight UTC).
fn since(text: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(d) = weir_core::spec::units::parse_duration(text) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis().max(0) as u64);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis().max(0) as u64));
    }
    Err(format!(
        "`{text}`: expected a duration like `2h` or `7d`, or a UTC time like `2026-12-01T09:00:00Z` or `2026-12-01`"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_reads_durations_times_and_dates() {
        let now = 10 * 86_400_000;
        assert_eq!(super::since("2h", now), Ok(now - 2 * 3_600_000));
        assert_eq!(super::since("1970-01-02T00:00:00Z", now), Ok(86_400_000));
        assert_eq!(super::since("1970-01-03", now), Ok(2 * 86_400_000));
        assert!(super::since("yesterday", now).unwrap_err().contains("expected a duration"));
    }
}
