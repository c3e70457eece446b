//! Following a file like `tail -F`, one log entry per line.
//!
//! The file is polled (every [`DEFAULT_POLL_INTERVAL`] by default); each poll reads what was
//! appended since the last one, bounded by [`MAX_READ_PER_POLL`]. A leading level word (`ERROR`,
//! `WARN`/`WARNING`, `INFO`, `DEBUG`, `TRACE`, any case, optionally in `[]` or followed by `:`)
//! sets the entry's level and is taken off the message; other lines are INFO; blank lines are
//! skipped.
//!
//! - Start: a file present at startup is read from its beginning, or from its last
//!   [`START_TAIL_BYTES`] when it is larger. A missing file is waited for (one warning).
//! - Rotation: when the path names a different file (another device/inode), the old file is read
//!   to its end, then the new one from its beginning. While the path is missing the old file is
//!   still read, so a writer that has not reopened yet loses nothing.
//! - Truncation: when the file is shorter than what was read, it is read again from its beginning.
//!   (A file truncated and refilled past the old length between two polls looks like an append;
//!   polling cannot tell.)
//! - Partial lines: a line is complete at `\n`; a last line without one is taken once a poll
//!   finds nothing new after it. Lines longer than [`MAX_LINE_BYTES`] are split.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, warn, Level};

use crate::grpc::ShutdownSignal;
use crate::services::logs::ring::{parse_level, LogRing};

/// Default time between two looks at the file.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most bytes read per poll, so that a huge append cannot stall the follower or flood the ring.
pub const MAX_READ_PER_POLL: usize = 1 << 20;
/// Longest line kept whole, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Bytes read from the file at once.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// How much of a file present at startup is read: its last 1 MiB.
pub const START_TAIL_BYTES: u64 = 1 << 20;

/// Follows `path` into `ring` every `poll`, until `shutdown` fires. Needs a Tokio runtime: without
/// one it warns and does nothing.
pub fn spawn(path: PathBuf, ring: LogRing, poll: Duration, shutdown: ShutdownSignal) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        warn!(path = %path.display(), "no async runtime: the watch file is not followed");
        return;
    };
    runtime.spawn(async move {
        let mut follower = Follower::new(path, ring);
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.wait() => return,
            }
            // File I/O blocks: do it off the async workers.
            follower = match tokio::task::spawn_blocking(move || {
                follower.poll_once();
                follower
            })
            .await
            {
                Ok(f) => f,
                Err(_) => return,
            };
        }
    });
}

/// A file being followed. [`poll_once`](Follower::poll_once) does one look; [`spawn`] calls it
/// periodically.
pub struct Follower {
    path: PathBuf,
    target: String,
    ring: LogRing,
    open: Option<OpenFile>,
    /// Bytes of a line not yet ended by `\n`.
    partial: Vec<u8>,
    /// Whether the bytes up to the next `\n` are the cut end of a line (after starting mid-file).
    skip_to_next_line: bool,
    /// Whether a file has ever been opened (only the first is read from its tail).
    opened_once: bool,
    /// The last error warned about, so a lasting problem is reported once.
    warned: Option<io::ErrorKind>,
}

struct OpenFile {
    file: File,
    id: Option<(u64, u64)>,
    /// Bytes consumed so far.
    pos: u64,
}

impl Follower {
    /// A follower of `path` that has not looked at it yet.
    pub fn new(path: PathBuf, ring: LogRing) -> Follower {
        let target = format!("file:{}", path.display());
        Follower {
            path,
            target,
            ring,
            open: None,
            partial: Vec::new(),
            skip_to_next_line: false,
            opened_once: false,
            warned: None,
        }
    }

    /// Looks at the file once: notices rotation and truncation, and turns what was appended
    /// into entries. Never fails: problems are logged and retried at the next poll.
    pub fn poll_once(&mut self) {
        let read = match std::fs::metadata(&self.path) {
            Ok(meta) => self.poll_present(&meta),
            Err(e) => {
                // Gone, e.g. renamed by rotation: the old file may still be written to.
                if self.open.is_none() {
                    self.warn_once(&e);
                }
                self.read_open()
            }
        };
        match read {
            Ok(0) if !self.partial.is_empty() => {
                // The writer has paused for a whole poll after an unterminated line.
                let line = std::mem::take(&mut self.partial);
                self.emit(&line);
            }
            Ok(_) => {}
            Err(e) => self.warn_once(&e),
        }
    }

