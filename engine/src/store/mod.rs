//! The engine's durable state in one embedded sled 0.34.7 database under the data folder:
//! pipelines and their versions, runs, step instances, events, logs and artifact manifests.
//! It owns the on-disk layout, the record envelope and the rule that nothing is acknowledged
//! before it is flushed; it must not decide anything about runs (that is `run`) and holds no
//! artifact bytes (those live content-addressed in `artifact`). Every function is synchronous:
//! the engine calls them from `spawn_blocking` or a dedicated thread.
//!
//! Every value is an [envelope](envelope): `[format version u16 BE][first 16 bytes of the
//! BLAKE3 of the payload][payload: serde_json]`, so a torn or rotted value is a typed
//! [`Error::Corrupt`] naming its tree and key, never a panic or a wrong answer.
//!
//! Trees and keys (`run` = the run id's UTF-8 bytes, non-empty and without NUL; `·` = the NUL
//! separator, so one run's keys never interleave with another's whose id it prefixes; numbers
//! are big-endian so byte order is numeric order and range scans page naturally):
//!
//! | tree                | key                                   | value                        |
//! |---------------------|---------------------------------------|------------------------------|
//! | `pipelines`         | name                                  | [`PipelineIndex`]            |
//! | `pipeline_versions` | version hash (`Pipeline::hash()`)     | [`PipelineVersion`]          |
//! | `runs`              | run                                   | [`RunRecord`]                |
//! | `steps`             | run · instance u32                    | [`StepRecord`]               |
//! | `events`            | run · seq u64 (from 1, dense per run) | [`EventRecord`]              |
//! | `event_seq`         | run                                   | last seq allocated (u64)     |
//! | `logs`              | run · instance u32 · attempt u32 · seq u64 | [`LogChunk`]            |
//! | `artifacts`         | run · instance u32                    | [`Manifest`](weir_data::artifact::Manifest) |
//! | `quarantine`        | run                                   | reason (string)              |
//! | `schedules`         | pipeline name                         | [`ScheduleRecord`]           |
//! | `producers`         | digest · run · instance u32           | [`Produced`] (see `lineage`) |
//! | `consumers`         | input digest · run · instance u32     | [`Consumed`] (see `lineage`) |
//! | `models`            | model name                            | [`ModelRecord`]              |
//! | `model_versions`    | model · version u64 (from 1)          | [`ModelVersionRecord`]       |
//! | `model_events`      | model · seq u64 (from 1, dense)       | [`AliasEventRecord`]         |
//! | `workers`           | worker id                             | [`WorkerRecord`] (see `workers`) |
//! | `runs_by_time`      | created_at u64 · run                  | nothing (see `time_index`)   |
//! | `triggered`         | pipeline · trigger · key              | [`Fired`] (see `triggered`)  |
//! | `live_metrics`      | run · instance u32 · attempt u32 · seq u64 | [`LivePoint`], at seq `u64::MAX` the attempt's [`LiveSummary`] (see `live_metrics`) |
//! | `outbox`            | delivery id                           | [`Delivery`] (see `outbox`)  |
//! | `secrets`           | secret name                           | [`SecretRecord`] (see `secrets`): the value sealed, never plain |
//! | `tokens`            | token name                            | [`TokenRecord`] (see `access`) |
//! | `audit`             | id u64 (increasing)                   | [`AuditRecord`] (see `access`) |
//!
//! One key per step instance, never one document per run, so a 10,000-wide fan-out stays
//! cheap to update and pages. Log seqs come from sled's `generate_id`: increasing, not dense.
//! A run is quarantined in its own tree rather than inside its record, because the record may
//! be the thing that no longer decodes and its bytes are kept as evidence.
//!
//! Durability: every public write flushes before it returns; [`Batch`] groups several records
//! into one atomic batch and one flush (atomic through a journal entry: `append.rs`, whose
//! kill -9 campaign proves it against a real writer process).
//!
//! Damage and full disks: sled is only called through `guard` (a panic inside it is a typed
//! error); a page sled cannot read is got past by scanning the rest backwards (`list`,
//! `check`); a write that fails on I/O leaves sled refusing writes until reopened, so the store
//! remembers the fault ([`Store::fault`]) and [`Store::reopen`] reopens it once there is room.

