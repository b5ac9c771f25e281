//! The views of runs, steps and pipelines that `GetRun`, `ListRuns`, `StartRun`, `CancelRun`,
//! `RetryRun`, `ListPipelines` and `ListWorkers` answer with, from the services' values. Pure.

use weir_proto::v1;

use super::{manifest, run_state, step_state, timestamp};
use crate::server::pipelines::PipelineSummary;
use crate::server::runs::{RunListing, step_and_matrix};
use crate::server::workers::WorkerView;
use crate::store::{RunRecord, StepRecord, Trigger};
use weir_core::run::{InstanceId, RunState, StepState};
use weir_data::artifact::Manifest;

/// A run record as the API shows it, with step counts from `steps`.
pub fn run(record: &RunRecord, steps: &[StepRecord], message: String) -> v1::Run {
    let done = steps.iter().filter(|s| s.state.is_terminal()).count();
    let awaiting = steps.iter().filter(|s| s.state == StepState::AwaitingApproval).count();
    run_counted(record, steps.len(), done, awaiting, message)
}

/// [`run`] from the counts of its steps (a page of them is all the caller holds).
pub fn run_counted(record: &RunRecord, total: usize, done: usize, awaiting: usize, message: String) -> v1::Run {
    v1::Run {
        run_id: record.id.clone(),
        pipeline: record.pipeline.clone(),
        version: record.version.clone(),
        state: run_state(record.state) as i32,
        params: record
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect(),
        created_at: Some(timestamp(record.created_at)),
        started_at: (record.state != RunState::Queued).then(|| timestamp(record.created_at)),
        finished_at: record.finished_at.map(timestamp),
        message,
        trigger: match record.trigger {
            Trigger::Manual { .. } | Trigger::Retry { .. } => v1::Trigger::Manual,
            Trigger::Schedule { .. } => v1::Trigger::Schedule,
            Trigger::Files { .. } => v1::Trigger::Files,
            Trigger::Upstream { .. } => v1::Trigger::Pipeline,
            Trigger::Webhook { .. } => v1::Trigger::Webhook,
        } as i32,
        steps_total: total as u32,
        steps_done: done as u32,
        steps_awaiting_approval: awaiting as u32,
        scheduled_time: match record.trigger {
            Trigger::Schedule { at: Some(at), .. } => Some(timestamp(at)),
            _ => None,
        },
        backfill: matches!(record.trigger, Trigger::Schedule { backfill: true, .. }),
        no_cache: record.no_cache,
        retry_of: match &record.trigger {
            Trigger::Retry { of, .. } => of.clone(),
            _ => String::new(),
        },
        retry_from: match &record.trigger {
            Trigger::Retry { from: Some(from), .. } => from.clone(),
            _ => String::new(),
        },
        started_by: match &record.trigger {
            Trigger::Manual { user: Some(u) } => u.clone(),
            _ => String::new(),
        },
        trigger_name: record.trigger.fired().map(|(name, _)| name.to_string()).unwrap_or_default(),
        trigger_detail: match &record.trigger {
            Trigger::Manual { .. } => String::new(),
            t => t.describe(),
        },
    }
}

/// Instance `i`'s record as the API shows it, with its step's `stage` and its `outputs`.
pub fn step(i: InstanceId, s: &StepRecord, stage: String, outputs: Option<&Manifest>) -> v1::Step {
    let (step, matrix) = step_and_matrix(s);
    v1::Step {
        instance: i.0,
        name: s.name.clone(),
        step,
        stage,
        state: step_state(s.state) as i32,
        attempt: s.attempts,
        worker_id: s.worker.clone().unwrap_or_default(),
        started_at: s.started_at.map(timestamp),
        finished_at: s.finished_at.map(timestamp),
        message: s.message.clone().unwrap_or_default(),
        metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        outputs: outputs.map(manifest),
        matrix: matrix.into_iter().collect(),
        cached: s.state == StepState::Cached,
        cached_from: s.cached_from.clone().unwrap_or_default(),
        cache_key: s.cache.as_ref().map(|c| c.key.clone()).unwrap_or_default(),
        // Filled by GetRun from `Engine::waiting`, for ready steps only (`waiting`).
        waiting_reason: String::new(),
        unplaceable: false,
        approval: s.approval.as_ref().map(approval),
    }
}

/// A step's approval request and decision.
pub fn approval(a: &crate::store::ApprovalRecord) -> v1::StepApproval {
    let d = a.decision.as_ref();
    v1::StepApproval {
        message: a.message.clone(),
        requested_at: Some(timestamp(a.requested_at)),
        due_at: a.due_at.map(timestamp),
        decided: d.is_some(),
        approved: d.is_some_and(|d| d.approved),
        decided_by: d.map(|d| d.by.clone()).unwrap_or_default(),
        decided_at: d.map(|d| timestamp(d.at)),
        comment: d.map(|d| d.comment.clone()).unwrap_or_default(),
    }
}

/// A ready step's waiting reason in its view: the structured fields, and `waiting: <reason>`
/// in its message as before them (older clients and `weir status`'s MESSAGE column read it).
pub fn waiting(view: &mut v1::Step, w: &weir_core::placement::Waiting) {
    // The run moved on between the two looks: only a step still ready waits.
    if view.state != v1::StepState::Ready as i32 {
        return;
    }
    view.message = format!("waiting: {}", w.reason);
    view.waiting_reason.clone_from(&w.reason);
    view.unplaceable = w.unplaceable;
}

/// A listed run; one with no record shows its id (if any) and what is wrong.
pub(crate) fn run_listing(l: RunListing) -> v1::Run {
    match &l.record {
        Some(record) => run(record, &l.steps, l.message),
        None => v1::Run { run_id: l.id, message: l.message, ..Default::default() },
    }
}

pub(crate) fn pipeline_summary(p: PipelineSummary) -> v1::PipelineSummary {
    v1::PipelineSummary {
        name: p.name,
        description: p.description,
        latest_version: p.latest_version,
        submitted_at: p.submitted_at.map(timestamp),
        version_count: p.version_count,
        schedule: p.schedule,
    }
}

/// A connected worker as `ListWorkers` shows it.
pub(crate) fn worker_info(w: WorkerView) -> v1::WorkerInfo {
    let resources = |u: weir_core::placement::Usage| v1::Resources {
        cpus_milli: u.cpus_milli,
        memory_bytes: u.memory_bytes,
        gpus: u.gpus,
    };
    v1::WorkerInfo {
        name: w.name,
        labels: w.labels.into_iter().collect(),
        runtimes: w.runtimes.into_iter().map(str::to_string).collect(),
        total: Some(resources(w.total)),
        free: Some(resources(w.free)),
        capacity: w.capacity,
        attempts: w
            .attempts
            .into_iter()
            .map(|a| v1::HeldAttempt {
                run_id: a.run,
                step: a.step,
                attempt: a.attempt,
                since: Some(timestamp(a.since)),
                running: a.running,
            })
            .collect(),
        last_heard: Some(timestamp(w.last_heard)),
        polling: w.polling,
        ahead: w.ahead,
    }
}
