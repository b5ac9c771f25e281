//! Runs a killed `weir run` left behind, and `weir resume RUN`. A `weir run` killed outright
//! (kill -9, a crash, a lost terminal) leaves its run `running` in the data folder with nothing
//! running it. The engine that `weir run` and `--local` start on the folder does not resume such
//! runs by itself (`server::Resume::Only`): they are named, with how far they got, and wait
//! until `weir resume RUN --local` resumes one and follows it to its end. Against a server,
//! which resumes every run when it comes back from a crash, `weir resume` follows the run.
//!
//! Everything here only reads what the engine answers; which runs to resume is decided when the
//! engine starts (`local::attach`).

use std::path::Path;
use std::sync::OnceLock;

use weir_proto::v1::{self, ListRunsRequest, RunState};

use super::conn::{Client, Hints, RUN_HINTS, refused};
use super::runs::{OnInterrupt, OnStuck, follow_run};
use super::{ConnArgs, Failure};

/// The unfinished runs found when this process's engine started on a `weir run` data folder,
/// other than one being resumed: left by a `weir run` that was killed.
static INTERRUPTED: OnceLock<Vec<v1::Run>> = OnceLock::new();

/// How many interrupted runs a note lists by name.
const LISTED: usize = 10;

/// Whether `run_id` was found interrupted when this process's engine started.
pub fn is_interrupted(run_id: &str) -> bool {
    INTERRUPTED.get().is_some_and(|runs| runs.iter().any(|r| r.run_id == run_id))
}

/// ` --local` or ` --local DIR`: what commands about `dir` need to be pasted as they are.
pub fn local_flag(dir: &Path) -> String {
    if dir == Path::new(".weir") {
        return " --local".to_string();
    }
    let shown = dir.display().to_string();
    let plain = shown.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b));
    if plain { format!(" --local {shown}") } else { format!(" --local '{}'", shown.replace('\'', r"'\''")) }
}

/// Every queued or running run the engine at `client` knows, oldest first.
async fn unfinished(client: &mut Client) -> Result<Vec<v1::Run>, tonic::Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let request = ListRunsRequest {
            pipeline: String::new(),
            states: vec![RunState::Queued as i32, RunState::Running as i32],
            page_size: 0,
            page_token: token.clone(),
            trigger: String::new(),
        };
        let page = client.list_runs(request).await?.into_inner();
        all.extend(page.runs);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    // Listed newest first.
    all.reverse();
    Ok(all)
}

/// Called right after an engine started on `weir run`'s data folder `dir`, before anything
/// else: every unfinished run but `resumed` was left by a killed `weir run`. Remembers them and
/// says so on stderr, with how far each got and how to finish it.
pub async fn announce_interrupted(client: &mut Client, dir: &Path, resumed: &[String]) {
    let runs = match unfinished(client).await {
        Ok(runs) => runs.into_iter().filter(|r| !resumed.contains(&r.run_id)).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(error = %e.message(), "cannot list unfinished runs");
            Vec::new()
        }
    };
    if !runs.is_empty() {
        eprint!("{}", interrupted_note(&runs, dir, !resumed.is_empty()));
    }
    let _ = INTERRUPTED.set(runs);
}

/// The note naming interrupted runs (pure, tested below).
pub fn interrupted_note(runs: &[v1::Run], dir: &Path, other: bool) -> String {
    let mut out = String::new();
    let (n, other) = (runs.len(), if other { " other" } else { "" });
    let (s, was) = if n == 1 { ("", "was") } else { ("s", "were") };
    out.push_str(&format!(
        "note: {n}{other} run{s} in {} {was} left unfinished by a `weir run` that was killed, and {} left as {}:\n",
        dir.display(),
        if n == 1 { "is" } else { "are" },
        if n == 1 { "it was" } else { "they were" },
    ));
    for r in runs.iter().take(LISTED) {
        out.push_str(&format!("  {}  {}  {} of {} steps done\n", r.run_id, r.pipeline, r.steps_done, r.steps_total));
    }
    if n > LISTED {
        out.push_str(&format!("  ... and {} more (`weir runs --state running{}`)\n", n - LISTED, local_flag(dir)));
    }
    let example = if n == 1 { runs[0].run_id.as_str() } else { "RUN" };
    out.push_str(&format!(
        "help: `weir resume {example}{local}` finishes it here (steps that succeeded are not run again); `weir \
         cancel {example}{local}` ends it\n",
        local = local_flag(dir)
    ));
    out
}

/// The refusal of a command that needs `run_id` finished or live, for a run left unfinished
/// by a killed `weir run` (`--local` only).
pub fn refuse_interrupted(conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    if conn.local.is_none() || !is_interrupted(run_id) {
        return Ok(());
    }
    eprintln!(
        "error: run {run_id} was left unfinished by a `weir run` that was killed: nothing is running it, and it \
         has not ended"
    );
    eprintln!(
        "help: `weir resume {run_id}{local}` finishes it here, keeping the steps that succeeded; or `weir cancel \
         {run_id}{local}` ends it, and then `weir retry` works",
        local = conn.local_flag()
    );
    Err(Failure::Refused)
}

