//! A thread that releases a bench's posts on schedule: post k at k / rate seconds.
//!
//! tokio's timer has millisecond resolution, which would turn 5,000 posts/s into bursts of 5
//! every millisecond; a thread with sub-millisecond sleeps keeps the schedule.

use std::time::Duration;

use tokio::sync::watch;

/// Ticks `1..=count`, tick `k` at `(k - 1) / rate` seconds from now: post k (from 0) may go out
/// once the value reaches k + 1. The thread ends after the last tick, or as soon as every receiver
/// is gone. A tick too far away to be represented (a tiny rate) never comes.
///
/// Errors: the thread cannot be started.
pub fn ticker(rate: f64, count: u64) -> std::io::Result<watch::Receiver<u64>> {
    let (tx, rx) = watch::channel(0);
    let start = std::time::Instant::now();
    std::thread::Builder::new()
        .name("bench-ticker".into())
        .spawn(move || {
            for k in 1..=count {
                let after = Duration::try_from_secs_f64((k - 1) as f64 / rate);
                let Some(due) = after.ok().and_then(|d| start.checked_add(d)) else {
                    return;
                };
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(k).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