    fn poll_present(&mut self, meta: &Metadata) -> io::Result<usize> {
        let id = file_id(meta);
        let mut read = 0;
        if let Some(open) = &self.open {
            if id.is_some() && open.id != id {
                debug!(path = %self.path.display(), "watch file rotated");
                read += self.read_open()?;
                self.flush_partial();
                self.open = None;
            }
        }
        if self.open.is_none() {
            let file = File::open(&self.path)?;
            let meta = file.metadata()?;
            let mut open = OpenFile {
                file,
                id: file_id(&meta),
                pos: 0,
            };
            if !self.opened_once && meta.len() > START_TAIL_BYTES {
                open.pos = meta.len() - START_TAIL_BYTES;
                open.file.seek(SeekFrom::Start(open.pos))?;
                // Start at a line boundary: the first line read is probably cut.
                self.skip_to_next_line = true;
            }
            self.opened_once = true;
            self.warned = None;
            self.open = Some(open);
        }
        if let Some(open) = &mut self.open {
            let len = open.file.metadata().map_or(meta.len(), |m| m.len());
            if len < open.pos {
                debug!(path = %self.path.display(), "watch file truncated");
                open.file.seek(SeekFrom::Start(0))?;
                open.pos = 0;
                self.partial.clear();
                self.skip_to_next_line = false;
            }
        }
        Ok(read + self.read_open()?)
    }

    /// Reads the open file from its position to its end (at most [`MAX_READ_PER_POLL`]).
    fn read_open(&mut self) -> io::Result<usize> {
        let Some(mut open) = self.open.take() else {
            return Ok(0);
        };
        let result = self.read_from(&mut open);
        self.open = Some(open);
        result
    }

    fn read_from(&mut self, open: &mut OpenFile) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let mut total = 0;
        while total < MAX_READ_PER_POLL {
            let n = open.file.read(&mut chunk)?;
            let Some(data) = chunk.get(..n).filter(|d| !d.is_empty()) else {
                break;
            };
            total += n;
            open.pos += n as u64;
            self.take_lines(data);
        }
        Ok(total)
    }

    fn take_lines(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(nl);
            data = rest.get(1..).unwrap_or_default();
            if self.skip_to_next_line {
                self.skip_to_next_line = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.emit(&whole);
            }
        }
        if self.skip_to_next_line {
            return;
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE_BYTES {
            let long = std::mem::take(&mut self.partial);
            for piece in long.chunks(MAX_LINE_BYTES) {
                self.emit(piece);
            }
        }
    }

    fn flush_partial(&mut self) {
        let line = std::mem::take(&mut self.partial);
        self.emit(&line);
    }

    /// One line into the ring: its level word, if any, becomes the level.
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            return;
        }
        let (level, msg) = split_level(line);
        self.ring.push(level, &self.target, msg.to_owned());
    }

    fn warn_once(&mut self, e: &io::Error) {
        if self.warned != Some(e.kind()) {
            self.warned = Some(e.kind());
            warn!(path = %self.path.display(), error = %e, "cannot read the watch file; retrying");
        }
    }
}

