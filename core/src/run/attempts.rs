//! How attempts end besides success, and the timers that drive them: a failure retries after
//! `retries.delay_after(n)` while retries are left, a lost worker gets a new attempt at once
//! (not counted against retries, up to [`MAX_LOST`] losses), an attempt given back unstarted
//! is offered again as a new attempt (counted as nothing), a `Tick` offers instances whose
//! backoff passed and stops attempts past their timeout. Each instance has at most one timer
//! (a backoff while pending, a deadline while held or awaiting approval), kept in one ordered set so the next
//! wake-up is its first entry. `RunMachine` methods, pure like the rest of the module.

use crate::spec::units::format_duration;

use super::event::Effect;
use super::ids::{AttemptId, InstanceId, Millis, StepState};
use super::machine::RunMachine;
use super::{MAX_LOST, MAX_RELEASED};

impl RunMachine {
    /// The live attempt of `i` failed: retry after a backoff while retries are left.
    pub(super) fn fail_attempt(&mut self, i: usize, reason: String, now: Millis, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        let retries = self.steps[self.slots[i].step].retries;
        let slot = &mut self.slots[i];
        slot.failures += 1;
        let failures = slot.failures;
        if failures <= retries.limit {
            let delay = retries.delay_after(failures);
            self.set_timer(i, now.plus(delay));
            let message = format!("{reason}; retry {failures} of {} in {}", retries.limit, format_duration(delay));
            self.change(i, StepState::Pending, Some(message), out);
        } else if failures > 1 {
            self.fail_for_good(i, format!("{reason} (failed {failures} times)"), out);
        } else {
            self.fail_for_good(i, reason, out);
        }
    }

    /// The live attempt of `i` failed in a way no retry can mend (the worker said so): the
    /// step fails now, retries left or not.
    pub(super) fn fail_permanently(&mut self, i: usize, reason: String, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        self.slots[i].failures += 1;
        self.fail_for_good(i, format!("{reason} (not retried: the worker says no attempt can succeed)"), out);
    }

    /// The worker of `i`'s live attempt was lost: offer a new attempt at once, not counted
    /// against retries, unless it was lost too often already.
    pub(super) fn lose(&mut self, i: usize, now: Millis, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        self.slots[i].lost += 1;
        let (lost, released) = (self.slots[i].lost, self.slots[i].released);
        if lost > MAX_LOST {
            // Past the give-back bound, give-backs count as losses: say so.
            let reason = if released > MAX_RELEASED {
                format!("worker lost {lost} times (given back unstarted {released} times)")
            } else {
                format!("worker lost {lost} times")
            };
            self.fail_attempt(i, reason, now, out);
        } else {
            self.offer(i, out);
        }
    }

    /// The worker of `i`'s leased attempt gave it back unstarted: offer a new attempt at once.
    /// Nothing went wrong, so neither retries nor losses are spent, and the step's timeout
    /// starts again with the next lease; past [`MAX_RELEASED`] give-backs it is a loss.
    pub(super) fn give_back(&mut self, i: usize, now: Millis, out: &mut Vec<Effect>) {
        self.slots[i].released += 1;
        if self.slots[i].released > MAX_RELEASED {
            self.lose(i, now, out);
            return;
        }
        self.clear_timer(i);
        self.offer(i, out);
    }

    /// Fires every timer due at `now`: backoffs offer a new attempt, deadlines stop the attempt
    /// and count as a failure.
    pub(super) fn tick(&mut self, now: Millis, out: &mut Vec<Effect>) {
        while let Some(&(at, i)) = self.timers.first() {
            if at > now {
                break;
            }
            let i = i as usize;
            self.clear_timer(i);
            let state = self.slots[i].state;
            if state == StepState::Pending {
                self.offer(i, out);
            } else if state == StepState::AwaitingApproval {
                let timeout = self.steps[self.slots[i].step].approval_timeout.map(format_duration).unwrap_or_default();
                self.fail_for_good(i, format!("approval timed out after {timeout}"), out);
            } else if state.is_held() {
                let timeout = self.steps[self.slots[i].step].timeout.map(format_duration).unwrap_or_default();
                let attempt = AttemptId { instance: InstanceId(i as u32), number: self.slots[i].attempts };
                out.push(Effect::Stop { attempt, reason: format!("timeout after {timeout}") });
                self.fail_attempt(i, format!("timed out after {timeout}"), now, out);
            }
        }
    }

    pub(super) fn set_timer(&mut self, i: usize, at: Millis) {
        self.clear_timer(i);
        self.slots[i].timer = Some(at);
        self.timers.insert((at, i as u32));
    }

