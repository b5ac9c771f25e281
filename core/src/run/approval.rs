//! Approval gates: an instance of a step with `approval:` whose needs are met (and whose `when`
//! holds) awaits a person's decision instead of being offered; approval offers it like any ready
//! instance, rejection fails it for good ("rejected by X: why"), and its timeout, if it has one,
//! fails it on the first `Tick` at or after the deadline ("approval timed out after 24h"). The
//! timer is armed from the time of the event that made it await, so a replay of the stored
//! events arms it at the same deadline. Approval is asked once per run: a retry after a failure
//! or a lost worker is not asked again; a new run (`weir retry`) asks again. `RunMachine`
//! methods, pure like the rest of the module.

use super::event::Effect;
use super::ids::{InstanceId, Millis, StepState};
use super::machine::RunMachine;

impl RunMachine {
    /// Instance `i` would be offered, but a person must decide first: it awaits approval, with
    /// its timeout armed when it has one.
    pub(super) fn ask_approval(&mut self, i: usize, now: Millis, out: &mut Vec<Effect>) {
        let message = self.slots[i].approval.clone().unwrap_or_default();
        if let Some(timeout) = self.steps[self.slots[i].step].approval_timeout {
            self.set_timer(i, now.plus(timeout));
        }
        self.change(i, StepState::AwaitingApproval, Some(message.clone()), out);
        out.push(Effect::ApprovalRequested { instance: InstanceId(i as u32), message });
    }

    /// Instance `i`, awaiting approval, was approved: offered like any ready instance.
    pub(super) fn approve(&mut self, i: usize, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        self.slots[i].approved = true;
        self.offer(i, out);
    }

    /// Instance `i`, awaiting approval, was rejected: it fails for good.
    pub(super) fn reject(&mut self, i: usize, by: &str, comment: &str, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        let message =
            if comment.is_empty() { format!("rejected by {by}") } else { format!("rejected by {by}: {comment}") };
        self.fail_for_good(i, message, out);
    }
}

#[cfg(test)]
mod tests {
    use crate::run::testkit::Driver;

    const YAML: &str = "name: a
params:
  model: churn
steps:
  train:
    run: 'true'
  deploy:
    needs: [train]
    approval: {message: 'ship {{ params.model }} from {{ run.id }}?', timeout: 1h}
    run: 'true'
    retries: {limit: 1, backoff: 1s}
  notify:
    needs: [deploy]
    run: 'true'
";

    fn awaiting() -> Driver {
        let mut d = Driver::new(YAML);
        d.send("start");
        d.check(
            "@1000 ok train.1",
            &[
                "train -> leased: worker w",
                "train -> running",
                "train -> succeeded",
                "deploy -> awaiting_approval: ship churn from run-1?",
                "approval requested for deploy: ship churn from run-1?",
                "wake 3601000",
            ],
        );
        d
    }

    #[test]
    fn approval_offers_the_step_and_a_retry_is_not_asked_again() {
        let mut d = awaiting();
        d.check("leased deploy.1 w", &["rejected: attempt #1.1 is stale (no attempt of that instance is live)"]);
        d.check("approve train alice", &["rejected: instance #0 is not awaiting approval (it is succeeded)"]);
        d.check("approve deploy alice looks fine", &["deploy -> ready", "ready deploy.1"]);
        assert_eq!(d.machine.next_wakeup(), None, "the approval timeout is cleared");
        d.check("approve deploy alice", &["rejected: instance #1 is not awaiting approval (it is ready)"]);
        d.send("leased deploy.1 w");
        d.check(
            "@5000 failed deploy.1 exit code 1",
            &["deploy -> pending: exit code 1; retry 1 of 1 in 1s", "wake 6000"],
        );
        d.check("tick 6000", &["deploy -> ready", "ready deploy.2"]);
        d.send("ok deploy.2");
        d.check(
            "ok notify.1",
            &["notify -> leased: worker w", "notify -> running", "notify -> succeeded", "run succeeded"],
        );
    }

    #[test]
    fn rejection_fails_the_step_and_skips_what_needs_it() {
        let mut d = awaiting();
        d.check(
            "reject deploy bob metrics look off",
            &[
                "deploy -> failed: rejected by bob: metrics look off",
                "notify -> skipped: upstream failed: deploy",
                "run failed",
            ],
        );
        assert_eq!(d.states(), "train=succeeded/1 deploy=failed/0 notify=skipped/0");
        d.check("approve deploy alice", &["rejected: the run already finished as failed"]);
        let mut d = awaiting();
        d.check(
            "reject deploy bob",
            &["deploy -> failed: rejected by bob", "notify -> skipped: upstream failed: deploy", "run failed"],
        );
    }

    #[test]
    fn the_timeout_fails_the_step_on_the_first_tick_at_the_deadline() {
        let mut d = awaiting();
        d.check("tick 3600999", &[]);
        d.check(
            "tick 3601000",
            &[
                "deploy -> failed: approval timed out after 1h",
                "notify -> skipped: upstream failed: deploy",
                "run failed",
            ],
        );
        d.check("approve deploy alice", &["rejected: the run already finished as failed"]);
    }

    #[test]
    fn without_a_timeout_it_waits_until_cancelled() {
        let mut d = Driver::new("name: a\nsteps:\n  a:\n    approval: {message: go?}\n    run: 'true'\n");
        d.check("start", &["a -> awaiting_approval: go?", "approval requested for a: go?"]);
        assert_eq!(d.machine.next_wakeup(), None);
        d.check("tick 999999999", &[]);
        d.check("cancel", &["a -> cancelled", "run cancelled"]);
        d.check("approve a alice", &["rejected: the run already finished as cancelled"]);
    }

    #[test]
    fn a_replay_of_the_events_awaits_again_with_the_same_deadline() {
        let mut d = awaiting();
        let mut replayed = Driver::new(YAML);
        for (at, line) in [(0, "start"), (1000, "ok train.1")] {
            replayed.send(&format!("@{at} {line}"));
        }
        assert_eq!(replayed.states(), d.states());
        assert_eq!(replayed.machine.next_wakeup(), d.machine.next_wakeup());
        replayed.check(
            "tick 3601000",
            &[
                "deploy -> failed: approval timed out after 1h",
                "notify -> skipped: upstream failed: deploy",
                "run failed",
            ],
        );
        d.check("approve deploy alice", &["deploy -> ready", "ready deploy.1"]);
    }

    #[test]
    fn a_when_that_skips_the_step_asks_nobody() {
        let mut d = Driver::new(
            "name: a\nparams:\n  go: false\nsteps:\n  a:\n    when: params.go\n    approval: {message: go?}\n    run: 'true'\n",
        );
        d.check("start", &["a -> skipped: when `params.go` is false: params.go = false", "run succeeded"]);
    }
}
