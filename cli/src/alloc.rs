//! The allocator: mimalloc, told to give freed memory back to the system sooner.

use std::ffi::{c_int, c_long};

// mimalloc instead of glibc malloc: loading a pipeline is allocation-bound (many small
// strings and vectors), and mimalloc cuts load + plan of 100k steps from ~1.1 s to ~0.65 s
// on the benchmark machine (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`, the 16th member of mimalloc v3's `mi_option_e` (include/mimalloc.h),
/// the version libmimalloc-sys 0.1.49 builds; its Rust bindings do not name it. The test below
/// fails if the index ever points at another option.
const PURGE_DELAY: c_int = 15;

/// mimalloc v3 keeps freed pages committed for 1 s (`purge_delay` 1000) before it returns them
/// to the system. A run's memory comes in bursts (a 10,000-instance fan-out's start writes
/// every step record at once), so for that long each burst stays resident on top of the next:
/// the fan-out peaked at ~124 MB with the default and ~97 MB with no delay, 105 MB with 10 ms
/// (BENCHMARKS.md, issue 19). MIMALLOC_PURGE_DELAY, when set, still wins.
const PURGE_MS: c_long = 0;

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Applies [`PURGE_MS`] unless the environment chose a purge delay itself.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc reads its options on every purge decision; setting one is a plain
        // store, done here once on the main thread before any other thread exists.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_MS) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_mimallocs_purge_delay() {
        // No other v3 option defaults to 1000 (ms): a shifted enum would read another value.
        // SAFETY: a read of an option, which initializes it from the environment if needed.
        let default = unsafe { mi_option_get(PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(set) => assert_eq!(default.to_string(), set),
            Err(_) => assert_eq!(default, 1000, "option {PURGE_DELAY} is not purge_delay in this mimalloc"),
        }
    }
}
