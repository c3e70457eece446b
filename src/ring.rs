//! A sequence-numbered bounded ring read by cursors: the one mechanism under chat rooms
//! ([`crate::services::chat::room`]) and the server's log ([`crate::services::logs::ring`]).
//!
//! - Every entry gets the ring's next sequence number when it is pushed; numbers never go back.
//! - The ring keeps the newest entries, bounded by count and by bytes (the newest entry is always
//!   kept, however large, so a reader can make progress).
//! - A reader is a cursor: the next sequence number it has to read. Reading from a cursor hands out
//!   a batch of consecutive entries, bounded by count and by bytes (at least one entry when any is
//!   due), and says which numbers the ring dropped before the cursor read them. History, resume
//!   after S and lag detection are the same arithmetic: a cursor behind the ring's first number
//!   missed exactly `cursor..first`.
//!
//! The ring holds no lock and wakes nobody: its owner keeps it under its own lock and tells readers
//! about new entries its own way.

use std::collections::vec_deque;
use std::collections::VecDeque;

/// An entry's size as the ring counts it against its byte bound.
pub trait Weigh {
    /// Bytes this entry holds.
    fn weight(&self) -> usize;
}

impl Weigh for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// How much a [`SeqRing`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingBounds {
    /// Most entries kept (at least one is always kept).
    pub max_entries: usize,
    /// Most bytes kept, as entries [`Weigh`] themselves (the newest entry is kept regardless).
    pub max_bytes: usize,
}

/// The ring: entries `first_seq..next_seq`, oldest first.
#[derive(Debug)]
pub struct SeqRing<T> {
    entries: VecDeque<T>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    /// Sequence number the next pushed entry gets.
    next_seq: u64,
    bytes: usize,
    bounds: RingBounds,
}

/// What one read from a cursor hands out.
#[derive(Debug)]
pub struct Batch<'a, T> {
    /// Numbers the ring dropped before the cursor read them (`from..=to`), if any.
    pub missed: Option<(u64, u64)>,
    /// The entries, oldest first, consecutive from the (adjusted) cursor.
    pub entries: vec_deque::Iter<'a, T>,
    /// How many entries `entries` yields.
    pub count: usize,
    /// Their total weight.
    pub bytes: usize,
}

impl<T: Weigh> SeqRing<T> {
    /// An empty ring whose first entry will be numbered `first_seq`.
    pub fn new(first_seq: u64, bounds: RingBounds) -> SeqRing<T> {
        SeqRing {
            entries: VecDeque::new(),
            first_seq,
            next_seq: first_seq,
            bytes: 0,
            bounds,
        }
    }

