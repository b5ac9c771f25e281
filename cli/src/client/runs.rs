//! The commands about stored pipelines and their runs: `pipelines`, `runs`, `start`, `status`
//! (and `--watch`), `logs`, `cancel`, `retry`. Each makes its calls and prints through
//! `display`; following a run resumes a broken watch from the last event seen.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use tonic::Code;
use weir_core::diag;
use weir_proto::v1::{
    self, GetRunRequest, GetRunResponse, ListPipelinesRequest, ListRunsRequest, RunState, StartRunRequest,
    StreamLogsRequest, WatchRunRequest, run_event::Kind,
};

use super::conn::{Client, Hints, RUN_HINTS, refused};
use super::{ConnArgs, Failure, StateArg, color_on, now_ms, print_out};
use crate::display::{self, LinePrefixer, Progress};

pub(super) async fn pipelines(client: &mut Client, conn: &ConnArgs) -> Result<(), Failure> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pipelines(ListPipelinesRequest { page_size: 0, page_token: token.clone() })
            .await
            .map_err(|s| refused(&s, conn, Hints::default()))?
            .into_inner();
        all.extend(page.pipelines);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if all.is_empty() {
        eprintln!("no pipelines stored yet: `weir submit DIR` stores one");
        return Ok(());
    }
    print_out(&display::pipelines_table(&all));
    Ok(())
}

pub(super) async fn runs(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: Option<String>,
    states: &[StateArg],
    trigger: Option<String>,
    limit: usize,
) -> Result<(), Failure> {
    let states: Vec<i32> = states.iter().map(|s| s.wire() as i32).collect();
    let mut all = Vec::new();
    let mut token = String::new();
    // Whether --limit left runs out: one run past the limit is asked for to know.
    let mut more = false;
    loop {
        let want = if limit == 0 { 0 } else { (limit + 1 - all.len()).min(100) as u32 };
        let request = ListRunsRequest {
            pipeline: pipeline.clone().unwrap_or_default(),
            states: states.clone(),
            page_size: want,
            page_token: token.clone(),
            trigger: trigger.clone().unwrap_or_default(),
        };
        let hints = Hints { not_found: "run `weir pipelines` to list pipeline names", ..Hints::default() };
        let page = client.list_runs(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
        all.extend(page.runs);
        if limit > 0 && all.len() >= limit {
            more = all.len() > limit || !page.next_page_token.is_empty();
            all.truncate(limit);
            break;
        }
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if all.is_empty() {
        eprintln!("no runs found: `weir start NAME` starts one");
        return Ok(());
    }
    print_out(&display::runs_table(&all, now_ms()));
    if more {
        eprintln!(
            "the {limit} newest matching runs are listed, and there are more: `--limit N` lists more, `--limit 0` all"
        );
    }
    Ok(())
}

// ---- start, status, watch ----

/// Whether `s` looks like a version hash rather than a pipeline name.
fn is_version(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) async fn start(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    params: Vec<(String, String)>,
    no_cache: bool,
) -> Result<String, Failure> {
    let which = if is_version(&pipeline) {
        v1::start_run_request::Pipeline::Version(pipeline)
    } else {
        v1::start_run_request::Pipeline::Name(pipeline)
    };
    let request = StartRunRequest { pipeline: Some(which), params: params.into_iter().collect(), no_cache };
    let hints = Hints {
        not_found: "run `weir pipelines` to list stored pipelines, or `weir submit DIR` to store one",
        invalid: "`weir plan FILE -p NAME=VALUE` checks params against a pipeline file locally",
        precondition: "",
    };
    let response = client.start_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let Some(run) = response.run else {
        eprintln!("error: the server started a run but did not say which");
        return Err(Failure::Refused);
    };
    print_out(&format!("{}\n", run.run_id));
    if io::stdout().is_terminal() {
        eprintln!("started run {} of {}; `weir status {} --watch` follows it", run.run_id, run.pipeline, run.run_id);
    }
    Ok(run.run_id)
}

/// The run with every page of its steps.
pub(super) async fn get_run(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<GetRunResponse, Failure> {
    let mut token = String::new();
    let mut all: Option<GetRunResponse> = None;
    loop {
        let request = GetRunRequest { run_id: run_id.to_string(), step_page_size: 0, step_page_token: token.clone() };
        let page = client.get_run(request).await.map_err(|s| refused(&s, conn, RUN_HINTS))?.into_inner();
        let next = page.next_step_page_token.clone();
        match &mut all {
            None => all = Some(page),
            Some(a) => {
                a.steps.extend(page.steps);
                a.run = page.run.or(a.run.take());
            }
        }
        if next.is_empty() || next == token {
            break;
        }
        token = next;
    }
    let mut all = all.unwrap_or_default();
    all.next_step_page_token.clear();
    Ok(all)
}

pub(super) async fn status(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    let r = get_run(client, conn, run_id).await?;
    let now = now_ms();
    let mut text = r.run.as_ref().map(|run| display::run_header(run, now)).unwrap_or_default();
    text.push('\n');
    text.push_str(&display::steps_table(&r.steps, now));
    text.push_str(&display::approvals::block(run_id, &r.steps, &conn.local_flag()));
    text.push_str(&display::tracking::outputs_block(&r.steps));
    print_out(&text);
    Ok(())
}

/// How many times in a row a broken watch is resumed before giving up.
const WATCH_RESUMES: u32 = 3;

/// Opens the watch again after `after_seq`, a second apart, while the server is unavailable;
/// the last error when it stays so.
async fn resume(
    client: &mut Client,
    run_id: &str,
    after_seq: u64,
    mut last: tonic::Status,
) -> Result<tonic::Streaming<v1::RunEvent>, tonic::Status> {
    for _ in 0..WATCH_RESUMES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match client.watch_run(WatchRunRequest { run_id: run_id.to_string(), after_seq }).await {
            Ok(s) => return Ok(s.into_inner()),
            Err(s) if s.code() == Code::Unavailable => last = s,
            Err(s) => return Err(s),
        }
    }
    Err(last)
}

/// Follows a run until it ends: a line per step change (or, on a terminal, a live block of
/// running steps), then the summary. Ok only when the run succeeded.
pub(super) async fn follow(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    follow_run(client, conn, run_id, OnInterrupt::Detach, OnStuck::Wait).await
}

/// What a step that no registered worker could ever run does to a followed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStuck {
    /// Show why it waits and keep following: a worker that can run it may join (`weir start
    /// --follow`, `weir status --watch`).
    Wait,
    /// Cancel the run and fail at once with the reason: nothing else will ever join (`weir
    /// run`, whose one worker is this machine). Not while no worker has registered yet.
    Cancel,
}

/// What Ctrl-C does while following a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Stop watching; the run goes on (`weir status --watch`).
    Detach,
    /// Cancel the run and follow it to its end; a second Ctrl-C detaches (`weir run`).
    Cancel,
}

