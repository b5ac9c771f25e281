//! `weir models`: the model registry on the server. `weir models` lists the models, `show` one
//! model's versions and alias history (refused promotions with the values their gate compared),
//! `promote` and `rollback` move an alias, `get` downloads a version's file and checks its
//! BLAKE3 digest before it is in place. The server decides everything; these ask and print.
//! The `render` functions are pure (what they show, the current time included, in; text out)
//! and tested here.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use weir_proto::v1;

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, EXIT_CODES, Failure, print_out};

const MODEL_HINTS: Hints<'static> = Hints {
    not_found: "`weir models` lists the models; `weir models show NAME` its versions and aliases",
    invalid: "model and alias names are lowercase letters, digits, `_` and `-`; versions count from 1",
    precondition: "`weir models show NAME` shows where the alias has been",
};

/// What `weir models` does; lists the models when left out.
#[derive(Subcommand, Debug)]
pub enum ModelAction {
    /// Show a model's versions (digest, run, step, metrics, aliases) and the history of its
    /// aliases, refused promotions included with the values their gate compared.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The model's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Point an alias at a version (the alias is created when new). Recorded with the time and
    /// `promoted by hand` plus --reason. No `when:` gate applies to a promotion by hand.
    #[command(after_help = EXIT_CODES)]
    Promote {
        /// The model's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The version to point at (from 1; `weir models show NAME` lists them).
        #[arg(value_name = "VERSION", value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
        /// The alias to move, e.g. `production`.
        #[arg(long, value_name = "ALIAS")]
        alias: String,
        /// Why, recorded with the move.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Only say what would move (or why it cannot); nothing is recorded.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move an alias back to the version it held before its last move. Rolling back again
    /// undoes the move before that; an alias cannot go back before the first version it held.
    #[command(after_help = EXIT_CODES)]
    Rollback {
        /// The model's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The alias to move back.
        #[arg(long, value_name = "ALIAS")]
        alias: String,
        /// Why, recorded with the move.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Only say what would move (or why it cannot); nothing is recorded.
        #[arg(long)]
        dry_run: bool,
    },
    /// Download a model version's file. The bytes go to a temporary file beside FILE, are
    /// checked against the version's BLAKE3 digest, and only then renamed to FILE; with `-o -`
    /// they go to stdout and a digest mismatch is reported (exit 1) after the last byte.
    #[command(after_help = EXIT_CODES)]
    Get {
        /// `NAME@ALIAS` (`churn@production`), `NAME@N` (a version number) or `NAME` (its latest
        /// version).
        #[arg(value_name = "NAME[@ALIAS|@N]")]
        target: String,
        /// Where to write the file; `-` for stdout.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
}

pub(super) async fn dispatch(client: &mut Client, conn: &ConnArgs, action: Option<ModelAction>) -> Result<(), Failure> {
    match action {
        None => list(client, conn).await,
        Some(ModelAction::Show { name }) => show(client, conn, name).await,
        Some(ModelAction::Promote { name, version, alias, reason, dry_run }) => {
            let reason = reason.unwrap_or_default();
            let request = v1::PromoteModelRequest { name: name.clone(), version, alias, reason, dry_run };
            let response = client.promote_model(request).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?;
            print_event(&name, response.into_inner().event, dry_run)
        }
        Some(ModelAction::Rollback { name, alias, reason, dry_run }) => {
            let reason = reason.unwrap_or_default();
            let request = v1::RollbackModelRequest { name: name.clone(), alias, reason, dry_run };
            let response = client.rollback_model(request).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?;
            print_event(&name, response.into_inner().event, dry_run)
        }
        Some(ModelAction::Get { target, output }) => get(client, conn, target, &output).await,
    }
}

async fn list(client: &mut Client, conn: &ConnArgs) -> Result<(), Failure> {
    let response =
        client.list_models(v1::ListModelsRequest {}).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?.into_inner();
    if response.models.is_empty() {
        eprintln!("no models: a step with `register: {{model: NAME, file: OUTPUT}}` creates one when it succeeds");
        return Ok(());
    }
    print_out(&render::models_table(&response.models));
    Ok(())
}

async fn show(client: &mut Client, conn: &ConnArgs, name: String) -> Result<(), Failure> {
    let response =
        client.get_model(v1::GetModelRequest { name }).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?.into_inner();
    print_out(&render::model(&response));
    Ok(())
}

fn print_event(name: &str, event: Option<v1::AliasEvent>, dry_run: bool) -> Result<(), Failure> {
    let Some(event) = event else {
        eprintln!("error: the server did not say what moved; `weir models show {name}` shows it");
        return Err(Failure::Refused);
    };
    let moved = render::moved(name, &event);
    print_out(&if dry_run { format!("dry run, nothing recorded: would move {moved}") } else { moved });
    Ok(())
}

async fn get(client: &mut Client, conn: &ConnArgs, target: String, output: &Path) -> Result<(), Failure> {
    use super::download::{SaveError, save};
    let request = v1::GetModelArtifactRequest { target: target.clone() };
    let mut stream = client.get_model_artifact(request).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?.into_inner();
    let version = match stream.message().await {
        Ok(Some(v1::GetModelArtifactResponse { part: Some(v1::get_model_artifact_response::Part::Version(v)) })) => v,
        Ok(_) => {
            eprintln!(
                "error: the server's answer did not start with the model version; is it a weir server of this version?"
            );
            return Err(Failure::Refused);
        }
        Err(s) => return Err(refused(&s, conn, MODEL_HINTS)),
    };
    let to_stdout = output.as_os_str() == "-";
    match save(output, version.size, &version.digest, &mut stream).await {
        Ok(()) => {}
        Err(SaveError::Stream(s)) => return Err(refused(&s, conn, MODEL_HINTS)),
        Err(SaveError::Io(e)) => {
            eprintln!("error: {e}");
            return Err(Failure::Refused);
        }
        Err(SaveError::Damaged { size, digest }) => {
            eprintln!(
                "error: {} v{} arrived damaged ({size} bytes, digest {digest}; expected {} bytes, digest {}){}; try again",
                version.model,
                version.version,
                version.size,
                version.digest,
                if to_stdout { "; what was written to stdout is not the model" } else { "; nothing was written" }
            );
            return Err(Failure::Refused);
        }
    }
    let to = if to_stdout { "stdout".to_string() } else { output.display().to_string() };
    eprintln!("{}", render::fetched(&version, &target, &to));
    Ok(())
}

/// Pure rendering of the registry's answers.
pub(crate) mod render {
    use weir_proto::v1;

    use crate::display::{Table, datetime, millis, short};

    /// `production=v2, staging=v3`, or `-`.
    fn aliases(map: &std::collections::HashMap<String, u64>) -> String {
        let mut pairs: Vec<(&String, &u64)> = map.iter().collect();
        pairs.sort();
        if pairs.is_empty() {
            return "-".into();
        }
        pairs.iter().map(|(a, v)| format!("{a}=v{v}")).collect::<Vec<_>>().join(", ")
    }

    fn when(t: Option<&prost_types::Timestamp>) -> String {
        millis(t).map_or_else(|| "-".into(), datetime)
    }

    /// `weir models`: NAME LATEST ALIASES UPDATED, by name.
    pub fn models_table(models: &[v1::ModelSummary]) -> String {
        let mut sorted: Vec<&v1::ModelSummary> = models.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut t = Table::new(&["NAME", "LATEST", "ALIASES", "UPDATED"]);
        for m in sorted {
            t.push(vec![
                m.name.clone(),
                format!("v{}", m.latest_version),
                aliases(&m.aliases),
                when(m.updated_at.as_ref()),
            ]);
        }
        t.render()
    }

    /// A metric for a table: at most four decimals (`0.6396`), integers bare (`4`), tiny
    /// values in scientific notation (`1.234e-5`).
    fn number(x: f64) -> String {
        if x != 0.0 && x.abs() < 1e-3 {
            return format!("{x:.3e}");
        }
        let text = format!("{x:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text == "-0" { "0".into() } else { text.to_string() }
    }

    /// At most three metrics, by name: `auc=0.91 rmse=0.3 (+2)`.
    fn key_metrics(metrics: &std::collections::HashMap<String, f64>) -> String {
        let mut pairs: Vec<(&String, &f64)> = metrics.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        if pairs.is_empty() {
            return "-".into();
        }
        let mut text = pairs.iter().take(3).map(|(k, v)| format!("{k}={}", number(**v))).collect::<Vec<_>>().join(" ");
        if pairs.len() > 3 {
            text.push_str(&format!(" (+{})", pairs.len() - 3));
        }
        text
    }

    /// `v1 -> v2`, `new -> v1`.
    fn from_to(e: &v1::AliasEvent) -> String {
        let from = if e.from_version == 0 { "new".to_string() } else { format!("v{}", e.from_version) };
        format!("{from} -> v{}", e.to_version)
    }

    /// `weir models show NAME`: a heading, the versions, then the alias history.
    pub fn model(m: &v1::GetModelResponse) -> String {
        let latest = m.versions.iter().map(|v| v.version).max().unwrap_or(0);
        let mut out = format!("model {}: latest v{latest}, aliases {}\n\n", m.name, aliases(&m.aliases));
        let mut t = Table::new(&["VERSION", "DIGEST", "RUN", "STEP", "METRICS", "ALIASES", "CREATED"]);
        for v in m.versions.iter().rev() {
            let mut names = v.aliases.clone();
            names.sort();
            t.push(vec![
                format!("v{}", v.version),
                short(&v.digest).to_string(),
                v.run_id.clone(),
                v.step.clone(),
                key_metrics(&v.metrics),
                if names.is_empty() { "-".into() } else { names.join(", ") },
                when(v.created_at.as_ref()),
            ]);
        }
        out.push_str(&t.render());
        out.push_str("\nalias history (oldest first):\n");
        if m.history.is_empty() {
            out.push_str("  none: no alias has pointed at a version yet\n");
        }
        let mut h = Table::new(&["TIME", "ALIAS", "MOVE", "OUTCOME", "BY", "REASON"]);
        for e in &m.history {
            h.push(vec![
                when(e.time.as_ref()),
                e.alias.clone(),
                from_to(e),
                if e.refused { "REFUSED".into() } else { "moved".into() },
                if e.by.is_empty() { "-".into() } else { e.by.clone() },
                e.reason.clone(),
            ]);
        }
        if !m.history.is_empty() {
            for line in h.render().lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// After `promote` or `rollback`: `churn: production v2 -> v3 (promoted by hand: ...)`.
    pub fn moved(name: &str, e: &v1::AliasEvent) -> String {
        format!("{name}: {} {} ({})\n", e.alias, from_to(e), e.reason)
    }

    /// After `get`: which version went where.
    pub fn fetched(v: &v1::ModelVersion, target: &str, to: &str) -> String {
        format!(
            "{target} is {} v{} ({}, {} bytes, digest {}, from run {} step {}): written to {to}",
            v.model,
            v.version,
            v.file,
            v.size,
            short(&v.digest),
            v.run_id,
            v.step
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const T0: u64 = 1_795_780_801_000; // 2026-11-27 12:00:01 UTC

        fn ts(ms: u64) -> Option<prost_types::Timestamp> {
            Some(weir_engine::api::convert::timestamp(weir_core::run::Millis(ms)))
        }

        fn version(n: u64, rmse: f64, aliases: &[&str]) -> v1::ModelVersion {
            v1::ModelVersion {
                model: "churn".into(),
                version: n,
                digest: format!("{n}{}", "ab".repeat(31)),
                file: "model.json".into(),
                size: 10,
                run_id: format!("ml-{n}"),
                step: "deploy".into(),
                metrics: [("rmse".to_string(), rmse)].into(),
                params: Default::default(),
                created_at: ts(T0 + n * 1000),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
            }
        }

        fn event(from: u64, to: u64, at: u64, refused: bool, reason: &str) -> v1::AliasEvent {
            v1::AliasEvent {
                alias: "production".into(),
                from_version: from,
                to_version: to,
                time: ts(at),
                reason: reason.into(),
                refused,
                ..Default::default()
            }
        }

        #[test]
        fn the_models_table_sorts_by_name_and_lists_aliases() {
            let m = |name: &str, latest: u64, aliases: &[(&str, u64)]| v1::ModelSummary {
                name: name.into(),
                latest_version: latest,
                updated_at: ts(T0),
                aliases: aliases.iter().map(|(a, v)| (a.to_string(), *v)).collect(),
            };
            let text = models_table(&[m("fraud", 1, &[]), m("churn", 3, &[("staging", 3), ("production", 2)])]);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines,
                [
                    "NAME   LATEST  ALIASES                    UPDATED",
                    "churn  v3      production=v2, staging=v3  2026-11-27 12:00:01",
                    "fraud  v1      -                          2026-11-27 12:00:01",
                ]
            );
        }

        #[test]
        fn show_lists_versions_newest_first_then_the_history_with_refusals_and_their_values() {
            let m = v1::GetModelResponse {
                name: "churn".into(),
                versions: vec![version(1, 0.5, &[]), version(2, 0.3, &["production"]), version(3, 0.9, &[])],
                aliases: [("production".to_string(), 2)].into(),
                history: vec![
                    event(0, 1, T0 + 1000, false, "registered by run ml-1 step deploy"),
                    event(1, 2, T0 + 2000, false, "registered by run ml-2 step deploy"),
                    event(
                        2,
                        3,
                        T0 + 3000,
                        true,
                        "promotion refused: `metrics.rmse < current.metrics.rmse` is false with metrics.rmse = 0.9, current.metrics.rmse = 0.3",
                    ),
                ],
            };
            let mut m = m;
            m.history[1].by = "ada".into();
            let text = model(&m);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[0], "model churn: latest v3, aliases production=v2");
            assert!(
                lines[2].starts_with("VERSION  DIGEST        RUN   STEP    METRICS   ALIASES     CREATED"),
                "{text}"
            );
            assert_eq!(lines[3], "v3       3abababababa  ml-3  deploy  rmse=0.9  -           2026-11-27 12:00:04");
            assert_eq!(lines[4], "v2       2abababababa  ml-2  deploy  rmse=0.3  production  2026-11-27 12:00:03");
            assert_eq!(lines[7], "alias history (oldest first):");
            assert_eq!(lines[8], "  TIME                 ALIAS       MOVE       OUTCOME  BY   REASON");
            assert_eq!(
                lines[9],
                "  2026-11-27 12:00:02  production  new -> v1  moved    -    registered by run ml-1 step deploy"
            );
            assert!(lines[10].contains("moved    ada  registered by run ml-2"), "{}", lines[10]);
            assert_eq!(
                lines[11],
                "  2026-11-27 12:00:04  production  v2 -> v3   REFUSED  -    promotion refused: \
                 `metrics.rmse < current.metrics.rmse` is false with metrics.rmse = 0.9, current.metrics.rmse = 0.3"
            );
        }

        #[test]
        fn a_model_without_moves_says_so_and_metrics_are_capped_at_three() {
            let mut v = version(1, 0.5, &[]);
            v.metrics = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("e", 5.0)]
                .into_iter()
                .map(|(k, x)| (k.to_string(), x))
                .collect();
            let m = v1::GetModelResponse { name: "m".into(), versions: vec![v], ..Default::default() };
            let text = model(&m);
            assert!(text.contains("a=1 b=2 c=3 (+2)"), "{text}");
            let shown: Vec<String> = [0.6396416124515925, 4.0, 0.00001234, -0.00001, 1234.5, 0.0].map(number).into();
            assert_eq!(shown, ["0.6396", "4", "1.234e-5", "-1.000e-5", "1234.5", "0"]);
            assert!(
                text.ends_with("alias history (oldest first):\n  none: no alias has pointed at a version yet\n"),
                "{text}"
            );
            assert_eq!(
                moved("churn", &event(3, 2, T0, false, "rollback: bad canary")),
                "churn: production v3 -> v2 (rollback: bad canary)\n"
            );
            assert_eq!(
                fetched(&version(2, 0.3, &[]), "churn@production", "out.json"),
                "churn@production is churn v2 (model.json, 10 bytes, digest 2abababababa, from run ml-2 step deploy): written to out.json"
            );
        }
    }
}
