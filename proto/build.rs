//! Compiles `proto/weir/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed),
//! writes the encoded descriptor set to `OUT_DIR/weir_descriptor.bin` for server reflection and
//! generates the prost messages and tonic clients and servers from it. It reads only the files
//! under `proto/` and writes only into `OUT_DIR`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "weir/v1/common.proto",
    "weir/v1/admin.proto",
    "weir/v1/approvals.proto",
    "weir/v1/registry.proto",
    "weir/v1/protect.proto",
    "weir/v1/retention.proto",
    "weir/v1/tracking.proto",
    "weir/v1/triggers.proto",
    "weir/v1/workers.proto",
    "weir/v1/live_metrics.proto",
    "weir/v1/notify.proto",
    "weir/v1/secrets.proto",
    "weir/v1/access.proto",
    "weir/v1/client.proto",
    "weir/v1/worker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    // Imports included so reflection clients can resolve google.protobuf.Timestamp and Duration;
    // source info kept so the generated code and reflection clients see the comments.
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(out_dir.join("weir_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
