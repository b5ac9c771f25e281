//! The workers page: every connected worker with its labels, runtimes, CPUs, memory and GPUs
//! free and total, the attempts it holds (linked to their steps) and when the engine last
//! heard from it. The same data as `weir workers` and the `ListWorkers` RPC.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::auth::Session;
use super::page::{self, duration, time};
use super::{Web, WebError};

pub(crate) async fn list(State(web): State<Web>, Extension(session): Extension<Session>) -> Result<Response, WebError> {
    let workers = web.engine.workers();
    let now = web.engine.clock.now().0;
    let cores = |m: u64| format!("{:.1}", m as f64 / 1000.0);
    let body = html! {
        h1 { "Workers" }
        @if workers.is_empty() {
            p.muted { "No worker is connected. Start one with `weir-worker --engine URL`." }
        } @else {
            table #workers data-refresh="5" {
                thead { tr {
                    th { "Worker" } th { "Labels" } th { "Runtimes" } th.num { "CPUs free / total" }
                    th.num { "Memory free / total" } th.num { "GPUs free / total" } th { "Attempts held" } th { "Last heard" }
                } }
                tbody {
                    @for w in &workers {
                        tr data-worker=(w.name) {
                            td.mono { (w.name) }
                            td { @for (k, v) in &w.labels { code { (k) "=" (v) } " " } }
                            td { (w.runtimes.join(", ")) }
                            td.num { (cores(w.free.cpus_milli)) " / " (cores(w.total.cpus_milli)) }
                            td.num { (bytes(w.free.memory_bytes)) " / " (bytes(w.total.memory_bytes)) }
                            td.num { (w.free.gpus) " / " (w.total.gpus) }
                            td {
                                @if w.attempts.is_empty() { span.muted { "none" } }
                                @for a in &w.attempts {
                                    div {
                                        a.mono href={"/runs/" (a.run) "/steps/" (a.step)} { (a.run) " · " (a.step) " #" (a.attempt) }
                                        @if a.running { " running" } @else { span.muted { " leased" } }
                                        " since " (time(a.since))
                                    }
                                }
                                @if w.capacity > 0 && w.ahead > 0 {
                                    div.muted { "runs at most " (w.capacity.saturating_sub(w.ahead)) " at once, holds " (w.ahead) " more ahead" }
                                } @else if w.capacity > 0 {
                                    div.muted { "holds at most " (w.capacity) }
                                }
                            }
                            td {
                                (time(w.last_heard)) " "
                                span.muted { "(" (duration(now.saturating_sub(w.last_heard.0))) " ago" @if w.polling { ", waiting for work" } ")" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page::layout("Workers", &session.csrf, "Workers", body).into_response())
}

/// Bytes as people read them (binary units).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
