//! Presence that scales: in a large room, joins and leaves are batched into one presence event
//! per interval, and a member that is behind gets a run of presence events as one.
//!
//! A room of at most [`PresenceLimits::batch_above`] members numbers every join and leave as an
//! event of its own (`EVENT_KIND_JOINED` / `EVENT_KIND_LEFT`), as it always did. Above it, a join
//! or leave is added to the room's [`Pending`] batch instead, which becomes one
//! `EVENT_KIND_PRESENCE` event in the ring (numbered, encoded once, shared by every member) when
//! the first of these holds:
//! - the batch holds at least `members / FLUSH_SHARE` changes (so each change costs at most
//!   [`FLUSH_SHARE`] deliveries);
//! - [`PresenceLimits::interval`] has passed since the room's last presence event: the interval
//!   grows with the room (`interval_per_member` × members, at most `max_interval`), so the
//!   presence events of a room cost at most `1 / interval_per_member` deliveries a second
//!   however the changes are spread in time; a lone change in a quiet room goes at once;
//! - the member whose join is pending posts (its join is announced before its first message);
//! - the room shrinks to the threshold, or closes for shutdown.
//!
//! The reading side ([`coalesce`]): a member of a room above the threshold that finds two or more
//! presence events in a row between its cursor and the head (its history on join, or batches that
//! came while it was not writable) receives them as one presence event carrying the last one's
//! `seq` and `presence_from` = the first one's: it can resume after that `seq` exactly, and every
//! join and leave in the range is counted in it. Names are listed up to [`PRESENCE_NAMES_MAX`] a
//! list; the counts are exact, and `Members` is the exact roster.
//!
//! So N members joining a room cost O(N) deliveries in all: about N for their own histories (one
//! presence event each, in a room where nobody spoke), at most [`FLUSH_SHARE`] per change for
//! batches that filled up, and at most one batch per interval otherwise.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::grpc::codec::encode_message;
use crate::pb::chat::v1::{ChatMessage, EventKind};
use crate::ring::Weigh;

/// Default room size above which joins and leaves are batched (`--presence-batch-above`).
pub const DEFAULT_PRESENCE_BATCH_ABOVE: usize = 100;
/// Default wait between a room's presence events, per member of the room.
pub const DEFAULT_PRESENCE_INTERVAL_PER_MEMBER: Duration = Duration::from_millis(2);
/// Default longest wait between a room's presence events.
pub const DEFAULT_PRESENCE_MAX_INTERVAL: Duration = Duration::from_secs(10);
/// A batch goes out once it holds `members / FLUSH_SHARE` changes: a change then costs at most
/// this many deliveries.
pub const FLUSH_SHARE: usize = 2;
/// Names a presence event lists, per list (joined, left); its counts count them all.
pub const PRESENCE_NAMES_MAX: usize = 32;

/// When a room batches presence, and how often its batches go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceLimits {
    /// Rooms with more members than this batch joins and leaves (0: every room).
    pub batch_above: usize,
    /// Wait between presence events, per member of the room.
    pub interval_per_member: Duration,
    /// Longest wait between presence events.
    pub max_interval: Duration,
}

impl Default for PresenceLimits {
    fn default() -> Self {
        PresenceLimits {
            batch_above: DEFAULT_PRESENCE_BATCH_ABOVE,
            interval_per_member: DEFAULT_PRESENCE_INTERVAL_PER_MEMBER,
            max_interval: DEFAULT_PRESENCE_MAX_INTERVAL,
        }
    }
}

impl PresenceLimits {
    /// Whether a room of `members` batches its presence.
    pub fn batches(&self, members: usize) -> bool {
        members > self.batch_above
    }

    /// The least time between two presence events of a room of `members`.
    pub fn interval(&self, members: usize) -> Duration {
        let n = u32::try_from(members).unwrap_or(u32::MAX);
        self.interval_per_member
            .checked_mul(n)
            .unwrap_or(Duration::MAX)
            .min(self.max_interval)
    }
}

/// Who came and went over a run of events: a batch being gathered, one event in the ring, or a
/// run of them merged for one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// The first sequence number covered (set when the batch is numbered).
    pub from: u64,
    /// The first [`PRESENCE_NAMES_MAX`] members that joined.
    pub joined: Vec<Arc<str>>,
    /// Every join covered.
    pub joined_count: u64,
    /// The first [`PRESENCE_NAMES_MAX`] members that left.
    pub left: Vec<Arc<str>>,
    /// Every leave covered.
    pub left_count: u64,
}

impl Presence {
    /// One join, as the event `seq`.
    pub fn one_join(seq: u64, name: &Arc<str>) -> Presence {
        Presence {
            from: seq,
            joined: vec![name.clone()],
            joined_count: 1,
            ..Presence::default()
        }
    }

    /// One leave, as the event `seq`.
    pub fn one_leave(seq: u64, name: &Arc<str>) -> Presence {
        Presence {
            from: seq,
            left: vec![name.clone()],
            left_count: 1,
            ..Presence::default()
        }
    }

