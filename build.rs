//! Compiles portcullis' own gRPC API (`proto/`) with a pure-Rust protobuf compiler
//! (protox), so building needs no system `protoc`. Envoy's protos come precompiled
//! from the `envoy-types` crate; only our own API is compiled here.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["portcullis/v1/admin.proto", "portcullis/v1/token.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // The encoded descriptor set feeds gRPC server reflection.
    fs::write(
        out_dir.join("portcullis_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
