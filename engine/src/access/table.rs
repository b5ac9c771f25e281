//! The one table of who may call what: every gRPC method of weir's services, the least role
//! that may call it, and for a mutating one the action the audit log records it as. A method
//! that is not here is refused to everyone (deny by default); `tests/roles.rs` calls every
//! method of the compiled descriptors with every role's token and fails on a method missing
//! here. Health checking and reflection are public (they reveal no data).

use super::Role;

/// One method's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `/package.Service/Method`.
    pub method: &'static str,
    /// The least role that may call it ([`Role::covers`]).
    pub need: Role,
    /// What the audit log calls it; `None`: a read, not recorded.
    pub action: Option<&'static str>,
}

/// Services anyone may call, token or not.
pub const PUBLIC: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

const fn r(method: &'static str, need: Role, action: Option<&'static str>) -> Rule {
    Rule { method, need, action }
}

use Role::{Admin, Operator, Viewer, Worker};

const C: &str = "/weir.v1.WeirClient/";

/// Every method with its rule.
pub const RULES: &[Rule] = &[
    // WeirClient: reads
    r("/weir.v1.WeirClient/ListPipelines", Viewer, None),
    r("/weir.v1.WeirClient/GetRun", Viewer, None),
    r("/weir.v1.WeirClient/ListRuns", Viewer, None),
    r("/weir.v1.WeirClient/WatchRun", Viewer, None),
    r("/weir.v1.WeirClient/StreamLogs", Viewer, None),
    r("/weir.v1.WeirClient/GetArtifact", Viewer, None),
    r("/weir.v1.WeirClient/ListSchedules", Viewer, None),
    r("/weir.v1.WeirClient/PlanRun", Viewer, None),
    r("/weir.v1.WeirClient/ExplainCache", Viewer, None),
    r("/weir.v1.WeirClient/MetricHistory", Viewer, None),
    r("/weir.v1.WeirClient/GetLineage", Viewer, None),
    r("/weir.v1.WeirClient/ListModels", Viewer, None),
    r("/weir.v1.WeirClient/GetModel", Viewer, None),
    r("/weir.v1.WeirClient/GetModelArtifact", Viewer, None),
    r("/weir.v1.WeirClient/DiffModelExplanations", Viewer, None),
    r("/weir.v1.WeirClient/ListWorkers", Viewer, None),
    r("/weir.v1.WeirClient/GetStepMetrics", Viewer, None),
    r("/weir.v1.WeirClient/ListNotifications", Viewer, None),
    // WeirClient: what operators do to runs and schedules
    r("/weir.v1.WeirClient/StartRun", Operator, Some("start")),
    r("/weir.v1.WeirClient/CancelRun", Operator, Some("cancel")),
    r("/weir.v1.WeirClient/RetryRun", Operator, Some("retry")),
    r("/weir.v1.WeirClient/Approve", Operator, Some("approve")),
    r("/weir.v1.WeirClient/PauseSchedule", Operator, Some("schedule.pause")),
    r("/weir.v1.WeirClient/ResumeSchedule", Operator, Some("schedule.resume")),
    r("/weir.v1.WeirClient/Backfill", Operator, Some("schedule.backfill")),
    r("/weir.v1.WeirClient/FireWebhook", Operator, Some("webhook.fire")),
    r("/weir.v1.WeirClient/RetryNotification", Operator, Some("notification.retry")),
    // WeirClient: what changes what may run, the registry, and what is kept
    r("/weir.v1.WeirClient/SubmitPipeline", Admin, Some("submit")),
    r("/weir.v1.WeirClient/PromoteModel", Admin, Some("promote")),
    r("/weir.v1.WeirClient/RollbackModel", Admin, Some("rollback")),
    r("/weir.v1.WeirClient/DecideAliasMove", Admin, Some("promote.decide")),
    r("/weir.v1.WeirClient/DeleteRuns", Admin, Some("runs.delete")),
    r("/weir.v1.WeirClient/DeletePipeline", Admin, Some("pipeline.delete")),
    r("/weir.v1.WeirClient/Gc", Admin, Some("gc")),
    // WeirAdmin: a backup reads everything, so it is recorded too
    r("/weir.v1.WeirAdmin/Backup", Admin, Some("backup")),
    // WeirSecrets: step secrets (values never in the audit target)
    r("/weir.v1.WeirSecrets/SetSecret", Admin, Some("secret.set")),
    r("/weir.v1.WeirSecrets/DeleteSecret", Admin, Some("secret.delete")),
    r("/weir.v1.WeirSecrets/ListSecrets", Admin, None),
    // WeirAccess
    r("/weir.v1.WeirAccess/CreateToken", Admin, Some("token.create")),
    r("/weir.v1.WeirAccess/RevokeToken", Admin, Some("token.revoke")),
    r("/weir.v1.WeirAccess/ListTokens", Admin, None),
    r("/weir.v1.WeirAccess/ListAudit", Admin, None),
    // WeirWorker: workers only
    r("/weir.v1.WeirWorker/Register", Worker, None),
    r("/weir.v1.WeirWorker/Lease", Worker, None),
    r("/weir.v1.WeirWorker/Heartbeat", Worker, None),
    r("/weir.v1.WeirWorker/Report", Worker, None),
    r("/weir.v1.WeirWorker/UploadLogs", Worker, None),
    r("/weir.v1.WeirWorker/UploadArtifact", Worker, None),
    r("/weir.v1.WeirWorker/DownloadBlob", Worker, None),
    r("/weir.v1.WeirWorker/DownloadBundle", Worker, None),
    r("/weir.v1.WeirWorker/UploadMetrics", Worker, None),
];

/// The rule of `method` (a request's URI path); `None`: nobody may call it.
pub fn rule(method: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method == method)
}

/// Whether `method` belongs to a public service.
pub fn public(method: &str) -> bool {
    PUBLIC.iter().any(|p| method.starts_with(p))
}

/// Whether `method` is one of `WeirClient`'s (the web UI's login refuses worker tokens alike).
pub fn is_client(method: &str) -> bool {
    method.starts_with(C)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_listed_once_and_roles_nest() {
        for (i, a) in RULES.iter().enumerate() {
            assert!(RULES[i + 1..].iter().all(|b| b.method != a.method), "{} twice", a.method);
            assert!(a.method.starts_with("/weir.v1.") && a.method.matches('/').count() == 2, "{}", a.method);
        }
        let cases = [
            (Viewer, Viewer, true),
            (Viewer, Operator, false),
            (Operator, Viewer, true),
            (Operator, Admin, false),
            (Admin, Operator, true),
            (Admin, Worker, false),
            (Worker, Viewer, false),
            (Worker, Worker, true),
        ];
        for (has, need, ok) in cases {
            assert_eq!(has.covers(need), ok, "{has:?} covers {need:?}");
        }
        assert_eq!(rule("/weir.v1.WeirClient/Nope"), None);
        assert!(public("/grpc.health.v1.Health/Check") && !public("/weir.v1.WeirClient/GetRun"));
    }
}
