//! Identifiers and states of a run: [`Millis`] (time as the caller tells it), [`InstanceId`],
//! [`AttemptId`] (the fencing token of one dispatch), [`StepState`] and [`RunState`]. Plain
//! values with no behaviour beyond formatting and arithmetic; nothing here reads the clock.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as passed in by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// One step instance of a run: the index of its node in [`crate::plan::Plan::graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(pub u32);

impl InstanceId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl From<petgraph::graph::NodeIndex> for InstanceId {
    fn from(n: petgraph::graph::NodeIndex) -> Self {
        InstanceId(n.index() as u32)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One dispatch of one instance: attempt `number` (from 1) of `instance`. Unique within a run
/// and deterministic, so it survives a restart that replays the run's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    pub instance: InstanceId,
    pub number: u32,
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.instance, self.number)
    }
}

/// The state of one step instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for its needs, or for a retry's backoff to pass.
    #[default]
    Pending,
    /// Offered for dispatch; no worker holds it yet.
    Ready,
    /// Its needs are met, but its `approval:` waits for a person to approve or reject it.
    #[serde(rename = "awaiting_approval")]
    AwaitingApproval,
    /// A worker holds the lease but has not reported the start.
    Leased,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    /// Not run: an earlier successful attempt with the same cache key (or, for `weir retry
    /// --from`, the retried run) supplied its outputs and metrics. Satisfies dependents like
    /// `Succeeded`.
    Cached,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled | StepState::Cached
        )
    }

    /// Succeeded, or supplied by an earlier success (`cached`): its outputs and metrics exist.
    pub fn is_success(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Cached)
    }

    /// A worker holds a live attempt: cancel and timeouts must stop it.
    pub fn is_held(self) -> bool {
        matches!(self, StepState::Leased | StepState::Running)
    }
}

impl StepState {
    /// The lowercase name, as logs, the CLI and the store's JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Ready => "ready",
            StepState::AwaitingApproval => "awaiting_approval",
            StepState::Leased => "leased",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
            StepState::Cached => "cached",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }
}

impl RunState {
    /// The lowercase name, as logs, the CLI and the store's JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_states_format_for_logs() {
        let a = AttemptId { instance: InstanceId(3), number: 2 };
        assert_eq!(a.to_string(), "#3.2");
        assert_eq!(Millis(1_000).plus(Duration::from_secs(2)), Millis(3_000));
        assert_eq!(Millis(u64::MAX - 1).plus(Duration::from_secs(2)), Millis(u64::MAX));
        let terminal: Vec<bool> = [StepState::Pending, StepState::Leased, StepState::Skipped, StepState::Cancelled]
            .map(StepState::is_terminal)
            .to_vec();
        assert_eq!(terminal, [false, false, true, true]);
        assert_eq!(serde_json::to_string(&StepState::Succeeded).unwrap(), "\"succeeded\"");
        let awaiting = serde_json::to_string(&StepState::AwaitingApproval).unwrap();
        assert_eq!(
            (awaiting.as_str(), StepState::AwaitingApproval.as_str()),
            ("\"awaiting_approval\"", "awaiting_approval")
        );
    }
}