mod access;
mod append;
mod cache;
mod check;
mod db;
pub mod envelope;
mod export;
mod guard;
mod handle;
mod keys;
mod lineage;
mod list;
mod live_metrics;
mod models;
mod outbox;
mod records;
mod retention;
mod secrets;
#[cfg(test)]
pub(crate) mod testkit;
mod time_index;
mod triggered;
mod workers;

use std::path::PathBuf;

pub use access::{AuditFilter, AuditRecord, TokenRecord};
pub use append::Batch;
pub use cache::CacheEntry;
pub use check::{BadRecord, Damage, Report, TreeCount};
pub use db::{StepPage, Store};
pub use export::Exported;
pub use guard::is_no_space;
pub use lineage::{Consumed, Indexed, Produced};
pub use list::{Listed, RunFilter, RunPage};
pub use live_metrics::{LivePoint, LiveSummary, Stored as LiveStored};
pub use models::{AliasEventRecord, ModelRecord, ModelVersionRecord, PendingMove, Protection};
pub use outbox::Delivery;
pub use records::{
    ApprovalRecord, BackfillQueue, CacheKey, Change, Decision, EventRecord, LogChunk, LogCursor, PipelineIndex,
    PipelineVersion, RunRecord, ScheduleRecord, SkippedTicks, StepRecord, Stream, Ticks, Trigger, TriggerFile,
};
pub use retention::RunAge;
pub use secrets::SecretRecord;
pub use triggered::Fired;
pub use workers::WorkerRecord;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "another weir engine is using the data folder {}: stop it, or start this one with a different --data-dir",
        dir.display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "cannot open the store in {}: {reason}. The database is damaged: stop anything using \
         it and run `weir store check --data-dir {}` to see what is readable. To restore, load \
         an export (`weir store export` of it if it opens, or an earlier one) into a fresh folder \
         with `weir store import --data-dir NEW FILE` and start weir on NEW (README, \"When \
         things go wrong\")",
        dir.display(),
        data_dir(dir).display()
    )]
    Unopenable { dir: PathBuf, reason: String },
    #[error(
        "no space left on {}: free space on that disk (a running weir retries what failed and \
         carries on by itself once it can write again)",
        dir.display()
    )]
    NoSpace { dir: PathBuf },
    #[error(
        "the store in {} is not writable ({reason}); weir reopens it by itself once it can write \
         again: retry shortly",
        dir.display()
    )]
    Reopening { dir: PathBuf, reason: String },
    #[error(
        "the store in {} is damaged: sled failed while {what} ({message}); run `weir store check \
         --data-dir {}`",
        dir.display(),
        data_dir(dir).display()
    )]
    Panicked { dir: PathBuf, what: &'static str, message: String },
    #[error("corrupt record in tree `{tree}` at key {key}: {reason}")]
    Corrupt { tree: &'static str, key: String, reason: String },
    #[error("cannot encode a record for tree `{tree}`: {reason}")]
    Encode { tree: &'static str, reason: String },
    #[error("run id {0:?} cannot be stored: it must be non-empty and hold no NUL byte")]
    BadRunId(String),
    #[error("page token {0:?} was not issued by this store")]
    BadPageToken(String),
    #[error("import line {line}: {reason}")]
    Import { line: usize, reason: String },
    #[error("storage: {}", sled_text(.0))]
    Sled(#[from] sled::Error),
    #[error("export/import: {0}")]
    Io(#[from] std::io::Error),
}

/// sled's error in words (its own text for corruption prints an empty backtrace).
fn sled_text(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { at: Some(at), .. } => format!("sled found corrupted data at {at:?} of its log"),
        sled::Error::Corruption { at: None, .. } => "sled found corrupted data".to_string(),
        e => e.to_string(),
    }
}

/// The data folder a database folder (`DATA/db`) belongs to, for messages that name commands.
fn data_dir(db: &std::path::Path) -> &std::path::Path {
    match db.file_name() {
        Some(name) if name == "db" => db.parent().unwrap_or(db),
        _ => db,
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Sled(e),
        }
    }
}
