//! The clients: the gRPC client library against the real server, and `h2chat chat` piped
//! (scripted), in a pseudo-terminal, and through a proxy that cuts or silences its connection;
//! what it shows of hostile text; the limits it takes from the server; batched presence.

#[path = "../support/mod.rs"]
mod support;

mod library;
mod limits;
mod presence;
mod reconnect;
mod rendering;
mod script;
mod terminal;
