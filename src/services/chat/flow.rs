//! Backpressure: a room's posters wait for its reading members instead of pushing them off the
//! ring.
//!
//! Every member is either *reading* or *stalled*:
//! - A member is *blocked* while events are due to it and none can leave: its client's HTTP/2
//!   window is zero, or its last batch is still in h2's queue (the socket is not draining).
//! - A reading member becomes *stalled* when it is blocked and has been blocked, or has held the
//!   gate closed (below), for longer than the stall grace ([`FlowLimits::stall_grace`]). So a
//!   fast reader that hits a zero window for a moment during a flood stays reading (it catches up
//!   within the grace), a client that stopped reading is stalled one grace after it stopped, and
//!   one that grants a trickle of window is stalled one grace after it first held the room back.
//! - A stalled member reads on as far as its client lets it, but the room no longer waits for it:
//!   when the ring passes its cursor it gets one gap event, as before backpressure. It is reading
//!   again once it has caught up to the low-water mark.
//! - A member that joins behind the low-water mark (a resume far back) starts stalled, and reads
//!   its way in.
//!
//! The gate: when the slowest reading member falls more than the high-water mark behind the head
//! (in events, or in bytes: [`FlowLimits::high_water_percent`] of the room's `--history` and of
//! its `--history-bytes`), the room closes its gate, and posters wait before they read their next
//! message from the client (HTTP/2 flow control then slows the client). The gate opens once every
//! reading member that was behind has caught up to the low-water mark (half the high-water mark),
//! and the member whose progress makes that so wakes the posters; the posters' own wait also ends
//! when a member's grace runs out (it is then stalled). No lock is held across an await; a closed
//! gate costs no polling.
//!
//! What passes the gate at once is bounded by the number of posters (each has at most one post
//! between the gate and the ring) and the presence events of joins and leaves, which never wait:
//! the half of the history above the high-water mark is their room.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ring::RingBounds;

/// Default high-water mark: half of the room's history (events and bytes).
pub const DEFAULT_HIGH_WATER_PERCENT: u32 = 50;
/// Default time a blocked member may hold the room back before it counts as stalled.
pub const DEFAULT_STALL_GRACE: Duration = Duration::from_secs(1);
/// Highest high-water mark allowed: what passes the gate at once needs room above it.
pub const MAX_HIGH_WATER_PERCENT: u32 = 90;

/// The backpressure settings of every room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// How far behind the head the slowest reading member may fall, as a percentage of the
    /// room's history (both its event count and its bytes), before posters wait. 0 turns
    /// backpressure off: posters never wait, and any member that falls behind the ring gets a gap.
    pub high_water_percent: u32,
    /// How long a blocked member may hold the room back before it counts as stalled.
    pub stall_grace: Duration,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            high_water_percent: DEFAULT_HIGH_WATER_PERCENT,
            stall_grace: DEFAULT_STALL_GRACE,
        }
    }
}

/// The gate as posters see it, outside the room's lock.
#[derive(Debug, Default)]
pub(super) struct Gate {
    closed: AtomicBool,
    opened: Notify,
}

impl Gate {
    /// Waits until the gate is open. `review` runs under the room's lock: it says whether the
    /// gate is still closed and, if so, when a blocked member's grace runs out. Cancel-safe.
    pub(super) async fn wait_open(&self, review: impl FnMut(Instant) -> Review) {
        if !self.closed.load(Ordering::Acquire) {
            return;
        }
        // Boxed: every member's loop holds this future, and only a closed gate needs the waiter
        // and the timer (a member costs a cursor, not a few hundred bytes more).
        Box::pin(self.wait_closed(review)).await
    }

    async fn wait_closed(&self, mut review: impl FnMut(Instant) -> Review) {
        loop {
            let mut opened = pin!(self.opened.notified());
            // Registered before the look under the lock: an opening after it wakes this wait.
            opened.as_mut().enable();
            let until = match review(Instant::now()) {
                Review::Open => return,
                Review::Closed(until) => until,
            };
            match until {
                None => opened.await,
                Some(at) => {
                    let sleep = pin!(tokio::time::sleep_until(at));
                    let _ = Either(opened, sleep).await;
                }
            }
        }
    }

    /// Whether posters are waiting now.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A member became blocked while the gate is closed: posters look again, to time its grace.
    pub(super) fn member_blocked(&self) {
        if self.is_closed() {
            self.opened.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::Release);
        self.opened.notify_waiters();
    }
}

/// What a poster waiting at the gate learns under the room's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Review {
    /// Post on.
    Open,
    /// Still closed; look again when woken, or at this instant at the latest.
    Closed(Option<Instant>),
}

/// Resolves when either future does.
struct Either<A, B>(A, B);

