//! `weir workers`: every worker connected to the server, with what it offers, what is free,
//! what it holds and when the engine last heard from it (the `ListWorkers` RPC).

use weir_proto::v1;

use super::conn::{Client, Hints, refused};
use super::{ConnArgs, Failure, now_ms, print_out};

pub(super) async fn list(client: &mut Client, conn: &ConnArgs) -> Result<(), Failure> {
    let response = client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .map_err(|s| refused(&s, conn, Hints::default()))?
        .into_inner();
    if response.workers.is_empty() {
        eprintln!("no worker is connected: start one with `weir-worker --engine {}`", conn.server);
        return Ok(());
    }
    print_out(&render::workers_table(&response.workers, now_ms()));
    Ok(())
}

/// Pure rendering of `ListWorkers`.
pub(crate) mod render {
    use weir_proto::v1;

    use crate::display::{Table, millis};

    fn cores(m: u64) -> String {
        let text = format!("{:.2}", m as f64 / 1000.0);
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }

    fn gib(b: u64) -> String {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    }

    /// NAME LABELS RUNTIMES CPUS MEMORY GPUS ATTEMPTS HEARD, by name; free/total for resources.
    pub fn workers_table(workers: &[v1::WorkerInfo], now_ms: u64) -> String {
        let mut sorted: Vec<&v1::WorkerInfo> = workers.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut t = Table::new(&["NAME", "LABELS", "RUNTIMES", "CPUS", "MEMORY", "GPUS", "ATTEMPTS", "HEARD"]);
        for w in sorted {
            let (free, total) = (w.free.unwrap_or_default(), w.total.unwrap_or_default());
            let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            // An attempt whose step has not said it started is marked: held ahead, or preparing.
            let attempts: Vec<String> = w
                .attempts
                .iter()
                .map(|a| format!("{}/{}#{}{}", a.run_id, a.step, a.attempt, if a.running { "" } else { "(leased)" }))
                .collect();
            let heard = millis(w.last_heard.as_ref())
                .map(|at| format!("{}s ago", now_ms.saturating_sub(at) / 1000))
                .unwrap_or_else(|| "-".into());
            t.push(vec![
                w.name.clone(),
                if labels.is_empty() { "-".into() } else { labels.join(",") },
                w.runtimes.join(","),
                format!("{}/{}", cores(free.cpus_milli), cores(total.cpus_milli)),
                format!("{}/{}", gib(free.memory_bytes), gib(total.memory_bytes)),
                format!("{}/{}", free.gpus, total.gpus),
                if attempts.is_empty() { "-".into() } else { attempts.join(" ") },
                heard,
            ]);
        }
        t.render()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn workers_show_free_over_total_and_what_they_hold() {
            let r = |c, m, g| Some(v1::Resources { cpus_milli: c, memory_bytes: m, gpus: g });
            let w = v1::WorkerInfo {
                name: "gpu-1".into(),
                labels: [("zone".to_string(), "a".to_string())].into(),
                runtimes: vec!["process".into(), "docker".into()],
                total: r(8000, 32 << 30, 2),
                free: r(6500, 30 << 30, 1),
                attempts: vec![
                    v1::HeldAttempt {
                        run_id: "r1".into(),
                        step: "train".into(),
                        attempt: 2,
                        since: None,
                        running: true,
                    },
                    v1::HeldAttempt {
                        run_id: "r1".into(),
                        step: "eval".into(),
                        attempt: 1,
                        since: None,
                        running: false,
                    },
                ],
                last_heard: Some(prost_types::Timestamp { seconds: 95, nanos: 0 }),
                ..Default::default()
            };
            let text = workers_table(&[w], 100_000);
            assert!(text.contains("gpu-1") && text.contains("zone=a") && text.contains("process,docker"), "{text}");
            assert!(text.contains("6.5/8") && text.contains("30.0G/32.0G") && text.contains("1/2"), "{text}");
            assert!(text.contains("r1/train#2 r1/eval#1(leased)") && text.contains("5s ago"), "{text}");
        }
    }
}
