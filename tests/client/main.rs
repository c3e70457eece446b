//! The clients: the gRPC client library against the real server, and `h2chat chat` piped
//! (scripted), in a pseudo-terminal, and through a proxy that cuts or silences its connection.

#[path = "../support/mod.rs"]
mod support;

mod library;
mod reconnect;
mod script;
mod terminal;
