//! Placement: which worker may take which ready attempt. A step's [`Need`] (runtime, `runs_on`
//! labels, `resources`) is matched against what a worker offered at Register ([`Offer`]) minus
//! what its held attempts use ([`Usage`]). The [`ReadyQueue`] keeps ready attempts in arrival
//! order, split into one queue per distinct need, so a lease looks at the front of each class
//! (a handful) instead of scanning thousands of attempts that do not fit this worker; the
//! oldest fitting attempt wins. [`waiting_reason`] says why no registered worker could ever
//! run a need, and whether any is registered at all ([`Waiting`]; computed on demand, never
//! stored). No I/O, no clock, no locks here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use crate::run::AttemptId;
use crate::spec::{Runtime, Step};

/// What one attempt of a step requires of its worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Need {
    pub runtime: Runtime,
    pub labels: BTreeMap<String, String>,
    pub usage: Usage,
}

impl Need {
    pub fn of(step: &Step) -> Need {
        Need {
            runtime: step.runtime,
            labels: step.runs_on.clone(),
            usage: Usage {
                cpus_milli: step.resources.cpus_milli.map_or(0, u64::from),
                memory_bytes: step.resources.memory_bytes.unwrap_or(0),
                gpus: step.resources.gpus,
            },
        }
    }
}

/// Resources asked for or in use; 0 is no request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    pub cpus_milli: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

impl Usage {
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            cpus_milli: self.cpus_milli.saturating_add(other.cpus_milli),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// What is left of `self` once `used` is taken (never below zero).
    pub fn minus(self, used: Usage) -> Usage {
        Usage {
            cpus_milli: self.cpus_milli.saturating_sub(used.cpus_milli),
            memory_bytes: self.memory_bytes.saturating_sub(used.memory_bytes),
            gpus: self.gpus.saturating_sub(used.gpus),
        }
    }

    /// Whether `self` still fits after `used` of `total` is taken.
    pub fn fits(self, used: Usage, total: Usage) -> bool {
        let free = |t: u64, u: u64| t.saturating_sub(u);
        (self.cpus_milli == 0 || self.cpus_milli <= free(total.cpus_milli, used.cpus_milli))
            && (self.memory_bytes == 0 || self.memory_bytes <= free(total.memory_bytes, used.memory_bytes))
            && (self.gpus == 0 || u64::from(self.gpus) <= free(u64::from(total.gpus), u64::from(used.gpus)))
    }

    /// The requested parts of `self` that `total` cannot cover even when idle, as `k=v` pairs.
    pub fn beyond(self, total: Usage) -> Vec<String> {
        let mut out = Vec::new();
        if self.cpus_milli > total.cpus_milli {
            out.push(format!("cpus={}", cpus(self.cpus_milli)));
        }
        if self.memory_bytes > total.memory_bytes {
            out.push(format!("memory={}", memory(self.memory_bytes)));
        }
        if self.gpus > total.gpus {
            out.push(format!("gpus={}", self.gpus));
        }
        out
    }

    /// Every requested part, as `k=v` pairs.
    fn requested(self) -> Vec<String> {
        self.beyond(Usage::default())
    }
}

/// What a worker offered at Register.
#[derive(Clone, Debug, Default)]
pub struct Offer {
    pub labels: BTreeMap<String, String>,
    pub total: Usage,
    /// Never empty: a worker that named none runs processes only.
    pub runtimes: Vec<Runtime>,
    /// How many attempts it may hold at once; 0 is no limit beyond the `free` of its Lease.
    pub capacity: u32,
    /// Of `capacity`, how many it holds ahead of its running steps (for people; placement
    /// reads `capacity` alone).
    pub ahead: u32,
}

impl Offer {
    fn runs(&self, runtime: Runtime) -> bool {
        self.runtimes.contains(&runtime)
    }

    fn has_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether the worker could run `need` at all, were it idle.
    pub fn could_run(&self, need: &Need) -> bool {
        self.runs(need.runtime) && self.has_labels(&need.labels) && need.usage.fits(Usage::default(), self.total)
    }

    /// Whether the worker can run `need` now, while its held attempts use `used`.
    pub fn fits_now(&self, need: &Need, used: Usage) -> bool {
        self.runs(need.runtime) && self.has_labels(&need.labels) && need.usage.fits(used, self.total)
    }
}

/// Why a ready attempt waits although nothing holds what it needs: no registered worker could
/// ever run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The first requirement nobody meets (`no worker offers gpus=1`), or `no worker is
    /// registered`.
    pub reason: String,
    /// Workers are registered and none could run it even when idle: only a worker that offers
    /// more can. False while no worker has registered (any that comes may run it).
    pub unplaceable: bool,
}

