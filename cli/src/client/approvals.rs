//! `weir approve RUN STEP [--reject] [--comment TEXT] [--as NAME]`: decides a step awaiting
//! approval through the Approve call and says what happens next. Who decides is the name given
//! with `--as`, else `$USER`; the server records it beside "client token" (tokens carry no name
//! yet). It decides nothing itself: a step that is not awaiting approval is the server's refusal.

use weir_proto::v1;

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, Failure, print_out};

/// What `weir approve` was asked.
pub(crate) struct Approve {
    pub run: String,
    pub step: String,
    pub reject: bool,
    pub comment: Option<String>,
    pub name: Option<String>,
}

pub(super) async fn approve(client: &mut Client, conn: &ConnArgs, a: Approve) -> Result<(), Failure> {
    let decided_by = a.name.or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    let request = v1::ApproveRequest {
        run_id: a.run.clone(),
        step: a.step.clone(),
        approve: !a.reject,
        comment: a.comment.unwrap_or_default(),
        decided_by,
    };
    let hints = Hints {
        not_found: "`weir status RUN` lists the run's steps and those awaiting approval",
        invalid: "",
        precondition: "`weir status RUN` shows the step's state and any decision already taken",
    };
    let response = client.approve(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let local = conn.local_flag();
    let line = if a.reject {
        format!(
            "rejected step {} of run {}: it failed ({}); `weir status {}{local}` shows the run\n",
            a.step, a.run, response.message, a.run
        )
    } else {
        format!(
            "approved step {} of run {}: it is {} and runs when a worker takes it; `weir status {}{local} --watch` follows it\n",
            a.step,
            a.run,
            crate::display::step_state(response.state),
            a.run
        )
    };
    print_out(&line);
    Ok(())
}