impl<A: Future + Unpin, B: Future + Unpin> Future for Either<A, B> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        if std::pin::Pin::new(&mut this.0).poll(cx).is_ready()
            || std::pin::Pin::new(&mut this.1).poll(cx).is_ready()
        {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
}

/// Since when a member has been blocked, shared by its call (which sets it without the room's
/// lock) and the room (which reads it under the lock).
#[derive(Debug, Default)]
pub(super) struct BlockedSince(AtomicU64);

impl BlockedSince {
    /// Records that the member is blocked (since now, unless it already was) or no longer.
    /// Returns whether it just became blocked.
    pub(super) fn set(&self, blocked: bool) -> bool {
        let was = self.0.load(Ordering::Acquire) != 0;
        if blocked && !was {
            self.0
                .store(since_anchor(Instant::now()), Ordering::Release);
            return true;
        }
        if !blocked && was {
            self.0.store(0, Ordering::Release);
        }
        false
    }

    fn get(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            ns => Some(anchor() + Duration::from_nanos(ns - 1)),
        }
    }
}

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// Nanoseconds since the process's anchor, plus one (0 means "not blocked").
fn since_anchor(at: Instant) -> u64 {
    let ns = at.saturating_duration_since(anchor()).as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1
}

/// Identifies a member among a room's readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReaderId(usize);

#[derive(Debug)]
struct Reader {
    cursor: u64,
    stalled: bool,
    blocked: Arc<BlockedSince>,
}

/// The marks, in events and bytes behind the head.
#[derive(Clone, Copy, Debug)]
struct Marks {
    high_events: u64,
    high_bytes: u64,
    low_events: u64,
    low_bytes: u64,
}

/// The gate closed: who it waits for.
#[derive(Debug)]
struct Hold {
    /// Every reading member must reach this cursor.
    target: u64,
    /// Reading members still below it.
    waiting: usize,
    since: Instant,
}

/// A room's readers and where they are, kept under the room's lock beside its ring.
#[derive(Debug)]
pub(super) struct Flow {
    /// `None`: backpressure is off.
    marks: Option<Marks>,
    grace: Duration,
    readers: Vec<Option<Reader>>,
    free: Vec<usize>,
    /// Bytes pushed before each retained event, oldest first (as many as the ring holds).
    offsets: VecDeque<u64>,
    /// Bytes pushed in all.
    pushed: u64,
    /// No reading member's cursor is below this.
    floor: u64,
    hold: Option<Hold>,
}

impl Flow {
    /// The flow state of a room whose ring keeps `bounds`.
    pub(super) fn new(limits: FlowLimits, bounds: RingBounds) -> Flow {
        let pct = u64::from(limits.high_water_percent.min(MAX_HIGH_WATER_PERCENT));
        let part = |of: usize, pct: u64| ((of as u64).saturating_mul(pct) / 100).max(1);
        let marks = (pct > 0).then(|| Marks {
            high_events: part(bounds.max_entries, pct),
            high_bytes: part(bounds.max_bytes, pct),
            low_events: part(bounds.max_entries, pct) / 2,
            low_bytes: part(bounds.max_bytes, pct) / 2,
        });
        Flow {
            marks,
            grace: limits.stall_grace,
            readers: Vec::new(),
            free: Vec::new(),
            offsets: VecDeque::new(),
            pushed: 0,
            floor: 0,
            hold: None,
        }
    }

    /// The ring took an event of `bytes` and now holds `first..next`: keeps the byte offsets in
    /// step and closes the gate if a reading member is now too far behind.
    pub(super) fn pushed(&mut self, bytes: usize, (first, next): (u64, u64), gate: &Gate) {
        self.offsets.push_back(self.pushed);
        self.pushed += bytes as u64;
        let kept = usize::try_from(next - first).unwrap_or(usize::MAX);
        while self.offsets.len() > kept {
            self.offsets.pop_front();
        }
        let Some(marks) = self.marks else { return };
        if self.hold.is_some() {
            return;
        }
        // Most pushes: the floor is within both marks, seen without a search.
        if self.floor >= next.saturating_sub(marks.high_events)
            && self.bytes_behind(self.floor, first) <= marks.high_bytes
        {
            return;
        }
        let high = self.mark_seq(marks.high_events, marks.high_bytes, first, next);
        if self.floor >= high {
            return;
        }
        self.floor = self.reading().map(|r| r.cursor).min().unwrap_or(next);
        if self.floor >= high {
            return;
        }
        let target = self.mark_seq(marks.low_events, marks.low_bytes, first, next);
        let waiting = self.reading().filter(|r| r.cursor < target).count();
        self.hold = Some(Hold {
            target,
            waiting,
            since: Instant::now(),
        });
        gate.close();
    }

