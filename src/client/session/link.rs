//! One joined `Chat` call on a connection of its own: connect, join, and leave so that the server
//! hears it.
//!
//! The TCP connection is made here, not by [`Channel::connect`], so that leaving can wait for it to
//! close: h2 closes a connection once nothing refers to it any more and then drops its transport,
//! which [`Transport`] reports. By then the call's RST_STREAM(CANCEL) has been written, so the
//! room records the leave as `LEFT` even if the process exits right after.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::SessionConfig;
use crate::grpc::client::{tls::host_of, CallOptions, CallReceiver, CallSender, Channel};
use crate::grpc::Status;
use crate::pb::chat::v1::{ChatMessage, MembersRequest, MembersResponse};
use crate::protocol::{
    CHAT_PATH, DEFAULT_MAX_TEXT_BYTES, EPOCH_METADATA, JOINED_SEQ_METADATA,
    MAX_TEXT_BYTES_METADATA, MEMBERS_PATH,
};

/// Longest wait, when leaving, for the connection to close.
const LEAVE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an attempt to connect and join failed.
pub(crate) enum Attempt {
    /// No connection: the reason in a few words (`connection refused`).
    Connect(String),
    /// Connected, but the join was refused (or the connection failed during it).
    Join(Status),
}

/// A `Members` call in flight.
pub(crate) type MembersFuture =
    Pin<Box<dyn Future<Output = Result<MembersResponse, Status>> + Send>>;

/// A joined call and its connection.
pub(crate) struct Link {
    /// The connection, for `Members` calls beside the chat.
    pub(crate) channel: Channel,
    /// What every call on the connection sends (the bearer token read for this connection).
    pub(crate) options: CallOptions,
    /// The call's receiving half: the room's events.
    pub(crate) rx: CallReceiver,
    /// The call's sending half, until someone takes it.
    pub(crate) tx: Option<CallSender>,
    /// The sequence number of this call's join event (the `chat-joined-seq` header).
    pub(crate) joined_seq: u64,
    /// The room's epoch, which `joined_seq` is numbered in (the `chat-epoch` header).
    pub(crate) epoch: String,
    /// The longest text the server takes (`chat-max-text-bytes`; the default limit when a server
    /// does not say).
    pub(crate) max_text_bytes: usize,
    /// Resolves when the connection's transport is dropped (the connection has closed).
    closed: oneshot::Receiver<()>,
}

impl Link {
    /// Connects as `config` says (TLS, token) and joins with `join`, all within its connect
    /// timeout.
    pub(crate) async fn open(config: &SessionConfig, join: &ChatMessage) -> Result<Link, Attempt> {
        match timeout(config.connect_timeout, Link::open_now(config, join)).await {
            Ok(result) => result,
            Err(_) => Err(Attempt::Connect("timed out".into())),
        }
    }

    async fn open_now(config: &SessionConfig, join: &ChatMessage) -> Result<Link, Attempt> {
        // The token is read first: a missing token file is the join's failure, not the network's.
        let options = match &config.token {
            Some(token) => token.call_options().map_err(Attempt::Join)?,
            None => CallOptions::default(),
        };
        let addr = config.addr.as_str();
        let socket = TcpStream::connect(addr)
            .await
            .map_err(|e| Attempt::Connect(describe_io(&e)))?;
        let _ = socket.set_nodelay(true);
        let (closed_tx, closed) = oneshot::channel();
        let transport = Transport {
            socket,
            _closed: closed_tx,
        };
        let channel = match &config.tls {
            None => Channel::connect_io(transport).await,
            Some(tls) => match tls.connect(transport, host_of(addr)).await {
                Ok(stream) => Channel::connect_io_to(stream, addr, true, Default::default()).await,
                Err(e) => Err(e),
            },
        }
        .map_err(|e| Attempt::Connect(e.to_string()))?;
        let mut call = channel
            .start(CHAT_PATH, options.clone())
            .await
            .map_err(Attempt::Join)?;
        // A refused join shows up as the call's status when the headers are awaited.
        let _ = call.send(join).await;
        let headers = call.headers().await.map_err(Attempt::Join)?;
        let joined_seq = headers
            .get(JOINED_SEQ_METADATA)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Attempt::Join(Status::internal(format!(
                    "the server did not say where the join is ({JOINED_SEQ_METADATA} missing)"
                )))
            })?;
        let epoch = headers
            .get(EPOCH_METADATA)
            .map(str::to_owned)
            .ok_or_else(|| {
                Attempt::Join(Status::internal(format!(
                    "the server did not say which history the join is in ({EPOCH_METADATA} missing)"
                )))
            })?;
        let max_text_bytes = headers
            .get(MAX_TEXT_BYTES_METADATA)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_MAX_TEXT_BYTES);
        let (tx, rx) = call.split();
        Ok(Link {
            channel,
            options,
            rx,
            tx: Some(tx),
            joined_seq,
            epoch,
            max_text_bytes,
            closed,
        })
    }

    /// Cancels the call (the room records the leave as `LEFT`) and waits, briefly, until the
    /// connection has closed. Whoever took the sending half or cloned the channel drops those
    /// first, or the wait runs to its limit.
    pub(crate) async fn close(mut self) {
        self.rx.cancel();
        let Link {
            channel,
            rx,
            tx,
            closed,
            ..
        } = self;
        drop((channel, rx, tx));
        let _ = timeout(LEAVE_FLUSH_TIMEOUT, closed).await;
    }
}

/// A `Members` call for `room` on the link's connection, limited to `within`.
pub(crate) fn members(link: &Link, room: &str, within: Duration) -> MembersFuture {
    let channel = link.channel.clone();
    let request = MembersRequest {
        room_id: room.to_string(),
    };
    let options = CallOptions {
        timeout: Some(within),
        ..link.options.clone()
    };
    Box::pin(async move { channel.unary(MEMBERS_PATH, &request, options).await })
}

/// A TCP socket that reports being dropped.
struct Transport {
    socket: TcpStream,
    _closed: oneshot::Sender<()>,
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

/// An I/O error in a few lowercase words: `connection refused`, not
/// `Connection refused (os error 111)`.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let words = match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::AddrNotAvailable => "address not available",
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or_default();
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "unknown error".into(),
            };
        }
    };
    words.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_a_few_words() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&refused), "connection refused");
        let other = std::io::Error::other("Something Odd");
        assert_eq!(describe_io(&other), "something Odd");
    }
}
