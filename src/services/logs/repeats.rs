//! Repeated log messages, limited: a peer that makes the server log the same thing over and over
//! (a protocol violation per frame, a refusal per call) must not flood stderr or flush every
//! other entry out of the WatchLogs ring.
//!
//! Per call site (one `warn!`/`debug!` in the code), at most [`MAX_REPEATS_PER_WINDOW`] events
//! pass in each [`REPEAT_WINDOW`]; the rest are dropped and counted, and the first event of that
//! call site to pass afterwards carries "(…and N more like this)".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;

/// Events of one call site that pass per window.
pub const MAX_REPEATS_PER_WINDOW: u32 = 20;
/// The window over which [`MAX_REPEATS_PER_WINDOW`] applies.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Counts events per call site; see the module documentation.
#[derive(Debug, Default)]
pub struct RepeatLimiter {
    sites: Mutex<HashMap<Identifier, Site>>,
}

#[derive(Debug)]
struct Site {
    window_start: Instant,
    passed: u32,
    dropped: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Drop it (counted).
    Drop,
    /// Let it through; `dropped` events of its call site were dropped since the last one that
    /// passed.
    Pass {
        /// Events dropped before this one.
        dropped: u64,
    },
}

impl RepeatLimiter {
    /// A limiter with no history.
    pub fn new() -> RepeatLimiter {
        RepeatLimiter::default()
    }

    /// Whether an event of `site`, happening `now`, passes.
    pub fn check(&self, site: Identifier, now: Instant) -> Verdict {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        // Call sites are the `tracing` macros in the code: a fixed, small set.
        let entry = sites.entry(site).or_insert(Site {
            window_start: now,
            passed: 0,
            dropped: 0,
        });
        if now.duration_since(entry.window_start) >= REPEAT_WINDOW {
            entry.window_start = now;
            entry.passed = 0;
        }
        if entry.passed >= MAX_REPEATS_PER_WINDOW {
            entry.dropped += 1;
            return Verdict::Drop;
        }
        entry.passed += 1;
        Verdict::Pass {
            dropped: std::mem::take(&mut entry.dropped),
        }
    }

    /// Whether an event of `site` will pass [`check`](RepeatLimiter::check) now: asked before
    /// the event is built, by a filter. A `false` counts the event as dropped (it will not reach
    /// `check`).
    pub fn admit(&self, site: &Identifier, now: Instant) -> bool {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        match sites.get_mut(site) {
            Some(s)
                if s.passed >= MAX_REPEATS_PER_WINDOW
                    && now.duration_since(s.window_start) < REPEAT_WINDOW =>
            {
                s.dropped += 1;
                false
            }
            _ => true,
        }
    }
}

/// The note added to the first message that passes after some were dropped.
pub fn more_like_this(dropped: u64) -> String {
    format!(" (…and {dropped} more like this)")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site1;
    impl tracing::Callsite for Site1 {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }
    static SITE: Site1 = Site1;

    #[test]
    fn a_call_site_passes_a_few_per_window_then_says_how_many_it_dropped() {
        let limiter = RepeatLimiter::new();
        let id = || Identifier(&SITE);
        let t0 = Instant::now();
        for _ in 0..MAX_REPEATS_PER_WINDOW {
            assert_eq!(limiter.check(id(), t0), Verdict::Pass { dropped: 0 });
        }
        for _ in 0..999 {
            assert_eq!(limiter.check(id(), t0), Verdict::Drop);
        }
        assert!(
            !limiter.admit(&id(), t0),
            "the thousandth is dropped by the filter"
        );
        let later = t0 + REPEAT_WINDOW;
        assert!(limiter.admit(&id(), later));
        assert_eq!(limiter.check(id(), later), Verdict::Pass { dropped: 1000 });
        assert_eq!(more_like_this(3), " (…and 3 more like this)");
    }
}
