//! Generates the etcd v3 wire types and tonic services from `proto/` with
//! `tonic-prost-build`, using the `protoc` binary shipped in the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.
//! It also exports that protoc's path as `SYNOD_PROTOC` (`synod_etcdpb::PROTOC` in
//! the library).

use std::path::PathBuf;

/// Every .proto file, relative to `proto/` (also the include root, so imports
/// read like `import "etcdserverpb/rpc.proto";`).
const PROTO_FILES: [&str; 7] = [
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "grpc/health/v1/health.proto",
    "synodpb/pbft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|e| format!("protoc-bin-vendored has no protoc for this platform: {e}"))?;

    // The same protoc for other builds that need one: crates/cli's
    // rust_etcd_client test gives it (env!("SYNOD_PROTOC") in this crate) to
    // the etcd-client crate's build script as PROTOC.
    println!("cargo:rustc-env=SYNOD_PROTOC={}", protoc.display());

    let mut config = tonic_prost_build::Config::new();
    // The builder's own option, so no PROTOC environment variable is needed.
    config.protoc_executable(protoc);

    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| proto_root.join(f)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Unimplemented methods of a server trait answer gRPC `Unimplemented`, as
        // etcd's own unsupported RPCs do; a service can implement a subset.
        .generate_default_stubs(true)
        .compile_with_config(config, &files, &[proto_root])?;
    Ok(())
}
