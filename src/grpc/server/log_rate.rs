//! A cap on how often one kind of log line is written, so that a peer cannot flood the log.
//!
//! Each kind of line that a peer can cause at will (a refused call, a limit hit) gets a
//! [`LogRate`] in a `static`. Within one second at most its limit of lines pass; the rest are
//! counted, and the next line that passes says how many were left out (`suppressed`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit applies to.
const WINDOW: Duration = Duration::from_secs(1);

/// At most `limit` lines a second; see the module documentation.
pub struct LogRate {
    limit: u32,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogRate {
    /// A cap of `limit` lines a second.
    pub const fn new(limit: u32) -> LogRate {
        LogRate {
            limit,
            state: Mutex::new(State {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this line may be written, `n` being how many were left out since the last
    /// one written; `None` when it must be left out (it is counted).
    pub fn allow(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if st
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            st.window_start = Some(now);
            st.used = 0;
        }
        if st.used >= self.limit {
            st.suppressed += 1;
            return None;
        }
        st.used += 1;
        Some(std::mem::take(&mut st.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_counted_and_reported_by_the_next_window() {
        let rate = LogRate::new(2);
        assert_eq!(rate.allow(), Some(0));
        assert_eq!(rate.allow(), Some(0));
        assert_eq!(rate.allow(), None);
        assert_eq!(rate.allow(), None);
        rate.state.lock().unwrap().window_start = Some(Instant::now() - WINDOW);
        assert_eq!(rate.allow(), Some(2));
    }
}
