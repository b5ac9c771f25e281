//! `weir models`: the model registry on the server. `weir models` lists the models, `show` one
//! model's versions, its newest explanation as importance bars and its alias history (refused
//! promotions with the values their gate compared), `diff` two versions' explanations,
//! `promote` and `rollback` move an alias (or, for a protected alias, request the move),
//! `approve` approves or rejects a requested move, `get` downloads a version's file and checks its
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

const APPROVE_HINTS: Hints<'static> = Hints {
    not_found: "`weir models show NAME` lists the moves awaiting approval, with their ids",
    invalid: "model and alias names are lowercase letters, digits, `_` and `-`",
    precondition: "`weir models show NAME` shows the alias history",
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
    /// Compare the explanations two versions keep (their steps' explain.json): each feature's
    /// rank and importance before and after, features that appeared or vanished, and the rank
    /// shift a `register.when` reads as `explain.rank_shift`.
    #[command(after_help = EXIT_CODES)]
    Diff {
        /// The model's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The baseline version.
        #[arg(value_name = "A", value_parser = clap::value_parser!(u64).range(1..))]
        from: u64,
        /// The version compared with it.
        #[arg(value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
        to: u64,
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
    /// Approve or reject a pending move of a protected alias (one whose `register:` has
    /// `approval:`). Approved, the alias moves to the requested version; rejected, it stays.
    /// Who decided, when and why go into the alias history (`weir models show NAME`).
    /// Refused (exit 1) when no move of that alias or id awaits approval.
    #[command(after_help = EXIT_CODES)]
    Approve {
        /// The model's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The alias whose move awaits approval, or the request's id as `weir models show NAME`
        /// lists it under "awaiting approval".
        #[arg(value_name = "ALIAS|REQUEST")]
        target: String,
        /// Reject instead of approving: the alias stays where it is.
        #[arg(long)]
        reject: bool,
        /// Why; stored and shown with the decision.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Who decides, as recorded; default $USER. Not verified: the server records it beside
        /// "client token", since tokens carry no name.
        #[arg(long = "as", value_name = "WHO")]
        decided_by: Option<String>,
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
        Some(ModelAction::Diff { name, from, to }) => {
            let request = v1::DiffModelExplanationsRequest { model: name, from_version: from, to_version: to };
            let response = client.diff_model_explanations(request).await.map_err(|s| refused(&s, conn, MODEL_HINTS))?;
            print_out(&explain::diff(&response.into_inner()));
            Ok(())
        }
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
        Some(ModelAction::Approve { name, target, reject, comment, decided_by }) => {
            let decided_by = decided_by.or_else(|| std::env::var("USER").ok()).unwrap_or_default();
            let comment = comment.unwrap_or_default();
            let request =
                v1::DecideAliasMoveRequest { model: name.clone(), target, approve: !reject, comment, decided_by };
            let response = client.decide_alias_move(request).await.map_err(|s| refused(&s, conn, APPROVE_HINTS))?;
            print_event(&name, response.into_inner().event, false)
        }
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

/// Pure rendering of explanations: importance bars and version diffs.
pub(crate) mod explain;
/// Pure rendering of the registry's answers.
pub(crate) mod render;
