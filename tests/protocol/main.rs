//! The gRPC layer on the wire, test by test: what is refused before a handler runs, how a call
//! lives and ends, message framing, compression and the decompression bomb, and the
//! HTTP/2 abuse limits h2 enforces with the server's flags (resets, small frames).

#[path = "../support/mod.rs"]
mod support;

mod before_handler;
mod call_lifecycle;
mod compression;
mod connections;
mod decompression_bomb;
mod framing;
mod keepalive;
mod resets;
mod shutdown;
mod small_frames;
mod wire_client;
