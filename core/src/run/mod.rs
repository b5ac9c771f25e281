//! The run state machine: events in, effects out. A [`RunMachine`] holds the state of one run
//! (each step instance's state, attempts, timers and metrics) and [`RunMachine::apply`] turns one
//! [`Event`] into the [`Effect`]s the engine loop must perform, or a typed [`Rejected`] that
//! leaves the state untouched. It is pure and deterministic: no I/O, no clock (`now` is an
//! argument), no async, and it knows nothing about sled, gRPC or processes, so replaying the
//! same events at the same times rebuilds the same state.
//!
//! `ids` holds the identifiers and states, `event` the vocabulary of events, effects and
//! rejections, `rules` what the machine copies out of the pipeline (retries, timeouts, `when`,
//! `gate`) and how it evaluates expressions, `machine` the state and the dispatch of events,
//! `progress` readiness, gates, upstream failure, cancel and the end of the run, and
//! `attempts` failures, retries, lost workers and timers, `approval` approval gates.
//!
//! Semantics, decided here and tested in each file:
//! - An instance is offered (`Effect::Ready`) once every instance it needs has succeeded or was
//!   skipped by its own `when`: as in Argo, a `when`-skipped step satisfies its dependents; a
//!   step skipped because something upstream failed does not.
//! - `when` is evaluated just before an instance would become ready, over the run's params, the
//!   instance's matrix values and the recorded metrics of upstream steps. False skips it; an
//!   evaluation error fails it (no retry: the inputs will not change). An upstream step that
//!   was skipped has no metrics, so reading `steps.X.metrics.Y` of it is such an error.
//! - `gate` is evaluated when an attempt reports success, over its metrics (and its
//!   explanation, which the caller hands over first: `RunMachine::explained`). False (or an
//!   evaluation error) fails the step with the expression and every value it read, and never
//!   retries: a gate over the same outputs is deterministic.
//! - A failed attempt (non-zero exit, timeout) with retries left waits `retries.delay_after(n)`
//!   after its n-th failure in `Pending`, then becomes ready as a new attempt.
//! - A lost worker does not count against `retries`: the instance is offered again at once as
//!   a new attempt. After [`MAX_LOST`] losses of one instance the next loss counts as an
//!   ordinary failure, so a step that keeps killing its workers still ends.
//! - A worker may give back (`Released`) an attempt it was leased and never started: it is
//!   offered again at once as a new attempt, spending neither retries nor losses. Past
//!   [`MAX_RELEASED`] give-backs of one instance, each further one counts as a loss, so a
//!   worker that leases and gives back in a loop cannot grow a run's events without end.
//! - A timeout is measured from the lease (so image pulls and start-up count), fires on the
//!   first `Tick` at or after the deadline, stops the attempt and counts as a failure.
//! - Every attempt has an [`AttemptId`], the fencing token: a report naming anything other than
//!   the instance's live attempt (older attempts, an attempt that already ended, a duplicate
//!   success) is refused with [`Rejected::StaleAttempt`] (with `Rejected::Finished` once the
//!   run is over).
//! - `Cached` takes a ready attempt to `cached` with the metrics of the attempt that supplied
//!   it (the engine's step cache, or the run a `retry --from` reuses): no worker, no gate (it
//!   passed over the same metrics), and its dependents are released as for a success.
//! - A step with `approval:` awaits a person (`awaiting_approval`, `Effect::ApprovalRequested`)
//!   where it would be offered; `Approved` offers it, `ApprovalRejected` fails it, its timeout
//!   fails it (see `approval`).

mod approval;
mod attempts;
mod event;
mod ids;
mod machine;
mod progress;
mod retry;
mod rules;
#[cfg(test)]
mod testkit;

pub use event::{Effect, Event, Rejected};
pub use ids::{AttemptId, InstanceId, Millis, RunState, StepState};
pub use machine::RunMachine;
pub use retry::{Earlier, RetryPlan, plan_retry};

/// How many times an instance may lose its worker before a loss counts as a failure.
pub const MAX_LOST: u32 = 3;

/// How many times an instance may be given back unstarted before a give-back counts as a loss.
/// Honest workers give a step back only while all their slots are busy, and pause leasing until
/// one frees, so a step is given back a few times at most; this bound is for a worker that
/// leases and gives back in a loop (a bug, or a stolen token).
pub const MAX_RELEASED: u32 = 100;
