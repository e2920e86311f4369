//! Compiles portcullis' own gRPC API (`proto/`) with a pure-Rust protobuf compiler
//! (protox), so building needs no system `protoc`. Envoy's protos come precompiled
//! from the `envoy-types` crate; only our own API is compiled here, and the server
//! side of Envoy's `Authorization` service, whose `Check` requests are read by our
//! own codec (`ext_authz::CheckCodec`) instead of prost.

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
    authorization_server();
    Ok(())
}

/// `envoy.service.auth.v3.Authorization`, server only, written to
/// `$OUT_DIR/envoy.service.auth.v3.Authorization.rs` for `ext_authz::service`.
fn authorization_server() {
    let check = tonic_prost_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        .input_type("crate::request::AuthzRequest")
        .output_type("envoy_types::ext_authz::v3::pb::CheckResponse")
        .codec_path("crate::ext_authz::CheckCodec")
        .build();
    let service = tonic_prost_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[service]);
}
