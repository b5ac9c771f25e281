//! What the engine's services answer, as the wire carries it: a lease's assignment, a plan's
//! cache verdicts and a cache explanation, schedules and backfill ticks, models, metric
//! history and lineage. Pure.

use std::collections::BTreeMap;

use weir_proto::v1;

use super::{attempt_ref, duration, manifest, run_state, timestamp};
use crate::server::cache::{Explanation, KeyPart, PipelineRef, PlanTarget, PlannedStep, Verdict};
use crate::server::dispatch::Assignment;
use crate::server::registry::ModelView;
use crate::server::scheduler::{BackfillOutcome, BackfillTick, ScheduleView};
use crate::server::tracking::{Lineage, MetricHistory};
use crate::store::{AliasEventRecord, ModelRecord, ModelVersionRecord, PendingMove, Protection};
use weir_core::plan::Resolved;
use weir_core::spec::{Concurrency, PullPolicy, Runtime};

/// A schedule view as `ListSchedules` and pause/resume answer.
pub(crate) fn schedule(v: ScheduleView) -> v1::ScheduleInfo {
    let r = v.record;
    let t = &r.ticks;
    let backfill = t.backfill.as_ref().map(|q| v1::BackfillProgress {
        from: Some(timestamp(q.from)),
        to: Some(timestamp(q.to)),
        remaining: v.backfill_left,
        catchup: q.catchup,
    });
    v1::ScheduleInfo {
        pipeline: v.pipeline,
        version: r.version.clone(),
        cron: r.cron.clone(),
        timezone: r.timezone.clone(),
        catchup: v.schedule.catchup,
        max_catchup: v.schedule.max_catchup,
        concurrency: match v.schedule.concurrency {
            Concurrency::Allow => v1::Concurrency::Allow,
            Concurrency::Forbid => v1::Concurrency::Forbid,
            Concurrency::Replace => v1::Concurrency::Replace,
        } as i32,
        paused: t.paused,
        next_fires: v.next_fires.into_iter().map(timestamp).collect(),
        last_tick: t.last_tick.map(timestamp),
        last_run_id: t.last_run.clone().unwrap_or_default(),
        last_run_state: v.last_run_state.map_or(v1::RunState::Unspecified, run_state) as i32,
        skipped: t
            .skipped
            .iter()
            .map(|k| v1::SkippedTicks {
                first: Some(timestamp(k.first)),
                last: Some(timestamp(k.last)),
                count: k.count,
                reason: k.reason.clone(),
            })
            .collect(),
        backfill,
        params: v.schedule.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
    }
}

pub(crate) fn backfill_tick(t: BackfillTick) -> v1::BackfillTick {
    let outcome = match t.outcome {
        BackfillOutcome::Exists => v1::BackfillOutcome::Exists,
        BackfillOutcome::Started => v1::BackfillOutcome::Started,
        BackfillOutcome::Queued => v1::BackfillOutcome::Queued,
    };
    v1::BackfillTick { time: Some(timestamp(t.at)), run_id: t.run_id, outcome: outcome as i32 }
}

/// A lease's answer.
pub(crate) fn assignment(a: Assignment) -> v1::Assignment {
    let action = match a.action {
        Resolved::Run(script) => v1::action::Kind::Script(script),
        Resolved::Command(argv) => v1::action::Kind::Command(v1::Argv { args: argv }),
    };
    v1::Assignment {
        attempt: Some(attempt_ref(&a.run, a.attempt)),
        instance_name: a.instance_name,
        step: a.step,
        pipeline: a.pipeline,
        action: Some(v1::Action { kind: Some(action) }),
        env: a.env,
        image: a.image.unwrap_or_default(),
        runtime: match a.runtime {
            Runtime::Process => v1::Runtime::Process,
            Runtime::Docker => v1::Runtime::Docker,
        } as i32,
        timeout: a.timeout.map(duration),
        inputs: a.inputs.iter().map(|(dir, m)| v1::Input { dir: dir.clone(), manifest: Some(manifest(m)) }).collect(),
        bundle_digest: a.bundle.unwrap_or_default(),
        outputs: a.outputs,
        resources: Some(v1::Resources {
            cpus_milli: a.resources.cpus_milli.map_or(0, u64::from),
            memory_bytes: a.resources.memory_bytes.unwrap_or(0),
            gpus: a.resources.gpus,
        }),
        pull_policy: match a.pull {
            PullPolicy::IfNotPresent => v1::PullPolicy::IfNotPresent,
            PullPolicy::Always => v1::PullPolicy::Always,
            PullPolicy::Never => v1::PullPolicy::Never,
        } as i32,
        capabilities: a.capabilities.map(|names| v1::Capabilities { names }),
        secrets: a.secrets.0.into_iter().collect(),
    }
}

