//! The record kinds the store keeps, as plain serde types. They mirror what the engine knows;
//! deciding what they should say is the engine's and the run state machine's job, not this
//! module's. A log chunk keeps its bytes exactly: UTF-8 as text, anything else as hex.

use std::collections::BTreeMap;

pub use weir_core::schedule::{BackfillQueue, SkippedTicks, Ticks};

use serde::{Deserialize, Serialize};

use weir_core::run::{Event, Millis, RunState, StepState};
use weir_data::artifact::Digest;

/// `pipelines`: every version of one pipeline name, oldest first, and the latest one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineIndex {
    pub latest: String,
    pub versions: Vec<String>,
}

/// `pipeline_versions`: one submitted version, keyed by its content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVersion {
    pub name: String,
    pub yaml: String,
    pub bundle_digest: Option<Digest>,
    pub submitted_at: Millis,
    /// The file name it was submitted as (`pipeline.yaml` of a folder, or the file given), so
    /// errors about it point at that file; unset in records written before it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What started a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    Manual {
        user: Option<String>,
    },
    /// A tick of the pipeline's `schedule:` (trigger `cron`), fired by the scheduler or by
    /// `weir backfill`.
    Schedule {
        schedule: String,
        /// The tick's instant (`WEIR_SCHEDULED_TIME`); unset in records written before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Millis>,
        /// Created by a backfill rather than by the clock.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        backfill: bool,
    },
    /// `weir retry`: re-runs what did not succeed in run `of`, or with `from`, that step and
    /// everything downstream of it.
    Retry {
        of: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// A `files` trigger of `on:` took a new or changed file (trigger `files`).
    Files {
        trigger: String,
        files: Vec<TriggerFile>,
    },
    /// A `pipeline` trigger of `on:` fired on an upstream run that succeeded (trigger
    /// `pipeline`).
    Upstream {
        trigger: String,
        pipeline: String,
        run: String,
        /// What the condition read, as `metrics.psi=0.31`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        why: String,
    },
    /// A signed webhook delivery (trigger `webhook`), by its idempotency key.
    Webhook {
        trigger: String,
        key: String,
    },
}

/// A file a `files` trigger took: where it was, its size and content digest (BLAKE3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerFile {
    pub path: String,
    pub size: u64,
    pub digest: Digest,
}

impl Trigger {
    /// The kinds a listing filters on.
    pub const KINDS: [&'static str; 7] = ["manual", "cron", "backfill", "retry", "files", "pipeline", "webhook"];

    /// This trigger's kind, one of [`Trigger::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Manual { .. } => "manual",
            Trigger::Schedule { backfill: false, .. } => "cron",
            Trigger::Schedule { backfill: true, .. } => "backfill",
            Trigger::Retry { .. } => "retry",
            Trigger::Files { .. } => "files",
            Trigger::Upstream { .. } => "pipeline",
            Trigger::Webhook { .. } => "webhook",
        }
    }

    /// For a run started by an `on:` trigger: the trigger's name and the key it fired for (the
    /// file's digest, the upstream run, the idempotency key), which the `triggered` tree keeps.
    pub fn fired(&self) -> Option<(&str, String)> {
        match self {
            Trigger::Files { trigger, files } => Some((trigger, files.iter().map(|f| f.digest.to_string()).collect())),
            Trigger::Upstream { trigger, run, .. } => Some((trigger, run.clone())),
            Trigger::Webhook { trigger, key } => Some((trigger, key.clone())),
            _ => None,
        }
    }

    /// One line on why the run started, for `weir status` and the run page.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Manual { user: Some(u) } => format!("manual by {u}"),
            Trigger::Manual { user: None } => "manual".into(),
            Trigger::Schedule { schedule, backfill, .. } => {
                format!("{} `{schedule}`", if *backfill { "backfill of" } else { "cron" })
            }
            Trigger::Retry { of, from: Some(f) } => format!("retry of {of} from {f}"),
            Trigger::Retry { of, from: None } => format!("retry of {of}"),
            Trigger::Files { trigger, files } => {
                let shown: Vec<String> =
                    files.iter().map(|f| format!("{} ({} bytes, blake3 {})", f.path, f.size, f.digest)).collect();
                format!("{trigger}: new data {}", shown.join(", "))
            }
            Trigger::Upstream { trigger, pipeline, run, why } if why.is_empty() => {
                format!("{trigger}: run {run} of {pipeline} succeeded")
            }
            Trigger::Upstream { trigger, pipeline, run, why } => {
                format!("{trigger}: run {run} of {pipeline} succeeded with {why}")
            }
            Trigger::Webhook { trigger, key } => format!("{trigger}: delivery {key}"),
        }
    }
}

/// `runs`: one run. Its steps, events, logs and artifacts live under their own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    /// The pipeline version hash the run was planned from.
    pub version: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub state: RunState,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub trigger: Trigger,
    /// Caching turned off for this run (`--no-cache`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// When the pipeline's `sla:` passed with the run unfinished and `sla_missed` was queued:
    /// set once, in the batch that queues it, so it is sent exactly once across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_missed_at: Option<Millis>,
}

