//! The approvals block of `weir status`: each step that awaits approval with its message, when
//! it times out and the commands that decide it, and each decision taken (who, when, why) or
//! timed out. Pure, like the rest of `display`: everything shown is passed in.

use std::fmt::Write as _;

use weir_proto::v1::{self, StepState};

use super::{datetime, millis};

/// The block, or nothing when no step has `approval:` that asked. `local` is what a suggested
/// command needs to reach the same runs (` --local DIR`, or nothing).
pub fn block(run_id: &str, steps: &[v1::Step], local: &str) -> String {
    let mut out = String::new();
    for s in steps {
        let Some(a) = &s.approval else { continue };
        let asked = millis(a.requested_at.as_ref()).map(datetime).unwrap_or_else(|| "-".into());
        if s.state == StepState::AwaitingApproval as i32 {
            let due = match millis(a.due_at.as_ref()) {
                Some(d) => format!(", times out {}", datetime(d)),
                None => String::new(),
            };
            let _ = writeln!(out, "  {}: awaiting approval since {asked}{due}: {}", s.name, a.message);
            let _ = writeln!(
                out,
                "    approve: weir approve {run_id} {}{local} [--comment TEXT]; reject: weir approve {run_id} {}{local} --reject --comment TEXT",
                quoted(&s.name),
                quoted(&s.name)
            );
        } else if a.decided {
            let verdict = if a.approved { "approved" } else { "rejected" };
            let at = millis(a.decided_at.as_ref()).map(datetime).unwrap_or_else(|| "-".into());
            let why = if a.comment.is_empty() { String::new() } else { format!(": {}", a.comment) };
            let _ = writeln!(out, "  {}: {verdict} by {} at {at}{why}", s.name, a.decided_by);
        } else if s.state == StepState::Failed as i32 {
            let _ = writeln!(out, "  {}: {} (asked {asked}: {})", s.name, s.message, a.message);
        } else {
            let _ = writeln!(out, "  {}: not decided (asked {asked}: {})", s.name, a.message);
        }
    }
    if out.is_empty() { out } else { format!("\napprovals:\n{out}") }
}

/// A step name as the shell must be given it: `train[lr=0.1]` is a glob, so quoted.
fn quoted(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: ms / 1000, nanos: 0 })
    }

    #[test]
    fn awaiting_decided_and_timed_out_steps_read_well() {
        const T: i64 = 1_764_950_400_000; // 2025-12-05 16:00:00 UTC
        let step = |name: &str, state: StepState, message: &str, approval: v1::StepApproval| v1::Step {
            name: name.into(),
            state: state as i32,
            message: message.into(),
            approval: Some(approval),
            ..Default::default()
        };
        let asked = |m: &str| v1::StepApproval { message: m.into(), requested_at: ts(T), ..Default::default() };
        let steps = [
            v1::Step { name: "train".into(), ..Default::default() },
            step(
                "deploy[region=eu]",
                StepState::AwaitingApproval,
                "ship?",
                v1::StepApproval { due_at: ts(T + 7_200_000), ..asked("ship?") },
            ),
            step(
                "a",
                StepState::Succeeded,
                "",
                v1::StepApproval {
                    decided: true,
                    approved: true,
                    decided_by: "alice (client token)".into(),
                    decided_at: ts(T + 60_000),
                    comment: "looks fine".into(),
                    ..asked("go?")
                },
            ),
            step(
                "b",
                StepState::Failed,
                "rejected by bob (client token)",
                v1::StepApproval {
                    decided: true,
                    decided_by: "bob (client token)".into(),
                    decided_at: ts(T),
                    ..asked("go?")
                },
            ),
            step("c", StepState::Failed, "approval timed out after 2s", asked("go?")),
        ];
        assert_eq!(
            block("r1", &steps, " --local .weir"),
            "
approvals:
  deploy[region=eu]: awaiting approval since 2025-12-05 16:00:00, times out 2025-12-05 18:00:00: ship?
    approve: weir approve r1 'deploy[region=eu]' --local .weir [--comment TEXT]; reject: weir approve r1 'deploy[region=eu]' --local .weir --reject --comment TEXT
  a: approved by alice (client token) at 2025-12-05 16:01:00: looks fine
  b: rejected by bob (client token) at 2025-12-05 16:00:00
  c: approval timed out after 2s (asked 2025-12-05 16:00:00: go?)
"
        );
        assert_eq!(block("r1", &steps[..1], ""), "");
    }
}
