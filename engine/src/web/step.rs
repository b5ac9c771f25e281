//! A step instance's page: its attempts (worker, times, exit reason), params, outputs with
//! download links, metrics, gate verdict, cache verdict, and its logs rendered server-side
//! (ANSI colours via `ansi`, stderr marked, `?q=` keeping matching lines), with
//! `logs.txt` (plain text, ANSI stripped) and `logs/events` (new lines as rendered HTML
//! while the step runs), and its live metric series as plots (`series_plot`). Data comes from
//! `Engine::step_view`, `explain_cache`, `step_metrics`, `step_explanation` (the bars of the
//! explain.json it wrote, `explain.rs`) and `log_page`.

use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{PreEscaped, html};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use weir_core::run::InstanceId;

use super::auth::{Session, encode};
use super::page::{self, badge, step_badge, time};
use super::run::{segment, span, step_href};
use super::{Web, WebError, ansi, series_plot};
use crate::server::error::ApiError;
use crate::store::{LogChunk, LogCursor, Stream};

/// The most log chunks a page shows (the download has them all).
const MAX_CHUNKS: usize = 20_000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StepQuery {
    /// Keep only log lines holding this text (case-insensitive).
    #[serde(default)]
    pub q: String,
}

/// Every log chunk of instance `i`, in order, at most `max`, and the cursor after the last.
fn all_logs(web: &Web, run: &str, i: InstanceId, max: usize) -> Result<(Vec<(LogCursor, LogChunk)>, bool), ApiError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (batch, _) = web.engine.log_page(run, i, after, 512)?;
        let Some(last) = batch.last() else { return Ok((out, false)) };
        after = Some(last.0);
        out.extend(batch);
        if out.len() >= max {
            return Ok((out, true));
        }
    }
}

/// One line of a log as HTML (no newline): its stream marked, its colours as spans.
fn line_html(attempt: u32, stream: Stream, line: &str) -> String {
    let class = if stream == Stream::Stderr { "line err" } else { "line" };
    format!(r#"<span class="{class}" data-attempt="{attempt}">{}</span>"#, ansi::to_html(line))
}

/// The lines of a chunk (a chunk may hold several, or a part of one).
fn lines(chunk: &LogChunk) -> impl Iterator<Item = String> + '_ {
    let text = String::from_utf8_lossy(&chunk.data).into_owned();
    let text = text.strip_suffix('\n').map(str::to_string).unwrap_or(text);
    text.split('\n').map(str::to_string).collect::<Vec<_>>().into_iter()
}