/// The level a line starts with (INFO if none) and the rest of the line.
pub fn split_level(line: &str) -> (Level, &str) {
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let name = word
        .trim_start_matches('[')
        .trim_end_matches(':')
        .trim_end_matches(']');
    match parse_level(name) {
        Some(level) => (level, rest.trim_start()),
        None => (Level::INFO, line),
    }
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A fresh path `name` in a directory of its own in the temp dir; the directory, and all
    /// that is put in it, is removed on drop (a failing test included).
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("h2chat-tail-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            TempPath(dir.join(name))
        }

        fn append(&self, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.0)
                .unwrap_or_else(|e| panic!("open {}: {e}", self.0.display()));
            f.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("write: {e}"));
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// Entries after `from` as "LEVEL msg".
    fn entries(ring: &LogRing, from: &mut u64) -> Vec<String> {
        let mut cursor = ring.watch();
        let mut batch = Vec::new();
        while {
            let before = batch.len();
            cursor.next_batch(&mut batch);
            batch.len() > before
        } {}
        let out: Vec<String> = batch
            .iter()
            .filter(|r| r.entry.seq > *from)
            .map(|r| format!("{} {}", r.entry.level, r.entry.msg))
            .collect();
        *from = batch.last().map_or(*from, |r| r.entry.seq);
        out
    }

    #[test]
    fn a_leading_level_word_sets_the_level() {
        assert_eq!(split_level("ERROR disk full"), (Level::ERROR, "disk full"));
        assert_eq!(split_level("warning: low"), (Level::WARN, "low"));
        assert_eq!(split_level("[debug] x y"), (Level::DEBUG, "x y"));
        assert_eq!(split_level("started ok"), (Level::INFO, "started ok"));
        assert_eq!(split_level("ERRORS happen"), (Level::INFO, "ERRORS happen"));
    }

    #[test]
    fn existing_lines_come_in_order_and_appends_follow() {
        let tmp = TempPath::new("order.log");
        tmp.append("ERROR disk full\nINFO started\n\nERROR connection reset\nERROR timeout\n");
        let ring = LogRing::new(100);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        assert_eq!(
            entries(&ring, &mut seen),
            [
                "ERROR disk full",
                "INFO started",
                "ERROR connection reset",
                "ERROR timeout"
            ]
        );
        tmp.append("WARN later\n");
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["WARN later"]);
    }

    #[test]
    fn an_unterminated_line_is_taken_after_a_quiet_poll() {
        let tmp = TempPath::new("partial.log");
        tmp.append("ERROR half");
        let ring = LogRing::new(100);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        tmp.append(" done\nINFO no newline");
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["ERROR half done"]);
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["INFO no newline"]);
    }

    #[test]
    fn truncation_reads_again_from_the_start() {
        let tmp = TempPath::new("trunc.log");
        tmp.append("INFO one\nINFO two\n");
        let ring = LogRing::new(100);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen).len(), 2);
        std::fs::write(&tmp.0, "ERROR new\n").unwrap_or_else(|e| panic!("{e}"));
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["ERROR new"]);
    }

    #[test]
    fn rotation_reads_the_old_file_to_its_end_then_the_new_one() {
        let tmp = TempPath::new("rot.log");
        let old = TempPath::new("rot.log.1");
        tmp.append("INFO first\n");
        let ring = LogRing::new(100);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["INFO first"]);
        std::fs::rename(&tmp.0, &old.0).unwrap_or_else(|e| panic!("{e}"));
        old.append("INFO late write to the old file\n");
        f.poll_once();
        assert_eq!(
            entries(&ring, &mut seen),
            ["INFO late write to the old file"]
        );
        old.append("INFO last old\n");
        tmp.append("ERROR in the new file\n");
        f.poll_once();
        assert_eq!(
            entries(&ring, &mut seen),
            ["INFO last old", "ERROR in the new file"]
        );
    }

    #[test]
    fn a_missing_file_is_waited_for() {
        let tmp = TempPath::new("later.log");
        let ring = LogRing::new(100);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        assert!(entries(&ring, &mut seen).is_empty());
        tmp.append("ERROR appeared\n");
        f.poll_once();
        assert_eq!(entries(&ring, &mut seen), ["ERROR appeared"]);
    }

    #[test]
    fn a_large_file_is_read_from_its_tail_at_a_line_boundary() {
        let tmp = TempPath::new("big.log");
        let line = format!("INFO {}\n", "x".repeat(1000));
        let lines = (START_TAIL_BYTES as usize / line.len()) + 10;
        tmp.append(&line.repeat(lines));
        tmp.append("ERROR the end\n");
        let ring = LogRing::new(100_000);
        let mut f = Follower::new(tmp.0.clone(), ring.clone());
        let mut seen = 0;
        f.poll_once();
        let got = entries(&ring, &mut seen);
        assert!(got.len() < lines);
        assert!(got
            .iter()
            .all(|l| l.len() == line.len() - 1 || l == "ERROR the end"));
        assert_eq!(got.last().map(String::as_str), Some("ERROR the end"));
    }
}
