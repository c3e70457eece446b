//! The send side of a call: the send budget, queueing encoded frames, flushing them within the
//! window the client grants, and the send timeout (see the parent module's documentation).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::time::Sleep;
use tracing::debug;

use super::{Call, CloseCause, Inner};
use crate::grpc::codec;
use crate::grpc::compression;
use crate::grpc::server::budget::Lease;
use crate::grpc::server::stats;
use crate::grpc::server::written::{Chunk, Tracker};
use crate::grpc::status::Status;
use crate::grpc::web;

/// Room in the connection's send budget, taken by [`Call::reserve`] before a message is built.
#[derive(Debug)]
pub struct SendReservation(Lease);

impl SendReservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }
}

impl Call {
    /// Sends one response message; returns once h2 has taken all of it within flow control.
    /// Compressed when the call compresses responses (see [`compress_responses`](Call::compress_responses)).
    /// Waits first for room in the send budget (see the module doc).
    pub async fn send<M: prost::Message>(&self, msg: &M) -> Result<(), Status> {
        self.send_with(msg, true).await
    }

    /// Sends one response message, compressed only if `compress` and the call compresses
    /// responses: the compressed flag is per message, so a compressing call may still send
    /// some uncompressed.
    pub async fn send_with<M: prost::Message>(
        &self,
        msg: &M,
        compress: bool,
    ) -> Result<(), Status> {
        let reservation = self
            .reserve(self.frame_bound(msg.encoded_len(), compress))
            .await?;
        self.queue_message(msg, compress, reservation)?;
        self.flush().await
    }

    /// The most bytes a message of `encoded_len` bytes may take while it is framed (with
    /// `compress`: the plain encoding and the compressed frame, which exist at once).
    pub fn frame_bound(&self, encoded_len: usize, compress: bool) -> usize {
        let frame = codec::PREFIX_BYTES.saturating_add(encoded_len);
        match self.response_encoding().filter(|_| compress) {
            None => frame,
            Some(_) => encoded_len.saturating_add(
                codec::PREFIX_BYTES.saturating_add(compression::max_compressed_len(encoded_len)),
            ),
        }
    }

    /// Waits until the connection's send budget has room for `bytes` (see
    /// [`frame_bound`](Call::frame_bound)), and takes it: reserve before building a large
    /// message, so that a message that cannot be sent yet does not exist yet.
    ///
    /// Errors: RESOURCE_EXHAUSTED when `bytes` is more than the whole per-connection budget.
    /// Cancel-safe (nothing is taken until it completes).
    pub async fn reserve(&self, bytes: usize) -> Result<SendReservation, Status> {
        let limit = self.budget.limit();
        if bytes > limit {
            return Err(Status::resource_exhausted(format!(
                "response message of {bytes} bytes is over the send budget of {limit} bytes \
                 per connection (max-send-buffer-per-connection)"
            )));
        }
        // Most sends find room at once: a timer only for those that wait.
        let first = poll_fn(|cx| Poll::Ready(self.budget.poll_acquire(cx, bytes))).await;
        if let Poll::Ready(lease) = first {
            return Ok(SendReservation(lease));
        }
        let acquire = poll_fn(|cx| self.budget.poll_acquire(cx, bytes));
        let lease = match self.info.send_timeout {
            None => acquire.await,
            Some(timeout) => tokio::time::timeout(timeout, acquire).await.map_err(|_| {
                Status::resource_exhausted(format!(
                    "no room in the send budget for {bytes} bytes within the send timeout"
                ))
            })?,
        };
        Ok(SendReservation(lease))
    }

    /// Encodes `msg` into the call's queue within `reservation`, without waiting for the client;
    /// [`flush`](Call::flush) sends it. A reservation too small is topped up at once, over the
    /// budget if need be; what it holds beyond the frame goes back. The message may be dropped
    /// as soon as this returns: only its encoding stays.
    pub fn queue_message<M: prost::Message>(
        &self,
        msg: &M,
        compress: bool,
        reservation: SendReservation,
    ) -> Result<(), Status> {
        let mut lease = reservation.0;
        let frame = match self.response_encoding().filter(|_| compress) {
            None => codec::encode_message(msg),
            Some(enc) => {
                let plain = msg.encode_to_vec();
                let mut out = Vec::with_capacity(
                    codec::PREFIX_BYTES + compression::max_compressed_len(plain.len()),
                );
                out.extend_from_slice(&[1, 0, 0, 0, 0]);
                let mut out = enc.compress_into(&plain, out)?;
                drop(plain);
                let len = u32::try_from(out.len() - codec::PREFIX_BYTES).unwrap_or(u32::MAX);
                if let Some(prefix) = out.get_mut(1..codec::PREFIX_BYTES) {
                    prefix.copy_from_slice(&len.to_be_bytes());
                }
                Bytes::from(out)
            }
        };
        if frame.len() > lease.bytes() {
            lease.merge(self.budget.force(frame.len() - lease.bytes()));
        }
        lease.shrink_to(frame.len());
        self.queue_leased(frame, lease)
    }

