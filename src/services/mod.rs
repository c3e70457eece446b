//! The services h2chat serves, and the app that puts them on one server.
//!
//! Each service sits on the gRPC layer ([`crate::grpc`]) and never below it; none imports another,
//! except [`app`], which assembles them.
//! - [`chat`]: `chat.v1.ChatService` and the room engine behind it.
//! - [`logs`]: `h2chat.logs.v1.LogWatcher`: the server's own log as a ring, and files followed
//!   into it.
//! - [`reflection`]: gRPC server reflection (v1 and v1alpha) over the crate's descriptor set.
//! - [`health`]: `grpc.health.v1.Health`, and the handle that sets each service's status.
//! - [`echo`]: `h2chat.echo.v1.Chat`, a bidirectional echo.
//! - [`interop`]: `grpc.testing.TestService`, the service gRPC's interop clients test against.
//! - [`page`]: the chat page for browsers, served at `GET /` (it calls chat over gRPC-Web).
//! - [`app`]: every service on one server, one config struct.

pub mod app;
pub mod chat;
pub mod echo;
pub mod health;
pub mod interop;
pub mod logs;
pub mod page;
pub mod reflection;
