//! Compiles `proto/` with protox (a protobuf compiler in Rust, so no system `protoc` is needed), then
//! generates the Rust types with prost-build and keeps the encoded FileDescriptorSet for reflection.

use std::path::PathBuf;

/// Every proto file the crate serves; imports (the well-known types included) come along.
const PROTOS: &[&str] = &[
    "chat/v1/chat.proto",
    "h2chat/logs/v1/logs.proto",
    "h2chat/echo/v1/echo.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
    "grpc/health/v1/health.proto",
    "grpc/testing/empty.proto",
    "grpc/testing/messages.proto",
    "grpc/testing/test.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out.join("file_descriptor_set.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
