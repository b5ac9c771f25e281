//! A store that cannot write (a full disk) and how the engine gets over it: [`Engine::fault`]
//! says why live runs stall (shown by `GetRun`), `Engine::heal` (called from `tick`) reopens
//! the store once it can write again and reloads every live run from it, and [`is_fault`]
//! tells such transient storage failures from damage, so they never quarantine a run. It
//! decides nothing about runs: reloading is `core`'s replay.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_core::run::AttemptId;

use super::core::{Engine, State};
use super::error::ApiError;

impl Engine {
    /// A run out of memory until the store heals: retry later.
    pub(crate) fn not_reloaded(&self, run_id: &str) -> ApiError {
        let why = self.store.fault().unwrap_or_else(|| "a write failed".to_string());
        ApiError::Store(crate::store::Error::Reopening {
            dir: self.store.dir().to_path_buf(),
            reason: format!("run {run_id} reloads once the store writes again; {why}"),
        })
    }

    /// Why writes fail right now (e.g. "no space left on DIR: ..."), for `GetRun` to show on
    /// live runs: nothing is lost, but nothing moves until it is fixed.
    pub(crate) fn fault(&self) -> Option<String> {
        // The same words for a full disk under the blobs as under the store.
        let blobs = self.blobs.full().map(|dir| crate::store::Error::NoSpace { dir }.to_string());
        self.store.fault().or(blobs).map(|f| format!("stalled: {f}"))
    }

    /// While the store cannot write: reopens it (at most once a second), and once it writes
    /// again reloads every live run from it, since memory may hold changes whose write or
    /// flush failed (the invariant "a failed write reloads the run from the store", for every
    /// run at once: which of them ran ahead is not known).
    pub(crate) fn heal(&self, st: &mut State) {
        if self.store.fault().is_none() && st.reload.is_empty() {
            return;
        }
        let now = self.clock.instant();
        if st.heal_at.is_some_and(|at| now < at) {
            return;
        }
        st.heal_at = Some(now + HEAL_EVERY);
        if self.store.fault().is_some()
            && let Err(e) = self.store.reopen()
        {
            if let Some(suppressed) = super::ratelog::admit(&format!("heal {e}")) {
                tracing::warn!(error = %e, suppressed, "store still cannot write; retrying");
            }
            return;
        }
        let ids: BTreeSet<String> = st.runs.keys().cloned().chain(std::mem::take(&mut st.reload)).collect();
        // Events written but not made durable may be gone: never announce them.
        st.unannounced.clear();
        st.unmetered.clear();
        for id in &ids {
            st.runs.remove(id);
            st.ready.remove_run(id);
            st.orphans.retain(|(run, _), _| run != id);
        }
        let mut reloaded = 0;
        for id in &ids {
            if self.recover_run(st, id) {
                reloaded += 1;
            }
        }
        // A lease whose commit failed was never answered: the worker does not hold it (the
        // reloaded run has it ready again). Keep what the reloaded runs say is held (or what
        // belongs to a run still waiting to reload).
        let (runs, reload) = (&st.runs, &st.reload);
        for w in st.workers.values_mut() {
            w.held.retain(|(run, attempt), _| {
                reload.contains(run)
                    || runs.get(run).is_some_and(|l| {
                        l.machine.state(attempt.instance).is_held()
                            && l.machine.live_attempt(attempt.instance) == Some(*attempt)
                    })
            });
        }
        // What a registered worker still holds is its own, not an orphan to expire.
        let held: BTreeSet<(String, AttemptId)> = st.workers.values().flat_map(|w| w.held.keys().cloned()).collect();
        st.orphans.retain(|k, _| !held.contains(k));
        tracing::warn!(reloaded, waiting = st.reload.len(), "store writes again; runs reloaded from it");
        self.ready_signal.notify_waiters();
    }
}

/// How often a store that cannot write is reopened to see whether it can again.
const HEAL_EVERY: Duration = Duration::from_secs(1);

/// Whether `e` is the store failing to write (a full disk, a failed reopen): transient, retried,
/// never a reason to quarantine a run.
pub(crate) fn is_fault(e: &ApiError) -> bool {
    use crate::store::Error as S;
    matches!(e, ApiError::Store(S::NoSpace { .. } | S::Reopening { .. } | S::Io(_) | S::Sled(sled::Error::Io(_))))
}
