//! weir's engine library. Today: pipeline files (`spec`), the expression language (`expr`),
//! templates (`template`), planning (`plan`), graph rendering (`graph`), the JSON Schema
//! (`schema`), diagnostics (`diag`) and the `weir` command line (`cli`). The pure core does
//! no I/O; `cli` is the only module that touches files, the terminal or the process.

pub mod cli;
pub mod diag;
pub mod expr;
pub mod graph;
pub mod plan;
pub mod schema;
pub mod spec;
pub mod template;
