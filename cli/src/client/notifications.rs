//! `weir notifications [--dead]` lists the server's notification outbox (deliveries still
//! being attempted, or the dead letters whose every attempt failed) and `weir notifications
//! retry ID` re-queues a dead letter (the `ListNotifications` and `RetryNotification` RPCs).

use weir_proto::v1;

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, Failure, now_ms, print_out};

pub(super) async fn list(client: &mut Client, conn: &ConnArgs, dead: bool) -> Result<(), Failure> {
    let response = client
        .list_notifications(v1::ListNotificationsRequest { dead })
        .await
        .map_err(|s| refused(&s, conn, Hints::default()))?
        .into_inner();
    if response.notifications.is_empty() {
        eprintln!("{}", if dead { "no dead letters" } else { "no notification is waiting to be delivered" });
        return Ok(());
    }
    print_out(&render::table(&response.notifications, now_ms()));
    Ok(())
}

pub(super) async fn retry(client: &mut Client, conn: &ConnArgs, id: String) -> Result<(), Failure> {
    let response = client
        .retry_notification(v1::RetryNotificationRequest { id })
        .await
        .map_err(|s| refused(&s, conn, Hints::default()))?
        .into_inner();
    if let Some(n) = response.notification {
        println!("re-queued {} ({} for run {}, to {})", n.id, n.event, n.run_id, n.receiver);
    }
    Ok(())
}

/// Pure rendering of `ListNotifications`.
pub(crate) mod render {
    use weir_proto::v1;

    use crate::display::{Table, millis};

    /// ID EVENT RUN RECEIVER ATTEMPTS NEXT LAST-ERROR, oldest first as the server sends them.
    pub fn table(notes: &[v1::Notification], now_ms: u64) -> String {
        let mut t = Table::new(&["ID", "EVENT", "RUN", "RECEIVER", "ATTEMPTS", "NEXT", "LAST ERROR"]);
        for n in notes {
            let next = match (n.dead, millis(n.next_at.as_ref())) {
                (true, _) => "dead".to_string(),
                (false, Some(at)) if at > now_ms => format!("in {}s", (at - now_ms).div_ceil(1000)),
                (false, _) => "now".to_string(),
            };
            t.push(vec![
                n.id.clone(),
                n.event.clone(),
                n.run_id.clone(),
                format!("{} {}", n.kind, n.receiver),
                n.attempts.to_string(),
                next,
                if n.last_error.is_empty() { "-".into() } else { n.last_error.clone() },
            ]);
        }
        t.render()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_dead_letter_shows_its_attempts_and_last_error_and_a_pending_one_when_next() {
            let n = |dead, next: u64| v1::Notification {
                id: "d-1".into(),
                event: "run_failed".into(),
                kind: "webhook".into(),
                receiver: "http://127.0.0.1:9".into(),
                run_id: "r1".into(),
                attempts: 3,
                next_at: Some(prost_types::Timestamp { seconds: next as i64, nanos: 0 }),
                last_error: "cannot connect".into(),
                dead,
                ..Default::default()
            };
            let text = table(&[n(true, 0), n(false, 12)], 10_000);
            let lines: Vec<&str> = text.lines().collect();
            assert!(lines[1].contains("dead") && lines[1].contains("cannot connect"), "{text}");
            assert!(lines[2].contains("in 2s") && lines[2].contains("webhook http://127.0.0.1:9"), "{text}");
        }
    }
}
