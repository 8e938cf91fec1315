//! Compiles the sluice.v1 protos with `protox` (pure Rust: no system `protoc`) and writes the
//! encoded descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sluice/v1/common.proto",
        "proto/sluice/v1/broker.proto",
        "proto/sluice/v1/admin.proto",
        "proto/sluice/v1/controller.proto",
        "proto/sluice/v1/raft.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // `compile_fds` does not write the descriptor set itself; reflection needs it.
    std::fs::write(
        out_dir.join("sluice_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Record payloads stay `bytes::Bytes` end to end: no copies on the hot path.
        .bytes(".")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
