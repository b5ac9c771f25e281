//! weir's engine library. Today: pipeline files (`spec`), the expression language (`expr`),
//! templates (`template`), planning (`plan`), the run state machine (`run`), graph rendering
//! (`graph`), the JSON Schema (`schema`), diagnostics (`diag`) and the `weir` command line
//! (`cli`). The pure core does no I/O; `cli` is the only module that touches files, the
//! terminal or the process.

// A `Diagnostic` is ~150 bytes and only ever travels on the error path, where it is built
// once per problem; boxing it would cost clarity and buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod diag;
pub mod expr;
pub mod graph;
pub mod plan;
pub mod run;
pub mod schema;
pub mod spec;
pub mod template;
