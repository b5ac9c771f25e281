//! The engine's one clock: every time the engine reads (a worker's last call, a lease's expiry,
//! the run machine's `now`, a timestamp it stores, a schedule's calendar) comes from a
//! [`Clock`] handle, never from `Instant::now` or `SystemTime::now`. It reads no files and keeps
//! no state beyond its anchor.
//!
//! Two readings. [`Clock::instant`] is monotonic (tokio's, so `tokio::time::pause` moves it).
//! [`Clock::now`] is the run machine's time: the wall time at an anchor plus the monotonic time
//! since, so a jump of the wall clock while the engine runs moves no armed timer (a step
//! timeout fires after its duration, not early). It follows the wall clock again only when no
//! timer is armed ([`Clock::resync`], called by the engine's tick when no run has one), so a
//! clock set right after boot or a host back from suspend does not leave timestamps behind for
//! long. At a restart the new clock starts from the wall time, and the stored deadlines are
//! re-armed against it. [`Clock::calendar`] is the wall time itself, for what the calendar
//! defines: schedules' cron ticks.
//!
//! Tests make a clock at a chosen wall time ([`Clock::at`]) and move it with
//! [`Clock::advance`] (both readings, on top of tokio's own time) or [`Clock::jump_wall`]
//! (the calendar only, as an operator or NTP stepping the system clock would).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use weir_core::run::Millis;

/// A cheap, shared handle on the engine's time.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// A monotonic instant and the wall time then: [`Clock::now`] counts from them.
    anchor: Mutex<(Instant, Millis)>,
    /// Whether the calendar reads the system's wall clock (else it derives, for tests).
    system: bool,
    /// Nanoseconds [`Clock::advance`] moved both readings by.
    ahead: AtomicU64,
    /// Milliseconds [`Clock::jump_wall`] moved the calendar by (a test clock only).
    jumped: AtomicI64,
}

impl Clock {
    /// The host's clock, anchored at the wall time now.
    pub fn system() -> Clock {
        Clock::make(crate::time::millis(SystemTime::now()), true)
    }

    /// A clock whose time is `wall` now and moves with tokio's time and [`Clock::advance`]
    /// only: for tests.
    pub fn at(wall: Millis) -> Clock {
        Clock::make(wall, false)
    }

    fn make(wall0: Millis, system: bool) -> Clock {
        let ahead = AtomicU64::new(0);
        let inner = Inner { anchor: Mutex::new((Instant::now(), wall0)), system, ahead, jumped: AtomicI64::new(0) };
        Clock(Arc::new(inner))
    }

    fn anchor(&self) -> (Instant, Millis) {
        *self.0.anchor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Monotonic now: for lease and orphan deadlines and rate limits. Never a sleep target:
    /// [`Clock::advance`] moves it ahead of tokio's timers.
    pub fn instant(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.0.ahead.load(Ordering::Relaxed))
    }

    /// The run machine's now: the wall time at the anchor plus the monotonic time since.
    pub fn now(&self) -> Millis {
        let (origin, wall0) = self.anchor();
        wall0.plus(self.instant().saturating_duration_since(origin))
    }

    /// The wall time, for cron ticks (the system's own on a real clock).
    pub fn calendar(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.wall().0 as i64).unwrap_or_default()
    }

    fn wall(&self) -> Millis {
        if self.0.system {
            crate::time::millis(SystemTime::now())
        } else {
            // A test clock's wall: its anchor's, moved as the clock moved, plus the jumps.
            let (origin, wall0) = self.anchor();
            let moved = wall0.plus(self.instant().saturating_duration_since(origin));
            Millis(moved.0.saturating_add_signed(self.0.jumped.load(Ordering::Relaxed)))
        }
    }

    /// Re-anchors [`Clock::now`] on the wall time when they differ by more than a second;
    /// returns by how many milliseconds `now` moved. Only for a caller with no timer armed on
    /// `now` (it would fire early or late).
    pub fn resync(&self) -> Option<i64> {
        let wall = self.wall();
        let mut anchor = self.0.anchor.lock().unwrap_or_else(|p| p.into_inner());
        let instant = self.instant();
        let now = anchor.1.plus(instant.saturating_duration_since(anchor.0));
        let by = wall.0 as i64 - now.0 as i64;
        if by.abs() <= RESYNC_OVER {
            return None;
        }
        if !self.0.system {
            // The jumps are in the anchor now.
            self.0.jumped.store(0, Ordering::Relaxed);
        }
        *anchor = (instant, wall);
        Some(by)
    }

    /// Whether [`Clock::now`] is more than a second off the wall time (cheap: no lock held
    /// while the caller looks for armed timers).
    pub fn drifted(&self) -> bool {
        (self.wall().0 as i64 - self.now().0 as i64).abs() > RESYNC_OVER
    }

    /// Moves both readings forward by `d` (tests; tokio's paused time does the same).
    pub fn advance(&self, d: Duration) {
        self.0.ahead.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Steps the wall clock by `ms` milliseconds (negative: back) without moving monotonic
    /// time, as someone setting the system clock would; only a test clock's calendar moves.
    pub fn jump_wall(&self, ms: i64) {
        self.0.jumped.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

/// How far (ms) [`Clock::now`] may be off the wall time before [`Clock::resync`] moves it.
const RESYNC_OVER: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_every_reading_and_a_wall_jump_only_the_calendar() {
        let clock = Clock::at(Millis(1_000_000));
        let start = clock.instant();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Millis(1_005_000), "tokio's paused time moves the machine's now");
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Millis(1_006_000));
        assert_eq!(clock.instant() - start, Duration::from_secs(6));
        clock.jump_wall(3_600_000);
        assert_eq!(clock.now(), Millis(1_006_000), "a wall jump moves no timer");
        assert_eq!(clock.calendar().timestamp_millis(), 4_606_000, "but moves the calendar");
        assert!(clock.drifted());
        assert_eq!(clock.resync(), Some(3_600_000), "resync follows the wall clock");
        assert_eq!(clock.now(), Millis(4_606_000));
        assert_eq!(clock.calendar().timestamp_millis(), 4_606_000);
        assert!(!clock.drifted());
        assert_eq!(clock.resync(), None, "nothing to follow");
        clock.jump_wall(-500);
        assert_eq!(clock.resync(), None, "half a second is not worth it");
    }

    #[test]
    fn the_system_clock_starts_at_the_wall_time() {
        let before = crate::time::millis(SystemTime::now());
        let clock = Clock::system();
        assert!(clock.now() >= before && clock.now().0 < before.0 + 60_000);
        assert!(clock.calendar().timestamp_millis() as u64 >= before.0);
    }
}
