//! Chat from a browser: gRPC-Web on the same port as gRPC (checked on the wire from the spec, and
//! with `buf curl --protocol grpcweb`), CORS, and the page the server serves.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod buf_curl;
mod bundle;
mod cors;
mod grpc_web;
mod subscribe;
mod tools;
mod webwire;
