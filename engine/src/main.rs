//! The `weir` binary: everything lives in [`weir_engine::cli`].

// mimalloc instead of glibc malloc: loading a pipeline is allocation-bound (many small
// strings and vectors), and mimalloc cuts load + plan of 100k steps from ~1.1 s to ~0.65 s
// on the benchmark machine (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir_engine::cli::main()
}
