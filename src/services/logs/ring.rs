//! The server's own log: a bounded ring of entries, a tracing layer that fills it, and watchers
//! as cursors into it.
//!
//! The same mechanism as chat rooms ([`crate::services::chat::room`]), one [`SeqRing`]:
//! - Every entry — a tracing event, or a line of a followed file ([`crate::services::logs::tail`]) — gets the
//!   ring's next sequence number and is stored once, shared by every watcher.
//! - The ring keeps the most recent entries, bounded by count; each message is bounded in bytes.
//! - A watcher is a cursor: the next sequence number it has to read. A watcher that reads slowly
//!   costs a cursor, not a queue; when the ring has moved past its cursor it learns exactly how
//!   many entries it missed.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::grpc::server::log_rate::{more_like_this, PerCallSite};
use crate::pb::h2chat::logs::v1::LogEntry;
use crate::ring::{RingBounds, SeqRing, Weigh};

/// Default number of entries the ring keeps.
pub const DEFAULT_LOG_HISTORY: usize = 1000;
/// Longest message kept in an entry, in bytes; a longer one is cut at a character boundary.
pub const MAX_MSG_BYTES: usize = 4096;
/// Most entries a watcher takes from the ring at once; bounds what a slow watcher holds.
pub const MAX_BATCH_ENTRIES: usize = 64;

/// One stored entry: the message as sent, and its level for filtering.
#[derive(Debug)]
pub struct Record {
    /// Severity.
    pub level: Level,
    /// The entry as sent to watchers.
    pub entry: LogEntry,
}

/// A bounded, shared log of recent entries. Cheap to clone; clones share the ring.
#[derive(Clone)]
pub struct LogRing {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    state: Mutex<RingState>,
    /// The next sequence number; watchers wait on it for new entries.
    head: watch::Sender<u64>,
}

type RingState = SeqRing<Arc<Record>>;

impl Weigh for Arc<Record> {
    fn weight(&self) -> usize {
        self.entry.msg.len()
    }
}

impl fmt::Debug for LogRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("LogRing")
            .field("capacity", &self.shared.capacity)
            .field("first_seq", &st.first_seq())
            .field("next_seq", &st.next_seq())
            .finish()
    }
}

impl LogRing {
    /// An empty ring keeping the newest `capacity` entries (at least one).
    pub fn new(capacity: usize) -> LogRing {
        let (head, _) = watch::channel(1);
        LogRing {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                state: Mutex::new(SeqRing::new(
                    1,
                    RingBounds {
                        max_entries: capacity.max(1),
                        max_bytes: usize::MAX,
                    },
                )),
                head,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RingState> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent data.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A tracing layer that records every event it sees into this ring.
    pub fn layer(&self) -> LogLayer {
        LogLayer {
            ring: self.clone(),
            repeats: PerCallSite::new(),
        }
    }

    /// Appends an entry (its message cut to [`MAX_MSG_BYTES`]) and wakes the watchers; returns its
    /// sequence number. Never logs, so it is safe to call from a tracing layer.
    pub fn push(&self, level: Level, target: &str, mut msg: String) -> u64 {
        truncate_at_char(&mut msg, MAX_MSG_BYTES);
        let mut st = self.lock();
        let seq = st.next_seq();
        st.push(Arc::new(Record {
            level,
            entry: LogEntry {
                level: level.as_str().to_owned(),
                msg,
                timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
                target: target.to_owned(),
                seq,
                skipped: 0,
            },
        }));
        let next = st.next_seq();
        drop(st);
        self.shared.head.send_replace(next);
        seq
    }

    /// A cursor at the oldest retained entry: it reads every retained entry, then live ones.
    pub fn watch(&self) -> LogCursor {
        let cursor = self.lock().first_seq();
        LogCursor {
            ring: self.clone(),
            cursor,
            head: self.shared.head.subscribe(),
        }
    }

    /// The sequence numbers of the oldest retained entry and of the next entry.
    pub fn bounds(&self) -> (u64, u64) {
        let st = self.lock();
        (st.first_seq(), st.next_seq())
    }
}

/// A watcher's position in a [`LogRing`].
pub struct LogCursor {
    ring: LogRing,
    /// The next sequence number to read.
    cursor: u64,
    head: watch::Receiver<u64>,
}

impl LogCursor {
    /// Moves up to [`MAX_BATCH_ENTRIES`] entries from the cursor into `out` and advances past them.
    /// Returns how many entries the ring dropped before this cursor read them (0 when none).
    pub fn next_batch(&mut self, out: &mut Vec<Arc<Record>>) -> u64 {
        let st = self.ring.lock();
        let batch = st.read(&mut self.cursor, MAX_BATCH_ENTRIES, usize::MAX);
        out.extend(batch.entries.cloned());
        batch.missed.map_or(0, |(from, to)| to - from + 1)
    }

    /// Resolves when entries newer than the cursor may exist.
    pub async fn changed(&mut self) {
        if *self.head.borrow_and_update() > self.cursor {
            return;
        }
        // The sender lives in the ring, which this cursor keeps alive.
        let _ = self.head.changed().await;
    }
}

/// Which entries a watcher wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFilter {
    /// Every entry.
    All,
    /// Entries of this level or more severe.
    AtLeast(Level),
    /// Entries whose message contains this text.
    Contains(String),
}

impl LogFilter {
    /// A level name in any case selects by level, other text by substring, empty selects all.
    pub fn parse(filter: &str) -> LogFilter {
        if filter.is_empty() {
            LogFilter::All
        } else if let Some(level) = parse_level(filter) {
            LogFilter::AtLeast(level)
        } else {
            LogFilter::Contains(filter.to_owned())
        }
    }

