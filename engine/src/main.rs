//! The `weir` binary: everything lives in [`weir_engine::cli`].

fn main() -> std::process::ExitCode {
    weir_engine::cli::main()
}
