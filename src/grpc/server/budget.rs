//! The send budget: response bytes that exist but are not yet written to the socket.
//!
//! A response message costs memory from the moment it is encoded until h2 has written its last
//! byte. Those bytes are counted twice, against the call's connection ([`ConnectionBudget`]) and
//! against the whole server ([`TotalBudget`]), *before* the message is encoded: a handler's send
//! first waits for room ([`ConnectionBudget::poll_acquire`]), so a response that cannot be sent
//! does not exist yet. The bytes are given back as h2 drops the chunks it was handed ([`Lease`]
//! travels inside each chunk), or when a call ends with bytes still queued.
//!
//! The first [`DEFAULT_SEND_RESERVE_PER_CONNECTION`] bytes a connection holds are its own: they
//! count against its connection budget but not the total, so connections that fill the total
//! cannot stop another from answering small calls. The worst case the server holds is therefore
//! `total + connections × reserve`.
//!
//! What every connection holds together, reserves included, is the metric
//! `h2chat_budget_bytes_in_use{budget="send"}` ([`stats`]): changed as leases are taken and given
//! back, with nothing to sample.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::grpc::server::stats;

/// Default bytes one connection may hold encoded and not yet written: 8 MiB, two of the largest
/// default messages.
pub const DEFAULT_MAX_SEND_BUFFER_PER_CONNECTION: usize = 8 << 20;
/// Default bytes the whole server may hold encoded and not yet written (above each connection's
/// reserve): 256 MiB.
pub const DEFAULT_MAX_SEND_BUFFER_TOTAL: usize = 256 << 20;
/// Bytes of each connection's budget that do not draw on the total: 16 KiB, room for small
/// answers whatever other connections hold.
pub const DEFAULT_SEND_RESERVE_PER_CONNECTION: usize = 16 << 10;

/// The server-wide budget every connection draws on beyond its reserve.
#[derive(Debug)]
pub struct TotalBudget {
    limit: usize,
    used: AtomicUsize,
    /// Whether `waiters` may be non-empty, so that a release need not take the lock.
    waiting: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl TotalBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<TotalBudget> {
        Arc::new(TotalBudget {
            limit,
            used: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        })
    }

    /// Bytes currently counted.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn try_add(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                cur.checked_add(n).filter(|&next| next <= self.limit)
            })
            .is_ok()
    }

    fn force_add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::SeqCst);
    }

    fn register(&self, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
        self.waiting.store(true, Ordering::SeqCst);
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::SeqCst);
        if self.waiting.swap(false, Ordering::SeqCst) {
            let waiters = std::mem::take(&mut *lock(&self.waiters));
            waiters.into_iter().for_each(Waker::wake);
        }
    }
}

/// One connection's budget; see the module documentation.
#[derive(Debug)]
pub struct ConnectionBudget {
    limit: usize,
    reserve: usize,
    total: Arc<TotalBudget>,
    state: Mutex<ConnectionState>,
}

#[derive(Debug, Default)]
struct ConnectionState {
    used: usize,
    waiters: Vec<Waker>,
}

