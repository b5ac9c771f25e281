//! Peak memory of load + plan for one generated pipeline.
//!
//! ```text
//! cargo run --release -p weir-engine --example plan_memory -- chain 100000
//! ```
//!
//! Generates the same text as `benches/plan.rs` (shape `chain`, `fanout` or `matrix`, and the
//! number of step instances), reads the peak resident set size (`VmHWM` in `/proc/self/status`)
//! once the text exists (the baseline) and again after `spec::load` + `plan::resolve_params` +
//! `plan::plan` with the plan still alive, and prints one tab-separated line:
//!
//! ```text
//! shape  steps  text_bytes  baseline_peak_kib  final_peak_kib  peak_bytes_per_step
//! ```
//!
//! `VmHWM` only grows, so measure each size in a fresh process (`bench/memory.sh` does). Linux
//! only. The work runs on a thread with a large stack; see `STACK_BYTES`.

use std::process::ExitCode;

use weir_core::plan;

// The allocator the `weir` binary ships with, so the figures are what users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir_core::spec::{self, Limits};

#[path = "../benches/common/shapes.rs"]
mod shapes;

use shapes::Shape;

/// Peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM line in /proc/self/status".to_string())
}

fn run() -> Result<(), String> {
    let usage = "usage: plan_memory chain|fanout|matrix STEPS";
    let mut args = std::env::args().skip(1);
    let shape = match args.next().as_deref() {
        Some("chain") => Shape::Chain,
        Some("fanout") => Shape::Fanout,
        Some("matrix") => Shape::Matrix,
        _ => return Err(usage.into()),
    };
    let steps: usize = args.next().and_then(|s| s.parse().ok()).ok_or(usage)?;
    if steps < 3 || args.next().is_some() {
        return Err(usage.into());
    }

    let text = shapes::pipeline(shape, steps);
    let baseline = peak_rss_kib()?;

    let pipeline = spec::load(&text, &Limits::generous()).map_err(|d| format!("invalid pipeline: {d:?}"))?;
    let params = plan::resolve_params(&pipeline, &[]).map_err(|d| format!("params: {d:?}"))?;
    let planned = plan::plan(&pipeline, &params, "memory-run");
    let last = peak_rss_kib()?;
    if planned.order.len() != steps {
        return Err(format!("planned {} instances, expected {steps}", planned.order.len()));
    }
    std::hint::black_box((&pipeline, &planned));

    let per_step = (last.saturating_sub(baseline) * 1024) as f64 / steps as f64;
    println!("{}\t{steps}\t{}\t{baseline}\t{last}\t{per_step:.0}", shape.name(), text.len());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plan_memory: {e}");
            ExitCode::FAILURE
        }
    }
}
