//! Lingering close: after h2 is done with a connection, read and discard what the client still
//! sends for a moment before closing the socket.
//!
//! A socket closed with unread bytes in its receive buffer is reset (RST), not closed (FIN), and a
//! reset makes the client's kernel throw away whatever it had received and not yet read — the
//! last responses and trailers included. That happens whenever a client keeps sending while the
//! server finishes its calls: a chat client posting while the server shuts down. So the
//! connection's transport comes back to its task when h2 drops it (`Returning`), and the task
//! half-closes it and reads until the client closes its side or [`LINGER`] passes (nginx's
//! `lingering_close`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

/// Longest time a closed connection is read and discarded from before its socket is closed.
pub const LINGER: Duration = Duration::from_secs(1);

/// A transport that hands itself back through a channel when dropped.
pub(in crate::grpc) struct Returning<T> {
    io: Option<T>,
    back: Option<oneshot::Sender<T>>,
}

impl<T> Returning<T> {
    /// Wraps `io`; the receiver gets it back when the wrapper is dropped.
    pub(in crate::grpc) fn new(io: T) -> (Returning<T>, oneshot::Receiver<T>) {
        let (back, rx) = oneshot::channel();
        (
            Returning {
                io: Some(io),
                back: Some(back),
            },
            rx,
        )
    }

    fn io(self: Pin<&mut Self>) -> Option<Pin<&mut T>>
    where
        T: Unpin,
    {
        self.get_mut().io.as_mut().map(Pin::new)
    }
}

impl<T> Drop for Returning<T> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            // Nobody waiting: the socket just closes.
            let _ = back.send(io);
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotConnected)
}

impl<T: AsyncRead + Unpin> AsyncRead for Returning<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.io() {
            Some(io) => io.poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Returning<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.io() {
            Some(io) => io.poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Some(io) => io.poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Some(io) => io.poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.io() {
            Some(io) => io.poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }
}

/// Half-closes `io`, then reads and discards until the peer closes its side, an error, or
/// [`LINGER`].
pub(in crate::grpc) async fn linger<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
