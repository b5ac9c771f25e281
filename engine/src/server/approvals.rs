//! Deciding approval gates: [`Engine::approve`] records that someone approved or rejected a step
//! instance awaiting approval, through the run machine (`Approved` / `ApprovalRejected`), and
//! answers only once the decision is flushed. Who decided is the name the caller gives (not
//! verified) beside the principal whose token or web session made the call (`alice`; on a
//! server without tokens `anonymous`). It decides nothing the machine does not: a step that is not awaiting
//! approval is refused with a message that says what it is doing instead.

use weir_core::run::{Effect, Event, StepState};

use super::core::Engine;
use super::error::ApiError;
use super::runs::require_run_id;

/// The longest name or comment a decision keeps.
pub(crate) const MAX_COMMENT: usize = 4096;

/// A decision on one step instance awaiting approval.
pub(crate) struct Decide<'a> {
    pub run_id: &'a str,
    /// The instance's name (`deploy`, `deploy[region=eu]`).
    pub step: &'a str,
    pub approve: bool,
    pub comment: &'a str,
    /// The name the caller gives; may be empty.
    pub name: &'a str,
    /// Whose token (or web session) made the call: the principal's name.
    pub credential: &'a str,
}

impl Engine {
    /// Approves or rejects `d.step` of `d.run_id`; returns the step's state and message after.
    pub(crate) fn approve(&self, d: &Decide<'_>) -> Result<(StepState, Option<String>), ApiError> {
        require_run_id(d.run_id)?;
        if d.step.is_empty() {
            return Err(ApiError::Invalid("step is required: name the step awaiting approval".into()));
        }
        if d.comment.len() > MAX_COMMENT || d.name.len() > MAX_COMMENT {
            return Err(ApiError::Invalid(format!("the comment and the name may be at most {MAX_COMMENT} bytes")));
        }
        let name = d.name.trim();
        let by = if name.is_empty() { d.credential.to_string() } else { format!("{name} ({})", d.credential) };
        let after = {
            let mut st = self.lock();
            let Some(live) = st.runs.get(d.run_id) else {
                drop(st);
                return Err(self.not_live(d.run_id));
            };
            let Some(instance) = live.machine.find(d.step) else {
                let awaiting: Vec<&str> = live
                    .machine
                    .instances()
                    .filter(|i| live.machine.state(*i) == StepState::AwaitingApproval)
                    .map(|i| live.machine.name(i))
                    .collect();
                let hint = match awaiting.as_slice() {
                    [] => "; no step of it awaits approval".to_string(),
                    names => format!("; awaiting approval: {}", names.join(", ")),
                };
                return Err(ApiError::NotFound(format!("run {} has no step {}{hint}", d.run_id, d.step)));
            };
            let state = live.machine.state(instance);
            if state != StepState::AwaitingApproval {
                let decided = live.steps[instance.index()].approval.as_ref().and_then(|a| a.decision.as_ref());
                let why = match decided {
                    Some(dec) => {
                        format!("it was already {} by {}", if dec.approved { "approved" } else { "rejected" }, dec.by)
                    }
                    None if live.pipeline.steps()
                        [live.plan.graph[petgraph::graph::NodeIndex::new(instance.index())].step]
                        .approval
                        .is_none() =>
                    {
                        "it has no `approval:`".to_string()
                    }
                    None => format!("it is {state}"),
                };
                return Err(ApiError::Precondition(format!(
                    "step {} of run {} is not awaiting approval: {why}",
                    d.step, d.run_id
                )));
            }
            let (by, comment) = (by.clone(), d.comment.to_string());
            let event = if d.approve {
                Event::Approved { instance, by, comment }
            } else {
                Event::ApprovalRejected { instance, by, comment }
            };
            let effects = self.apply(&mut st, d.run_id, event, None)?;
            // The first change of the instance is the decision's (`ready`, or `failed`).
            effects
                .into_iter()
                .find_map(|e| match e {
                    Effect::StepChanged { instance: i, state, message } if i == instance => Some((state, message)),
                    _ => None,
                })
                .unwrap_or((state, None))
        };
        self.commit()?;
        let verdict = if d.approve { "approved" } else { "rejected" };
        tracing::info!(run = d.run_id, step = d.step, by, verdict, "approval decided");
        Ok(after)
    }
}
