//! The vocabulary of the run state machine: the [`Event`]s the engine feeds in, the
//! [`Effect`]s (decisions as data) it gets back, and the [`Rejected`] reasons an event is
//! refused. Only types live here; what they do is in `machine` and `progress`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{AttemptId, InstanceId, Millis, RunState, StepState};

/// Something that happened to a run, as the engine saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The run begins: roots become ready.
    Start,
    /// A worker took the lease of a ready attempt.
    Leased { attempt: AttemptId, worker: String },
    /// The worker started the attempt.
    Started { attempt: AttemptId },
    /// The attempt exited successfully; `metrics` are the numbers of its `metrics.json`.
    /// Accepted from `leased` too, for a step too quick for its start report; so is `Failed`.
    Succeeded { attempt: AttemptId, metrics: BTreeMap<String, f64> },
    /// The attempt failed: `reason` is the exit code or message, as the worker said.
    /// `permanent`: the worker knows another attempt cannot do better (an image that cannot be
    /// pulled), so the step fails at once whatever its `retries` say. Absent in events stored
    /// before it existed, which read as `false`.
    Failed {
        attempt: AttemptId,
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        permanent: bool,
    },
    /// The worker holding the attempt was lost (silent past its lease timeout).
    Lost { attempt: AttemptId },
    /// The worker gives back an attempt it was leased but never started (one it held ahead
    /// while its slots stayed busy): offered again at once as a new attempt, counted neither
    /// as a failure nor as a loss. Only from `leased`: a started attempt cannot be given back.
    Released { attempt: AttemptId },
    /// Time passed: fire every timer due at `now` (backoffs, timeouts).
    Tick,
    /// The user cancelled the run.
    Cancel,
    /// A ready attempt is not run: an earlier successful attempt (of run `from`) with the same
    /// cache key, or the run a `weir retry --from` retries, supplies its outputs and `metrics`.
    /// The instance ends `cached` and satisfies its dependents like a success; no gate is
    /// evaluated again (the supplying attempt passed it over the same metrics).
    Cached { attempt: AttemptId, metrics: BTreeMap<String, f64>, from: String },
    /// Someone approved an instance awaiting approval: it is offered to workers. `by` is who
    /// (as the engine could tell), `comment` why; both only recorded.
    Approved { instance: InstanceId, by: String, comment: String },
    /// Someone rejected an instance awaiting approval: it fails, no retry, and what needs it
    /// is skipped as upstream failed.
    ApprovalRejected { instance: InstanceId, by: String, comment: String },
}

impl Event {
    /// The event's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Leased { .. } => "leased",
            Event::Started { .. } => "started",
            Event::Succeeded { .. } => "succeeded",
            Event::Failed { .. } => "failed",
            Event::Lost { .. } => "lost",
            Event::Released { .. } => "released",
            Event::Tick => "tick",
            Event::Cancel => "cancel",
            Event::Cached { .. } => "cached",
            Event::Approved { .. } => "approved",
            Event::ApprovalRejected { .. } => "approval_rejected",
        }
    }

    /// The attempt an event reports on, if it is a report.
    pub fn attempt(&self) -> Option<AttemptId> {
        match self {
            Event::Leased { attempt, .. }
            | Event::Started { attempt }
            | Event::Succeeded { attempt, .. }
            | Event::Failed { attempt, .. }
            | Event::Lost { attempt }
            | Event::Released { attempt }
            | Event::Cached { attempt, .. } => Some(*attempt),
            Event::Start | Event::Tick | Event::Cancel | Event::Approved { .. } | Event::ApprovalRejected { .. } => {
                None
            }
        }
    }
}

/// A decision for the engine loop to carry out, in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// Offer this attempt for dispatch; the engine leases it to a worker and reports `Leased`
    /// with this very attempt id. An offer not yet leased is withdrawn by a `StepChanged` out
    /// of `ready` (cancel).
    Ready { attempt: AttemptId },
    /// Stop a leased or running attempt (timeout, cancel): kill its process group.
    Stop { attempt: AttemptId, reason: String },
    /// Send a `Tick` at `at`: the earliest timer changed. A tick with nothing due is harmless.
    WakeAt { at: Millis },
    /// An instance changed state; `message` says why when there is more to say (a skip, a
    /// failure, a retry).
    StepChanged { instance: InstanceId, state: StepState, message: Option<String> },
    /// Every instance is terminal, or the run was cancelled.
    RunFinished { state: RunState },
    /// An instance began awaiting approval: tell the people who decide (the notification
    /// outbox's signal). `message` is its `approval.message`, rendered.
    ApprovalRequested { instance: InstanceId, message: String },
}

/// Why an event was refused. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the run has not started")]
    NotStarted,
    #[error("the run has already started")]
    AlreadyStarted,
    #[error("the run already finished as {0}")]
    Finished(RunState),
    #[error("attempt {0} names no instance of this run")]
    UnknownInstance(AttemptId),
    /// The fencing check: the report is not about the instance's live attempt.
    #[error("attempt {attempt} is stale ({})", LiveDisplay(*live))]
    StaleAttempt { attempt: AttemptId, live: Option<AttemptId> },
    #[error("instance {0} is not in this run")]
    NoInstance(InstanceId),
    /// An approval or rejection of an instance that is not awaiting one.
    #[error("instance {instance} is not awaiting approval (it is {state})")]
    NotAwaitingApproval { instance: InstanceId, state: StepState },
    /// The attempt is live, but the event does not fit its state (`started` before `leased`).
    #[error("`{event}` does not apply to attempt {attempt}, which is {state}")]
    InvalidTransition { attempt: AttemptId, state: StepState, event: &'static str },
}

struct LiveDisplay(Option<AttemptId>);

impl fmt::Display for LiveDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "the live attempt is {a}"),
            None => f.write_str("no attempt of that instance is live"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_read_well() {
        let a = |number| AttemptId { instance: InstanceId(2), number };
        let cases = [
            (
                Rejected::StaleAttempt { attempt: a(1), live: Some(a(2)) },
                "attempt #2.1 is stale (the live attempt is #2.2)",
            ),
            (
                Rejected::StaleAttempt { attempt: a(2), live: None },
                "attempt #2.2 is stale (no attempt of that instance is live)",
            ),
            (
                Rejected::InvalidTransition { attempt: a(1), state: StepState::Ready, event: "started" },
                "`started` does not apply to attempt #2.1, which is ready",
            ),
            (Rejected::Finished(RunState::Cancelled), "the run already finished as cancelled"),
        ];
        for (rejected, expected) in cases {
            assert_eq!(rejected.to_string(), expected);
        }
        let e = Event::Failed { attempt: a(1), reason: "exit code 2".into(), permanent: false };
        assert_eq!((e.name(), e.attempt()), ("failed", Some(a(1))));
        let json = serde_json::to_string(&Effect::WakeAt { at: Millis(5) }).unwrap();
        assert_eq!(json, r#"{"effect":"wake_at","at":5}"#);
        // Events stored before `permanent` existed still read, as retryable failures.
        let old = r#"{"event":"failed","attempt":{"instance":2,"number":1},"reason":"exit code 2"}"#;
        assert_eq!(serde_json::from_str::<Event>(old).unwrap(), e);
        assert_eq!(serde_json::to_string(&e).unwrap(), old);
    }
}