/// Follows a run to its end (see [`follow`]), with a choice of what Ctrl-C does.
pub async fn follow_run(
    client: &mut Client,
    conn: &ConnArgs,
    run_id: &str,
    on_interrupt: OnInterrupt,
    on_stuck: OnStuck,
) -> Result<(), Failure> {
    let mut cancelling = false;
    let mut waiting = display::Waiting::default();
    // Why steps wait is not an event (it follows workers, not the run): ask for it when the
    // run has been quiet for 2 s, and every 10 s while it is busy (a GetRun of a big run is
    // not free, and a busy run is rarely stuck).
    let mut ask_why = tokio::time::interval(Duration::from_secs(2));
    let mut last_event = std::time::Instant::now();
    let mut last_asked = std::time::Instant::now();
    let mut stalled = String::new();
    let first = get_run(client, conn, run_id).await?;
    // The watch replays every event from the first, so steps start out pending; the fetch
    // only fixes their order in the live block.
    let mut progress = Progress::new(first.steps.iter().map(|s| (s.name.clone(), v1::StepState::Pending)));
    let tty = io::stdout().is_terminal();
    let color = color_on(tty);
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100usize);
    let request = |after_seq| WatchRunRequest { run_id: run_id.to_string(), after_seq };
    let mut stream = client.watch_run(request(0)).await.map_err(|s| refused(&s, conn, RUN_HINTS))?.into_inner();
    let mut last_seq = 0;
    // Breaks in a row without an event in between: a stream that keeps breaking is given up.
    let mut breaks = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    breaks = 0;
                    last_event = std::time::Instant::now();
                    last_seq = event.seq;
                    // The server closes the stream after the run ends; no need to wait for it.
                    let ends = matches!(&event.kind, Some(Kind::Run(r))
                        if display::run_is_terminal(RunState::try_from(r.state).unwrap_or_default()));
                    let line = progress.apply(&event, color);
                    if tty {
                        // On a terminal the live block shows running steps; keep only the rest.
                        let started = matches!(&event.kind, Some(Kind::Step(c)) if c.state == v1::StepState::Running as i32);
                        let line = if started { None } else { line };
                        print_out(&progress.frame(line.as_slice(), now_ms(), width, color));
                    } else if let Some(line) = line {
                        print_out(&format!("{line}\n"));
                    }
                    if ends {
                        break;
                    }
                }
                Ok(None) => break,
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) && breaks < WATCH_RESUMES => {
                    breaks += 1;
                    tracing::debug!(error = %s, after_seq = last_seq, "watch broke; resuming");
                    match resume(client, run_id, last_seq, s).await {
                        Ok(resumed) => stream = resumed,
                        Err(s) => {
                            print_out(&progress.erase());
                            return Err(refused(&s, conn, RUN_HINTS));
                        }
                    }
                }
                Err(s) => {
                    print_out(&progress.erase());
                    return Err(refused(&s, conn, RUN_HINTS));
                }
            },
            _ = tick.tick(), if tty => print_out(&progress.frame(&[], now_ms(), width, color)),
            _ = ask_why.tick(), if !cancelling => {
                if last_event.elapsed() < Duration::from_secs(2) && last_asked.elapsed() < Duration::from_secs(10) {
                    continue;
                }
                last_asked = std::time::Instant::now();
                let Ok(run) = client.get_run(GetRunRequest { run_id: run_id.to_string(), ..Default::default() }).await
                else { continue };
                let run = run.into_inner();
                let mut lines = waiting.update(&run.steps, now_ms(), color);
                // Why a live run does not move (the server's disk is full), once per change.
                let message = run.run.as_ref().map(|r| r.message.clone()).unwrap_or_default();
                if message != stalled {
                    if !message.is_empty() {
                        lines.push(format!("warning: {message}"));
                    } else if !stalled.is_empty() {
                        lines.push("the server writes again; the run carries on".to_string());
                    }
                    stalled = message;
                }
                if tty {
                    print_out(&progress.frame(&lines, now_ms(), width, color));
                } else {
                    for line in &lines {
                        print_out(&format!("{line}\n"));
                    }
                }
                if on_stuck == OnStuck::Cancel && let Some((step, reason)) = waiting.stuck() {
                    print_out(&progress.erase());
                    eprintln!("error: step {step} can never run here: {reason}; cancelling run {run_id}");
                    eprintln!("help: this machine's worker offers its own cores, memory and GPUs (see `weir-worker --gpus`); run it on a server with such a worker (`weir submit`, `weir start`)");
                    let request = weir_proto::v1::CancelRunRequest { run_id: run_id.to_string(), reason: format!("step {step} can never run here: {reason}") };
                    if let Err(s) = client.cancel_run(request).await {
                        tracing::debug!(error = %s, "cancel refused (the run may have just ended)");
                    }
                    return Err(Failure::RunFailed);
                }
            }
            _ = &mut ctrl_c => {
                if on_interrupt == OnInterrupt::Cancel && !cancelling {
                    cancelling = true;
                    print_out(&progress.erase());
                    eprintln!("cancelling run {run_id} (Ctrl-C again to stop waiting)...");
                    let request = weir_proto::v1::CancelRunRequest { run_id: run_id.to_string(), reason: "Ctrl-C".into() };
                    if let Err(s) = client.cancel_run(request).await {
                        tracing::debug!(error = %s, "cancel refused (the run may have just ended)");
                    }
                    ctrl_c.set(tokio::signal::ctrl_c());
                    continue;
                }
                print_out(&progress.erase());
                let local = conn.local_flag();
                if local.is_empty() {
                    if cancelling {
                        eprintln!("stopped waiting; run {run_id} is being cancelled");
                    } else {
                        eprintln!("stopped watching; run {run_id} goes on (`weir cancel {run_id}` stops it)");
                    }
                } else {
                    // The engine and worker live in this process: the run stops with it.
                    let doing = if cancelling { "cancelling" } else { "running" };
                    eprintln!("stopped {doing} run {run_id}; it is left unfinished: `weir resume {run_id}{local}` goes on with it");
                }
                return Err(Failure::Interrupted);
            }
        }
    }
    if tty {
        print_out(&progress.erase());
    }
    let last = get_run(client, conn, run_id).await?;
    print_out(&format!("\n{}", display::summary(&last)));
    let state = last.run.as_ref().and_then(|r| RunState::try_from(r.state).ok()).unwrap_or_default();
    match state {
        RunState::Succeeded => Ok(()),
        RunState::Failed | RunState::Cancelled => {
            let local = conn.local_flag();
            eprintln!(
                "help: `weir logs {run_id}{local}` prints its logs; `weir retry {run_id}{local}` runs what did not succeed again"
            );
            Err(Failure::RunFailed)
        }
        other => {
            eprintln!(
                "error: the server ended the watch while run {run_id} is still {}; `weir resume {run_id}{}` follows it again",
                display::run_state(other as i32),
                conn.local_flag()
            );
            Err(Failure::Refused)
        }
    }
}

