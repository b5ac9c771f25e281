//! Which hash names artifacts: BLAKE3 against SHA-256, and what a store put costs.
//!
//! Workloads, all over the same 256 MiB of pseudo-random bytes:
//!
//! * `hash/blake3` and `hash/sha256`: one call over the buffer in memory (blake3 1.x with its
//!   runtime-detected SIMD, single-threaded; sha2 0.11, which uses the CPU's SHA extensions
//!   when present), and `hash/*_1MiB` the same fed in 1 MiB chunks, as the store does;
//! * `store/put_file`: [`Store::put_file`] of a 256 MiB file (hash, copy to `tmp/`, fsync,
//!   rename, fsync the folder), the blob removed before each iteration so every put is a real
//!   write; `store/copy_fsync` is the baseline: `std::fs::copy` of the same file, then fsync.
//!
//! Throughput is bytes, so criterion prints GiB/s. Run with
//! `cargo bench -p weir-engine --bench hash`; `BENCHMARKS.md` has the figures.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group};
use sha2::{Digest as _, Sha256};
use weir_data::artifact::Store;

const SIZE: usize = 256 << 20;
const CHUNK: usize = 1 << 20;

/// Deterministic incompressible bytes (xorshift64*), so nothing below can shortcut on zeros.
fn buffer() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out
}

/// digest 0.11's output has no `LowerHex`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bench(c: &mut Criterion) {
    // Both implementations compute the standard functions (the published test vectors for "abc").
    assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(
        blake3::hash(b"abc").to_hex().as_str(),
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    );
    let data = buffer();

    let mut group = c.benchmark_group("hash");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    group.bench_function("sha256", |b| b.iter(|| Sha256::digest(black_box(&data))));
    group.bench_function("blake3_1MiB", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            for c in data.chunks(CHUNK) {
                h.update(black_box(c));
            }
            h.finalize()
        })
    });
    group.bench_function("sha256_1MiB", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            data.chunks(CHUNK).for_each(|c| h.update(black_box(c)));
            h.finalize()
        })
    });
    group.finish();

    // On the disk the data folder would use (the current directory's file system).
    let dir = tempfile::tempdir_in(".").expect("a temporary folder here");
    let src = dir.path().join("dataset.bin");
    File::create(&src).and_then(|mut f| f.write_all(&data)).expect("write the source file");
    drop(data);
    let store = Store::open(&dir.path().join("store")).expect("open the store");
    let (digest, size) = store.put_file(&src).expect("a first put");
    assert_eq!(size, SIZE as u64);
    let blob = store.path_of(&digest);

    let mut group = c.benchmark_group("store");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("put_file", |b| {
        b.iter_batched(
            || {
                let _ = fs::remove_file(&blob);
            },
            |()| store.put_file(&src).expect("put"),
            BatchSize::PerIteration,
        )
    });
    let copy = dir.path().join("copy.bin");
    group.bench_function("copy_fsync", |b| {
        b.iter_batched(
            || {
                let _ = fs::remove_file(&copy);
            },
            |()| {
                fs::copy(&src, &copy).expect("copy");
                File::open(&copy).and_then(|f| f.sync_all()).expect("fsync")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);

criterion::criterion_main!(benches);
