//! h2chat: a gRPC server written directly on the `h2` crate, with real-time chat rooms.
//!
//! # Layout
//! - [`grpc`]: the gRPC layer on h2 — framing, status, metadata, deadlines, compression, calls,
//!   routing, the server. Knows nothing of chat.
//! - [`interop`]: `grpc.testing.TestService`, the service gRPC's interop clients test against.
//! - [`health`]: `grpc.health.v1.Health`, and the handle that sets each service's status.
//! - [`app`]: the shipped server: every service on one server, one config struct.
//! - [`room`]: chat rooms — a ring of encoded events per room, members as cursors into it.
//! - [`chat`]: `chat.v1.ChatService`, the call side of rooms (join, post, deliver, leave).
//! - [`logring`]: the server's own log — a tracing layer into a bounded ring, watchers as cursors.
//! - [`logwatch`]: `h2chat.logs.v1.LogWatcher`, the call side of that log.
//! - [`tailfile`]: following a file like `tail -F` into that log.
//! - [`echo`]: `h2chat.echo.v1.Chat`, a bidirectional echo.
//! - [`pb`]: the protobuf types generated from `proto/`, and the encoded descriptor set.
//! - [`reflection`]: gRPC server reflection (v1 and v1alpha) over that descriptor set.
//! - [`schema`]: the served methods from that descriptor set, and their messages as JSON.
//! - [`stdio`]: `h2chat stdio`, the server as a JSON-lines node driven through the gRPC client.
//! - [`bench`](mod@bench): `h2chat bench` — load generators measuring the server from outside,
//!   and the two baselines beside them (raw h2 for unary calls, plain TCP for fan-out).
//! - [`session`]: the client side of a room: join, post, resume after a lost connection.
//! - `link`: one joined `Chat` call on a connection of its own, for [`session`].
//! - [`render`]: how events and session notices look, as text or JSON.
//! - [`terminal`]: `h2chat chat` — mode choice, the interactive line-editing front end, exit codes.
//! - [`script`]: `h2chat chat` when standard input is not a terminal.

#![warn(missing_docs, unreachable_pub, clippy::all)]

pub mod app;
pub mod bench;
pub mod chat;
pub mod echo;
pub mod grpc;
pub mod health;
pub mod interop;
mod link;
pub mod logring;
pub mod logwatch;
pub mod pb;
pub mod reflection;
pub mod render;
pub mod room;
pub mod schema;
pub mod script;
pub mod session;
pub mod stdio;
pub mod tailfile;
pub mod terminal;
