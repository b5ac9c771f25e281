//! weir's engine library. The pure core: pipeline files (`spec`), the expression language
//! (`expr`), templates (`template`), planning (`plan`), the run state machine (`run`), safe
//! relative names (`relpath`), graph rendering (`graph`), the JSON Schema (`schema`) and
//! diagnostics (`diag`); none of them does I/O. The adapters that touch the file system: the
//! content-addressed artifact store (`artifact`), pipeline bundles (`bundle`), the sled state
//! store (`store`) and the `weir` command line (`cli`, the only one that touches the terminal
//! or the process).

// A `Diagnostic` is ~150 bytes and only ever travels on the error path, where it is built
// once per problem; boxing it would cost clarity and buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod artifact;
pub mod bundle;
pub mod diag;
pub mod expr;
pub mod graph;
pub mod plan;
pub mod relpath;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod server;
pub mod spec;
pub mod store;
pub mod template;
pub mod wire;
