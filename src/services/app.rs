//! The h2chat server as shipped: every service on one [`Server`], configured from one struct.

use std::sync::Arc;

use crate::grpc::{Server, ServerConfig};
use crate::services::chat::{ChatConfig, ChatService};
use crate::services::echo::EchoService;
use crate::services::logs::{LogWatcherService, LogsConfig};
use crate::services::reflection::Reflection;
use crate::services::{health, interop};

/// Everything `h2chat serve` can be told.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    /// Transport and gRPC limits.
    pub server: ServerConfig,
    /// Chat limits.
    pub chat: ChatConfig,
    /// The log watcher: its ring and the file it follows.
    pub logs: LogsConfig,
    /// Serve `grpc.testing.TestService` (`--interop`): off by default, since its clients choose
    /// how much the server sends.
    pub interop: bool,
}

/// A server with every h2chat service added, ready to [`Server::serve`]. With a watch file set,
/// call it inside a Tokio runtime: following the file starts here.
pub fn build(config: AppConfig) -> Server {
    let mut server = Server::new(config.server);
    let shutdown = server.shutdown_signal();
    server.add_service(ChatService::new(config.chat, shutdown.clone()));
    server.add_service(LogWatcherService::new(config.logs, shutdown.clone()));
    server.add_service(EchoService::new());
    if config.interop {
        server.add_service(Arc::new(interop::InteropService::new()));
    }
    // Reflection lists every service: those above and health, added next.
    let mut served = server.service_names();
    served.push(health::SERVICE_NAME);
    for service in Reflection::new(served).services() {
        server.add_service(service);
    }
    // Health last: it registers every service added before it as SERVING.
    health::install(&mut server);
    server
}
