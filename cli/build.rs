//! Links `weir` as a position-dependent executable (`-no-pie`) on Linux.
//!
//! As a PIE, every start of `weir` had the dynamic loader apply ~70,000 relative relocations
//! (vtables and constant tables of pointers) and so copy-on-write ~420 pages of
//! `.data.rel.ro`: 1.35 ms of the 3.4 ms a `weir --version` costs, and ~1.7 ms of a one-step
//! `weir run` (BENCHMARKS.md, issue 19, sixth round). `weir` is mostly short-lived commands,
//! where that is a tenth of the work. Linked at a fixed address, those pointers are resolved by
//! the linker and the pages are shared with the page cache. What this gives up is the
//! randomized address of `weir`'s own image; its libraries, heap, stacks and mappings stay
//! randomized, as for the Go binaries of Argo, Kubernetes or Prometheus, which are not PIE by
//! default either. The objects are still compiled position-independent (only the link changes),
//! and `weir-worker`, a long-running process that starts once, stays a PIE.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
