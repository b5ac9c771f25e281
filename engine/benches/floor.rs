//! The floor of a chain step (issue 19): what a `true` step of `weir run` cannot avoid paying,
//! each part measured alone in CPU time (user + system, all threads, and the children waited
//! for), against the shell baseline of `bench/speed.py` measured in the same invocation:
//!
//! * `shell`: `sh -c true` run by a shell loop, per step: the baseline of the 2x goal;
//! * `spawn`: `/bin/sh -c true` started from this Rust process with `std::process::Command`
//!   (`posix_spawn`, a new process group) and waited for: the step itself, started the way
//!   any orchestrator must;
//! * `durable`: one store transaction of what a chain step writes when its outcome is
//!   reported and the next step leased (two events, two step records: the same shape as
//!   the engine's staged batch), then a flush, as "acknowledged means flushed" requires;
//!   sled's I/O threads are this process's threads, so their CPU counts;
//! * and beside them, one step record written and flushed alone (no transaction, so no batch
//!   marker): what the transaction's atomicity adds, by difference.
//!
//! * and what the split into `weir server` + `weir-worker` adds (`floor/rpc.rs`): one gRPC
//!   call a step, through the engine's HTTP/2 server (another process) and the worker's
//!   client with a handler that answers at once, made between steps as a chain makes it, and
//!   beside it the same bytes over plain TCP, the kernel's part. `weir run`'s CPU a step plus
//!   that call is the least the split can cost; `bench/speed.py` prints the ratio it allows.
//!
//! `spawn + durable` is a floor no orchestration can go under while it keeps a durable state
//! per step; the rest of a step's CPU in `weir run` (leasing, reporting, output pumps, task
//! wake-ups) is the orchestration itself. Run with
//! `cargo bench -p weir-engine --bench floor [-- STEPS]` (default 1,000 a part, three rounds,
//! medians); BENCHMARKS.md has the figures.

#[path = "floor/rpc.rs"]
mod rpc;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use weir_core::run::{AttemptId, Event, InstanceId, Millis, StepState};
use weir_engine::store::{Batch, EventRecord, StepRecord, Store};

/// CPU seconds of this process (every thread) and of the children it waited for.
fn cpu() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// CPU and wall milliseconds per step of `f` over `steps` steps.
fn per_step(steps: u32, f: impl FnOnce()) -> (f64, f64) {
    let (c, t) = (cpu(), Instant::now());
    f();
    ((cpu() - c) * 1e3 / f64::from(steps), t.elapsed().as_secs_f64() * 1e3 / f64::from(steps))
}

/// [`per_step`] of a part of the gRPC pair, counting the server process's CPU too.
fn per_step_grpc(steps: u32, g: &rpc::Grpc, f: impl FnOnce(&rpc::Grpc)) -> (f64, f64) {
    let before = g.server_cpu();
    let (c, w) = per_step(steps, || f(g));
    (c + (g.server_cpu() - before) * 1e3 / f64::from(steps), w)
}

/// `cargo bench` puts its target folders on `LD_LIBRARY_PATH`, where every `sh` would first
/// look for libc: not what a shell or `weir run` pays.
fn sh(args: &[&str]) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(args).env_remove("LD_LIBRARY_PATH");
    c
}

fn shell(steps: u32) {
    let script = format!("i=0; while [ $i -lt {steps} ]; do sh -c true; i=$((i + 1)); done");
    let ok = sh(&["-c", &script]).status().expect("sh runs");
    assert!(ok.success());
}

