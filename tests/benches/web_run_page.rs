//! Server time to render a 1,000-step run's page (issue 14: under 200 ms), against a
//! baseline measured in the same invocation: `GetRun` of the same run over gRPC, which loads
//! the run's record and its 1,000 step records and encodes them (what any view of the run
//! costs at least).
//!
//! Workload: a pipeline of 1,000 steps (`s0000` … `s0999`) in five stages, each needing the
//! step before it and the one seven before (1,992 `needs` edges), started on a server with no
//! worker and cancelled, so the page is read from the store and the plan is made again (the
//! slower path; a live run answers from memory). Every node is drawn (no matrix groups).
//! Both are measured end to end over loopback (HTTP/1.1, one connection per request for the
//! page; one HTTP/2 channel for gRPC), release build.
//!
//! `cargo bench -p weir-tests --bench web_run_page`

use std::fmt::Write as _;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_proto::v1;
use weir_tests::Cluster;
use weir_tests::http::Http;

const STEPS: usize = 1000;
const STAGES: [&str; 5] = ["ingestion", "preprocessing", "training", "evaluation", "deployment"];

fn pipeline() -> String {
    let mut y = String::from("name: thousand\nsteps:\n");
    for i in 0..STEPS {
        let _ = writeln!(y, "  s{i:04}:\n    stage: {}\n    run: \"true\"", STAGES[i * STAGES.len() / STEPS]);
        let needs: Vec<String> = [1, 7].iter().filter(|&&d| i >= d).map(|d| format!("s{:04}", i - d)).collect();
        if !needs.is_empty() {
            let _ = writeln!(y, "    needs: [{}]", needs.join(", "));
        }
    }
    y
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (cluster, id) = rt.block_on(async {
        let mut cluster = Cluster::start(0, 1).await;
        let version = cluster.submit(&pipeline(), None).await;
        let id = cluster.start_run(&version, &[]).await;
        cluster.client.cancel_run(v1::CancelRunRequest { run_id: id.clone(), ..Default::default() }).await.unwrap();
        cluster.wait(&id, std::time::Duration::from_secs(120)).await;
        (cluster, id)
    });
    let url = cluster.url();
    let check = rt.block_on(async { Http::new(&url).get(&format!("/runs/{id}")).await });
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(check.body.matches("data-instance=").count(), STEPS);

    let mut g = c.benchmark_group("run page, 1,000 steps");
    g.sample_size(30);
    let client = cluster.client.clone();
    g.bench_function("baseline: GetRun over gRPC", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut client = client.clone();
                client.get_run(v1::GetRunRequest { run_id: id.clone(), ..Default::default() }).await.unwrap()
            })
        })
    });
    g.bench_function("GET /runs/{id}", |b| {
        b.iter(|| rt.block_on(async { Http::new(&url).get(&format!("/runs/{id}")).await.status }))
    });
    g.bench_function("GET /runs/{id}/steps/s0500", |b| {
        b.iter(|| rt.block_on(async { Http::new(&url).get(&format!("/runs/{id}/steps/s0500")).await.status }))
    });
    g.finish();
    rt.block_on(cluster.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);