/// Why none of `offers` could ever run `need`, or `None` when one could. The first unmet
/// requirement is named: runtime, then labels, then resources, each among the workers that met
/// the ones before.
pub fn waiting_reason<'a>(need: &Need, offers: impl IntoIterator<Item = &'a Offer>) -> Option<Waiting> {
    let offers: Vec<&Offer> = offers.into_iter().collect();
    let unplaceable = !offers.is_empty();
    unmet(need, offers).map(|reason| Waiting { reason, unplaceable })
}

/// The first requirement of `need` that none of `offers` meets, as [`Waiting::reason`].
fn unmet(need: &Need, offers: Vec<&Offer>) -> Option<String> {
    if offers.is_empty() {
        return Some("no worker is registered".into());
    }
    let runs: Vec<&Offer> = offers.into_iter().filter(|o| o.runs(need.runtime)).collect();
    if runs.is_empty() {
        let runtime = match need.runtime {
            Runtime::Process => "process",
            Runtime::Docker => "docker",
        };
        return Some(format!("no worker runs {runtime} steps"));
    }
    let labelled: Vec<&Offer> = runs.into_iter().filter(|o| o.has_labels(&need.labels)).collect();
    if labelled.is_empty() {
        let mut labels = String::new();
        for (i, (k, v)) in need.labels.iter().enumerate() {
            let _ = write!(labels, "{}{k}={v}", if i == 0 { "" } else { "," });
        }
        return Some(format!("no worker has labels {labels}"));
    }
    if labelled.iter().any(|o| o.could_run(need)) {
        return None;
    }
    let lacking: Vec<String> = need
        .usage
        .requested()
        .into_iter()
        .filter(|part| labelled.iter().all(|o| need.usage.beyond(o.total).contains(part)))
        .collect();
    Some(if lacking.is_empty() {
        format!("no worker offers {} at once", need.usage.requested().join(", "))
    } else {
        format!("no worker offers {}", lacking.join(", "))
    })
}

/// Millicores as cores: `1`, `0.5`, `1.25`.
fn cpus(milli: u64) -> String {
    let whole = milli / 1000;
    let frac = milli % 1000;
    if frac == 0 { whole.to_string() } else { format!("{whole}.{}", format!("{frac:03}").trim_end_matches('0')) }
}

