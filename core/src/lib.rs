//! weir's pure core: what a pipeline file means and what happens to a run, as values. Pipeline
//! files (`spec`), the expression language (`expr`), templates (`template`), planning (`plan`),
//! the run state machine (`run`), schedule maths (`schedule`), the decisions of `on:` triggers (`trigger`), placement of steps on workers
//! (`placement`), graph rendering (`graph`) and layout for drawing (`layout`), the JSON Schema
//! (`schema`), diagnostics (`diag`) and the explanation format steps write (`explain`).
//!
//! Nothing here does I/O, reads the clock, awaits or names a proto type: callers read files and
//! pass text, pass `now`, and perform the effects the machines return. The tidy test
//! (`tests/tidy.rs` at the workspace root) fails if this crate gains tokio, tonic, prost, sled,
//! bollard or clap, or if a source file here names `std::fs`, `SystemTime::now` or
//! `Instant::now`.

// A `Diagnostic` is ~150 bytes and only ever travels on the error path, where it is built
// once per problem; boxing it would cost clarity and buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod diag;
pub mod explain;
pub mod expr;
pub mod graph;
pub mod layout;
pub mod placement;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod spec;
pub mod template;
pub mod trigger;
