//! `weir metrics RUN STEP`: one attempt's live metrics over GetStepMetrics, printed through
//! `display::live_metrics`; and the rule that tells this form from `weir metrics PIPELINE
//! METRIC` (the first argument is a run the server knows).

use tonic::Code;
use weir_proto::v1::{GetRunRequest, GetStepMetricsRequest};

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, Failure, print_out};
use crate::display::live_metrics as show;

/// Whether `target` is the id of a run the server knows.
pub(super) async fn is_run(client: &mut Client, conn: &ConnArgs, target: &str) -> Result<bool, Failure> {
    let request = GetRunRequest { run_id: target.to_string(), step_page_size: 1, step_page_token: String::new() };
    match client.get_run(request).await {
        Ok(_) => Ok(true),
        // Not a run (or not even shaped like a run id): a pipeline's name.
        Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(false),
        Err(s) => Err(refused(&s, conn, Hints::default())),
    }
}

pub(super) async fn show(
    client: &mut Client,
    conn: &ConnArgs,
    run: &str,
    step: &str,
    attempt: u32,
    json: bool,
) -> Result<(), Failure> {
    let hints = Hints {
        not_found: "`weir status RUN` lists a run's steps and their attempts",
        invalid: "name one instance of a matrix step, as `weir status RUN` shows it",
        precondition: "",
    };
    let request = GetStepMetricsRequest { run_id: run.to_string(), step: step.to_string(), attempt };
    let answer = client.get_step_metrics(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    if json {
        print_out(&show::json_lines(&answer));
    } else {
        let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100usize);
        print_out(&show::step_metrics(&answer, width));
    }
    Ok(())
}