/// `weir resume RUN`: follows the run to its end (with `--local`, the engine resumed it when it
/// started: `conn::connect_resuming`). Ok when it succeeded.
pub(super) async fn resume(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    // Check the run exists before the live view, for the usual hint.
    let hints = Hints { not_found: "`weir runs` lists run ids", ..RUN_HINTS };
    let got = client
        .get_run(v1::GetRunRequest { run_id: run_id.to_string(), ..Default::default() })
        .await
        .map_err(|s| refused(&s, conn, hints))?
        .into_inner();
    if conn.local.is_some()
        && let Some(run) = got
            .run
            .as_ref()
            .filter(|r| !matches!(r.state(), RunState::Succeeded | RunState::Failed | RunState::Cancelled))
    {
        eprint!("{}", resuming_note(run, &got.steps));
    }
    // With --local this machine's worker is the only one: a step it can never run will not
    // be run by anyone else, as in `weir run`.
    let on_stuck = if conn.local.is_some() { OnStuck::Cancel } else { OnStuck::Wait };
    follow_run(client, conn, run_id, OnInterrupt::Detach, on_stuck).await
}

/// What resuming `run` here does (pure, tested below): steps held when its process died run
/// again once their lease expires.
pub fn resuming_note(run: &v1::Run, steps: &[v1::Step]) -> String {
    let held: Vec<&str> = steps
        .iter()
        .filter(|s| matches!(s.state(), v1::StepState::Leased | v1::StepState::Running))
        .map(|s| s.name.as_str())
        .collect();
    let mut out = format!("resuming run {} ({} of {} steps done)", run.run_id, run.steps_done, run.steps_total);
    if !held.is_empty() {
        let (verb, them) = if held.len() == 1 { ("was", "it runs") } else { ("were", "they run") };
        out.push_str(&format!(
            "; {} {verb} running when it was interrupted: {them} again as a new attempt once the old one's lease \
             expires ({} s)",
            held.join(", "),
            crate::local::LEASE_TIMEOUT.as_secs()
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, done: u32, total: u32) -> v1::Run {
        v1::Run {
            run_id: id.into(),
            pipeline: "chain".into(),
            steps_done: done,
            steps_total: total,
            ..Default::default()
        }
    }

    #[test]
    fn the_note_names_each_run_how_far_it_got_and_a_command_that_works_when_pasted() {
        let one = interrupted_note(&[run("chain-1", 2, 6)], Path::new(".weir"), false);
        assert_eq!(
            one,
            "note: 1 run in .weir was left unfinished by a `weir run` that was killed, and is left as it was:\n  \
             chain-1  chain  2 of 6 steps done\n\
             help: `weir resume chain-1 --local` finishes it here (steps that succeeded are not run again); `weir \
             cancel chain-1 --local` ends it\n"
        );
        let two = interrupted_note(&[run("a", 0, 1), run("b", 1, 3)], Path::new("/tmp/my data"), true);
        assert!(two.starts_with("note: 2 other runs in /tmp/my data were left unfinished"), "{two}");
        assert!(two.contains("are left as they were"), "{two}");
        assert!(two.contains("`weir resume RUN --local '/tmp/my data'`"), "{two}");
        let many: Vec<v1::Run> = (0..12).map(|i| run(&format!("r{i}"), 0, 1)).collect();
        let note = interrupted_note(&many, Path::new("d"), false);
        assert!(note.contains("  ... and 2 more (`weir runs --state running --local d`)"), "{note}");
    }

    #[test]
    fn resuming_says_which_steps_run_again() {
        let step = |name: &str, state: v1::StepState| v1::Step {
            name: name.into(),
            state: state as i32,
            ..Default::default()
        };
        let steps =
            [step("a", v1::StepState::Succeeded), step("b", v1::StepState::Running), step("c", v1::StepState::Pending)];
        assert_eq!(
            resuming_note(&run("chain-1", 1, 3), &steps),
            "resuming run chain-1 (1 of 3 steps done); b was running when it was interrupted: it runs again as a new \
             attempt once the old one's lease expires (10 s)\n"
        );
        assert_eq!(resuming_note(&run("chain-1", 0, 3), &steps[2..]), "resuming run chain-1 (0 of 3 steps done)\n");
    }

    #[test]
    fn local_flags_paste_as_they_are() {
        assert_eq!(local_flag(Path::new(".weir")), " --local");
        assert_eq!(local_flag(Path::new("/srv/weir-data")), " --local /srv/weir-data");
        assert_eq!(local_flag(Path::new("it's here")), r" --local 'it'\''s here'");
    }
}