    /// A member joins with its cursor at `cursor`, the ring holding `first..next`.
    pub(super) fn join(
        &mut self,
        cursor: u64,
        blocked: Arc<BlockedSince>,
        (first, next): (u64, u64),
    ) -> ReaderId {
        // Behind the low-water mark it starts stalled: it reads its way in.
        let stalled = self
            .marks
            .is_some_and(|m| cursor < self.mark_seq(m.low_events, m.low_bytes, first, next));
        if !stalled {
            self.floor = self.floor.min(cursor);
        }
        let reader = Reader {
            cursor,
            stalled,
            blocked,
        };
        match self.free.pop() {
            Some(i) => {
                self.readers[i] = Some(reader);
                ReaderId(i)
            }
            None => {
                self.readers.push(Some(reader));
                ReaderId(self.readers.len() - 1)
            }
        }
    }

    /// A member leaves: the gate no longer waits for it.
    pub(super) fn leave(&mut self, id: ReaderId, gate: &Gate) {
        let Some(reader) = self.readers.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        self.free.push(id.0);
        if !reader.stalled {
            self.reached_target(reader.cursor, u64::MAX, gate);
        }
    }

    /// A member's cursor moved to `cursor`, the ring holding `first..next`.
    pub(super) fn advanced(
        &mut self,
        id: ReaderId,
        cursor: u64,
        (first, next): (u64, u64),
        gate: &Gate,
    ) {
        let low = self
            .marks
            .map(|m| self.mark_seq(m.low_events, m.low_bytes, first, next));
        let Some(reader) = self.readers.get_mut(id.0).and_then(Option::as_mut) else {
            return;
        };
        let old = std::mem::replace(&mut reader.cursor, cursor);
        if reader.stalled {
            if low.is_some_and(|low| cursor >= low) {
                reader.stalled = false;
                self.floor = self.floor.min(cursor);
            }
            return;
        }
        self.reached_target(old, cursor, gate);
    }

    /// A poster at the closed gate looks: members whose grace ran out while blocked are stalled
    /// now, and the gate opens if nobody reading is still behind.
    pub(super) fn review(&mut self, now: Instant, gate: &Gate) -> Review {
        let Some(hold) = self.hold.as_mut() else {
            return Review::Open;
        };
        let mut until: Option<Instant> = None;
        for reader in self.readers.iter_mut().flatten() {
            if reader.stalled || reader.cursor >= hold.target {
                continue;
            }
            let Some(blocked) = reader.blocked.get() else {
                // It can send: its progress will wake the poster.
                continue;
            };
            let due = blocked.min(hold.since) + self.grace;
            if now >= due {
                reader.stalled = true;
                hold.waiting = hold.waiting.saturating_sub(1);
            } else {
                until = Some(until.map_or(due, |u| u.min(due)));
            }
        }
        if hold.waiting == 0 {
            self.hold = None;
            gate.open();
            return Review::Open;
        }
        Review::Closed(until)
    }

    /// A reading member went from `old` to `new`: one fewer to wait for if it crossed the target.
    fn reached_target(&mut self, old: u64, new: u64, gate: &Gate) {
        let Some(hold) = self.hold.as_mut() else {
            return;
        };
        if old < hold.target && new >= hold.target {
            hold.waiting = hold.waiting.saturating_sub(1);
            if hold.waiting == 0 {
                self.hold = None;
                gate.open();
            }
        }
    }

    /// Bytes pushed after `cursor` (the ring holding events from `first` on): everything, for a
    /// cursor the ring has passed.
    fn bytes_behind(&self, cursor: u64, first: u64) -> u64 {
        if cursor < first {
            return u64::MAX;
        }
        let at = usize::try_from(cursor - first).unwrap_or(usize::MAX);
        self.offsets.get(at).map_or(0, |o| self.pushed - o)
    }

    fn reading(&self) -> impl Iterator<Item = &Reader> {
        self.readers.iter().flatten().filter(|r| !r.stalled)
    }

