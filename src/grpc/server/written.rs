//! Knowing when h2 has written a call's response bytes.
//!
//! h2 queues the data a call hands it until the connection task writes it out. A call that
//! streams events (a chat member) does better to hold new events back while its last frame is
//! still in that queue, and send them all in one frame once it has left: fewer, larger frames,
//! and a connection's queue holds at most one frame per such call instead of one per event.
//!
//! [`Chunk`] is the buffer type the server gives h2. A chunk may carry a tracker; h2 drops a
//! chunk once it has copied or written all of it (or discarded it with a reset stream), and the
//! tracker counts the chunks h2 still holds, waking the call when the count reaches zero. A chunk
//! also carries the send-budget [`Lease`] for its bytes, given back when h2 drops it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};

use crate::grpc::server::budget::Lease;

/// Response bytes handed to h2, maybe counted by the call's tracker (see the module doc).
#[derive(Debug)]
pub struct Chunk {
    bytes: Bytes,
    tracker: Option<Tracker>,
    /// The send budget these bytes hold until h2 drops them.
    _lease: Option<Lease>,
}

impl Chunk {
    /// A chunk `tracker` (if any) counts until h2 drops it, holding `lease` until then.
    pub(in crate::grpc) fn new(
        bytes: Bytes,
        tracker: Option<&Tracker>,
        lease: Option<Lease>,
    ) -> Chunk {
        if let Some(tracker) = tracker {
            tracker.0.held.fetch_add(1, Ordering::SeqCst);
        }
        Chunk {
            bytes,
            tracker: tracker.cloned(),
            _lease: lease,
        }
    }

    /// A chunk `tracker` counts until h2 drops it.
    #[cfg(test)]
    fn tracked(bytes: Bytes, tracker: &Tracker) -> Chunk {
        Chunk::new(bytes, Some(tracker), None)
    }
}

impl From<Bytes> for Chunk {
    fn from(bytes: Bytes) -> Chunk {
        Chunk {
            bytes,
            tracker: None,
            _lease: None,
        }
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt);
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.release();
        }
    }
}

/// Counts one call's chunks that h2 still holds.
#[derive(Clone, Debug, Default)]
pub(in crate::grpc) struct Tracker(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    held: AtomicUsize,
    /// Whether `waiter` may hold a waker: h2 drops a chunk per frame it writes, and most of the
    /// time nobody waits, so the drop should not take the lock.
    waiting: AtomicBool,
    /// The call's task, when it waits for the count to reach zero.
    waiter: Mutex<Option<Waker>>,
}

impl Tracker {
    /// Whether h2 holds none of the tracked chunks.
    pub(in crate::grpc) fn is_written(&self) -> bool {
        self.0.held.load(Ordering::SeqCst) == 0
    }

    /// `Ready` once h2 holds none of the tracked chunks.
    pub(in crate::grpc) fn poll_written(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_written() {
            return Poll::Ready(());
        }
        {
            let mut waiter = self.0.waiter.lock().unwrap_or_else(|e| e.into_inner());
            match waiter.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waiter = Some(cx.waker().clone()),
            }
        }
        self.0.waiting.store(true, Ordering::SeqCst);
        // The last chunk may have gone between the first look and the waker being stored.
        if self.is_written() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn release(&self) {
        // SeqCst with the waiter's store and loads: either it sees the count at zero after
        // storing its waker, or this sees `waiting` and wakes it.
        if self.0.held.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.waiting.swap(false, Ordering::SeqCst)
        {
            let waiter = self
                .0
                .waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = waiter {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn written_once_every_tracked_chunk_is_dropped() {
        let tracker = Tracker::default();
        assert!(tracker.is_written());
        let a = Chunk::tracked(Bytes::from_static(b"a"), &tracker);
        let b = Chunk::tracked(Bytes::from_static(b"b"), &tracker);
        let _untracked = Chunk::from(Bytes::from_static(b"c"));
        assert!(!tracker.is_written());
        drop(a);
        assert!(!tracker.is_written());
        let wait = tokio::spawn({
            let tracker = tracker.clone();
            async move { poll_fn(|cx| tracker.poll_written(cx)).await }
        });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(b);
        wait.await.expect("the waiting task is woken");
        assert!(tracker.is_written());
    }
}
