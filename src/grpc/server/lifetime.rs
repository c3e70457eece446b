//! How long a connection may live: closed when idle, retired when old (grpc-go's
//! `MaxConnectionIdle`, `MaxConnectionAge` and `MaxConnectionAgeGrace`).
//!
//! - Idle: a connection with no running call for `max_connection_idle` gets GOAWAY (and, having
//!   no streams, closes).
//! - Age: at `max_connection_age`, ±10% jitter so that connections made together do not all go at
//!   once, the connection gets GOAWAY; its calls may finish for `max_connection_age_grace`, then
//!   it is closed.

use std::collections::hash_map::RandomState;
use std::future::{poll_fn, Future};
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Default time a connection may go without calls before it gets GOAWAY: 5 minutes.
pub const DEFAULT_MAX_CONNECTION_IDLE: Duration = Duration::from_secs(300);

/// The running calls of one connection, and since when it has had none.
#[derive(Debug)]
pub(in crate::grpc) struct Activity {
    calls: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub(in crate::grpc) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// Counts a call as running until the slot is dropped; the slot also holds the call's place
    /// among the connection's running handlers.
    pub(in crate::grpc) fn enter(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> CallSlot {
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallSlot {
            _permit: permit,
            activity: self.clone(),
        }
    }

    /// How many calls are running on the connection.
    pub(in crate::grpc) fn running(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Since when the connection has had no call, if it has none.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.calls.load(Ordering::SeqCst) == 0).then_some(since)
    }
}

/// A running call's place on its connection; see [`Activity::enter`].
#[derive(Debug)]
pub(in crate::grpc) struct CallSlot {
    _permit: OwnedSemaphorePermit,
    activity: Arc<Activity>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        // The time first, so that a reader seeing no calls sees when the last one ended.
        let mut since = self
            .activity
            .idle_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *since = Instant::now();
        self.activity.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the connection should do now.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::grpc) enum LifetimeEvent {
    /// Send GOAWAY and let running calls finish.
    GoAway,
    /// Close the connection.
    Close,
}

/// One connection's idle and age deadlines.
pub(in crate::grpc) struct Lifetime {
    activity: Arc<Activity>,
    idle: Option<Duration>,
    retire_at: Option<Instant>,
    grace: Duration,
    close_at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Lifetime {
    /// Deadlines for a connection opened now; `age` gets ±10% jitter.
    pub(in crate::grpc) fn new(
        activity: Arc<Activity>,
        idle: Option<Duration>,
        age: Option<Duration>,
        grace: Duration,
        connection_id: u64,
    ) -> Lifetime {
        let now = Instant::now();
        let retire_at = age.and_then(|age| now.checked_add(jittered(age, connection_id)));
        Lifetime {
            activity,
            idle,
            retire_at,
            grace,
            close_at: None,
            timer: None,
        }
    }

    /// The connection's running calls.
    pub(in crate::grpc) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Counts a call as running on this connection (see [`Activity::enter`]).
    pub(in crate::grpc) fn enter(&self, permit: OwnedSemaphorePermit) -> CallSlot {
        self.activity.enter(permit)
    }

    /// Resolves with the next event; never when neither limit is set. Cancel-safe: the
    /// deadlines and the timer live in `self` (the timer boxed, so that the connection's task,
    /// which lives as long as the connection, stays small), so the future may be dropped and
    /// made again.
    pub(in crate::grpc) async fn next(&mut self) -> LifetimeEvent {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<LifetimeEvent> {
        loop {
            let now = Instant::now();
            if self.close_at.is_some_and(|at| now >= at) {
                return Poll::Ready(LifetimeEvent::Close);
            }
            if self.retire_at.is_some_and(|at| now >= at) {
                self.retire_at = None;
                self.idle = None;
                self.close_at = now.checked_add(self.grace);
                return Poll::Ready(LifetimeEvent::GoAway);
            }
            let idle_since = self.activity.idle_since();
            let idle_at = self.idle.and_then(|idle| match idle_since {
                Some(since) => since.checked_add(idle),
                // Busy: it cannot be idle long enough before `idle` from now.
                None => now.checked_add(idle),
            });
            if idle_since.is_some() && idle_at.is_some_and(|at| now >= at) {
                self.idle = None;
                return Poll::Ready(LifetimeEvent::GoAway);
            }
            let next = [self.close_at, self.retire_at, idle_at]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            // Only when it must fire sooner, or has fired: while the connection is busy the idle
            // deadline moves on with every poll, and a timer that fires early only looks again
            // (a reset on every poll of a busy connection was a timer-wheel update per write).
            if timer.deadline() > at || timer.is_elapsed() {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// `age` times a factor between 0.9 and 1.1 drawn from the connection id and a per-process key.
fn jittered(age: Duration, connection_id: u64) -> Duration {
    let hash = RandomState::new().hash_one(connection_id);
    let unit = (hash % 10_001) as f64 / 10_000.0;
    age.mul_f64(0.9 + 0.2 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let age = Duration::from_secs(100);
        for id in 0..1000 {
            let j = jittered(age, id);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_goes_away_and_a_busy_one_does_not() {
        let activity = Activity::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().ok();
        let slot = permit.map(|p| activity.enter(p));
        let idle = Duration::from_secs(10);
        let mut life = Lifetime::new(activity.clone(), Some(idle), None, Duration::ZERO, 1);
        let busy = tokio::time::timeout(Duration::from_secs(30), life.next()).await;
        assert!(busy.is_err(), "a connection with a call is not idle");
        drop(slot);
        let started = tokio::time::Instant::now();
        assert_eq!(life.next().await, LifetimeEvent::GoAway);
        assert!(started.elapsed() >= idle);
    }
}