    /// Sends bytes that are already whole gRPC frames (one or many, prefix included), e.g. a
    /// message encoded once and shared by many calls. Returns once h2 has taken all of them.
    pub async fn send_frames(&self, frames: Bytes) -> Result<(), Status> {
        self.queue_frames(frames)?;
        self.flush().await
    }

    /// Hands whole frames to the call without waiting; [`flush`](Call::flush) sends them. Unlike
    /// a dropped `send_frames` future, queued frames are never lost: use this where the wait for
    /// the client may be abandoned (e.g. in a `select!`).
    ///
    /// The frames count against the send budget at once, over it if need be (they already
    /// exist): callers bound them themselves, e.g. by the capacity the client granted.
    pub fn queue_frames(&self, frames: Bytes) -> Result<(), Status> {
        let lease = self.budget.force(frames.len());
        self.queue_leased(frames, lease)
    }

    fn queue_leased(&self, frames: Bytes, mut lease: Lease) -> Result<(), Status> {
        stats::messages_sent(&self.info.path, &frames);
        // gRPC-Web text: each batch becomes one padded base64 chunk, counted at its encoded size.
        let frames = match &self.info.web {
            Some(w) if w.text => {
                let text = web::encode_text(&frames);
                lease.merge(self.budget.force(text.len().saturating_sub(lease.bytes())));
                text
            }
            _ => frames,
        };
        let mut inner = self.lock();
        inner.ensure_headers(&self.info)?;
        if inner.pending.is_empty() {
            inner.pending = frames;
            inner.pending_lease = Some(lease);
        } else {
            let mut joined = bytes::BytesMut::with_capacity(inner.pending.len() + frames.len());
            joined.extend_from_slice(&inner.pending);
            joined.extend_from_slice(&frames);
            inner.pending = joined.freeze();
            match inner.pending_lease.as_mut() {
                Some(held) => held.merge(lease),
                None => inner.pending_lease = Some(lease),
            }
        }
        Ok(())
    }