    /// Appends an entry, drops the oldest ones beyond the bounds, and returns the entry's number.
    pub fn push(&mut self, entry: T) -> u64 {
        let seq = self.next_seq;
        self.bytes += entry.weight();
        self.entries.push_back(entry);
        self.next_seq += 1;
        while self.entries.len() > 1
            && (self.entries.len() > self.bounds.max_entries || self.bytes > self.bounds.max_bytes)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.weight();
                self.first_seq += 1;
            }
        }
        seq
    }

    /// Continues numbering from `seq`, dropping every entry, if `seq` is past the head: a cursor
    /// behind `seq` then reads that it missed everything before it.
    pub fn skip_to(&mut self, seq: u64) {
        if seq > self.next_seq {
            self.entries.clear();
            self.bytes = 0;
            self.first_seq = seq;
            self.next_seq = seq;
        }
    }

    /// The ring's bounds.
    pub fn bounds(&self) -> RingBounds {
        self.bounds
    }

    /// The number of the oldest retained entry (equal to [`next_seq`](Self::next_seq) when empty).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The number the next pushed entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Entries retained.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes retained.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reads from `cursor`: what the ring dropped before it, then up to `max_entries` entries and
    /// about `max_bytes` (at least one entry when one is due, however large). Advances `cursor`
    /// past what it hands out. A cursor beyond the head reads nothing and stays where it is.
    pub fn read(&self, cursor: &mut u64, max_entries: usize, max_bytes: usize) -> Batch<'_, T> {
        let missed = (*cursor < self.first_seq).then(|| (*cursor, self.first_seq - 1));
        *cursor = (*cursor).max(self.first_seq);
        let start = usize::try_from(*cursor - self.first_seq)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let mut count = 0;
        let mut bytes = 0;
        for entry in self.entries.range(start..) {
            let weight = entry.weight();
            if count == max_entries || (count > 0 && bytes + weight > max_bytes) {
                break;
            }
            bytes += weight;
            count += 1;
        }
        *cursor += count as u64;
        Batch {
            missed,
            entries: self.entries.range(start..start + count),
            count,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test entry weighing its value in bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct W(usize);

    impl Weigh for W {
        fn weight(&self) -> usize {
            self.0
        }
    }

    fn ring(max_entries: usize, max_bytes: usize) -> SeqRing<W> {
        SeqRing::new(
            1,
            RingBounds {
                max_entries,
                max_bytes,
            },
        )
    }

    fn seqs(b: &Batch<'_, W>, first: u64) -> Vec<u64> {
        (first..first + b.count as u64).collect()
    }

    #[test]
    fn numbers_start_where_told_and_never_go_back() {
        let mut r: SeqRing<W> = SeqRing::new(
            41,
            RingBounds {
                max_entries: 2,
                max_bytes: usize::MAX,
            },
        );
        assert_eq!((r.first_seq(), r.next_seq()), (41, 41));
        assert_eq!(r.push(W(1)), 41);
        assert_eq!(r.push(W(1)), 42);
        assert_eq!(r.push(W(1)), 43);
        assert_eq!((r.first_seq(), r.next_seq(), r.len()), (42, 44, 2));
    }

    #[test]
    fn the_count_bound_drops_the_oldest() {
        let mut r = ring(3, usize::MAX);
        for _ in 0..5 {
            r.push(W(10));
        }
        assert_eq!((r.first_seq(), r.len(), r.bytes()), (3, 3, 30));
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_but_keeps_the_newest() {
        let mut r = ring(100, 25);
        r.push(W(10));
        r.push(W(10));
        assert_eq!((r.first_seq(), r.bytes()), (1, 20));
        r.push(W(10));
        assert_eq!((r.first_seq(), r.bytes()), (2, 20));
        // Larger than the whole bound: kept alone.
        r.push(W(100));
        assert_eq!((r.first_seq(), r.len(), r.bytes()), (4, 1, 100));
    }

    #[test]
    fn a_cursor_behind_the_ring_learns_exactly_what_it_missed() {
        let mut r = ring(3, usize::MAX);
        for _ in 0..10 {
            r.push(W(1));
        }
        let mut cursor = 2;
        let b = r.read(&mut cursor, usize::MAX, usize::MAX);
        assert_eq!(b.missed, Some((2, 7)));
        assert_eq!(seqs(&b, 8), vec![8, 9, 10]);
        assert_eq!(cursor, 11);
        // Caught up: nothing missed, nothing due.
        let b = r.read(&mut cursor, usize::MAX, usize::MAX);
        assert_eq!((b.missed, b.count), (None, 0));
    }

    #[test]
    fn resume_after_s_reads_every_retained_entry_after_it() {
        let mut r = ring(100, usize::MAX);
        for i in 0..10 {
            r.push(W(i));
        }
        let mut cursor = 5 + 1;
        let b = r.read(&mut cursor, usize::MAX, usize::MAX);
        assert_eq!(b.missed, None);
        assert_eq!(
            b.entries.copied().collect::<Vec<_>>(),
            (5..10).map(W).collect::<Vec<_>>()
        );
        assert_eq!(cursor, 11);
    }

    #[test]
    fn a_batch_is_capped_by_count_and_by_bytes_but_holds_at_least_one() {
        let mut r = ring(100, usize::MAX);
        for _ in 0..10 {
            r.push(W(10));
        }
        let mut cursor = 1;
        assert_eq!(r.read(&mut cursor, 4, usize::MAX).count, 4);
        assert_eq!(cursor, 5);
        let b = r.read(&mut cursor, usize::MAX, 25);
        assert_eq!((b.count, b.bytes), (2, 20));
        assert_eq!(cursor, 7);
        // One entry over the byte cap still goes, alone.
        let b = r.read(&mut cursor, usize::MAX, 5);
        assert_eq!((b.count, b.bytes), (1, 10));
        assert_eq!(cursor, 8);
    }

    #[test]
    fn a_cursor_beyond_the_head_reads_nothing_and_stays() {
        let mut r = ring(100, usize::MAX);
        r.push(W(1));
        let mut cursor = 9;
        let b = r.read(&mut cursor, usize::MAX, usize::MAX);
        assert_eq!((b.missed, b.count), (None, 0));
        assert_eq!(cursor, 9);
    }
}
