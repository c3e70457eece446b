//! A member's side of the fan-out bench: receive, check, time, and tell the senders how far it got.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{watch, Notify};

use crate::bench::event::{read_stamp, scan};
use crate::bench::histogram::Histogram;
use crate::bench::{stopped_before_done, Clock};
use crate::grpc::client::CallReceiver;

/// Messages, received together, that may share one reading of the clock (a few microseconds of
/// work at most).
const CLOCK_REUSE: u32 = 16;

/// A counter on its own cache line, so members on different threads do not share one.
#[repr(align(64))]
#[derive(Default)]
pub(super) struct Slot(pub(super) AtomicU64);

/// How far a room got: what its senders posted, what each member has accounted for.
pub(super) struct RoomProgress {
    pub(super) posted: AtomicU64,
    /// Per member: posts received plus events missed in gaps.
    pub(super) accounted: Vec<Slot>,
}

impl RoomProgress {
    pub(super) fn slowest(&self) -> u64 {
        let each = self.accounted.iter().map(|s| s.0.load(Ordering::Acquire));
        each.min().unwrap_or(0)
    }
}

pub(super) struct MemberCtx {
    pub(super) room: Arc<RoomProgress>,
    pub(super) index: usize,
    /// Posts this member is to receive.
    pub(super) expected: u64,
    /// The sender this member's call belongs to, and how to wake it.
    pub(super) own: Option<(u32, Arc<Notify>)>,
    pub(super) clock: Clock,
    /// A stalled member: it reads nothing until this turns true (the flood is over), then
    /// reads until nothing comes for [`super::STALLED_IDLE`].
    pub(super) hold: Option<watch::Receiver<bool>>,
}

#[derive(Default)]
pub(super) struct MemberStats {
    pub(super) delivered: u64,
    pub(super) gap_events: u64,
    pub(super) missed: u64,
    /// Sequence numbers that skipped or repeated without a gap event.
    pub(super) seq_errors: u64,
    pub(super) undecodable: u64,
    pub(super) latency: Histogram,
    pub(super) last_ns: u64,
    pub(super) error: Option<String>,
    pub(super) stopped: bool,
    /// Counted apart: a stalled member (see [`MemberCtx::hold`]).
    pub(super) stalled_member: bool,
}

pub(super) async fn run_member(
    mut rx: CallReceiver,
    ctx: MemberCtx,
    mut stop: watch::Receiver<bool>,
) -> (MemberStats, CallReceiver) {
    let mut stats = MemberStats {
        stalled_member: ctx.hold.is_some(),
        ..MemberStats::default()
    };
    let work = async {
        if let Some(mut hold) = ctx.hold.clone() {
            let _ = hold.wait_for(|done| *done).await;
        }
        receive(&mut rx, &ctx, &mut stats).await
    };
    stats.stopped = stopped_before_done(work, &mut stop).await;
    (stats, rx)
}

async fn receive(rx: &mut CallReceiver, ctx: &MemberCtx, stats: &mut MemberStats) {
    let mut next_seq = None;
    // Reading the clock is a good part of a member's cost per message: messages that were already
    // received when the previous one was read share its reading, for up to CLOCK_REUSE messages.
    let mut clock = (0, CLOCK_REUSE);
    // A stalled member's gap counts presence events too: it reads until it is idle instead.
    while ctx.hold.is_some() || stats.delivered + stats.missed < ctx.expected {
        let received = match ready_now(rx.recv_raw()).await {
            Some(received) => received,
            None if ctx.hold.is_some() => {
                // A stalled member, reading at last: done once nothing more comes.
                match tokio::time::timeout(super::STALLED_IDLE, rx.recv_raw()).await {
                    Ok(received) => received,
                    Err(_) => return,
                }
            }
            None => {
                clock.1 = CLOCK_REUSE;
                rx.recv_raw().await
            }
        };
        let payload = match received {
            Ok(Some(p)) => p,
            Ok(None) => {
                stats.error = Some("the server ended the call".into());
                return;
            }
            Err(status) => {
                stats.error = Some(status.to_string());
                return;
            }
        };
        let Some(ev) = scan(&payload) else {
            stats.undecodable += 1;
            continue;
        };
        if ev.is_gap() {
            stats.gap_events += 1;
            stats.missed += ev.missed();
            next_seq = Some(ev.gap_to + 1);
        } else {
            if next_seq.is_some_and(|n| n != ev.seq) {
                stats.seq_errors += 1;
            }
            next_seq = Some(ev.seq + 1);
            let Some(stamp) = ev.is_message().then(|| read_stamp(ev.text)).flatten() else {
                continue;
            };
            if clock.1 >= CLOCK_REUSE {
                clock = (ctx.clock.now_ns(), 0);
            }
            clock.1 += 1;
            let now = clock.0;
            stats.latency.record(now.saturating_sub(stamp.sent_ns));
            stats.delivered += 1;
            stats.last_ns = now;
            if let Some((id, notify)) = &ctx.own {
                if *id == stamp.sender {
                    notify.notify_one();
                }
            }
        }
        let accounted = stats.delivered + stats.missed;
        if let Some(slot) = ctx.room.accounted.get(ctx.index) {
            slot.0.store(accounted, Ordering::Release);
        }
    }
}

/// The output of `fut` if it is ready without waiting; `None` if it would wait.
async fn ready_now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}