    /// Whether `record` is selected.
    pub fn matches(&self, record: &Record) -> bool {
        match self {
            LogFilter::All => true,
            // tracing orders levels by verbosity: ERROR is the smallest.
            LogFilter::AtLeast(level) => record.level <= *level,
            LogFilter::Contains(text) => record.entry.msg.contains(text.as_str()),
        }
    }
}

/// A level name, any case (`WARNING` is `WARN`).
pub fn parse_level(word: &str) -> Option<Level> {
    let levels = [
        ("ERROR", Level::ERROR),
        ("WARN", Level::WARN),
        ("WARNING", Level::WARN),
        ("INFO", Level::INFO),
        ("DEBUG", Level::DEBUG),
        ("TRACE", Level::TRACE),
    ];
    levels
        .into_iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|(_, level)| level)
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A tracing layer recording events into a [`LogRing`]: the message, then the other fields as
/// `name=value`. Which events reach it is up to the subscriber's filters, and to its own limit
/// on repeats ([`PerCallSite`]): past its call site's limit, an event is dropped for every layer
/// (stderr too), and the ring's entry for the next one of that call site that passes says how
/// many were.
pub struct LogLayer {
    ring: LogRing,
    repeats: PerCallSite,
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.repeats
            .admits(&event.metadata().callsite(), Instant::now())
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let Some(dropped) = self.repeats.pass(&meta.callsite(), Instant::now()) else {
            return;
        };
        let mut visitor = EventText::default();
        event.record(&mut visitor);
        let mut msg = visitor.finish();
        if dropped > 0 {
            msg.push_str(&more_like_this(dropped));
        }
        self.ring.push(*meta.level(), meta.target(), msg);
    }
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct EventText {
    message: String,
    fields: String,
}

impl EventText {
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            self.message.push_str(&self.fields);
            self.message
        }
    }
}

impl Visit for EventText {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(cursor: &mut LogCursor) -> (u64, Vec<u64>) {
        let mut batch = Vec::new();
        let mut skipped = 0;
        loop {
            let before = batch.len();
            skipped += cursor.next_batch(&mut batch);
            if batch.len() == before {
                break;
            }
        }
        (skipped, batch.iter().map(|r| r.entry.seq).collect())
    }