pub(crate) async fn show(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path((id, instance)): Path<(String, String)>,
    Query(q): Query<StepQuery>,
) -> Result<Response, WebError> {
    let v = web.engine.step_view(&id, &instance)?;
    let cache = web.engine.explain_cache(&id, &instance)?;
    // None before the first attempt (there is nothing to show).
    let live_metrics = web.engine.step_metrics(&id, &instance, 0).ok();
    // The explain.json its outputs hold, if any (a success's; a malformed file shows nothing).
    let explanation = web.engine.step_explanation(&id, v.index)?;
    let (logs, cut) = all_logs(&web, &id, v.index, MAX_CHUNKS)?;
    let now = web.engine.clock.now();
    let needle = q.q.to_lowercase();
    let mut rendered = String::new();
    let mut shown_attempt = 0;
    for (cursor, chunk) in &logs {
        for line in lines(chunk) {
            if !needle.is_empty() && !ansi::strip(&line).to_lowercase().contains(&needle) {
                continue;
            }
            if cursor.attempt != shown_attempt {
                shown_attempt = cursor.attempt;
                rendered.push_str(&format!(r#"<span class="attempt">── attempt {shown_attempt} ──</span>"#));
                rendered.push('\n');
            }
            rendered.push_str(&line_html(cursor.attempt, chunk.stream, &line));
            rendered.push('\n');
        }
    }
    let after = logs.last().map(|(c, _)| format!("{}.{}", c.attempt, c.seq)).unwrap_or_default();
    let live = !v.step.state.is_terminal() && needle.is_empty();
    let base = step_href(&id, &instance);
    let run_done = v.record.state.is_terminal();
    let body = html! {
        p { a href={"/runs/" (segment(&id))} { "← Run " (id) } }
        h1 { span.mono { (instance) } " " span #step-state { (step_badge(v.step.state)) } }
        @if let Some(m) = &v.step.message { p.error { (m) } }
        dl.kv {
            dt { "Step" } dd { (v.step_name) }
            @if !v.stage.is_empty() { dt { "Stage" } dd { (v.stage) } }
            dt { "Params" } dd {
                @for (k, val) in &v.record.params { code { (k) "=" (val.as_str().map_or_else(|| val.to_string(), str::to_string)) } " " }
                @for (k, val) in &v.matrix { code { "matrix." (k) "=" (val) } " " }
            }
            dt { "Cache" } dd #cache data-verdict=(cache.verdict.as_str()) {
                strong { "cache " (cache.verdict.as_str()) } ": " (cache.message)
                @if !cache.cache_key.is_empty() { br; span.muted { "key " code { (cache.cache_key) } } }
                @for d in &cache.differences { br; code.diff { (d.part) } ": " (d.value) " (was " (d.closest) ")" }
            }
            @if let Some(g) = &v.gate {
                dt { "Gate" } dd #gate data-verdict=(g.verdict) { code { (g.expression) } " — " strong { (g.verdict) } ": " (g.detail) }
            }
        }
        (super::approvals::block(&id, &instance, &v.step, &session))
        @if run_done {
            div.actions {
                a href={"/runs/" (segment(&id)) "/retry?from=" (encode(&v.step_name))} { "Retry from this step…" }
            }
        }
        h2 { "Attempts" }
        @if v.attempts.is_empty() { p.muted { "No attempt yet." } } @else {
            table #attempts {
                thead { tr { th.num { "#" } th { "Outcome" } th { "Worker" } th { "Leased" } th { "Started" } th { "Ended" } th.num { "Duration" } th { "Reason" } } }
                tbody {
                    @for a in &v.attempts {
                        tr data-attempt=(a.number) {
                            td.num { (a.number) }
                            td { (badge(&a.outcome)) }
                            td { (a.worker.clone().unwrap_or_default()) }
                            td { @if let Some(t) = a.leased_at { (time(t)) } }
                            td { @if let Some(t) = a.started_at { (time(t)) } }
                            td { @if let Some(t) = a.ended_at { (time(t)) } }
                            td.num { (span(a.started_at.or(a.leased_at), a.ended_at, now)) }
                            td.reason { (a.reason) }
                        }
                    }
                }
            }
        }
        h2 { "Outputs" }
        @match &v.outputs {
            None => p.muted { "None stored (outputs are kept once the step succeeds)." },
            Some(m) => table #outputs {
                thead { tr { th { "Path" } th { "Digest" } th.num { "Size" } } }
                tbody {
                    @for e in m.entries() {
                        tr {
                            td { a href={(base) "/outputs/" (e.path.split('/').map(segment).collect::<Vec<_>>().join("/"))} download { (e.path) } }
                            td.mono { (e.digest.to_string()) }
                            td.num { (e.size) " B" }
                        }
                    }
                }
            },
        }
        h2 { "Metrics" }
        @if v.step.metrics.is_empty() { p.muted { "None." } } @else {
            table #metrics { tbody { @for (k, val) in &v.step.metrics { tr { td { (k) } td.num { (val) } } } } }
        }
        @if let Some(e) = &explanation {
            section #explanation {
                h2 { "Explanation" }
                (super::explain::bars(e))
            }
        }
        @if let Some(m) = live_metrics.as_ref().filter(|m| !m.series.is_empty() || m.summary.malformed > 0) {
            h2 { "Live metrics" }
            p.muted { "Written to $WEIR_METRICS by attempt " (m.attempt) " of " (m.attempts) "; `weir metrics " (id) " " (instance) "` shows them too." }
            @match m.summary.malformed {
                0 => {},
                1 => p.notice { "1 line of $WEIR_METRICS was not a metric point and was ignored (the log says why)." },
                n => p.notice { (n) " lines of $WEIR_METRICS were not metric points and were ignored (the log says why)." },
            }
            @if m.summary.refused > 0 { p.notice { (m.summary.refused) " points were refused past the bound of " (m.limit) " per attempt." } }
            div #live-metrics {
                @for (name, points) in &m.series {
                    figure.live-series {
                        figcaption { code { (name) } " — " (points.len()) " points, last " (points.last().map_or(0.0, |p| p.value)) }
                        (series_plot::svg(name, points))
                    }
                }
            }
        }
        h2 { "Logs" }
        form.filters method="get" action=(base) {
            label { "Lines holding " input type="search" name="q" value=(q.q); }
            button type="submit" { "Search" }
            " " a href={(base) "/logs.txt"} download { "Download (plain text, colours stripped)" }
            " " label { "Highlight " input #log-highlight type="search"; }
        }
        @if cut { p.notice { "Only the first " (MAX_CHUNKS) " chunks are shown: download the log for all of it." } }
        pre #logs .logs data-live-logs=[live.then(|| format!("{base}/logs/events?after={after}"))] { (PreEscaped(rendered)) }
    };
    Ok(page::layout(&format!("{instance} · {id}"), &session.csrf, "Runs", body).into_response())
}