/// `steps`: one step instance of a run. The fields after `message` were added with the engine
/// loop; older records read them as unset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    /// The step it is an instance of, and its matrix values in key order: stored, because an
    /// instance name (`train[l2=0.0,features=linear]`) cannot be split back when a value holds
    /// `,`, `=` or `]`. Empty in records written before they were stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matrix: Vec<(String, String)>,
    pub state: StepState,
    pub attempts: u32,
    pub message: Option<String>,
    /// When the current attempt was leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When the instance reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// While held: when the engine last heard from the holding worker about this attempt
    /// (lease, start, heartbeats; refreshed at most every quarter lease timeout). Recovery
    /// derives an orphan's deadline from it, so engine restarts cannot postpone it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_at: Option<Millis>,
    /// The worker that holds (or last held) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The metrics of its successful attempt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// For a step with `cache:`, its key, computed when it became ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheKey>,
    /// For a `cached` instance, the run whose successful attempt supplied its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<String>,
    /// For a step with `approval:` that began awaiting it: what was asked and what was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
}

/// A step's approval gate: the request, set when it began awaiting approval, and the decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The rendered `approval.message`.
    pub message: String,
    pub requested_at: Millis,
    /// When it times out, with `approval.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Who approved or rejected a step, when and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    /// `Alice (alice)`: the name the caller gave, and the principal whose token made the call
    /// (just `alice` when no name was given).
    pub by: String,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// A step instance's cache key and the parts it hashes, so `weir cache explain` can say which
/// part differs from an earlier entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Lowercase hex BLAKE3 of the parts.
    pub key: String,
    /// Part name (`runtime`, `image`, `command`, `env.NAME`, `param.NAME`, `input.STEP`,
    /// `bundle`) to its value, or a digest of it when long.
    pub parts: BTreeMap<String, String>,
}

/// `events`: one event as fed to the run state machine, and when, with the changes it made.
/// Replay uses only `event` and `now`; `changes` are what watchers are shown, so a watcher
/// never needs to re-run the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub now: Millis,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// A visible consequence of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    Step {
        instance: u32,
        state: StepState,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Run {
        state: RunState,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// `logs`: one chunk of one attempt's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StoredChunk", try_from = "StoredChunk")]
pub struct LogChunk {
    pub stream: Stream,
    pub at: Millis,
    pub data: Vec<u8>,
}

/// Where a log read stopped: pass it back as `after` to read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogCursor {
    pub attempt: u32,
    pub seq: u64,
}

/// A chunk as stored: text when it is UTF-8 (readable in an export), else hex.
#[derive(Serialize, Deserialize)]
struct StoredChunk {
    stream: Stream,
    at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

impl From<LogChunk> for StoredChunk {
    fn from(c: LogChunk) -> Self {
        match String::from_utf8(c.data) {
            Ok(text) => StoredChunk { stream: c.stream, at: c.at, text: Some(text), hex: None },
            Err(e) => {
                StoredChunk { stream: c.stream, at: c.at, text: None, hex: Some(super::keys::to_hex(e.as_bytes())) }
            }
        }
    }
}

impl TryFrom<StoredChunk> for LogChunk {
    type Error = String;

    fn try_from(s: StoredChunk) -> Result<Self, String> {
        let data = match (s.text, s.hex) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(hex)) => super::keys::from_hex(&hex).ok_or("log chunk hex is malformed")?,
            _ => return Err("a log chunk holds exactly one of `text` and `hex`".to_string()),
        };
        Ok(LogChunk { stream: s.stream, at: s.at, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_keep_their_bytes_whatever_they_are() {
        for data in [b"hello\n".to_vec(), vec![0xff, 0x00, 0x80], Vec::new()] {
            let c = LogChunk { stream: Stream::Stderr, at: Millis(5), data };
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<LogChunk>(&json).unwrap(), c, "{json}");
        }
        let both = r#"{"stream":"stdout","at":1,"text":"a","hex":"61"}"#;
        assert!(serde_json::from_str::<LogChunk>(both).is_err());
    }

    #[test]
    fn a_schedule_record_keeps_its_stored_layout_with_the_machines_ticks_inline() {
        // As written before the schedule machine named its state: the fields at the top level.
        let stored = r#"{"pipeline":"p","version":"v","cron":"0 * * * *","timezone":"UTC","cursor":5,
            "last_tick":4,"last_run":"p-r","paused":true,
            "skipped":[{"first":1,"last":2,"count":2,"reason":"paused"}],
            "backfill":{"from":1,"to":3,"next":0}}"#;
        let r: ScheduleRecord = serde_json::from_str(stored).unwrap();
        assert_eq!((r.ticks.cursor, r.ticks.last_tick, r.ticks.paused), (Millis(5), Some(Millis(4)), true));
        assert_eq!(r.ticks.skipped[0].count, 2);
        assert_eq!(r.ticks.backfill.as_ref().map(|q| (q.to, q.catchup)), Some((Millis(3), false)));
        let again: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(again["cursor"], 5, "written flat as before: {again}");
        assert_eq!(serde_json::from_value::<ScheduleRecord>(again).unwrap(), r);
    }
}

/// `schedules`: the schedule of one pipeline, keyed by pipeline name: which version it fires,
/// how far its ticks have been decided, and what happened to the last ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub pipeline: String,
    /// The pipeline version whose `schedule:` this is; its runs run that version.
    pub version: String,
    /// The expression and zone as written, to tell a changed schedule from a re-submitted one.
    pub cron: String,
    pub timezone: String,
    /// How far its ticks are decided and what became of them (the schedule machine's state;
    /// stored inline, as the fields were before it had a name).
    #[serde(flatten)]
    pub ticks: Ticks,
}
