//! The h2chat server as shipped: every service on one [`Server`], configured from one struct.

use std::sync::Arc;

use crate::auth::JwtAuthenticator;
use crate::grpc::server::CorsPolicy;
use crate::grpc::{Server, ServerConfig};
use crate::protocol::WEB_METADATA;
use crate::services::chat::{ChatConfig, ChatService};
use crate::services::echo::EchoService;
use crate::services::logs::{LogWatcherService, LogsConfig};
use crate::services::reflection::Reflection;
use crate::services::{health, interop, page};

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
    /// Bearer tokens checked before any handler runs; `None` leaves every call open.
    pub auth: Option<Arc<JwtAuthenticator>>,
    /// Origins whose pages may call the server with gRPC-Web besides its own (`--web-origin`).
    pub web_origins: Vec<String>,
}

/// A server with every h2chat service added, ready to [`Server::serve`]. With a watch file set,
/// call it inside a Tokio runtime: following the file starts here.
pub fn build(mut config: AppConfig) -> Server {
    // Chat members drain within the shutdown grace, leaving a fifth of it for their trailers.
    let drain_within = config.server.shutdown_grace.mul_f64(0.8);
    config.chat.shutdown_drain = config.chat.shutdown_drain.min(drain_within);
    let mut server = Server::new(config.server);
    if let Some(auth) = config.auth {
        server.set_authenticator(auth);
    }
    // Browsers: the chat page at `/`, and the chat metadata a page may send and read.
    server.add_pages(&page::PAGES);
    let chat_headers: Vec<http::HeaderName> = WEB_METADATA
        .iter()
        .map(|name| http::HeaderName::from_static(name))
        .collect();
    server.set_cors(CorsPolicy {
        origins: config.web_origins,
        allow_headers: chat_headers.clone(),
        expose_headers: chat_headers,
    });
    let shutdown = server.shutdown_signal();
    let chat = ChatService::new(config.chat, shutdown.clone());
    server.add_service(chat.clone());
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
    let health = health::install(&mut server);
    chat.set_health(health);
    server
}
