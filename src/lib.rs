//! h2chat: a gRPC server written directly on the `h2` crate, with real-time chat rooms.
//!
//! # Layout
//! Data flows one way: socket → HTTP/2 connection → call → message decoder → router → service →
//! room → outbound frames → trailers. A module imports only modules below it on that path; the
//! gRPC layer imports nothing outside itself (`tests/layout/` checks both, and that every file is
//! named here).
//! - [`grpc`]: the gRPC layer on h2. Knows nothing of chat.
//!   - `grpc/mod.rs`; shared by both sides: `codec.rs` (framing), `status.rs`, `metadata.rs`,
//!     `compression.rs`, `timeout.rs`, `headers.rs`, `tls.rs` (PEM files, the crypto provider),
//!     `web.rs` (gRPC-Web framing).
//!   - `grpc/server/`: `mod.rs` (the server, what its tasks share), `config.rs` (its limits),
//!     `listen.rs` (the accept loop), `connection.rs` (one connection), `call_task.rs` (a call's
//!     task), `accept.rs` (refusals before a handler),
//!     `shutdown.rs` (the shutdown signal, a value), `written.rs` (write tracking), `router.rs`,
//!     `call/mod.rs` + `call/state.rs` (one call and its stream state) + `call/send.rs` (its send side), `coalesce.rs` (write
//!     coalescing), `keepalive.rs`, `linger.rs` (lingering close); for TLS and identity, `server/transport.rs` (plaintext and TLS
//!     listeners), `server/tls.rs` (the reloadable acceptor), `server/auth.rs` (the
//!     authentication hook); for browsers, `server/cors.rs` (which origins may call) and
//!     `server/pages.rs` (static files answering `GET`).
//!   - `grpc/server/`, budgets and limits: `budget.rs` (the send budget), `admission.rs` (the
//!     connection caps, accept's backoff), `lifetime.rs` (idle and age GOAWAY).
//!   - `grpc/server/`, for operators: `stats.rs` (what it counts, through the `metrics` facade),
//!     `call_log.rs` (lines for refused and failed calls), `log_rate.rs` (the cap on log lines
//!     a peer can cause: per line, and per call site in the log ring's layer).
//!   - `grpc/client/`: `mod.rs` (the channel), `call.rs` (send half), `response.rs` (receive
//!     half), `shared.rs` (their shared state), `status.rs` (status mapping), `tls.rs` (the TLS
//!     connector).
//! - [`auth`]: bearer tokens (JWT) checked before any handler runs — `auth/mod.rs` (the
//!   authenticator and the claims), `keys.rs` (keys and the algorithms each allows), `mint.rs`
//!   (`h2chat token`).
//! - [`pb`] (`pb.rs`): the protobuf types generated from `proto/`, and the descriptor set.
//! - [`protocol`] (`protocol.rs`): the facts of `chat.v1` both sides share: method paths,
//!   metadata names, default limits, the characters no identity may hold.
//! - [`ring`] (`ring.rs`): a sequence-numbered bounded ring read by cursors: the one mechanism
//!   under chat rooms and the server's log.
//! - [`services`]: what the server serves, `services/mod.rs`, and `app.rs`, which assembles it.
//!   - `services/chat/`: `mod.rs` (the ChatService calls), `browser.rs` (`Subscribe` and
//!     `Post`), `join.rs` (a `Chat` call's join and membership), `member_loop.rs` (the member's
//!     loop), `post.rs` (posts checked and posted, the post rate), `identity.rs` (NFC names and
//!     room ids, look-alike skeletons), `stats.rs` (what chat counts), `flow.rs` (backpressure:
//!     posters wait for reading members; stalled members), `presence.rs` (joins and leaves of
//!     large rooms batched, runs of them merged per member).
//!   - `services/chat/room/`: the room engine (rooms, a ring of encoded events, members as
//!     cursors): `mod.rs` (its limits, start points, what a post did), `registry.rs` (the rooms
//!     by name, joins and leaves), `state.rs` (a room and its locked state), `epoch.rs` (epochs,
//!     resumes, resets), `window.rs` (the delivery window), `member.rs` (a member and its
//!     batches), `poster.rs` (posts from elsewhere), `blocker.rs` (a member's blocked state),
//!     `shared.rs` (the node's copy of rooms shared through Redis), `tests.rs` (its unit tests).
//!   - `services/chat/redis/`: rooms shared by several servers (`--redis`): `mod.rs` (the engine,
//!     its configuration and health, outages), `commands.rs` (scripts run; a failure as
//!     UNAVAILABLE), `script.rs` (the Lua scripts and the room's keys), `join.rs` (a name claimed,
//!     the member admitted), `copies.rs` (the local copies, filled from each room's stream),
//!     `leave.rs` (leaves owed to Redis until announced), `subscriber.rs` (the Pub/Sub
//!     connection filling the local copies), `presence.rs` (claims renewed, dead nodes' members
//!     swept, presence batches flushed), `posts.rs` (a member's posts, several in flight, taken
//!     in order), `tests.rs` (the copies' unit tests).
//!   - `services/logs/`: `mod.rs` (WatchLogs), `ring.rs` (the log ring and its tracing layer),
//!     `tail.rs` (tail -F into it).
//!   - `services/reflection/`: `mod.rs` (v1 and v1alpha), `index.rs` (the descriptor index).
//!   - `services/health.rs`, `services/echo.rs`, `services/interop.rs`, `services/page.rs` (the
//!     chat page, `web/dist/`).
//! - [`client`]: `h2chat chat` — `client/mod.rs` (mode choice), `options.rs` (options, exit
//!   codes, join and finish), `interactive.rs`, `scripted.rs`, `render.rs`, `safe.rs` (hostile
//!   text made harmless for the terminal and JSON), `credentials.rs`
//!   (TLS and the bearer token);
//!   `client/session/`: `mod.rs` (a member kept joined across lost connections), `runner.rs` (its
//!   task), `link.rs` (one joined call).
//! - [`stdio`]: `h2chat stdio` — `stdio/mod.rs` (the JSON-lines node), `calls.rs`, `schema.rs`.
//! - [`bench`](mod@bench): `h2chat bench` — `bench/mod.rs`, `fanout/` (`mod.rs`, `member.rs`,
//!   `sender.rs`), `idle.rs`, `storm.rs`, `members.rs`, `unary.rs`, `raw_h2.rs`, `write_floor/` (`mod.rs`,
//!   `server.rs`), `event.rs`, `histogram.rs`, `proc.rs`, `report.rs`, `ticker.rs`.
//! - [`cli`] (`cli.rs`): command-line value types the subcommands share (seconds).
//! - [`exporter`] (`exporter.rs`): the Prometheus endpoint (`--metrics-addr`) for what the gRPC
//!   layer and the services count through the `metrics` facade.
//! - [`signal`] (`signal.rs`): SIGINT/SIGTERM (and SIGHUP), for the programs.
//! - `bin/h2chat/`: `main.rs` (the subcommands and their dispatch), `serve.rs` (`h2chat serve`:
//!   its flags, its configuration, its listeners), `tls.rs` and `auth.rs` (its TLS and token
//!   flags), `chat.rs`, `stdio.rs`, `token.rs` (the other subcommands), `logging.rs` (stderr and
//!   the log ring), `flags.rs` (flag checks, `H2CHAT_*` variables), `bench.rs` (its bench
//!   subcommands), `self_signed.rs` (`--tls-self-signed`).

#![warn(unreachable_pub)]

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod exporter;
pub mod grpc;
pub mod pb;
pub mod protocol;
pub mod ring;
pub mod services;
pub mod signal;
pub mod stdio;
