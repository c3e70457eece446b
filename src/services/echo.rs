//! `h2chat.echo.v1.Chat`: `BiDiChat` answers every message at once with `"echo: "` and its text.
//!
//! The smallest bidirectional call: each reply is sent before the next request is read (ping-pong),
//! so a client that stops reading stops the server after one HTTP/2 window, and the call holds one
//! message at a time whatever the client sends.

use std::sync::Arc;

use crate::grpc::{BoxFuture, Call, CallResult, Service};
use crate::pb::h2chat::echo::v1::EchoMessage;

/// The fully-qualified service name.
pub const SERVICE_NAME: &str = "h2chat.echo.v1.Chat";
/// What every reply's text starts with.
pub const ECHO_PREFIX: &str = "echo: ";

/// The echo service.
#[derive(Debug, Default)]
pub struct EchoService;

impl EchoService {
    /// The service, ready to add to a server.
    pub fn new() -> Arc<EchoService> {
        Arc::new(EchoService)
    }
}

impl Service for EchoService {
    fn name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        match method {
            "BiDiChat" => Some(Box::pin(bidi_chat(call))),
            _ => None,
        }
    }
}

/// Echoes until the client half-closes, then ends OK.
async fn bidi_chat(call: &Call) -> CallResult {
    // Headers at once: the client sees the call open before its first message.
    call.send_headers()?;
    while let Some(msg) = call.recv::<EchoMessage>().await? {
        let reply = EchoMessage {
            text: format!("{ECHO_PREFIX}{}", msg.text),
        };
        call.send(&reply).await?;
    }
    Ok(())
}