    /// Joins and leaves covered.
    pub fn changes(&self) -> u64 {
        self.joined_count + self.left_count
    }

    fn add_join(&mut self, name: &Arc<str>) {
        if self.joined.len() < PRESENCE_NAMES_MAX {
            self.joined.push(name.clone());
        }
        self.joined_count += 1;
    }

    fn add_leave(&mut self, name: &Arc<str>) {
        if self.left.len() < PRESENCE_NAMES_MAX {
            self.left.push(name.clone());
        }
        self.left_count += 1;
    }

    /// Adds a later run to this one (its names as far as the lists have room).
    pub fn absorb(&mut self, later: &Presence) {
        let room = PRESENCE_NAMES_MAX.saturating_sub(self.joined.len());
        self.joined.extend(later.joined.iter().take(room).cloned());
        let room = PRESENCE_NAMES_MAX.saturating_sub(self.left.len());
        self.left.extend(later.left.iter().take(room).cloned());
        self.joined_count += later.joined_count;
        self.left_count += later.left_count;
    }

    /// The `EVENT_KIND_PRESENCE` event covering `self.from ..= seq`, encoded as a gRPC frame.
    pub fn encode(&self, room_id: &str, seq: u64) -> Bytes {
        let names = |v: &[Arc<str>]| v.iter().map(|n| n.to_string()).collect();
        encode_message(&ChatMessage {
            room_id: room_id.to_owned(),
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            seq,
            kind: EventKind::Presence as i32,
            presence_from: self.from,
            joined_ids: names(&self.joined),
            joined_count: self.joined_count,
            left_ids: names(&self.left),
            left_count: self.left_count,
            ..Default::default()
        })
    }
}

/// One event of a room's ring: its encoded frame, and who came or went if it is a presence event
/// (a join, a leave or a batch), so that a run of them can be merged for a member.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The event as a gRPC frame, shared by every member.
    pub frame: Bytes,
    /// Set on joins, leaves and presence batches.
    pub presence: Option<Box<Presence>>,
}

impl Weigh for Entry {
    fn weight(&self) -> usize {
        self.frame.len()
    }
}

/// What a room's pending batch says to do after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing is pending.
    Nothing,
    /// Number the batch now.
    Now,
    /// Number it at this instant, unless something flushes it first.
    At(Instant),
}

/// The joins and leaves of a large room not yet numbered, and when its last batch went out.
#[derive(Debug, Default)]
pub struct Pending {
    batch: Presence,
    /// Members whose join is in the batch: their first post flushes it.
    unannounced: HashSet<Arc<str>>,
    last_flush: Option<Instant>,
    /// A timer task will look at the batch.
    pub timer_armed: bool,
}

impl Pending {
    /// Adds a join.
    pub fn join(&mut self, name: &Arc<str>) {
        self.batch.add_join(name);
        self.unannounced.insert(name.clone());
    }

    /// Adds a leave.
    pub fn leave(&mut self, name: &Arc<str>) {
        self.batch.add_leave(name);
        self.unannounced.remove(name);
    }

    /// Whether `name`'s join is pending.
    pub fn is_unannounced(&self, name: &str) -> bool {
        self.unannounced.contains(name)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.batch.changes() == 0
    }

    /// What to do with the batch in a room of `members` at `now` (see the module documentation).
    pub fn due(&self, members: usize, limits: &PresenceLimits, now: Instant) -> Due {
        if self.is_empty() {
            return Due::Nothing;
        }
        let changes = usize::try_from(self.batch.changes()).unwrap_or(usize::MAX);
        if !limits.batches(members) || changes.saturating_mul(FLUSH_SHARE) >= members {
            return Due::Now;
        }
        match self.last_flush {
            None => Due::Now,
            Some(last) => {
                let at = last.checked_add(limits.interval(members)).unwrap_or(last);
                if now >= at {
                    Due::Now
                } else {
                    Due::At(at)
                }
            }
        }
    }

    /// Takes the batch to number it (`None` when empty); the interval starts again from `now`.
    pub fn take(&mut self, now: Instant) -> Option<Presence> {
        if self.is_empty() {
            return None;
        }
        self.last_flush = Some(now);
        self.unannounced.clear();
        Some(std::mem::take(&mut self.batch))
    }
}

/// Whether `entries` hold two presence events in a row: only then is [`coalesce`] needed.
pub fn has_run<'a>(entries: impl Iterator<Item = &'a Entry>) -> bool {
    let mut previous = false;
    for e in entries {
        let is = e.presence.is_some();
        if is && previous {
            return true;
        }
        previous = is;
    }
    false
}

