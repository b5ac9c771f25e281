//! `weir artifacts ls RUN [STEP]` and `weir artifacts get RUN STEP [PATH] -o FILE|DIR`: any
//! step's outputs out of the server, each file checked against its digest before it is put in
//! place (written beside the target, then renamed: a damaged or cut download never replaces
//! anything).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use weir_proto::v1;

use super::conn::{Client, RUN_HINTS, refused};
use super::download::{SaveError, save};
use super::runs::get_run;
use super::{ConnArgs, Failure, print_out};
use crate::display::Table;

#[derive(Subcommand, Debug)]
pub enum ArtifactAction {
    /// List the outputs of a run's steps (or of one step instance): path, size and digest.
    Ls {
        #[arg(value_name = "RUN")]
        run: String,
        /// One step instance (`train[l2=0.1]`) or step (all its instances).
        #[arg(value_name = "STEP")]
        step: Option<String>,
    },
    /// Download a step instance's output file, checked against its digest. Without PATH: the
    /// one output of the step, or with `-o DIR` every output into DIR (its folders kept).
    Get {
        #[arg(value_name = "RUN")]
        run: String,
        /// The step instance, as `weir status RUN` names it.
        #[arg(value_name = "STEP")]
        step: String,
        /// The file's path among the step's outputs.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        /// Where to put it: a file, a folder (for several), or `-` for stdout.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

pub(super) async fn dispatch(client: &mut Client, conn: &ConnArgs, action: ArtifactAction) -> Result<(), Failure> {
    match action {
        ArtifactAction::Ls { run, step } => ls(client, conn, &run, step.as_deref()).await,
        ArtifactAction::Get { run, step, path, output } => get(client, conn, &run, &step, path, &output).await,
    }
}

/// The step instances of `run` that `step` names (an instance, or every instance of a step).
fn chosen<'a>(got: &'a v1::GetRunResponse, step: Option<&str>) -> Vec<&'a v1::Step> {
    got.steps.iter().filter(|s| step.is_none_or(|want| s.name == want || s.step == want)).collect()
}

async fn ls(client: &mut Client, conn: &ConnArgs, run: &str, step: Option<&str>) -> Result<(), Failure> {
    let got = get_run(client, conn, run).await?;
    let steps = chosen(&got, step);
    if steps.is_empty() {
        eprintln!("error: run {run} has no step {}: `weir status {run}` lists them", step.unwrap_or_default());
        return Err(Failure::Refused);
    }
    let mut t = Table::new(&["STEP", "PATH", "SIZE", "DIGEST"]);
    let mut any = false;
    for s in steps {
        for f in s.outputs.iter().flat_map(|m| &m.files) {
            any = true;
            t.push(vec![s.name.clone(), f.path.clone(), f.size.to_string(), f.digest.clone()]);
        }
    }
    if !any {
        eprintln!("no outputs: a step's `outputs:` are kept when it succeeds");
        return Ok(());
    }
    print_out(&t.render());
    Ok(())
}

async fn get(
    client: &mut Client,
    conn: &ConnArgs,
    run: &str,
    step: &str,
    path: Option<String>,
    output: &Path,
) -> Result<(), Failure> {
    let got = get_run(client, conn, run).await?;
    let Some(instance) = got.steps.iter().find(|s| s.name == step) else {
        let names: Vec<&str> = got.steps.iter().map(|s| s.name.as_str()).collect();
        eprintln!("error: run {run} has no step instance {step:?}; it has: {}", names.join(", "));
        return Err(Failure::Refused);
    };
    let files: Vec<&v1::ManifestEntry> = instance.outputs.iter().flat_map(|m| &m.files).collect();
    let wanted: Vec<&v1::ManifestEntry> = match &path {
        Some(p) => match files.iter().find(|f| &f.path == p) {
            Some(f) => vec![*f],
            None => {
                let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                eprintln!("error: {step} of run {run} has no output {p:?}; its outputs: {}", list(&paths));
                return Err(Failure::Refused);
            }
        },
        None => files.clone(),
    };
    if wanted.is_empty() {
        eprintln!("error: {step} of run {run} has no outputs");
        return Err(Failure::Refused);
    }
    let into_dir = output.is_dir() || (wanted.len() > 1 && output.as_os_str() != "-");
    if wanted.len() > 1 && !into_dir {
        let paths: Vec<&str> = wanted.iter().map(|f| f.path.as_str()).collect();
        eprintln!("error: {step} has several outputs ({}): name one, or give a folder with -o", list(&paths));
        return Err(Failure::Refused);
    }
    for f in wanted {
        let target = if into_dir {
            // The manifest's paths are relative and `..`-free (the server checks them); the
            // check is repeated here, since this writes on the user's machine.
            if f.path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") || f.path.starts_with('/') {
                eprintln!("error: refusing the output path {:?}: it would leave {}", f.path, output.display());
                return Err(Failure::Refused);
            }
            let t = output.join(&f.path);
            if let Some(parent) = t.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    eprintln!("error: cannot create {}: {e}", parent.display());
                    Failure::Refused
                })?;
            }
            t
        } else {
            output.to_path_buf()
        };
        fetch(client, conn, run, step, f, &target).await?;
    }
    Ok(())
}

fn list(paths: &[&str]) -> String {
    if paths.is_empty() { "none".into() } else { paths.join(", ") }
}

/// One file to `target` (`-`: stdout), checked against `entry`'s digest and size.
async fn fetch(
    client: &mut Client,
    conn: &ConnArgs,
    run: &str,
    step: &str,
    entry: &v1::ManifestEntry,
    target: &Path,
) -> Result<(), Failure> {
    let request = v1::GetArtifactRequest { run_id: run.into(), step: step.into(), path: entry.path.clone() };
    let mut stream = client.get_artifact(request).await.map_err(|s| refused(&s, conn, RUN_HINTS))?.into_inner();
    match save(target, entry.size, &entry.digest, &mut stream).await {
        Ok(()) => {}
        Err(SaveError::Stream(s)) => return Err(refused(&s, conn, RUN_HINTS)),
        Err(SaveError::Io(e)) => {
            eprintln!("error: {e}");
            return Err(Failure::Refused);
        }
        Err(SaveError::Damaged { size, digest }) => {
            eprintln!(
                "error: {} arrived damaged ({size} bytes, digest {digest}; expected {} bytes, digest {}); nothing was written; try again",
                entry.path, entry.size, entry.digest
            );
            return Err(Failure::Refused);
        }
    }
    if target.as_os_str() != "-" {
        eprintln!("{} ({} bytes, digest {}) -> {}", entry.path, entry.size, short(&entry.digest), target.display());
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