/// Bytes in the largest binary unit that divides them: `2Gi`, `512Mi`, `1000`.
fn memory(bytes: u64) -> String {
    for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// One queued ready attempt.
pub struct Entry {
    seq: u64,
    pub need: Need,
    pub run: String,
    pub attempt: AttemptId,
}

/// Ready attempts, oldest first, grouped by need; see the module docs.
#[derive(Default)]
pub struct ReadyQueue {
    classes: HashMap<Need, VecDeque<(u64, String, AttemptId)>>,
    next: u64,
}

impl ReadyQueue {
    pub fn push_back(&mut self, need: Need, run: String, attempt: AttemptId) {
        self.next += 1;
        self.classes.entry(need).or_default().push_back((self.next, run, attempt));
    }

    /// Puts back an entry [`ReadyQueue::pop_fitting`] returned, in its old place.
    pub fn requeue(&mut self, e: Entry) {
        let queue = self.classes.entry(e.need).or_default();
        let at = queue.partition_point(|(seq, _, _)| *seq < e.seq);
        queue.insert(at, (e.seq, e.run, e.attempt));
    }

    /// The oldest entry whose need `fits`; `fits` is asked once per class, not per entry.
    pub fn pop_fitting(&mut self, mut fits: impl FnMut(&Need) -> bool) -> Option<Entry> {
        let (need, _) = self
            .classes
            .iter()
            .filter_map(|(need, q)| q.front().map(|(seq, _, _)| (need, *seq)))
            .filter(|(need, _)| fits(need))
            .min_by_key(|(_, seq)| *seq)?;
        let need = need.clone();
        let queue = self.classes.get_mut(&need)?;
        let (seq, run, attempt) = queue.pop_front()?;
        if queue.is_empty() {
            self.classes.remove(&need);
        }
        Some(Entry { seq, need, run, attempt })
    }

    /// Drops every entry of `run` (it finished).
    pub fn remove_run(&mut self, run: &str) {
        for queue in self.classes.values_mut() {
            queue.retain(|(_, r, _)| r != run);
        }
        self.classes.retain(|_, q| !q.is_empty());
    }

    pub fn len(&self) -> usize {
        self.classes.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::InstanceId;

    fn need(runtime: Runtime, labels: &[(&str, &str)], cpus_milli: u64, memory_bytes: u64, gpus: u32) -> Need {
        Need {
            runtime,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            usage: Usage { cpus_milli, memory_bytes, gpus },
        }
    }

    fn offer(runtimes: &[Runtime], labels: &[(&str, &str)], cpus_milli: u64, memory_bytes: u64, gpus: u32) -> Offer {
        Offer {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            total: Usage { cpus_milli, memory_bytes, gpus },
            runtimes: runtimes.to_vec(),
            capacity: 4,
            ahead: 0,
        }
    }

    #[test]
    fn waiting_reasons_name_the_first_requirement_nobody_meets() {
        use Runtime::{Docker, Process};
        let cpu = offer(&[Process], &[("pool", "cpu")], 2000, 4 << 30, 0);
        let gpu = offer(&[Process], &[("pool", "gpu")], 8000, 64 << 30, 1);
        let (cores, one_gpu) = (offer(&[Process], &[], 8000, 0, 0), offer(&[Process], &[], 1000, 0, 1));
        let cases: Vec<(Need, Vec<&Offer>, Option<&str>)> = vec![
            (need(Process, &[], 0, 0, 0), vec![], Some("no worker is registered")),
            (need(Process, &[], 0, 0, 0), vec![&cpu], None),
            (need(Docker, &[], 0, 0, 0), vec![&cpu, &gpu], Some("no worker runs docker steps")),
            (need(Process, &[("pool", "tpu")], 0, 0, 0), vec![&cpu], Some("no worker has labels pool=tpu")),
            (need(Process, &[], 0, 0, 1), vec![&cpu], Some("no worker offers gpus=1")),
            (need(Process, &[], 0, 0, 1), vec![&cpu, &gpu], None),
            (need(Process, &[("pool", "cpu")], 0, 0, 1), vec![&cpu, &gpu], Some("no worker offers gpus=1")),
            (need(Process, &[], 2500, 3 << 29, 2), vec![&cpu], Some("no worker offers cpus=2.5, gpus=2")),
            (need(Process, &[], 4000, 8 << 30, 1), vec![&cpu, &gpu], None),
            (need(Process, &[], 4000, 80 << 30, 0), vec![&cpu, &gpu], Some("no worker offers memory=80Gi")),
            // Each worker covers one part, none both.
            (need(Process, &[], 4000, 0, 1), vec![&cores, &one_gpu], Some("no worker offers cpus=4, gpus=1 at once")),
        ];
        for (need, offers, want) in cases {
            let registered = !offers.is_empty();
            let got = waiting_reason(&need, offers);
            assert_eq!(got.as_ref().map(|w| w.reason.as_str()), want, "{need:?}");
            assert!(
                got.is_none_or(|w| w.unplaceable == registered),
                "unplaceable once workers are registered: {need:?}"
            );
        }
    }

    #[test]
    fn free_capacity_counts_what_held_attempts_use() {
        let w = offer(&[Runtime::Process], &[], 2000, 1 << 30, 1);
        let one_gpu = need(Runtime::Process, &[], 0, 0, 1);
        assert!(w.fits_now(&one_gpu, Usage::default()));
        assert!(!w.fits_now(&one_gpu, one_gpu.usage), "the only GPU is taken");
        let core = need(Runtime::Process, &[], 1000, 0, 0);
        assert!(w.fits_now(&core, core.usage));
        assert!(!w.fits_now(&core, core.usage.plus(core.usage)));
        assert!(
            w.fits_now(&need(Runtime::Process, &[], 0, 0, 0), Usage { cpus_milli: 9000, memory_bytes: 9, gpus: 9 })
        );
    }

    #[test]
    fn the_queue_hands_out_the_oldest_fitting_attempt_and_keeps_the_rest_in_order() {
        let a = |n| AttemptId { instance: InstanceId(n), number: 1 };
        let gpu = need(Runtime::Process, &[], 0, 0, 1);
        let cpu = need(Runtime::Process, &[], 0, 0, 0);
        let mut q = ReadyQueue::default();
        q.push_back(gpu.clone(), "r".into(), a(0));
        q.push_back(cpu.clone(), "r".into(), a(1));
        q.push_back(gpu.clone(), "r".into(), a(2));
        q.push_back(cpu.clone(), "r".into(), a(3));
        let cpu_only = |n: &Need| n.usage.gpus == 0;
        assert_eq!(q.pop_fitting(cpu_only).map(|e| e.attempt), Some(a(1)));
        let e = q.pop_fitting(|_| true).unwrap();
        assert_eq!(e.attempt, a(0));
        q.requeue(e);
        assert_eq!(q.pop_fitting(cpu_only).map(|e| e.attempt), Some(a(3)));
        assert_eq!(q.pop_fitting(cpu_only).map(|e| e.attempt), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_fitting(|_| true).map(|e| e.attempt), Some(a(0)));
        q.push_back(cpu, "other".into(), a(5));
        q.remove_run("r");
        assert_eq!(q.pop_fitting(|_| true).map(|e| (e.run, e.attempt)), Some(("other".into(), a(5))));
        assert_eq!(q.len(), 0);
    }
}
