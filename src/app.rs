//! The h2chat server as shipped: every service on one [`Server`], configured from one struct.

use crate::chat::{ChatConfig, ChatService};
use crate::echo::EchoService;
use crate::grpc::{Server, ServerConfig};
use crate::logwatch::{LogWatcherService, LogsConfig};
use crate::reflection::Reflection;

/// Everything `h2chat serve` can be told.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    /// Transport and gRPC limits.
    pub server: ServerConfig,
    /// Chat limits.
    pub chat: ChatConfig,
    /// The log watcher: its ring and the file it follows.
    pub logs: LogsConfig,
}

/// A server with every h2chat service added, ready to [`Server::serve`]. With a watch file set,
/// call it inside a Tokio runtime: following the file starts here.
pub fn build(config: AppConfig) -> Server {
    let mut server = Server::new(config.server);
    let shutdown = server.shutdown_signal();
    server.add_service(ChatService::new(config.chat, shutdown.clone()));
    server.add_service(LogWatcherService::new(config.logs, shutdown.clone()));
    server.add_service(EchoService::new());

    // Reflection last: it lists every service added before it.
    for service in Reflection::new(server.service_names()).services() {
        server.add_service(service);
    }
    server
}
