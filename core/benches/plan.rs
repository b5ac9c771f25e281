//! Parse + validate + plan throughput for machine-generated pipelines.
//!
//! Workloads (text generated in memory by `common/shapes.rs`, every step runs `true`):
//!
//! * `chain/N`: `s0 -> s1 -> ... -> s(N-1)`, N = 1k, 10k, 100k steps;
//! * `fanout/N`: a root, N-2 plain steps each needing the root, and a sink needing all of them
//!   (a `needs` list of N-2 names), N = 1k, 10k, 100k steps;
//! * `matrix/10002`: `start -> work -> end` where `work` has one matrix axis of 10,000 values
//!   (1 -> 10,000 -> 1, the default per-step matrix limit).
//!
//! For each workload three functions are measured on the same text, parsed with
//! [`Limits::generous`] so the 100k workloads fit:
//!
//! * `yaml_events`: the baseline, draining saphyr-parser's event stream and nothing else: the
//!   least any YAML-based loader can cost;
//! * `load`: [`spec::load`], i.e. the spanned YAML tree, decoding and every validation check;
//! * `load_plan`: `load`, then [`plan::resolve_params`] and [`plan::plan`] (matrix expansion,
//!   template rendering, the instance DAG and its stable topological order);
//! * `load_plan_machine`: `load_plan`, then the run's state machine ([`RunMachine::new`]: an
//!   instance's typed matrix values, its dependents), what starting a run costs in this crate.
//!
//! Each iteration also drops what it built. Throughput is reported in elements = step instances
//! after expansion. Run with `cargo bench -p weir-engine --bench plan`; `bench/report.py` turns
//! criterion's estimates into the table in `BENCHMARKS.md`.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use saphyr_parser::Parser;
use weir_core::plan;
use weir_core::run::RunMachine;

// The allocator the `weir` binary ships with, so the figures are what users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir_core::spec::{self, Limits};

#[path = "common/shapes.rs"]
mod shapes;

use shapes::Shape;

/// (shape, step instances after expansion).
const WORKLOADS: &[(Shape, &[usize])] = &[
    (Shape::Chain, &[1_000, 10_000, 100_000]),
    (Shape::Fanout, &[1_000, 10_000, 100_000]),
    (Shape::Matrix, &[10_002]),
];

/// The baseline: every YAML event of `text`, built and dropped. Returns the event count.
fn yaml_events(text: &str) -> usize {
    let mut parser = Parser::new_from_str(text);
    let mut events = 0;
    while let Some(event) = parser.next_event() {
        black_box(event.expect("the generated text is valid YAML"));
        events += 1;
    }
    events
}

fn load(text: &str, limits: &Limits) -> spec::Pipeline {
    match spec::load(text, limits) {
        Ok(p) => p,
        Err(diags) => panic!("the generated pipeline is invalid: {diags:?}"),
    }
}

fn load_plan(text: &str, limits: &Limits) -> plan::Plan {
    let pipeline = load(text, limits);
    let params = plan::resolve_params(&pipeline, &[]).expect("no params to resolve");
    plan::plan(&pipeline, &params, "bench-run")
}

fn load_plan_machine(text: &str, limits: &Limits) -> (plan::Plan, RunMachine) {
    let pipeline = load(text, limits);
    let params = plan::resolve_params(&pipeline, &[]).expect("no params to resolve");
    let planned = plan::plan(&pipeline, &params, "bench-run");
    let machine = RunMachine::new(&pipeline, &planned);
    (planned, machine)
}

/// Plans `text` once and checks that every instance is there; prints the size of the workload.
fn check_workload(shape: Shape, steps: usize, text: &str, limits: &Limits) {
    let planned = load_plan(text, limits);
    assert_eq!(planned.order.len(), steps, "{}/{steps}: instance count", shape.name());
    eprintln!("workload {}/{steps}: {} bytes of text, {} YAML events", shape.name(), text.len(), yaml_events(text));
}

fn bench(c: &mut Criterion) {
    let limits = Limits::generous();
    for &(shape, sizes) in WORKLOADS {
        let mut group = c.benchmark_group(shape.name());
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for &steps in sizes {
            let text = shapes::pipeline(shape, steps);
            // Check the workload once, outside the measurement, and only if a benchmark of it is
            // selected (criterion calls these closures only for benchmarks that match the filter).
            let checked = Cell::new(false);
            let check = || {
                if !checked.replace(true) {
                    check_workload(shape, steps, &text, &limits);
                }
            };
            group.throughput(Throughput::Elements(steps as u64));
            group.bench_with_input(BenchmarkId::new("yaml_events", steps), &text, |b, t| {
                check();
                b.iter(|| yaml_events(t))
            });
            group.bench_with_input(BenchmarkId::new("load", steps), &text, |b, t| {
                check();
                b.iter(|| load(t, &limits))
            });
            group.bench_with_input(BenchmarkId::new("load_plan", steps), &text, |b, t| {
                check();
                b.iter(|| load_plan(t, &limits))
            });
            group.bench_with_input(BenchmarkId::new("load_plan_machine", steps), &text, |b, t| {
                check();
                b.iter(|| load_plan_machine(t, &limits))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);

criterion::criterion_main!(benches);
