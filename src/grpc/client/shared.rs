//! What both halves of a client call share: the h2 send handle, how the call ended, and the
//! call's deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, SendStream};
use tokio::time::{Instant, Sleep};

use super::status::{status_from_h2, status_from_reset};
use crate::grpc::status::{Code, Status};

/// What both halves of a call share: the send handle (the receiving half resets the stream
/// through it) and how the call ended, once it did.
pub(super) struct Shared {
    pub(super) stream: SendStream<Bytes>,
    /// Why this side ended the call early (deadline, cancel, a response it could not accept).
    pub(super) local_end: Option<Status>,
    /// The status the call ended with, once the receiving half learned it.
    pub(super) end: Option<Status>,
}

impl Shared {
    /// Ends the call from this side with RST_STREAM(CANCEL); every later operation on either half
    /// fails with the returned status (the first reason given wins).
    pub(super) fn cancel(&mut self, status: Status) -> Status {
        if let Some(earlier) = &self.local_end {
            return earlier.clone();
        }
        self.stream.send_reset(Reason::CANCEL);
        self.local_end = Some(status.clone());
        status
    }

    /// The status a failed send reports: how the call ended if known and not OK, else `fallback`.
    pub(super) fn send_error(&self, fallback: Status) -> Status {
        self.local_end
            .clone()
            .or_else(|| self.end.clone().filter(|s| s.code() != Code::Ok))
            .unwrap_or(fallback)
    }

    /// Hands `pending` to h2 in pieces no larger than the granted capacity; END_STREAM goes with
    /// the last piece when `end` is set (and is cleared once sent).
    pub(super) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        pending: &mut Bytes,
        end: &mut bool,
    ) -> Poll<Result<(), Status>> {
        if let Some(status) = &self.local_end {
            return Poll::Ready(Err(status.clone()));
        }
        while !pending.is_empty() {
            self.stream.reserve_capacity(pending.len());
            let granted = self.stream.capacity();
            if granted == 0 {
                match self.stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(self.send_error(status_from_h2(&e))))
                    }
                    // The stream can no longer send: find out why.
                    Poll::Ready(None) => {
                        let status = match self.stream.poll_reset(cx) {
                            Poll::Ready(Ok(reason)) => status_from_reset(reason),
                            Poll::Ready(Err(e)) => status_from_h2(&e),
                            Poll::Pending => Status::internal("request stream closed"),
                        };
                        return Poll::Ready(Err(self.send_error(status)));
                    }
                    Poll::Pending => {
                        // Waiting for the server to read: notice if it resets meanwhile.
                        if let Poll::Ready(r) = self.stream.poll_reset(cx) {
                            let status = match r {
                                Ok(reason) => status_from_reset(reason),
                                Err(e) => status_from_h2(&e),
                            };
                            return Poll::Ready(Err(self.send_error(status)));
                        }
                        return Poll::Pending;
                    }
                }
            }
            let piece = pending.split_to(granted.min(pending.len()));
            let last = pending.is_empty() && *end;
            if let Err(e) = self.stream.send_data(piece, last) {
                return Poll::Ready(Err(self.send_error(status_from_h2(&e))));
            }
            if last {
                *end = false;
            }
        }
        if *end {
            *end = false;
            if let Err(e) = self.stream.send_data(Bytes::new(), true) {
                return Poll::Ready(Err(self.send_error(status_from_h2(&e))));
            }
        }
        Poll::Ready(Ok(()))
    }
}

pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Held only inside the non-async functions of a call's two halves, never across an await; a
    // poisoned lock can only come from a panic there, after which the data is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A call's deadline, and the timer that wakes a waiting operation when it passes. The timer is
/// only armed when an operation actually has to wait.
pub(super) struct Deadline {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub(super) fn new(at: Option<Instant>) -> Deadline {
        Deadline { at, timer: None }
    }

    /// Whether the deadline has passed; if not, the task is woken when it does.
    pub(super) fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at else { return false };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether the deadline has passed, without arming anything.
    pub(super) fn passed(&self) -> bool {
        self.at.is_some_and(|at| at <= Instant::now())
    }
}

pub(super) fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded")
}