/// Writes `entries` (numbered from `first_seq`) after `out`'s contents, each run of two or more
/// presence events as one merged presence event of `room_id`; returns how many events it wrote.
pub fn coalesce<'a>(
    out: &mut BytesMut,
    entries: impl Iterator<Item = &'a Entry>,
    first_seq: u64,
    room_id: &str,
) -> u64 {
    let mut written = 0;
    // The run being merged: its first entry, and the merge once it has a second.
    let mut run: Option<(&Entry, Option<Presence>)> = None;
    let mut last_seq = first_seq;
    let flush = |out: &mut BytesMut, run: Option<(&Entry, Option<Presence>)>, seq: u64| match run {
        None => 0,
        Some((one, None)) => {
            out.extend_from_slice(&one.frame);
            1
        }
        Some((_, Some(merged))) => {
            out.extend_from_slice(&merged.encode(room_id, seq));
            1
        }
    };
    for (seq, entry) in (first_seq..).zip(entries) {
        match (&entry.presence, &mut run) {
            (Some(p), Some((first, merged))) => {
                let merged = merged
                    .get_or_insert_with(|| first.presence.as_deref().cloned().unwrap_or_default());
                merged.absorb(p);
            }
            (Some(_), None) => run = Some((entry, None)),
            (None, _) => {
                written += flush(out, run.take(), last_seq);
                out.extend_from_slice(&entry.frame);
                written += 1;
            }
        }
        last_seq = seq;
    }
    written + flush(out, run, last_seq)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn presence_entry(p: Presence, seq: u64) -> Entry {
        Entry {
            frame: p.encode("r", seq),
            presence: Some(Box::new(p)),
        }
    }

    fn message_entry(seq: u64) -> Entry {
        Entry {
            frame: encode_message(&ChatMessage {
                seq,
                text: format!("m{seq}"),
                ..Default::default()
            }),
            presence: None,
        }
    }

    fn decode_all(mut buf: &[u8]) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            out.push(ChatMessage::decode(&buf[5..5 + len]).expect("a ChatMessage"));
            buf = &buf[5 + len..];
        }
        out
    }

    #[test]
    fn a_run_of_presence_events_becomes_one_covering_its_range() {
        let entries = [
            message_entry(10),
            presence_entry(Presence::one_join(11, &name("a")), 11),
            presence_entry(Presence::one_leave(12, &name("b")), 12),
            presence_entry(Presence::one_join(13, &name("c")), 13),
            message_entry(14),
            presence_entry(Presence::one_join(15, &name("d")), 15),
        ];
        assert!(has_run(entries.iter()));
        let mut out = BytesMut::new();
        let n = coalesce(&mut out, entries.iter(), 10, "r");
        let got = decode_all(&out);
        assert_eq!(n, 4);
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].seq, got[0].text.as_str()), (10, "m10"));
        let merged = &got[1];
        assert_eq!(merged.kind(), EventKind::Presence);
        assert_eq!((merged.presence_from, merged.seq), (11, 13));
        assert_eq!(merged.joined_ids, vec!["a", "c"]);
        assert_eq!((merged.joined_count, merged.left_count), (2, 1));
        assert_eq!(merged.left_ids, vec!["b"]);
        assert_eq!(got[2].seq, 14);
        // A lone presence event goes as it is (here: its own frame, a presence event of one).
        assert_eq!((got[3].seq, got[3].presence_from), (15, 15));
    }

    #[test]
    fn merged_names_are_capped_and_counts_exact() {
        let mut a = Presence::default();
        let mut b = Presence::default();
        for i in 0..PRESENCE_NAMES_MAX {
            a.add_join(&name(&format!("a{i}")));
            b.add_join(&name(&format!("b{i}")));
        }
        b.add_leave(&name("x"));
        a.absorb(&b);
        assert_eq!(a.joined.len(), PRESENCE_NAMES_MAX);
        assert_eq!(a.joined_count, 2 * PRESENCE_NAMES_MAX as u64);
        assert_eq!((a.left.len(), a.left_count), (1, 1));
    }

    #[test]
    fn a_batch_goes_out_when_it_holds_its_share_or_its_interval_passed() {
        let limits = PresenceLimits {
            batch_above: 10,
            interval_per_member: Duration::from_millis(10),
            max_interval: Duration::from_secs(1),
        };
        assert_eq!(limits.interval(50), Duration::from_millis(500));
        assert_eq!(limits.interval(5000), Duration::from_secs(1));
        let now = Instant::now();
        let mut p = Pending::default();
        assert_eq!(p.due(100, &limits, now), Due::Nothing);
        p.join(&name("a"));
        // Nothing went out yet: a lone change in a quiet room goes at once.
        assert_eq!(p.due(100, &limits, now), Due::Now);
        assert!(p.take(now).is_some());
        p.join(&name("b"));
        assert!(p.is_unannounced("b"));
        assert_eq!(
            p.due(100, &limits, now),
            Due::At(now + Duration::from_secs(1))
        );
        for i in 0..49 {
            p.join(&name(&format!("c{i}")));
        }
        assert_eq!(p.due(100, &limits, now), Due::Now, "50 of 100: its share");
        assert_eq!(p.take(now).map(|b| b.joined_count), Some(50));
        assert!(!p.is_unannounced("b"));
        p.leave(&name("a"));
        // A room down to the threshold goes back to one event per change, the batch first.
        assert_eq!(p.due(10, &limits, now), Due::Now);
    }
}