    /// The lowest cursor within `events` and `bytes` of the head (the ring holding `first..next`).
    fn mark_seq(&self, events: u64, bytes: u64, first: u64, next: u64) -> u64 {
        let by_events = next.saturating_sub(events);
        // The offsets grow oldest to newest: the first retained event within `bytes` of the end.
        let within = self.offsets.partition_point(|&o| self.pushed - o > bytes);
        let by_bytes = first + within as u64;
        by_events.max(by_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(entries: usize, bytes: usize, grace_ms: u64) -> Flow {
        Flow::new(
            FlowLimits {
                high_water_percent: 50,
                stall_grace: Duration::from_millis(grace_ms),
            },
            RingBounds {
                max_entries: entries,
                max_bytes: bytes,
            },
        )
    }

    /// Pushes events numbered `next..next+n` of `size` bytes into a ring of `keep` entries.
    fn push(f: &mut Flow, gate: &Gate, next: &mut u64, n: u64, size: usize, keep: u64) {
        for _ in 0..n {
            *next += 1;
            let first = next.saturating_sub(keep).max(1);
            f.pushed(size, (first, *next), gate);
        }
    }

    #[test]
    fn the_gate_closes_past_the_high_water_mark_and_opens_at_the_low_one() {
        let gate = Gate::default();
        let mut f = flow(100, 1 << 20, 1000);
        let blocked = Arc::new(BlockedSince::default());
        let a = f.join(1, blocked.clone(), (1, 1));
        let b = f.join(1, Arc::new(BlockedSince::default()), (1, 1));
        let mut next = 1;
        push(&mut f, &gate, &mut next, 50, 10, 100);
        assert!(
            !gate.is_closed(),
            "50 behind is the high-water mark, not past it"
        );
        push(&mut f, &gate, &mut next, 1, 10, 100);
        assert!(gate.is_closed(), "51 behind");
        // The low-water mark is 25 behind the head at closing (52): cursor 27.
        f.advanced(a, 27, (1, next), &gate);
        assert!(gate.is_closed(), "b is still behind");
        f.advanced(b, 26, (1, next), &gate);
        assert!(gate.is_closed());
        f.advanced(b, 27, (1, next), &gate);
        assert!(!gate.is_closed(), "the last reader's progress opens it");
    }

    #[test]
    fn bytes_count_as_well_as_events() {
        let gate = Gate::default();
        let mut f = flow(1000, 10_000, 1000);
        let _a = f.join(1, Arc::new(BlockedSince::default()), (1, 1));
        let mut next = 1;
        // 5,000 bytes is the high-water mark: 5 events of 1,000 bytes, not yet past it.
        push(&mut f, &gate, &mut next, 5, 1000, 1000);
        assert!(!gate.is_closed());
        push(&mut f, &gate, &mut next, 1, 1000, 1000);
        assert!(gate.is_closed());
    }

    #[test]
    fn a_blocked_member_is_stalled_after_the_grace_and_the_gate_opens() {
        let gate = Gate::default();
        let mut f = flow(100, 1 << 20, 1000);
        let blocked = Arc::new(BlockedSince::default());
        let _a = f.join(1, blocked.clone(), (1, 1));
        let mut next = 1;
        push(&mut f, &gate, &mut next, 60, 10, 100);
        assert!(gate.is_closed());
        let now = Instant::now();
        assert_eq!(
            f.review(now, &gate),
            Review::Closed(None),
            "not blocked: its progress wakes"
        );
        let _ = blocked.set(true);
        let Review::Closed(Some(due)) = f.review(now, &gate) else {
            panic!("a blocked member's grace is timed");
        };
        assert!(due > now);
        assert_eq!(
            f.review(due, &gate),
            Review::Open,
            "stalled once its grace ran out"
        );
        assert!(!gate.is_closed());
        // Stalled, it no longer holds the room.
        push(&mut f, &gate, &mut next, 200, 10, 100);
        assert!(!gate.is_closed());
    }

    #[test]
    fn a_stalled_member_reads_again_once_it_caught_up() {
        let gate = Gate::default();
        let mut f = flow(100, 1 << 20, 0);
        let blocked = Arc::new(BlockedSince::default());
        let a = f.join(1, blocked.clone(), (1, 1));
        let mut next = 1;
        push(&mut f, &gate, &mut next, 60, 10, 100);
        let _ = blocked.set(true);
        assert_eq!(f.review(Instant::now(), &gate), Review::Open);
        let _ = blocked.set(false);
        push(&mut f, &gate, &mut next, 100, 10, 100);
        assert!(!gate.is_closed());
        // Caught up to within the low-water mark (25 behind 161): reading, and held to it again.
        f.advanced(a, 140, (62, next), &gate);
        push(&mut f, &gate, &mut next, 40, 10, 100);
        assert!(gate.is_closed());
    }

    #[test]
    fn a_member_that_leaves_is_not_waited_for() {
        let gate = Gate::default();
        let mut f = flow(100, 1 << 20, 1000);
        let a = f.join(1, Arc::new(BlockedSince::default()), (1, 1));
        let mut next = 1;
        push(&mut f, &gate, &mut next, 60, 10, 100);
        assert!(gate.is_closed());
        f.leave(a, &gate);
        assert!(!gate.is_closed());
    }

    #[test]
    fn off_means_never_closed() {
        let gate = Gate::default();
        let mut f = Flow::new(
            FlowLimits {
                high_water_percent: 0,
                stall_grace: Duration::ZERO,
            },
            RingBounds {
                max_entries: 10,
                max_bytes: 1 << 20,
            },
        );
        let _a = f.join(1, Arc::new(BlockedSince::default()), (1, 1));
        let mut next = 1;
        push(&mut f, &gate, &mut next, 100, 10, 10);
        assert!(!gate.is_closed());
    }
}
