//! Services and the table that routes `:path` to them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::grpc::server::call::Call;
use crate::grpc::status::Status;
use crate::grpc::status::{quote, truncate, MAX_QUOTED_BYTES};

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler returns: `Ok(())` ends the call with OK, `Err` with that status.
pub type CallResult = Result<(), Status>;

/// A gRPC service: a name and the handlers of its methods.
///
/// The server runs each call's handler in the call's own task; it stops the handler (drops the
/// future) when the client resets the stream, the deadline passes or the server shuts down, so a
/// handler releases what it holds by dropping it.
pub trait Service: Send + Sync + 'static {
    /// Fully-qualified service name, e.g. `chat.v1.ChatService`.
    fn name(&self) -> &'static str;

    /// Starts the handler for `method` (the part of the path after the service name), or `None`
    /// when the service has no such method.
    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>>;
}

/// Maps service names to services.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a service; a later one with the same name replaces the earlier.
    pub fn add(&mut self, service: Arc<dyn Service>) {
        self.services.insert(service.name(), service);
    }

    /// The service a `:path` names, with the method part. `Err` is the UNIMPLEMENTED status for an
    /// unknown service or a malformed path.
    pub fn route<'p>(&self, path: &'p str) -> Result<(&Arc<dyn Service>, &'p str), Status> {
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "malformed method path {}",
                    quote(path, MAX_QUOTED_BYTES)
                ))
            })?;
        let svc = self.services.get(service).ok_or_else(|| {
            // A header value: printable already, only its length to bound (grpc-go's wording).
            Status::unimplemented(format!(
                "unknown service {}",
                truncate(service, MAX_QUOTED_BYTES)
            ))
        })?;
        Ok((svc, method))
    }

    /// The names of every service, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.services.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
