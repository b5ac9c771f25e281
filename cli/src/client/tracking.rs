//! Tracking and lineage commands: `runs compare` (over GetRun), `metrics` (MetricHistory) and
//! `lineage` (GetLineage). Each makes its calls and prints through `display::tracking`.

use std::io::{self, IsTerminal};

use weir_core::diag;
use weir_proto::v1::{GetLineageRequest, MetricHistoryRequest};

use super::conn::{Client, Hints, refused};
use super::runs::get_run;
use super::{ConnArgs, Failure, color_on, now_ms, print_out};
use crate::display::tracking as show;

pub(super) async fn compare(client: &mut Client, conn: &ConnArgs, runs: &[String]) -> Result<(), Failure> {
    let mut got = Vec::new();
    for run in runs {
        got.push(get_run(client, conn, run).await?);
    }
    print_out(&show::compare(&got, now_ms(), color_on(io::stdout().is_terminal())));
    Ok(())
}

pub(super) async fn metrics(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    metric: String,
    step: Option<String>,
    limit: u32,
) -> Result<(), Failure> {
    let request = MetricHistoryRequest {
        pipeline: pipeline.clone(),
        metric: metric.clone(),
        step: step.unwrap_or_default(),
        limit,
    };
    let hints = Hints {
        not_found: "`weir pipelines` lists pipelines; `weir status RUN` a run's steps",
        invalid: "one series is one step's: `weir metrics PIPELINE METRIC --step STEP` shows one step's",
        precondition: "",
    };
    let answer = client.metric_history(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    if answer.points.is_empty() {
        if answer.metrics.is_empty() {
            eprintln!("no run of {pipeline} reported any metric yet: a step reports them in metrics.json");
            return Ok(());
        }
        eprintln!("error: no run of {pipeline} reported `{metric}`");
        let near = diag::did_you_mean(&metric, answer.metrics.iter().map(String::as_str));
        eprintln!(
            "help: {}the metrics reported are: {}",
            near.map(|n| format!("{n} ")).unwrap_or_default(),
            answer.metrics.join(", ")
        );
        return Err(Failure::Refused);
    }
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100usize);
    print_out(&show::metric_history(&metric, &answer.points, width));
    Ok(())
}

pub(super) async fn lineage(
    client: &mut Client,
    conn: &ConnArgs,
    target: String,
    down: bool,
    depth: u32,
    json: bool,
) -> Result<(), Failure> {
    let hints = Hints {
        not_found: "`weir status RUN` lists each step's outputs with their digests",
        invalid: "TARGET is a digest (at least 8 hex characters; more when several match) or MODEL, MODEL@ALIAS, MODEL@VERSION",
        precondition: "",
    };
    let answer = client
        .get_lineage(GetLineageRequest { target, down, depth })
        .await
        .map_err(|s| refused(&s, conn, hints))?
        .into_inner();
    print_out(&if json { show::lineage_json(&answer) } else { show::lineage(&answer, down) });
    Ok(())
}
