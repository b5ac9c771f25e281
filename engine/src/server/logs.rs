//! Step logs as workers upload them: appended to the store under their attempt, and every
//! follower of a log (`weir logs -f`) woken. Who may append is checked by the caller
//! (`Engine::check_dispatched`).

use weir_core::run::AttemptId;

use crate::store::LogChunk;

use super::core::Engine;
use super::error::ApiError;

impl Engine {
    /// Appends `chunks` of `attempt` of `run`'s log and wakes the followers.
    pub(crate) fn append_logs(&self, run: &str, attempt: AttemptId, chunks: &[LogChunk]) -> Result<(), ApiError> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.store.append_logs(run, attempt, chunks)?;
        self.logs.send_modify(|n| *n += 1);
        Ok(())
    }
}
