//! h2chat: a gRPC server written directly on the `h2` crate, with real-time chat rooms.
//!
//! # Layout
//! Data flows one way: socket → HTTP/2 connection → call → message decoder → router → service →
//! room → outbound frames → trailers. A module imports only modules below it on that path; the
//! gRPC layer imports nothing outside itself.
//! - [`grpc`]: the gRPC layer on h2 — framing, status, metadata, deadlines, compression, the
//!   server (`grpc/server/`) and the client (`grpc/client/`). Knows nothing of chat.
//! - [`pb`]: the protobuf types generated from `proto/`, and the encoded descriptor set.
//! - [`protocol`]: the facts of `chat.v1` both sides share: method paths, metadata names, limits.
//! - [`ring`]: a sequence-numbered bounded ring read by cursors: the one mechanism under chat
//!   rooms and the server's log.
//! - [`services`]: what the server serves — chat (`services/chat/`: service and room engine),
//!   logs (`services/logs/`: ring, tail -F, WatchLogs), reflection, health, echo, interop — and
//!   the app that assembles them.
//! - [`client`]: `h2chat chat` — options, exit codes, mode choice; the interactive and scripted
//!   fronts; rendering; the session that stays joined across lost connections.
//! - [`stdio`]: `h2chat stdio`, the server as a JSON-lines node driven through the gRPC client.
//! - [`bench`](mod@bench): `h2chat bench` — load generators measuring the server from outside,
//!   and the two baselines beside them (raw h2 for unary calls, plain TCP for fan-out).
//! - [`signal`]: SIGINT/SIGTERM, for the programs (the gRPC layer only knows a shutdown value).
//! - [`cli`]: command-line value types the subcommands share (seconds).

#![warn(missing_docs, unreachable_pub, clippy::all)]

pub mod bench;
pub mod cli;
pub mod client;
pub mod grpc;
pub mod pb;
pub mod protocol;
pub mod ring;
pub mod services;
pub mod signal;
pub mod stdio;