    /// Whether queued bytes are waiting for flow-control capacity.
    pub fn has_queued(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// From now on, counts the response bytes h2 has taken but not yet written out, for
    /// [`written`](Call::written). A call that streams small events uses it to hold new events
    /// back while its last frame waits in h2's queue, and then send them together.
    pub fn track_writes(&self) {
        self.lock().tracker.get_or_insert_with(Tracker::default);
    }

    /// Resolves once h2 has written (or, on a reset, dropped) every response byte it took since
    /// [`track_writes`](Call::track_writes); at once if writes are not tracked. Cancel-safe.
    pub async fn written(&self) {
        let Some(tracker) = self.lock().tracker.clone() else {
            return;
        };
        poll_fn(|cx| tracker.poll_written(cx)).await
    }

    /// Whether nothing of the response is on its way: no queued bytes, and h2 has written every
    /// byte it took since [`track_writes`](Call::track_writes) (writes not tracked count as
    /// written). One lock, for a streaming call's loop to ask on every wake-up.
    pub fn is_send_idle(&self) -> bool {
        let inner = self.lock();
        inner.pending.is_empty() && inner.tracker.as_ref().is_none_or(Tracker::is_written)
    }

    /// How many response bytes (at most `want`) the client's window lets the call send right
    /// now, asking h2 for `want`; 0 when none. With this, a caller builds a response only within
    /// what can leave at once (see [`send_capacity`](Call::send_capacity)).
    pub fn try_send_capacity(&self, want: usize) -> Result<usize, Status> {
        let mut inner = self.lock();
        inner.ensure_headers(&self.info)?;
        let Some(stream) = inner.stream.as_mut() else {
            return Err(Status::cancelled("call is closed"));
        };
        stream.reserve_capacity(want);
        Ok(stream.capacity().min(want))
    }

    /// Waits until the client's window lets the call send at least one byte, and returns how
    /// many (at most `want`). A wait that lasts longer than the send timeout ends the call, as
    /// a flush would (`send_stalled`). Cancel-safe.
    pub async fn send_capacity(&self, want: usize) -> Result<usize, Status> {
        let id = self.info.stream_id;
        self.lock().ensure_headers(&self.info)?;
        poll_fn(|cx| self.lock().poll_capacity(cx, id, want)).await
    }

    /// Waits until h2 has taken every queued byte (within the capacity the client grants).
    /// Cancel-safe: what is not sent stays queued.
    pub async fn flush(&self) -> Result<(), Status> {
        let id = self.info.stream_id;
        poll_fn(|cx| self.lock().poll_flush(cx, id)).await
    }

    /// Resolves once queued response bytes have waited `timeout` for the client to grant
    /// flow-control window, having reset the stream (CANCEL): the handler should be stopped, and
    /// every byte the call held goes back to the send budget. Polled beside the handler, in its
    /// task: a stall only begins while the handler polls a flush, and the timer is armed only
    /// then (and reused), so a call that never stalls never touches the timer. With no timeout it
    /// never resolves. A plain poll function, not an `async fn`: it is part of every call's task
    /// for as long as the call runs, and this way it is 32 bytes.
    pub(in crate::grpc) fn send_stalled(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = ()> + Send + '_ {
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        poll_fn(move |cx| {
            let Some(timeout) = timeout else {
                return Poll::Pending;
            };
            let Some(since) = self.lock().stalled_since else {
                return Poll::Pending;
            };
            let Some(at) = since.checked_add(timeout) else {
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(at);
            loop {
                let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if sleep.deadline() > at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer may be left from an earlier stall: wait for this one's end.
                if tokio::time::Instant::now() < at {
                    sleep.as_mut().reset(at);
                    continue;
                }
                let mut inner = self.lock();
                if inner.stalled_since != Some(since) {
                    return Poll::Pending;
                }
                inner.reset_stalled(self.info.stream_id);
                return Poll::Ready(());
            }
        })
    }
}

impl Inner {
    /// Hands `pending` to h2 in pieces no larger than the granted capacity.
    fn poll_flush(&mut self, cx: &mut Context<'_>, stream_id: u32) -> Poll<Result<(), Status>> {
        while !self.pending.is_empty() {
            let granted = match self.poll_capacity(cx, stream_id, self.pending.len()) {
                Poll::Ready(Ok(granted)) => granted,
                Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                Poll::Pending => return Poll::Pending,
            };
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(Err(Status::cancelled("call is closed")));
            };
            let n = granted.min(self.pending.len());
            let piece = self.pending.split_to(n);
            let lease = self.pending_lease.as_mut().map(|l| l.split(n));
            let piece = Chunk::new(piece, self.tracker.as_ref(), lease);
            if let Err(e) = stream.send_data(piece, false) {
                self.state
                    .recv_reset(stream_id, Some(&e), self.dropped.load(Ordering::Relaxed));
                return Poll::Ready(Err(Status::cancelled(format!("response: {e}"))));
            }
        }
        self.pending_lease = None;
        self.stalled_since = None;
        Poll::Ready(Ok(()))
    }

    /// Asks h2 for `want` bytes of send capacity and resolves with what it granted (at least one
    /// byte, at most `want`), once the client's window allows any. While it waits, a client reset
    /// is noticed and the stall is timed (see [`Call::send_stalled`]).
    fn poll_capacity(
        &mut self,
        cx: &mut Context<'_>,
        stream_id: u32,
        want: usize,
    ) -> Poll<Result<usize, Status>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(Status::cancelled("call is closed")));
        };
        loop {
            stream.reserve_capacity(want);
            let granted = stream.capacity().min(want);
            if granted > 0 || want == 0 {
                self.stalled_since = None;
                return Poll::Ready(Ok(granted));
            }
            match stream.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => {
                    self.state.recv_reset(
                        stream_id,
                        Some(&e),
                        self.dropped.load(Ordering::Relaxed),
                    );
                    return Poll::Ready(Err(Status::cancelled(format!("response: {e}"))));
                }
                Poll::Ready(None) => {
                    self.state
                        .recv_reset(stream_id, None, self.dropped.load(Ordering::Relaxed));
                    return Poll::Ready(Err(Status::cancelled("response stream closed")));
                }
                Poll::Pending => {
                    // Waiting for the client to read: notice if it resets meanwhile.
                    if let Poll::Ready(r) = stream.poll_reset(cx) {
                        self.state.recv_reset(
                            stream_id,
                            r.as_ref().err(),
                            self.dropped.load(Ordering::Relaxed),
                        );
                        return Poll::Ready(Err(Status::cancelled("client reset the stream")));
                    }
                    if self.stalled_since.is_none() {
                        self.stalled_since = Some(Instant::now());
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Ends a call whose response waited too long for window: resets the stream, so that h2
    /// drops what it holds of it, and drops what was still queued.
    fn reset_stalled(&mut self, stream_id: u32) {
        debug!(
            stream_id,
            "response waited too long for flow-control window; resetting the stream"
        );
        if let Some(stream) = self.stream.as_mut() {
            stream.send_reset(h2::Reason::CANCEL);
        }
        self.pending = Bytes::new();
        self.pending_lease = None;
        self.stalled_since = None;
        self.state.close(stream_id, CloseCause::SendTimeout);
    }
}
