//! The shutdown signal services and calls watch.

use std::future::poll_fn;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::Notify;

/// Tells services that the server is shutting down. Cheap to clone.
///
/// Every call polls it beside its handler on every wake-up, so a poll costs one atomic load: the
/// waiter registers with the notifier once, not on every poll.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    inner: Arc<SignalState>,
}

#[derive(Debug, Default)]
struct SignalState {
    fired: AtomicBool,
    notify: Notify,
}

/// Fires a [`ShutdownSignal`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    inner: Arc<SignalState>,
}

impl ShutdownTrigger {
    /// Starts shutdown: every clone of the signal reads `true` and every waiter wakes.
    pub fn fire(&self) {
        self.inner.fired.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }
}

impl ShutdownSignal {
    /// A signal and the trigger that fires it.
    pub fn new() -> (ShutdownTrigger, ShutdownSignal) {
        let inner = Arc::new(SignalState::default());
        (
            ShutdownTrigger {
                inner: inner.clone(),
            },
            ShutdownSignal { inner },
        )
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has begun.
    ///
    /// Every poll first reads the flag itself, so a waiter polled after the signal fired is ready
    /// at once, even before its own wake-up arrives.
    pub async fn wait(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        let mut registered: Option<std::task::Waker> = None;
        poll_fn(|cx| {
            if self.is_shutting_down() {
                return Poll::Ready(());
            }
            let stale = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
            if stale {
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                registered = Some(cx.waker().clone());
                // Fired between the first check and the registration: not missed.
                if self.is_shutting_down() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }
}