impl ConnectionBudget {
    /// A budget of `limit` bytes for one connection, of which the first `reserve` do not count
    /// against `total`.
    pub fn new(limit: usize, reserve: usize, total: Arc<TotalBudget>) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            limit,
            reserve: reserve.min(limit),
            total,
            state: Mutex::new(ConnectionState::default()),
        })
    }

    /// The most one call may ask for at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes this connection currently holds.
    pub fn used(&self) -> usize {
        lock(&self.state).used
    }

    /// The part of `used` bytes that counts against the total.
    fn over_reserve(&self, used: usize) -> usize {
        used.saturating_sub(self.reserve)
    }

    /// Takes `n` bytes once both this connection and the total have room (`n` must not exceed
    /// [`limit`](ConnectionBudget::limit), or this never completes).
    pub fn poll_acquire(self: &Arc<Self>, cx: &mut Context<'_>, n: usize) -> Poll<Lease> {
        let mut state = lock(&self.state);
        if state.used.saturating_add(n) > self.limit {
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let next = state.used + n;
        let from_total = self.over_reserve(next) - self.over_reserve(state.used);
        if from_total > 0 && !self.total.try_add(from_total) {
            self.total.register(cx.waker());
            // A release may have come between the failed try and the registration.
            if !self.total.try_add(from_total) {
                return Poll::Pending;
            }
        }
        state.used = next;
        drop(state);
        stats::send_budget_taken(n);
        Poll::Ready(self.lease(n))
    }

    /// Takes `n` bytes at once, over the limits if need be: for bytes that already exist and are
    /// bounded by their owner (a call's other sends then wait until they are written).
    pub fn force(self: &Arc<Self>, n: usize) -> Lease {
        if n == 0 {
            return self.lease(0);
        }
        let mut state = lock(&self.state);
        let next = state.used.saturating_add(n);
        self.total
            .force_add(self.over_reserve(next) - self.over_reserve(state.used));
        state.used = next;
        drop(state);
        stats::send_budget_taken(n);
        self.lease(n)
    }

    fn lease(self: &Arc<Self>, bytes: usize) -> Lease {
        Lease {
            budget: self.clone(),
            bytes,
        }
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let (given_back, to_total, waiters) = {
            let mut state = lock(&self.state);
            let before = state.used;
            state.used = before.saturating_sub(n);
            let to_total = self.over_reserve(before) - self.over_reserve(state.used);
            (
                before - state.used,
                to_total,
                std::mem::take(&mut state.waiters),
            )
        };
        stats::send_budget_given_back(given_back);
        self.total.release(to_total);
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Bytes taken from a [`ConnectionBudget`], given back when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<ConnectionBudget>,
    bytes: usize,
}

impl Lease {
    /// Bytes this lease holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves `n` bytes (at most all) into a new lease.
    pub fn split(&mut self, n: usize) -> Lease {
        let n = n.min(self.bytes);
        self.bytes -= n;
        Lease {
            budget: self.budget.clone(),
            bytes: n,
        }
    }

    /// Gives back everything above `n` bytes.
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            drop(self.split(self.bytes - n));
        }
    }

    /// Joins `other` (from the same budget) into this lease.
    pub fn merge(&mut self, mut other: Lease) {
        if Arc::ptr_eq(&self.budget, &other.budget) {
            self.bytes += std::mem::take(&mut other.bytes);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent counts.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn a_connection_waits_for_its_own_budget_and_then_the_total() {
        let total = TotalBudget::new(100);
        let a = ConnectionBudget::new(80, 10, total.clone());
        let b = ConnectionBudget::new(80, 10, total.clone());
        let held = poll_fn(|cx| a.poll_acquire(cx, 80)).await;
        assert_eq!(
            total.used(),
            70,
            "the reserve does not count against the total"
        );
        // b's reserve is always there; beyond it the total (30 left) binds.
        let small = poll_fn(|cx| b.poll_acquire(cx, 10)).await;
        assert_eq!(total.used(), 70);
        let wait = tokio::spawn({
            let b = b.clone();
            async move { poll_fn(|cx| b.poll_acquire(cx, 50)).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "70 + 50 is over the total of 100");
        drop(held);
        assert_eq!(total.used(), 0);
        assert_eq!(wait.await.ok(), Some(50));
        assert_eq!(
            total.used(),
            0,
            "the waiter's lease was dropped with its task"
        );
        drop(small);
        assert_eq!((a.used(), b.used(), total.used()), (0, 0, 0));
    }

    #[test]
    fn split_and_shrink_give_back_exactly_what_they_drop() {
        let total = TotalBudget::new(1000);
        let a = ConnectionBudget::new(1000, 0, total.clone());
        let mut lease = a.force(100);
        let piece = lease.split(30);
        lease.shrink_to(50);
        assert_eq!(a.used(), 80);
        drop(piece);
        assert_eq!(total.used(), 50);
        lease.merge(a.force(5));
        assert_eq!(lease.bytes(), 55);
        drop(lease);
        assert_eq!((a.used(), total.used()), (0, 0));
    }
}
