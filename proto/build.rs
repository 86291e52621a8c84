//! Compiles `proto/missive/v1/*.proto` into Rust at build time.
//!
//! `protox` parses the files in pure Rust (no system `protoc`, so a fresh machine
//! builds as it is) into a `FileDescriptorSet`, which `tonic-prost-build` turns
//! into prost messages (and, once the package declares services, tonic clients
//! and servers). The encoded descriptor set is also written to `OUT_DIR` so the
//! crate can serve it to gRPC reflection.

use std::error::Error;
use std::path::PathBuf;

/// Root of the import paths: files are named relative to it (`missive/v1/log.proto`),
/// which is also the name they carry in descriptors and reflection.
const PROTO_ROOT: &str = "proto";

/// Every file of the schema. A new file is added here and under `PROTO_ROOT`.
const PROTO_FILES: &[&str] = &[
    "missive/v1/log.proto",
    "missive/v1/raft.proto",
    "missive/v1/chat.proto",
    "missive/v1/projection.proto",
];

/// The file `lib.rs` includes as `FILE_DESCRIPTOR_SET`.
const DESCRIPTOR_SET_FILE: &str = "missive_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    // Cargo watches the whole directory, so adding or editing any .proto reruns us.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    // Source info carries the .proto comments into the generated docs and to
    // reflection clients; imports make the set self-contained for reflection.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join(DESCRIPTOR_SET_FILE),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No generated `connect` helpers: callers build their own channels (one per
        // peer, with deadlines), and this crate stays free of tonic's transport.
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
