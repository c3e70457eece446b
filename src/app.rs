//! The h2chat server as shipped: every service on one [`Server`], configured from one struct.

use std::sync::Arc;

use crate::grpc::{Server, ServerConfig};
use crate::{health, interop};

/// Everything `h2chat serve` can be told.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    /// Transport and gRPC limits.
    pub server: ServerConfig,
}

/// A server with every h2chat service added, ready to [`Server::serve`].
pub fn build(config: AppConfig) -> Server {
    let mut server = Server::new(config.server);
    // Services are added here, each from its own module.
    server.add_service(Arc::new(interop::InteropService::new()));
    // Last: registers every service added above as SERVING.
    health::install(&mut server);
    server
}
