//! The gRPC layer on the wire, test by test: what is refused before a handler runs, how a call
//! lives and ends, message framing, compression and the decompression bomb.

#[path = "../support/mod.rs"]
mod support;

mod before_handler;
mod call_lifecycle;
mod compression;
mod connections;
mod decompression_bomb;
mod framing;
mod shutdown;
mod wire_client;
