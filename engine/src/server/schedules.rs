//! What clients ask of schedules: list, pause, resume and backfill, each made durable before it
//! answers with domain views. When ticks fire and what a backfill starts is decided in
//! `scheduler.rs`; this module only takes the lock, calls it and commits.

use super::core::Engine;
use super::error::ApiError;
use super::scheduler::{BackfillTick, ScheduleView};

impl Engine {
    /// The schedules asked for (`pipeline` empty: all), as of now.
    pub(crate) fn schedules(&self, pipeline: &str) -> Result<Vec<ScheduleView>, ApiError> {
        self.schedule_views(pipeline, self.clock.calendar())
    }

    /// Pauses (or resumes) a schedule and answers with its view.
    pub(crate) fn pause(&self, pipeline: &str, paused: bool) -> Result<ScheduleView, ApiError> {
        {
            let mut st = self.lock();
            self.set_paused(&mut st, pipeline, paused, self.clock.calendar())?;
        }
        self.commit()?;
        let mut views = self.schedule_views(pipeline, self.clock.calendar())?;
        views.pop().ok_or_else(|| self.no_schedule(pipeline))
    }

    /// Creates the runs of `pipeline`'s ticks in `[from, to]` (or, `dry_run`, says what would
    /// happen), durably.
    pub(crate) fn request_backfill(
        &self,
        pipeline: &str,
        from: &str,
        to: &str,
        dry_run: bool,
    ) -> Result<Vec<BackfillTick>, ApiError> {
        let ticks = {
            let mut st = self.lock();
            self.backfill(&mut st, pipeline, from, to, dry_run, self.clock.calendar())?
        };
        self.commit()?;
        Ok(ticks)
    }
}