pub fn verdict(v: Verdict) -> v1::CacheVerdict {
    match v {
        Verdict::NotCacheable => v1::CacheVerdict::NotCacheable,
        Verdict::Unknown => v1::CacheVerdict::Unknown,
        Verdict::Hit => v1::CacheVerdict::Hit,
        Verdict::Miss => v1::CacheVerdict::Miss,
    }
}

pub fn planned_step(p: PlannedStep) -> v1::PlannedStep {
    v1::PlannedStep {
        name: p.name,
        step: p.step,
        cache: verdict(p.verdict) as i32,
        reason: p.reason,
        cache_key: p.cache_key,
        cached_from: p.cached_from,
    }
}

fn key_part(k: KeyPart) -> v1::CacheKeyPart {
    v1::CacheKeyPart { part: k.part, value: k.value, closest: k.closest }
}

pub(crate) fn explanation(e: Explanation) -> v1::ExplainCacheResponse {
    v1::ExplainCacheResponse {
        name: e.name,
        verdict: verdict(e.verdict) as i32,
        message: e.message,
        cache_key: e.cache_key,
        parts: e.parts.into_iter().map(key_part).collect(),
        closest_run: e.closest_run,
        differences: e.differences.into_iter().map(key_part).collect(),
    }
}

/// The pipeline a `StartRun` names.
pub(crate) fn start_target(p: Option<v1::start_run_request::Pipeline>) -> Option<PipelineRef> {
    p.map(|p| match p {
        v1::start_run_request::Pipeline::Name(n) => PipelineRef::Name(n),
        v1::start_run_request::Pipeline::Version(v) => PipelineRef::Version(v),
    })
}

/// The pipeline a `PlanRun` names.
pub(crate) fn plan_target(p: Option<v1::plan_run_request::Pipeline>) -> Option<PlanTarget> {
    p.map(|p| match p {
        v1::plan_run_request::Pipeline::Name(n) => PlanTarget::Stored(PipelineRef::Name(n)),
        v1::plan_run_request::Pipeline::Version(v) => PlanTarget::Stored(PipelineRef::Version(v)),
        v1::plan_run_request::Pipeline::Source(f) => {
            PlanTarget::File { yaml: f.yaml, file_name: f.file_name, bundle_digest: f.bundle_digest }
        }
    })
}

/// One delivery of the outbox, as `weir notifications` shows it (never the receiver's path).
pub(crate) fn notification(l: crate::server::notify::Listed) -> v1::Notification {
    let d = l.delivery;
    let kind = match d.target {
        weir_core::spec::NotifyTarget::Webhook(_) => "webhook",
        weir_core::spec::NotifyTarget::Slack(_) => "slack",
    };
    v1::Notification {
        id: d.id,
        event: d.event.to_string(),
        kind: kind.to_string(),
        receiver: l.receiver,
        pipeline: d.pipeline,
        run_id: d.run_id,
        created_at: Some(timestamp(d.created_at)),
        attempts: d.attempts,
        next_at: (!d.dead).then(|| timestamp(d.next_at)),
        last_error: d.last_error.unwrap_or_default(),
        dead: d.dead,
    }
}

