//! A cap on how often a kind of log line is written, so that a peer cannot flood the log (nor
//! flush every other entry out of the WatchLogs ring) by doing the same thing over and over.
//!
//! One mechanism, [`Window`]: at most `limit` lines pass in each window of time; the rest are
//! counted, and the next line that passes learns how many were left out. It is used two ways:
//! - [`LogRate`], in a `static` beside a line a peer can cause at will (a refused call, a limit
//!   hit): the line says how many were left out in a `suppressed` field.
//! - [`PerCallSite`], inside a tracing layer: every `tracing` call site of the program gets its
//!   own window ([`PER_CALL_SITE_LIMIT`] events per [`PER_CALL_SITE_WINDOW`]), so even a line
//!   nobody thought to cap cannot flood; the next event that passes is noted with
//!   [`more_like_this`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;

/// Events of one call site that pass per [`PER_CALL_SITE_WINDOW`] in a [`PerCallSite`].
pub const PER_CALL_SITE_LIMIT: u32 = 20;
/// The window over which [`PER_CALL_SITE_LIMIT`] applies.
pub const PER_CALL_SITE_WINDOW: Duration = Duration::from_secs(10);

/// At most `limit` lines per `length` of time; see the module documentation.
#[derive(Debug)]
pub struct Window {
    limit: u32,
    length: Duration,
    start: Option<Instant>,
    passed: u32,
    left_out: u64,
}

impl Window {
    /// A window letting `limit` lines through per `length`.
    pub const fn new(limit: u32, length: Duration) -> Window {
        Window {
            limit,
            length,
            start: None,
            passed: 0,
            left_out: 0,
        }
    }

    /// Whether the limit is used up at `now` (a new window starts if the last one is over).
    fn is_full(&mut self, now: Instant) -> bool {
        if self
            .start
            .is_none_or(|start| now.duration_since(start) >= self.length)
        {
            self.start = Some(now);
            self.passed = 0;
        }
        self.passed >= self.limit
    }

    /// A line at `now`: `Some(n)` when it may be written, `n` being how many were left out since
    /// the last one written; `None` when it must be left out (it is counted).
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        if self.is_full(now) {
            self.left_out += 1;
            return None;
        }
        self.passed += 1;
        Some(std::mem::take(&mut self.left_out))
    }

    /// Whether a line at `now` would [`pass`](Window::pass), asked before the line is built;
    /// a `false` counts it as left out (it will not reach `pass`).
    pub fn admits(&mut self, now: Instant) -> bool {
        if self.is_full(now) {
            self.left_out += 1;
            return false;
        }
        true
    }
}

/// A [`Window`] to keep in a `static` beside the line it caps.
#[derive(Debug)]
pub struct LogRate(Mutex<Window>);

impl LogRate {
    /// A cap of `limit` lines a second.
    pub const fn per_second(limit: u32) -> LogRate {
        LogRate(Mutex::new(Window::new(limit, Duration::from_secs(1))))
    }

    /// `Some(n)` when this line may be written, `n` being how many were left out since the last
    /// one written; `None` when it must be left out (it is counted).
    pub fn allow(&self) -> Option<u64> {
        lock(&self.0).pass(Instant::now())
    }
}

/// A [`Window`] of [`PER_CALL_SITE_LIMIT`] per [`PER_CALL_SITE_WINDOW`] for each `tracing` call
/// site, made when the site first logs. Call sites are the macros in the program's code: a fixed,
/// small set, so the map is bounded.
#[derive(Debug, Default)]
pub struct PerCallSite {
    sites: Mutex<HashMap<Identifier, Window>>,
}

impl PerCallSite {
    /// No call site seen yet.
    pub fn new() -> PerCallSite {
        PerCallSite::default()
    }

    fn window<'a>(sites: &'a mut HashMap<Identifier, Window>, site: &Identifier) -> &'a mut Window {
        sites
            .entry(site.clone())
            .or_insert_with(|| Window::new(PER_CALL_SITE_LIMIT, PER_CALL_SITE_WINDOW))
    }

    /// [`Window::admits`] for `site`'s window: for a filter, before the event is built.
    pub fn admits(&self, site: &Identifier, now: Instant) -> bool {
        Self::window(&mut lock(&self.sites), site).admits(now)
    }

    /// [`Window::pass`] for `site`'s window.
    pub fn pass(&self, site: &Identifier, now: Instant) -> Option<u64> {
        Self::window(&mut lock(&self.sites), site).pass(now)
    }
}

/// The note added to the first event that passes after `left_out` were left out.
pub fn more_like_this(left_out: u64) -> String {
    format!(" (…and {left_out} more like this)")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent counts.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_counted_and_reported_by_the_next_window() {
        let rate = LogRate::per_second(2);
        assert_eq!(rate.allow(), Some(0));
        assert_eq!(rate.allow(), Some(0));
        assert_eq!(rate.allow(), None);
        assert_eq!(rate.allow(), None);
        lock(&rate.0).start = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(rate.allow(), Some(2));
    }

    struct Site1;
    impl tracing::Callsite for Site1 {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }
    static SITE: Site1 = Site1;

    #[test]
    fn a_call_site_passes_a_few_per_window_then_says_how_many_were_left_out() {
        let sites = PerCallSite::new();
        let id = Identifier(&SITE);
        let t0 = Instant::now();
        for _ in 0..PER_CALL_SITE_LIMIT {
            assert!(sites.admits(&id, t0));
            assert_eq!(sites.pass(&id, t0), Some(0));
        }
        for _ in 0..999 {
            assert_eq!(sites.pass(&id, t0), None);
        }
        assert!(
            !sites.admits(&id, t0),
            "the thousandth is left out by the filter"
        );
        let later = t0 + PER_CALL_SITE_WINDOW;
        assert!(sites.admits(&id, later));
        assert_eq!(sites.pass(&id, later), Some(1000));
        assert_eq!(more_like_this(3), " (…and 3 more like this)");
    }
}