/// The whole log as plain text, ANSI escapes stripped, attempts marked.
pub(crate) async fn logs_txt(
    State(web): State<Web>,
    Path((id, instance)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let v = web.engine.step_view(&id, &instance)?;
    let (logs, _) = all_logs(&web, &id, v.index, usize::MAX)?;
    let mut out = String::new();
    let mut shown = 0;
    for (cursor, chunk) in &logs {
        if cursor.attempt != shown {
            shown = cursor.attempt;
            out.push_str(&format!("── attempt {shown} ──\n"));
        }
        for line in lines(chunk) {
            out.push_str(&ansi::strip(&line));
            out.push('\n');
        }
    }
    let name = format!("{}-{}.log", id, instance);
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition(&name)),
        ],
        out,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct After {
    /// `ATTEMPT.SEQ` of the last chunk the page shows; empty: from the start.
    #[serde(default)]
    pub after: String,
}

/// New log lines as they arrive: `line` events whose data is the line's HTML, and `end`
/// once the instance has finished and everything is sent.
pub(crate) async fn log_events(
    State(web): State<Web>,
    Path((id, instance)): Path<(String, String)>,
    Query(a): Query<After>,
) -> Result<Response, WebError> {
    let v = web.engine.step_view(&id, &instance)?;
    let mut after =
        a.after.split_once('.').and_then(|(x, y)| Some(LogCursor { attempt: x.parse().ok()?, seq: y.parse().ok()? }));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(256);
    let engine = web.engine.clone();
    tokio::spawn(async move {
        let mut woken = engine.logs.subscribe();
        loop {
            woken.borrow_and_update();
            let Ok((batch, finished)) = engine.log_page(&id, v.index, after, 512) else { return };
            let empty = batch.is_empty();
            for (cursor, chunk) in batch {
                after = Some(cursor);
                for line in lines(&chunk) {
                    let ev = Event::default().event("line").data(line_html(cursor.attempt, chunk.stream, &line));
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            if finished && empty {
                let _ = tx.send(Ok(Event::default().event("end").data("{}"))).await;
                return;
            }
            if !empty {
                continue;
            }
            tokio::select! {
                _ = woken.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// One output file, streamed from the blob store as an attachment. The path must name an
/// entry of the instance's manifest (the engine looks it up; nothing is opened by name).
pub(crate) async fn output(
    State(web): State<Web>,
    Path((id, instance, path)): Path<(String, String, String)>,
) -> Result<Response, WebError> {
    weir_data::relpath::check(&path)
        .map_err(|u| ApiError::Invalid(format!("output path {path:?}: {}", u.describe())))?;
    let entry = web.engine.output(&id, &instance, &path)?;
    let file = web
        .engine
        .blobs()
        .open_blob(&entry.digest)
        .map_err(|e| ApiError::Internal(format!("blob {}: {e}", entry.digest)))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let name = entry.path.rsplit('/').next().unwrap_or("output").to_string();
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.size));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("x-weir-digest", HeaderValue::from_str(&entry.digest.to_string()).unwrap_or(HeaderValue::from_static("")));
    if let Ok(v) = HeaderValue::from_str(&disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `attachment` with `name`: an ASCII fallback and the exact name percent-encoded (RFC 6266).
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' { c } else { '_' })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", segment(name))
}
