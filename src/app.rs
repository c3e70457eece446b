//! The h2chat server as shipped: every service on one [`Server`], configured from one struct.

use crate::chat::{ChatConfig, ChatService};
use crate::grpc::{Server, ServerConfig};
use crate::reflection::Reflection;

/// Everything `h2chat serve` can be told.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    /// Transport and gRPC limits.
    pub server: ServerConfig,
    /// Chat limits.
    pub chat: ChatConfig,
}

/// A server with every h2chat service added, ready to [`Server::serve`].
pub fn build(config: AppConfig) -> Server {
    let mut server = Server::new(config.server);
    let shutdown = server.shutdown_signal();
    server.add_service(ChatService::new(config.chat, shutdown));

    // Reflection last: it lists every service added before it.
    for service in Reflection::new(server.service_names()).services() {
        server.add_service(service);
    }
    server
}
