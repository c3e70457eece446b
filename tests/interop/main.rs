//! grpc.testing.TestService: the official interop cases through grpcio, and the features no case
//! reaches on the wire.

#[path = "../support/mod.rs"]
mod support;

mod cases;
mod features;