pub(crate) fn model_summary(m: ModelRecord) -> v1::ModelSummary {
    v1::ModelSummary {
        name: m.name,
        latest_version: m.latest,
        updated_at: Some(timestamp(m.updated_at)),
        aliases: m.aliases.into_iter().collect(),
        pending_moves: m.pending.len() as u32,
    }
}

pub(crate) fn model(m: ModelView) -> v1::GetModelResponse {
    let aliases = &m.head.aliases;
    v1::GetModelResponse {
        versions: m.versions.into_iter().map(|v| model_version(v, aliases)).collect(),
        history: m.history.iter().map(alias_event).collect(),
        aliases: aliases.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        pending: m.head.pending.iter().map(pending_move).collect(),
        protected: m.head.protected.iter().map(|(a, p)| (a.clone(), protection(p))).collect(),
        name: m.head.name,
    }
}

/// A model version, with the aliases (of `aliases`, its model's) that point at it.
pub(crate) fn model_version(v: ModelVersionRecord, aliases: &BTreeMap<String, u64>) -> v1::ModelVersion {
    v1::ModelVersion {
        aliases: aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| a.clone()).collect(),
        model: v.model,
        version: v.version,
        digest: v.digest.to_string(),
        file: v.file,
        size: v.size,
        run_id: v.run_id,
        step: v.step,
        metrics: v.metrics.into_iter().collect(),
        params: v.params.into_iter().collect(),
        created_at: Some(timestamp(v.created_at)),
        explanation: v.explanation.as_ref().map(super::model_explanation),
    }
}

pub(crate) fn alias_event(e: &AliasEventRecord) -> v1::AliasEvent {
    v1::AliasEvent {
        alias: e.alias.clone(),
        from_version: e.from.unwrap_or(0),
        to_version: e.to,
        time: Some(timestamp(e.at)),
        reason: e.reason.clone(),
        refused: e.refused,
        expression: e.expression.clone().unwrap_or_default(),
        compared: e.compared.iter().cloned().collect(),
        rollback: e.rollback,
        awaiting_approval: e.awaiting,
        request_id: e.request.unwrap_or(0),
        decided_by: e.decided_by.clone().unwrap_or_default(),
        comment: e.comment.clone().unwrap_or_default(),
        by: e.by.clone().unwrap_or_default(),
    }
}

fn pending_move(p: &PendingMove) -> v1::PendingAliasMove {
    v1::PendingAliasMove {
        id: p.id,
        alias: p.alias.clone(),
        from_version: p.from.unwrap_or(0),
        to_version: p.to,
        requested_at: Some(timestamp(p.requested_at)),
        reason: p.reason.clone(),
        rollback: p.rollback,
        due_at: p.due_at.map(timestamp),
    }
}

fn protection(p: &Protection) -> v1::AliasProtection {
    v1::AliasProtection {
        message: p.message.clone().unwrap_or_default(),
        timeout_ms: p.timeout_ms.unwrap_or(0),
        declared_by: p.declared_by.clone(),
        since: Some(timestamp(p.since)),
    }
}

pub(crate) fn metric_history(h: MetricHistory) -> v1::MetricHistoryResponse {
    v1::MetricHistoryResponse {
        points: h
            .points
            .into_iter()
            .map(|p| v1::MetricPoint {
                run_id: p.run_id,
                step: p.step,
                time: Some(timestamp(p.at)),
                value: p.value,
                run_state: run_state(p.run_state) as i32,
                cached: p.cached,
            })
            .collect(),
        metrics: h.metrics,
    }
}

pub(crate) fn lineage(l: Lineage) -> v1::GetLineageResponse {
    v1::GetLineageResponse {
        digest: l.digest,
        nodes: l
            .nodes
            .into_iter()
            .map(|n| v1::LineageNode {
                digest: n.digest,
                path: n.path,
                size: n.size,
                run_id: n.run_id,
                step: n.step,
                produced_at: n.produced_at.map(timestamp),
                depth: n.depth,
                links: n.links,
            })
            .collect(),
        truncated: l.truncated.is_some(),
        truncated_reason: l.truncated.unwrap_or_default(),
        model: l.model.unwrap_or_default(),
    }
}
