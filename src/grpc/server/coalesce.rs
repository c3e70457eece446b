//! Fewer, larger socket writes: the connection task puts off its first write of each flush by one
//! turn of the scheduler.
//!
//! h2 writes whenever its connection task runs, and the task runs as soon as one call has queued
//! a frame: a call's task wakes it, and tokio runs a task woken that way right after the one that
//! woke it. With many calls answering at once (a hundred unary responses, a room's event reaching
//! every member on one connection) that is one `writev` per frame, and on loopback each costs about
//! 2 µs of kernel time. [`CoalescedWrites`] answers the first write of a flush with `Pending`
//! after waking its own task, which tokio then queues behind every task already runnable; when
//! the connection task runs again, the frames all those tasks queued leave in one write.
//!
//! The cost is one more poll of the connection per flush and the time the other runnable tasks
//! take; the gain, measured with `h2load` on unary calls, was about 30% more requests per second.
//! A flush that is already large (a member's batch of many events) gains nothing from waiting and
//! goes at once: putting those off doubled the CPU per delivery of flat-out fan-out.
//!
//! A connection with at most one running call has no other call to wait for: its writes go at
//! once (`CoalescedWrites::unless_alone`). Its one call hands over what it has together (a chat
//! member, its whole batch), and with one connection per member the turn was one more poll of
//! the connection for every write, gathering nothing.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::grpc::server::lifetime::Activity;

/// Writes at least this large go at once: they already carry many frames.
pub const PUT_OFF_BELOW_BYTES: usize = 4096;

/// Where a flush stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Nothing written since the last flush: the next write is put off once.
    Idle,
    /// The first write was put off; the next one goes through.
    Deferred,
    /// Writing until the flush completes.
    Writing,
}

/// A transport whose writes are put off by one scheduler turn at the start of each flush.
#[derive(Debug)]
pub struct CoalescedWrites<T> {
    io: T,
    turn: Turn,
    /// The connection's running calls, if writes go at once while there is at most one.
    calls: Option<std::sync::Arc<Activity>>,
}

impl<T> CoalescedWrites<T> {
    /// Wraps a transport.
    pub fn new(io: T) -> CoalescedWrites<T> {
        CoalescedWrites {
            io,
            turn: Turn::Idle,
            calls: None,
        }
    }

    /// Wraps a transport whose writes wait a turn only while more than one call runs on the
    /// connection (`calls` counts them): one call alone has nobody to wait for.
    pub(in crate::grpc) fn unless_alone(
        io: T,
        calls: std::sync::Arc<Activity>,
    ) -> CoalescedWrites<T> {
        CoalescedWrites {
            io,
            turn: Turn::Idle,
            calls: Some(calls),
        }
    }

    /// Whether at most one call runs on the connection (never, for a plain [`new`](Self::new)).
    fn alone(&self) -> bool {
        self.calls.as_ref().is_some_and(|a| a.running() <= 1)
    }

    /// Whether this write of `len` bytes should wait one turn (and if so, arranges to be polled
    /// again). A write of [`PUT_OFF_BELOW_BYTES`] or more already carries enough to be worth its
    /// system call, and goes at once.
    fn put_off(&mut self, cx: &mut Context<'_>, len: usize) -> bool {
        match self.turn {
            Turn::Idle if len >= PUT_OFF_BELOW_BYTES || self.alone() => {
                self.turn = Turn::Writing;
                false
            }
            Turn::Idle => {
                self.turn = Turn::Deferred;
                // Woken from inside its own poll, a tokio task goes to the back of the run queue.
                cx.waker().wake_by_ref();
                true
            }
            Turn::Deferred => {
                self.turn = Turn::Writing;
                false
            }
            Turn::Writing => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.put_off(cx, buf.len()) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.put_off(cx, len) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if flushed.is_ready() {
            self.turn = Turn::Idle;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_first_write_of_a_flush_waits_one_turn_then_all_goes_through() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(near);
        let first = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"ab")).await;
        assert_eq!(first.ok(), Some(2));
        assert_eq!(io.turn, Turn::Writing);
        io.write_all(b"cd")
            .await
            .expect("a second write goes through");
        io.flush().await.expect("flush");
        assert_eq!(io.turn, Turn::Idle);
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abcd");
    }

    #[test]
    fn a_put_off_write_wakes_its_task() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(near);
        let waker = std::sync::Arc::new(CountingWaker::default());
        let w = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"x").is_pending());
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, b"x"),
            Poll::Ready(Ok(1))
        ));
    }

    #[test]
    fn a_large_write_goes_at_once() {
        let (near, _far) = tokio::io::duplex(2 * PUT_OFF_BELOW_BYTES);
        let mut io = CoalescedWrites::new(near);
        let waker = std::sync::Arc::new(CountingWaker::default());
        let w = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        let big = vec![0u8; PUT_OFF_BELOW_BYTES];
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, &big),
            Poll::Ready(Ok(n)) if n == PUT_OFF_BELOW_BYTES
        ));
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_small_write_goes_at_once_while_one_call_runs_alone() {
        let (near, _far) = tokio::io::duplex(1024);
        let calls = Activity::new();
        let mut io = CoalescedWrites::unless_alone(near, calls.clone());
        let waker = std::sync::Arc::new(CountingWaker::default());
        let w = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let permit = || permits.clone().try_acquire_owned().expect("a permit");
        let _one = calls.enter(permit());
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, b"x"),
            Poll::Ready(Ok(1))
        ));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        // A second call: the next flush's first small write waits its turn again.
        let _two = calls.enter(permit());
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"x").is_pending());
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