    pub(super) fn clear_timer(&mut self, i: usize) {
        if let Some(at) = self.slots[i].timer.take() {
            self.timers.remove(&(at, i as u32));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::run::testkit::Driver;

    #[test]
    fn failures_retry_with_exponential_backoff_capped_at_max_backoff() {
        let mut d = Driver::new(
            "name: r
steps:
  a:
    run: 'true'
    retries: {limit: 3, backoff: 2s, max_backoff: 5s}
",
        );
        d.send("start");
        d.send("leased a.1 w1");
        d.check("@1000 failed a.1 exit code 1", &["a -> pending: exit code 1; retry 1 of 3 in 2s", "wake 3000"]);
        d.check("tick 2999", &[]);
        d.check("tick 3000", &["a -> ready", "ready a.2"]);
        d.check("failed a.1 late", &["rejected: attempt #0.1 is stale (the live attempt is #0.2)"]);
        d.send("leased a.2 w1");
        d.check("@4000 failed a.2 exit code 1", &["a -> pending: exit code 1; retry 2 of 3 in 4s", "wake 8000"]);
        d.check("tick 8000", &["a -> ready", "ready a.3"]);
        d.send("leased a.3 w1");
        d.check("@9000 failed a.3 exit code 1", &["a -> pending: exit code 1; retry 3 of 3 in 5s", "wake 14000"]);
        d.check("tick 14000", &["a -> ready", "ready a.4"]);
        d.send("leased a.4 w1");
        d.check("failed a.4 exit code 1", &["a -> failed: exit code 1 (failed 4 times)", "run failed"]);
        assert_eq!(d.states(), "a=failed/4");
        assert_eq!(d.machine.next_wakeup(), None);
    }

    #[test]
    fn a_permanent_failure_is_not_retried_even_with_retries_left() {
        let mut d = Driver::new(
            "name: r
steps:
  a:
    run: 'true'
    timeout: 1m
    retries: {limit: 3, backoff: 1s}
  b:
    needs: [a]
    run: 'true'
",
        );
        d.send("start");
        d.send("@10 leased a.1 w1");
        d.check(
            "@20 failed! a.1 image nope:1 cannot be pulled",
            &[
                "a -> failed: image nope:1 cannot be pulled (not retried: the worker says no attempt can succeed)",
                "b -> skipped: upstream failed: a",
                "run failed",
            ],
        );
        assert_eq!(d.states(), "a=failed/1 b=skipped/0");
        assert_eq!(d.machine.next_wakeup(), None, "the timeout timer is cleared");
        d.check("failed! a.1 again", &["rejected: the run already finished as failed"]);
    }

    #[test]
    fn a_retry_that_succeeds_lets_the_run_succeed() {
        let mut d = Driver::new(
            "name: r
steps:
  a:
    run: 'true'
    retries: {limit: 1, backoff: 1s}
",
        );
        d.send("start");
        d.send("leased a.1 w1");
        d.send("failed a.1 exit code 1");
        d.check("tick 1000", &["a -> ready", "ready a.2"]);
        d.check("ok a.2", &["a -> leased: worker w", "a -> running", "a -> succeeded", "run succeeded"]);
        assert_eq!(d.state("a"), "succeeded/2");
    }

    #[test]
    fn a_timeout_stops_the_attempt_and_counts_as_a_failure() {
        let mut d = Driver::new(
            "name: t
steps:
  a:
    run: 'true'
    timeout: 30m
    retries: {limit: 1, backoff: 10s}
",
        );
        d.send("start");
        d.check("@1000 leased a.1 w1", &["a -> leased: worker w1", "wake 1801000"]);
        d.check("started a.1", &["a -> running"]);
        d.check("tick 1800999", &[]);
        d.check(
            "tick 1801000",
            &["stop a.1: timeout after 30m", "a -> pending: timed out after 30m; retry 1 of 1 in 10s", "wake 1811000"],
        );
        d.check("failed a.1 killed", &["rejected: attempt #0.1 is stale (no attempt of that instance is live)"]);
        d.check("tick 1811000", &["a -> ready", "ready a.2"]);
        // A lease that never starts times out too.
        d.check("leased a.2 w2", &["a -> leased: worker w2", "wake 3611000"]);
        d.check(
            "tick 4000000",
            &["stop a.2: timeout after 30m", "a -> failed: timed out after 30m (failed 2 times)", "run failed"],
        );
    }

    #[test]
    fn a_lost_worker_requeues_a_new_attempt_without_spending_retries() {
        let mut d = Driver::new(
            "name: l
steps:
  a:
    run: 'true'
    timeout: 1h
",
        );
        d.send("start");
        d.check("leased a.1 w1", &["a -> leased: worker w1", "wake 3600000"]);
        d.send("started a.1");
        d.check("lost a.1", &["a -> ready", "ready a.2"]);
        assert_eq!(d.machine.next_wakeup(), None, "the dead attempt's deadline is gone");
        d.check("succeeded a.1", &["rejected: attempt #0.1 is stale (the live attempt is #0.2)"]);
        d.send("leased a.2 w2");
        d.check("lost a.2", &["a -> ready", "ready a.3"]);
        d.send("leased a.3 w3");
        d.check("lost a.3", &["a -> ready", "ready a.4"]);
        d.send("leased a.4 w4");
        d.check("lost a.4", &["a -> failed: worker lost 4 times", "run failed"]);
        assert_eq!(d.state("a"), "failed/4");
    }

    #[test]
    fn a_lost_worker_after_a_retry_keeps_the_retry_count() {
        let mut d = Driver::new(
            "name: l
steps:
  a:
    run: 'true'
    retries: {limit: 1, backoff: 1s}
",
        );
        d.send("start");
        d.send("leased a.1 w1");
        d.send("failed a.1 exit code 1");
        d.send("tick 1000");
        d.send("leased a.2 w1");
        d.check("lost a.2", &["a -> ready", "ready a.3"]);
        d.send("leased a.3 w2");
        d.check("failed a.3 exit code 1", &["a -> failed: exit code 1 (failed 2 times)", "run failed"]);
    }

    #[test]
    fn a_released_attempt_is_offered_again_spending_nothing() {
        let mut d = Driver::new(
            "name: l
steps:
  a:
    run: 'true'
    timeout: 1h
    retries: {limit: 1, backoff: 1s}
",
        );
        d.send("start");
        d.check("leased a.1 w1", &["a -> leased: worker w1", "wake 3600000"]);
        d.check("released a.1", &["a -> ready", "ready a.2"]);
        assert_eq!(d.machine.next_wakeup(), None, "the released attempt's deadline is gone");
        d.check("succeeded a.1", &["rejected: attempt #0.1 is stale (the live attempt is #0.2)"]);
        // Given back any number of times, it is never a loss nor a failure.
        for n in 2..=6 {
            d.send(&format!("leased a.{n} w1"));
            d.check(&format!("released a.{n}"), &["a -> ready", &format!("ready a.{}", n + 1)]);
        }
        d.send("leased a.7 w2");
        // The one retry is still there.
        d.check("failed a.7 exit code 1", &["a -> pending: exit code 1; retry 1 of 1 in 1s", "wake 1000"]);
        d.send("tick 1000");
        d.send("leased a.8 w2");
        d.send("started a.8");
        // A started attempt cannot be given back.
        d.check("released a.8", &["rejected: `released` does not apply to attempt #0.8, which is running"]);
        d.check("succeeded a.8", &["a -> succeeded", "run succeeded"]);
    }

    #[test]
    fn an_instance_given_back_too_often_spends_losses_then_retries() {
        let mut d = Driver::new(
            "name: l
steps:
  a:
    run: 'true'
    retries: {limit: 1, backoff: 1s}
",
        );
        d.send("start");
        let mut n = 1;
        // Every give-back up to the bound is free.
        for _ in 0..super::MAX_RELEASED {
            d.send(&format!("leased a.{n} w1"));
            d.check(&format!("released a.{n}"), &["a -> ready", &format!("ready a.{}", n + 1)]);
            n += 1;
        }
        // Past it, each one is a loss, and past the losses a failure, which retries.
        for _ in 0..super::MAX_LOST {
            d.send(&format!("leased a.{n} w1"));
            d.check(&format!("released a.{n}"), &["a -> ready", &format!("ready a.{}", n + 1)]);
            assert_eq!(d.machine.slots[0].lost, d.machine.slots[0].released - super::MAX_RELEASED);
            n += 1;
        }
        d.send(&format!("leased a.{n} w1"));
        d.check(
            &format!("released a.{n}"),
            &["a -> pending: worker lost 4 times (given back unstarted 104 times); retry 1 of 1 in 1s", "wake 1000"],
        );
        d.send("tick 1000");
        n += 1;
        d.send(&format!("leased a.{n} w1"));
        d.check(
            &format!("released a.{n}"),
            &["a -> failed: worker lost 5 times (given back unstarted 105 times) (failed 2 times)", "run failed"],
        );
    }
}