    #[test]
    fn a_cursor_reads_retained_entries_in_order() {
        let ring = LogRing::new(10);
        for i in 0..3 {
            ring.push(Level::INFO, "t", format!("m{i}"));
        }
        let mut cursor = ring.watch();
        assert_eq!(read_all(&mut cursor), (0, vec![1, 2, 3]));
        ring.push(Level::INFO, "t", "live".into());
        assert_eq!(read_all(&mut cursor), (0, vec![4]));
    }

    #[test]
    fn a_lagging_cursor_learns_exactly_how_many_it_missed() {
        let ring = LogRing::new(4);
        let mut cursor = ring.watch();
        for i in 0..10 {
            ring.push(Level::INFO, "t", format!("m{i}"));
        }
        // Entries 1..=6 left the ring before the cursor read them.
        assert_eq!(read_all(&mut cursor), (6, vec![7, 8, 9, 10]));
        assert_eq!(ring.bounds(), (7, 11));
    }

    #[test]
    fn batches_are_bounded() {
        let ring = LogRing::new(1000);
        for _ in 0..(MAX_BATCH_ENTRIES * 2 + 1) {
            ring.push(Level::INFO, "t", String::new());
        }
        let mut cursor = ring.watch();
        let mut batch = Vec::new();
        cursor.next_batch(&mut batch);
        assert_eq!(batch.len(), MAX_BATCH_ENTRIES);
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let ring = LogRing::new(1);
        // One ASCII byte, then two-byte characters: byte MAX_MSG_BYTES (even) falls inside one.
        ring.push(Level::INFO, "t", format!("a{}", "é".repeat(MAX_MSG_BYTES)));
        let mut batch = Vec::new();
        ring.watch().next_batch(&mut batch);
        let msg = batch
            .first()
            .map(|r| r.entry.msg.clone())
            .unwrap_or_default();
        assert_eq!(
            msg.len(),
            MAX_MSG_BYTES - 1,
            "cut before the split character"
        );
        assert!(msg.starts_with('a') && msg.ends_with('é'));
    }

    #[test]
    fn filters_select_by_level_or_substring() {
        let rec = |level: Level, msg: &str| Record {
            level,
            entry: LogEntry {
                msg: msg.into(),
                ..Default::default()
            },
        };
        let warn = LogFilter::parse("warn");
        assert_eq!(warn, LogFilter::AtLeast(Level::WARN));
        assert!(warn.matches(&rec(Level::ERROR, "")));
        assert!(warn.matches(&rec(Level::WARN, "")));
        assert!(!warn.matches(&rec(Level::INFO, "")));
        assert_eq!(LogFilter::parse("Error"), LogFilter::AtLeast(Level::ERROR));
        let sub = LogFilter::parse("disk");
        assert!(sub.matches(&rec(Level::TRACE, "disk full")));
        assert!(!sub.matches(&rec(Level::ERROR, "timeout")));
        assert!(LogFilter::parse("").matches(&rec(Level::TRACE, "")));
    }

    #[test]
    fn the_layer_records_message_and_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let ring = LogRing::new(10);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(peer = "p", n = 3, "slow down");
        });
        let mut batch = Vec::new();
        ring.watch().next_batch(&mut batch);
        let entry = batch.first().map(|r| r.entry.clone()).unwrap_or_default();
        assert_eq!(entry.level, "WARN");
        assert_eq!(entry.msg, "slow down peer=p n=3");
        assert_eq!(entry.seq, 1);
        assert_eq!(entry.target, module_path!());
    }

    #[test]
    fn the_layer_keeps_each_call_site_to_its_limit_and_others_still_get_in() {
        use crate::grpc::server::log_rate::PER_CALL_SITE_LIMIT;
        use tracing_subscriber::layer::SubscriberExt;
        let ring = LogRing::new(1000);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..500 {
                tracing::info!(i, "the same thing again");
            }
            tracing::info!("something else");
        });
        let (_, seqs) = read_all(&mut ring.watch());
        assert_eq!(seqs.len(), PER_CALL_SITE_LIMIT as usize + 1);
        let mut batch = Vec::new();
        ring.watch().next_batch(&mut batch);
        assert!(batch
            .last()
            .is_some_and(|r| r.entry.msg == "something else"));
    }
}
