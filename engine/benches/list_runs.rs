//! What `weir runs` costs on a big store: the newest 50 runs of 100,000, through the
//! `runs_by_time` index, against the cheapest read the store has (one run by id), measured in
//! the same invocation.
//!
//! * `list_runs/get_run`: [`Store::run`] of one run by id: the baseline;
//! * `list_runs/newest_50`: [`Store::list_runs`] of the newest 50, no filter;
//! * `list_runs/newest_50_of_one_pipeline`: the same with a pipeline filter that one run in ten
//!   matches (the filter is applied while scanning, so about 500 runs are read);
//! * `list_runs/page_10`: the tenth page of 50, from the ninth page's token.
//!
//! The store is filled once (100,000 runs over ten pipelines, written 1,000 per batch, with
//! creation times in id order reversed every 1,000 so id order is not time order). Run with
//! `cargo bench -p weir-engine --bench list_runs`; `BENCHMARKS.md` has the figures.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group};
use weir_core::run::{Millis, RunState};
use weir_engine::store::{Batch, Listed, RunFilter, RunRecord, Store, Trigger};

const RUNS: u64 = 100_000;

fn record(i: u64) -> RunRecord {
    RunRecord {
        id: format!("r-{i:06}"),
        pipeline: format!("pipeline-{}", i % 10),
        version: "0".repeat(64),
        params: BTreeMap::from([("rows".to_string(), serde_json::json!(i))]),
        state: if i.is_multiple_of(7) { RunState::Failed } else { RunState::Succeeded },
        // Within each thousand, later ids are older: the listing must follow time, not id.
        created_at: Millis(1_700_000_000_000 + (i / 1000) * 1000 + (999 - i % 1000)),
        finished_at: Some(Millis(1_700_000_000_000 + i * 10 + 5)),
        trigger: Trigger::Manual { user: None },
        no_cache: false,
        sla_missed_at: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for chunk in 0..RUNS / 1000 {
        let mut b = Batch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            b.put_run(&record(i)).expect("record");
        }
        store.write_batch(b).expect("write");
    }
    let all = RunFilter::default();
    let newest = store.list_runs(&all, 50, None).expect("list");
    let Some(Listed::Run(first)) = newest.runs.first() else { panic!("no run listed") };
    assert_eq!((first.id.as_str(), newest.runs.len()), ("r-099000", 50), "the newest run comes first");

    let mut group = c.benchmark_group("list_runs");
    group
        .sample_size(50)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("get_run", |b| b.iter(|| black_box(store.run(black_box("r-054321")).expect("get"))));
    group.bench_function("newest_50", |b| b.iter(|| black_box(store.list_runs(&all, 50, None).expect("list"))));
    let one = RunFilter { pipeline: Some("pipeline-3".to_string()), state: None };
    group.bench_function("newest_50_of_one_pipeline", |b| {
        b.iter(|| black_box(store.list_runs(&one, 50, None).expect("list")))
    });
    let mut token = None;
    for _ in 0..9 {
        token = store.list_runs(&all, 50, token.as_deref()).expect("list").next_page_token;
    }
    group.bench_function("page_10", |b| {
        b.iter(|| black_box(store.list_runs(&all, 50, token.as_deref()).expect("list")))
    });
    group.finish();
}

criterion_group!(benches, bench);

criterion::criterion_main!(benches);