// ---- logs, cancel, retry ----

pub(super) async fn logs(
    client: &mut Client,
    conn: &ConnArgs,
    run_id: &str,
    step: Option<String>,
    follow: bool,
    attempt: u32,
) -> Result<(), Failure> {
    // The run's steps decide whether lines need a `[step] ` prefix, and name near misses.
    let first = client
        .get_run(GetRunRequest { run_id: run_id.to_string(), ..GetRunRequest::default() })
        .await
        .map_err(|s| refused(&s, conn, RUN_HINTS))?
        .into_inner();
    let complete = first.next_step_page_token.is_empty();
    let matching = first.steps.iter().filter(|s| step.as_ref().is_none_or(|w| s.name == *w || s.step == *w)).count();
    if let Some(wanted) = &step
        && matching == 0
        && complete
    {
        eprintln!("error: run {run_id} has no step `{wanted}`");
        let names = first.steps.iter().flat_map(|s| [s.name.as_str(), s.step.as_str()]);
        match diag::did_you_mean(wanted, names) {
            Some(help) => eprintln!("help: {help}"),
            None => eprintln!("help: `weir status {run_id}` lists its steps"),
        }
        return Err(Failure::Refused);
    }
    let prefix = matching != 1 || !complete;
    let request = StreamLogsRequest { run_id: run_id.to_string(), step: step.unwrap_or_default(), follow, attempt };
    let hints =
        Hints { not_found: "`weir status RUN` lists a run's steps; `weir runs` lists run ids", ..Hints::default() };
    let mut stream = client.stream_logs(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let mut lines = LinePrefixer::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut out = io::stdout().lock();
    let result = loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(chunk)) => {
                    let written = if prefix {
                        out.write_all(&lines.push(&chunk.instance_name, &chunk.data))
                    } else {
                        out.write_all(&chunk.data)
                    };
                    // A closed pipe (`weir logs RUN | head`) ends the command quietly.
                    if written.and_then(|()| out.flush()).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(s) => break Err(refused(&s, conn, hints)),
            },
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    let _ = out.write_all(&lines.finish());
    let _ = out.flush();
    result
}

pub(super) async fn cancel(
    client: &mut Client,
    conn: &ConnArgs,
    run_id: &str,
    reason: Option<String>,
) -> Result<(), Failure> {
    let request = v1::CancelRunRequest { run_id: run_id.to_string(), reason: reason.unwrap_or_default() };
    let hints =
        Hints { precondition: "the run has already finished; `weir status RUN` shows how it ended", ..RUN_HINTS };
    let response = client.cancel_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let still = response.run.as_ref().is_some_and(|r| r.state == RunState::Running as i32);
    let tail = if still { "; running attempts are being stopped" } else { "" };
    print_out(&format!("cancelled run {run_id}{tail}\n"));
    Ok(())
}
