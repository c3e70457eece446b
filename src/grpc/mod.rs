//! The gRPC layer: everything between h2 and a service. No chat words in here; it could be its own
//! crate.
//!
//! Data flows one way: socket → h2 connection ([`server`]) → call ([`server::call`]) → message
//! decoder ([`codec`]) → router ([`server::router`]) → service. The client side ([`client`])
//! reuses the same framing, status, metadata, deadline and compression code.

pub mod client;
pub mod codec;
pub mod compression;
pub mod headers;
pub mod metadata;
pub mod server;
pub mod status;
pub mod timeout;
pub mod tls;
pub mod web;

pub use client::{CallOptions, Channel, ClientCall, ClientError};
pub use server::call::{Call, CallState, CloseCause};
pub use server::router::{BoxFuture, CallResult, Router, Service};
pub use server::{Server, ServerConfig, ShutdownSignal, ShutdownTrigger};
pub use status::{Code, Status};