fn spawn(steps: u32) {
    use std::os::unix::process::CommandExt;
    for _ in 0..steps {
        let ok = sh(&["-c", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .status()
            .expect("sh runs");
        assert!(ok.success());
    }
}

fn step(name: &str, state: StepState, attempts: u32) -> StepRecord {
    StepRecord {
        name: name.into(),
        state,
        attempts,
        started_at: Some(Millis(1_800_000_000_000)),
        heard_at: Some(Millis(1_800_000_000_000)),
        worker: Some("local-18d0a3f2c41".into()),
        ..StepRecord::default()
    }
}

fn durable(store: &Store, run: &str, steps: u32) {
    for i in 0..steps {
        let (done, next) = (InstanceId(i), InstanceId(i + 1));
        let mut b = Batch::new();
        let outcome = Event::Succeeded { attempt: AttemptId { instance: done, number: 1 }, metrics: BTreeMap::new() };
        let lease =
            Event::Leased { attempt: AttemptId { instance: next, number: 1 }, worker: "local-18d0a3f2c41".into() };
        let now = Millis(1_800_000_000_000 + u64::from(i));
        b.append_event(run, &EventRecord { now, event: outcome, changes: Vec::new() }).expect("event");
        b.put_step(run, done, &step(&format!("s{i:04}"), StepState::Succeeded, 1)).expect("step");
        b.append_event(run, &EventRecord { now, event: lease, changes: Vec::new() }).expect("event");
        b.put_step(run, next, &step(&format!("s{:04}", i + 1), StepState::Leased, 1)).expect("step");
        store.write_batch_unflushed(b).expect("write");
        store.flush().expect("flush");
    }
}

/// One record written and flushed without a transaction (no batch marker): what the
/// transaction's atomicity costs on top, by difference with [`durable`].
fn one_record(store: &Store, run: &str, steps: u32) {
    for i in 0..steps {
        store.put_step(run, InstanceId(i), &step(&format!("s{i:04}"), StepState::Succeeded, 1)).expect("put");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    rpc::serve_if_asked();
    // `cargo bench` passes `--bench`; a number among the arguments is the steps per part.
    let steps: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db")).expect("store");
    let (mut sh, mut sp, mut du, mut one) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut grpc, mut tcp, mut on_rt, mut stepped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut tcp_stepped = Vec::new();
    let (g, t) = (rpc::Grpc::start(), rpc::Tcp::start());
    // For `perf stat` or `perf record` of one part alone: `FLOOR_ONLY=steps|stepped`.
    match std::env::var("FLOOR_ONLY").as_deref() {
        Ok("steps") => return g.steps(steps),
        Ok("stepped") => return g.calls(0, steps, true),
        _ => {}
    }
    for round in 0..3 {
        let run = format!("chain-{round}");
        // Rotated each round so the parts share the machine's drift.
        let first = 1000 + round as u32 * steps;
        let mut parts: [&mut dyn FnMut(); 9] = [
            &mut || sh.push(per_step(steps, || shell(steps))),
            &mut || sp.push(per_step(steps, || spawn(steps))),
            &mut || du.push(per_step(steps, || durable(&store, &run, steps))),
            &mut || one.push(per_step(steps, || one_record(&store, &format!("one-{round}"), steps))),
            &mut || grpc.push(per_step_grpc(steps, &g, |g| g.calls(first, steps, false))),
            &mut || on_rt.push(per_step_grpc(steps, &g, |g| g.steps(steps))),
            &mut || stepped.push(per_step_grpc(steps, &g, |g| g.calls(first, steps, true))),
            &mut || tcp.push(per_step(steps, || t.calls(steps, false))),
            &mut || tcp_stepped.push(per_step(steps, || t.calls(steps, true))),
        ];
        parts.rotate_left(round);
        for p in parts {
            p();
        }
    }
    let cpu_of = |v: &[(f64, f64)]| median(v.iter().map(|x| x.0).collect());
    let wall_of = |v: &[(f64, f64)]| median(v.iter().map(|x| x.1).collect());
    let base = cpu_of(&sh);
    println!(
        "floor of a chain step, {steps} steps a part, medians of 3 rounds (CPU includes children and all threads)"
    );
    println!("{:<34} {:>10} {:>10} {:>12}", "part", "CPU ms", "wall ms", "CPU / shell");
    for (name, v) in [
        ("shell: sh -c true from a shell", &sh),
        ("spawn: sh -c true from Rust", &sp),
        ("durable: one transaction + flush", &du),
    ] {
        println!("{name:<34} {:>10.3} {:>10.3} {:>11.2}x", cpu_of(v), wall_of(v), cpu_of(v) / base);
    }
    let name = "(one record + flush, no transaction)";
    println!("{name:<34} {:>10.3} {:>10.3} {:>11.2}x", cpu_of(&one), wall_of(&one), cpu_of(&one) / base);
    let floor = cpu_of(&sp) + cpu_of(&du);
    println!("{:<34} {:>10.3} {:>10} {:>11.2}x", "spawn + durable", floor, "", floor / base);
    println!("{:<34} {:>10.3} {:>10} {:>11}", "left for all else under the 2x goal", 2.0 * base - floor, "", "");
    println!("\nwhat a second process adds: one Report (a step done, the next leased) a step");
    for (name, v) in [
        ("grpc: back to back", &grpc),
        ("tcp: the same messages, blocking", &tcp),
        ("steps on the worker's runtime", &on_rt),
        ("steps, each then a grpc call", &stepped),
        ("spawn, each then a tcp round trip", &tcp_stepped),
    ] {
        println!("{name:<34} {:>10.3} {:>10.3} {:>11.2}x", cpu_of(v), wall_of(v), cpu_of(v) / base);
    }
    let split = cpu_of(&stepped) - cpu_of(&on_rt);
    println!("{:<34} {:>10.3} {:>10} {:>11.2}x", "a grpc call between steps", split, "", split / base);
    let kernel = cpu_of(&tcp_stepped) - cpu_of(&sp);
    println!("{:<34} {:>10.3} {:>10} {:>11.2}x", "a tcp round trip between steps", kernel, "", kernel / base);
}
