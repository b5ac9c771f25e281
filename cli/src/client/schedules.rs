//! The commands about pipelines' cron schedules: `schedules` (list), `schedules pause` and
//! `schedules resume`, and `backfill`. The server owns every decision (which ticks a range holds,
//! how `--from` and `--to` read in the schedule's zone, what each tick becomes); these only ask
//! and print its answer through `display`.

use weir_proto::v1::{self, BackfillRequest, ListSchedulesRequest, PauseScheduleRequest, ResumeScheduleRequest};

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, Failure, print_out};
use crate::display;

/// What to suggest when a call about one pipeline's schedule is refused.
const SCHEDULE_HINTS: Hints<'static> = Hints {
    not_found: "`weir schedules` lists the pipelines that have a schedule; `weir pipelines` lists them all",
    invalid: "",
    precondition: "the pipeline has no schedule: add `schedule:` to it and `weir submit` it again",
};

pub(super) async fn list(client: &mut Client, conn: &ConnArgs, pipeline: Option<String>) -> Result<(), Failure> {
    let request = ListSchedulesRequest { pipeline: pipeline.clone().unwrap_or_default() };
    let response = client.list_schedules(request).await.map_err(|s| refused(&s, conn, SCHEDULE_HINTS))?.into_inner();
    let mut schedules = response.schedules;
    schedules.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    if schedules.is_empty() {
        match pipeline {
            Some(name) => eprintln!(
                "no schedule for pipeline `{name}`: add `schedule:` to it and `weir submit` it to a `weir server`"
            ),
            None => eprintln!("no schedules: add `schedule:` to a pipeline and `weir submit` it to a `weir server`"),
        }
        return Ok(());
    }
    print_out(&display::schedules_list(&schedules));
    Ok(())
}

/// Pauses or resumes a schedule and prints what it now does.
pub(super) async fn set_paused(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    pause: bool,
) -> Result<(), Failure> {
    let response = if pause {
        client.pause_schedule(PauseScheduleRequest { pipeline }).await.map(|r| r.into_inner().schedule)
    } else {
        client.resume_schedule(ResumeScheduleRequest { pipeline }).await.map(|r| r.into_inner().schedule)
    };
    let Some(schedule) = response.map_err(|s| refused(&s, conn, SCHEDULE_HINTS))? else {
        eprintln!("error: the server did not say what the schedule now does; `weir schedules` shows it");
        return Err(Failure::Refused);
    };
    print_out(&display::schedule_change(&schedule));
    Ok(())
}

pub(super) async fn backfill(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    from: String,
    to: String,
    dry_run: bool,
) -> Result<(), Failure> {
    let request = BackfillRequest { pipeline: pipeline.clone(), from: from.clone(), to: to.clone(), dry_run };
    let hints = Hints {
        invalid: "--from and --to take RFC 3339 (`2026-11-01T00:00:00Z`) or a date or date and time in the \
                  schedule's zone (`2026-11-01`, `2026-11-01T06:00`); --to must not be after now",
        ..SCHEDULE_HINTS
    };
    let response: v1::BackfillResponse =
        client.backfill(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    if response.ticks.is_empty() {
        eprintln!(
            "no ticks of {pipeline}'s schedule from {from} to {to}; `weir schedules --pipeline {pipeline}` shows when it fires"
        );
        return Ok(());
    }
    print_out(&display::backfill(&pipeline, &response.timezone, &response.ticks, dry_run));
    Ok(())
}
