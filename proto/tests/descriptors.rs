//! Checks the API's shape through the descriptor set that reflection serves: both services, every
//! RPC with its streaming flags, and a comment on every message, field, enum, value, service and
//! method of weir's own files. The generated code is only compiled here, never exercised.

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// (service, method, client streaming, server streaming), in declaration order.
const RPCS: &[(&str, &str, bool, bool)] = &[
    ("WeirAccess", "CreateToken", false, false),
    ("WeirAccess", "ListTokens", false, false),
    ("WeirAccess", "RevokeToken", false, false),
    ("WeirAccess", "ListAudit", false, false),
    ("WeirAdmin", "Backup", false, true),
    ("WeirClient", "SubmitPipeline", true, false),
    ("WeirClient", "ListPipelines", false, false),
    ("WeirClient", "StartRun", false, false),
    ("WeirClient", "GetRun", false, false),
    ("WeirClient", "ListRuns", false, false),
    ("WeirClient", "WatchRun", false, true),
    ("WeirClient", "CancelRun", false, false),
    ("WeirClient", "RetryRun", false, false),
    ("WeirClient", "StreamLogs", false, true),
    ("WeirClient", "GetArtifact", false, true),
    ("WeirClient", "ListSchedules", false, false),
    ("WeirClient", "PauseSchedule", false, false),
    ("WeirClient", "ResumeSchedule", false, false),
    ("WeirClient", "Backfill", false, false),
    ("WeirClient", "PlanRun", false, false),
    ("WeirClient", "ExplainCache", false, false),
    ("WeirClient", "MetricHistory", false, false),
    ("WeirClient", "GetLineage", false, false),
    ("WeirClient", "ListModels", false, false),
    ("WeirClient", "GetModel", false, false),
    ("WeirClient", "PromoteModel", false, false),
    ("WeirClient", "RollbackModel", false, false),
    ("WeirClient", "GetModelArtifact", false, true),
    ("WeirClient", "DiffModelExplanations", false, false),
    ("WeirClient", "ListWorkers", false, false),
    ("WeirClient", "GetStepMetrics", false, false),
    ("WeirClient", "DeleteRuns", false, false),
    ("WeirClient", "DeletePipeline", false, false),
    ("WeirClient", "Gc", false, false),
    ("WeirClient", "ListNotifications", false, false),
    ("WeirClient", "RetryNotification", false, false),
    ("WeirClient", "Approve", false, false),
    ("WeirClient", "FireWebhook", false, false),
    ("WeirClient", "DecideAliasMove", false, false),
    ("WeirSecrets", "SetSecret", false, false),
    ("WeirSecrets", "ListSecrets", false, false),
    ("WeirSecrets", "DeleteSecret", false, false),
    ("WeirWorker", "Register", false, false),
    ("WeirWorker", "Lease", false, false),
    ("WeirWorker", "Heartbeat", false, false),
    ("WeirWorker", "Report", false, false),
    ("WeirWorker", "UploadLogs", true, false),
    ("WeirWorker", "UploadArtifact", true, false),
    ("WeirWorker", "DownloadBlob", false, true),
    ("WeirWorker", "DownloadBundle", false, true),
    ("WeirWorker", "UploadMetrics", false, false),
];

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(weir_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

fn weir_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
    set.file.iter().filter(|f| f.package() == "weir.v1").collect()
}

#[test]
fn services_and_rpcs_have_the_agreed_shape() {
    let set = descriptors();
    let mut got = Vec::new();
    for file in weir_files(&set) {
        for service in &file.service {
            for method in &service.method {
                got.push((
                    service.name().to_string(),
                    method.name().to_string(),
                    method.client_streaming(),
                    method.server_streaming(),
                ));
            }
        }
    }
    // Files come in dependency order (client.proto imports worker.proto through workers.proto):
    // compare service by service, each in the order its RPCs are declared.
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<_> = RPCS.iter().map(|&(s, m, c, r)| (s.to_string(), m.to_string(), c, r)).collect();
    assert_eq!(got, want);
}

#[test]
fn well_known_types_travel_with_the_set() {
    let set = descriptors();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for needed in ["google/protobuf/timestamp.proto", "google/protobuf/duration.proto", "weir/v1/common.proto"] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
}

#[test]
fn every_element_is_documented() {
    let set = descriptors();
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for file in weir_files(&set) {
        let info = file.source_code_info.as_ref().expect("source info is kept");
        let documented =
            |path: &[i32]| info.location.iter().any(|l| l.path == path && !l.leading_comments().trim().is_empty());
        let mut check = |path: Vec<i32>, what: String| {
            checked += 1;
            if !documented(&path) {
                undocumented.push(format!("{}: {what}", file.name()));
            }
        };
        // Paths per descriptor.proto: message_type = 4, field = 2, oneof_decl = 8, nested_type = 3,
        // enum_type = 5, value = 2, service = 6, method = 2.
        for (i, message) in file.message_type.iter().enumerate() {
            let i = i as i32;
            // Map fields bring a synthetic nested entry type; nothing else is nested, so this
            // walk stays flat.
            let nested = message.nested_type.iter().filter(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()));
            assert!(nested.count() == 0 && message.enum_type.is_empty(), "{}: nesting is not checked", message.name());
            check(vec![4, i], message.name().to_string());
            for (j, field) in message.field.iter().enumerate() {
                check(vec![4, i, 2, j as i32], format!("{}.{}", message.name(), field.name()));
            }
            for (k, oneof) in message.oneof_decl.iter().enumerate() {
                // proto3 `optional` fields come with a synthetic oneof that has no comment.
                if !oneof.name().starts_with('_') {
                    check(vec![4, i, 8, k as i32], format!("{}.{}", message.name(), oneof.name()));
                }
            }
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            check(vec![5, i as i32], e.name().to_string());
            for (j, value) in e.value.iter().enumerate() {
                check(vec![5, i as i32, 2, j as i32], value.name().to_string());
            }
        }
        for (i, service) in file.service.iter().enumerate() {
            check(vec![6, i as i32], service.name().to_string());
            for (j, method) in service.method.iter().enumerate() {
                check(vec![6, i as i32, 2, j as i32], format!("{}.{}", service.name(), method.name()));
            }
        }
    }
    assert!(checked > 200, "only {checked} elements were found: is source info missing?");
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
}

#[test]
fn generated_types_match_the_engine_vocabulary() {
    use weir_proto::v1::{AttemptId, RunState, StepState};
    // Field and value numbers are wire format: a change here breaks deployed clients and workers.
    assert_eq!(AttemptId { instance: 3, number: 2 }.encode_to_vec(), [0x08, 3, 0x10, 2]);
    let steps = [
        StepState::Pending,
        StepState::Ready,
        StepState::Leased,
        StepState::Running,
        StepState::Succeeded,
        StepState::Failed,
        StepState::Skipped,
        StepState::Cancelled,
    ];
    assert_eq!(steps.map(|s| s as i32), [1, 2, 3, 4, 5, 6, 7, 8]);
    let runs = [RunState::Queued, RunState::Running, RunState::Succeeded, RunState::Failed, RunState::Cancelled];
    assert_eq!(runs.map(|s| s as i32), [1, 2, 3, 4, 5]);
}
