//! Compiles the etcd API subset in `proto/etcdserverpb/rpc.proto` into a tonic
//! client, which bench-raft drives etcd with.
//!
//! `protox` parses the file in pure Rust (no system `protoc`, as in
//! missive-proto's build script) and `tonic-prost-build` generates the prost
//! messages and the clients from its descriptors. No server is generated:
//! etcd is the server.

use std::error::Error;

/// Root of the import paths.
const PROTO_ROOT: &str = "proto";

/// The etcd API subset, named relative to `PROTO_ROOT`.
const PROTO_FILES: &[&str] = &["etcdserverpb/rpc.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.open_files(PROTO_FILES)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // The benchmark opens its own channels (one per connection it wants).
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
