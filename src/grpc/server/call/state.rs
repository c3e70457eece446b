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
    /// The connection went away.
    ConnectionLost,
    /// The server reset the stream: its response waited too long for the client's window.
    SendTimeout,
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

    /// The client reset the stream, or the connection broke.
    pub(super) fn recv_reset(&mut self, stream_id: u32, err: Option<&h2::Error>) {
        let cause = match err.and_then(h2::Error::reason) {
            Some(reason) if err.is_some_and(h2::Error::is_reset) => CloseCause::Reset(reason),
            _ => CloseCause::ConnectionLost,
        };
        self.close(stream_id, cause);
    }

    pub(super) fn close(&mut self, stream_id: u32, cause: CloseCause) {
        if !matches!(self, CallState::Closed(_)) {
            debug!(stream_id, from = ?*self, ?cause, "call: -> Closed");
            *self = CallState::Closed(cause);
        }
    }

    /// Whether the stream is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, CallState::Closed(_))
    }
}
