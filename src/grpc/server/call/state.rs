//! The state of a call's HTTP/2 stream, with its transitions as named methods.

use h2::Reason;
use tracing::debug;

/// The state of a call's stream, from the server's side (RFC 9113 §5.1, the part gRPC uses):
///
/// ```text
///                  recv END_STREAM
///        Open ─────────────────────────▶ HalfClosedRemote
///          │                                    │
///          │  send trailers | recv RST_STREAM | │
///          │  connection lost                   │
///          ▼                                    ▼
///        Closed ◀───────────────────────────────┘
/// ```
///
/// `HalfClosedRemote` is not the end of a call: the client has sent all it will send and is still
/// receiving (a streaming call goes on until the server sends trailers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// Both sides may send.
    Open,
    /// The client has sent END_STREAM; the server may still send.
    HalfClosedRemote,
    /// Nothing more can be sent or received.
    Closed(CloseCause),
}

/// Why a call's stream closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// The server sent its trailers (or a Trailers-Only response).
    TrailersSent,
    /// The client reset the stream (`CANCEL` when a client cancels a call).
    Reset(Reason),
    /// The connection broke (an I/O error, or the server gave up on a peer that stopped
    /// answering keepalive PINGs).
    ConnectionLost,
    /// The server reset the stream: its response waited too long for the client's window.
    SendTimeout,
    /// The client's end closed the connection with the stream still open: a TCP end of stream, or
    /// a reset from the client's host (a process that exits with unread data in its socket
    /// resets it). The client's process ended, say, as grpcurl's does on Ctrl-C.
    ConnectionClosed,
}

impl CallState {
    /// The client sent END_STREAM.
    pub(super) fn recv_end_stream(&mut self, stream_id: u32) {
        if *self == CallState::Open {
            *self = CallState::HalfClosedRemote;
            debug!(stream_id, "call: Open -> HalfClosedRemote");
        }
    }

    /// The server sent trailers.
    pub(super) fn send_trailers(&mut self, stream_id: u32) {
        self.close(stream_id, CloseCause::TrailersSent);
    }

    /// The client reset the stream, or the connection ended: closed by the client unless
    /// `dropped` (the server dropped the connection itself).
    pub(super) fn recv_reset(&mut self, stream_id: u32, err: Option<&h2::Error>, dropped: bool) {
        self.close(stream_id, close_cause(err, dropped));
    }

    pub(super) fn close(&mut self, stream_id: u32, cause: CloseCause) {
        if !matches!(self, CallState::Closed(_)) {
            debug!(stream_id, from = ?*self, ?cause, "call: -> Closed");
            *self = CallState::Closed(cause);
        }
    }

    /// Whether the stream is closed (see `close_cause` for why).
    pub fn is_closed(&self) -> bool {
        matches!(self, CallState::Closed(_))
    }
}

/// Why a stream ended with `err`. h2 reports the end of the connection's byte stream to every open
/// stream as an I/O error of kind `BrokenPipe` (and does the same when the connection is dropped,
/// hence `dropped`, set when the server dropped it); a reset from the peer's host is
/// `ConnectionReset`. Both are the client's end closing; anything else is a connection lost.
pub(super) fn close_cause(err: Option<&h2::Error>, dropped: bool) -> CloseCause {
    match err.and_then(h2::Error::reason) {
        Some(reason) if err.is_some_and(h2::Error::is_reset) => CloseCause::Reset(reason),
        _ => {
            let closed_by_peer = err.and_then(h2::Error::get_io).is_some_and(|e| {
                use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
                matches!(e.kind(), BrokenPipe | ConnectionReset)
            });
            if closed_by_peer && !dropped {
                CloseCause::ConnectionClosed
            } else {
                CloseCause::ConnectionLost
            }
        }
    }
}
