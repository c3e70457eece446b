//! `h2chat bench`: load generators that measure the server from outside, with our own client.
//!
//! Every bench prints one JSON line ([`report`]) for scripts and a short summary for people.
//! Loads are bounded in count and in time and stop by themselves; given the server's process id,
//! a bench also reports the server's CPU time and memory from `/proc` ([`proc`]).
//!
//! # Layout
//! - [`fanout`]: rooms, members, senders; losses, gaps, deliveries/s, latency, CPU per delivery.
//! - [`idle`]: many joined members doing nothing; server memory per connection and per member.
//! - [`storm`]: many members joining one room at once; events delivered, server CPU and memory.
//! - [`raw_h2`]: the baseline: an h2 server with no gRPC layer that echoes a gRPC-shaped response.
//! - [`write_floor`]: the floor under fan-out: plain TCP, one write per delivery, no h2, no gRPC.
//! - [`unary`]: the request `h2load` sends for the unary bench, and a check that a server answers it.
//! - [`members`]: connecting and joining many members at once (shared by fanout and idle).
//! - [`event`]: a received chat event decoded only as far as the bench needs; the stamp in a post.
//! - [`ticker`]: a thread that releases posts on schedule.
//! - [`histogram`]: a log-linear latency histogram.
//! - [`proc`]: CPU time and memory of a process from `/proc`.
//! - [`report`]: the one-line JSON report.

pub mod event;
pub mod fanout;
pub mod histogram;
pub mod idle;
pub mod members;
pub mod proc;
pub mod raw_h2;
pub mod report;
pub mod storm;
pub mod ticker;
pub mod unary;
pub mod write_floor;

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use histogram::Histogram;
use proc::{CpuTime, ProcSample};
use report::Report;

/// Why a bench could not run (bad arguments, server unreachable, a join refused, a deadline).
/// What goes wrong *during* a run is counted in the report instead.
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> BenchError {
        BenchError(message.into())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// What a bench produced: the JSON report and a few lines for people.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The figures (see each bench for its keys).
    pub report: Report,
    /// A human summary of the same figures.
    pub summary: String,
}

/// The bench's own time base: stamps and latencies are nanoseconds since it was made. Only one
/// process reads it, so no clock is shared with the server.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    t0: std::time::Instant,
}

impl Clock {
    /// A time base starting now.
    pub fn new() -> Clock {
        Clock {
            t0: std::time::Instant::now(),
        }
    }

    /// Nanoseconds since the time base started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The instant `after` from now; a duration too long to add (a huge `--timeout`) is a century.
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

/// What a deadline too far away to represent becomes.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Reads the server's `/proc` figures when its process id was given.
///
/// Errors: the process cannot be read (wrong id, not Linux).
pub fn sample_server(pid: Option<u32>) -> Result<Option<ProcSample>, BenchError> {
    pid.map(|pid| {
        ProcSample::read(pid)
            .map_err(|e| BenchError::new(format!("reading /proc for server pid {pid}: {e}")))
    })
    .transpose()
}

/// Adds `client_cpu_s` and `client_cpu_util` (CPU seconds per wall-clock second): a value near
/// 1.0 on a client pinned to one core means the client, not the server, may be the limit.
pub fn add_client_cpu(
    report: &mut Report,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    wall_s: f64,
) {
    let cpu = before.zip(after).map(|(b, a)| a.cpu_seconds_since(&b));
    report
        .opt_float("client_cpu_s", cpu)
        .opt_float("client_cpu_util", cpu.map(|c| c / wall_s));
}

/// Adds `server_cpu_s`; `server_ns_per_delivery` and its split, `server_user_ns_per_delivery`
/// (user space) and `server_sys_ns_per_delivery` (the kernel), all null without deliveries;
/// `server_write_calls` and `server_write_calls_per_delivery` (null where `/proc/PID/io` cannot be
/// read): how many deliveries one write system call carried; `server_rss_kib` and
/// `server_peak_rss_kib`; everything null without a server pid. The split is sampled tick by tick
/// (see [`proc`]), so it needs runs of seconds.
pub fn add_server_figures(
    report: &mut Report,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    deliveries: u64,
) {
    let cpu = before.zip(after).map(|(b, a)| a.cpu_since(&b));
    let write_calls = before
        .zip(after)
        .and_then(|(b, a)| Some(a.write_calls?.saturating_sub(b.write_calls?)));
    let per_delivery = |seconds: fn(&CpuTime) -> f64| {
        cpu.as_ref()
            .filter(|_| deliveries > 0)
            .map(|c| seconds(c) * 1e9 / deliveries as f64)
    };
    report
        .opt_float("server_cpu_s", cpu.map(|c| c.total_s))
        .opt_float("server_ns_per_delivery", per_delivery(|c| c.total_s))
        .opt_float("server_user_ns_per_delivery", per_delivery(|c| c.user_s))
        .opt_float("server_sys_ns_per_delivery", per_delivery(|c| c.sys_s))
        .opt_int("server_write_calls", write_calls)
        .opt_float(
            "server_write_calls_per_delivery",
            write_calls
                .filter(|_| deliveries > 0)
                .map(|w| w as f64 / deliveries as f64),
        )
        .opt_int("server_rss_kib", after.map(|a| a.rss_kib))
        .opt_int("server_peak_rss_kib", after.map(|a| a.peak_rss_kib));
}

/// Adds `p50_us`, `p90_us`, `p99_us` and `max_us` of latencies recorded in nanoseconds.
pub fn add_latency(report: &mut Report, latency: &Histogram) {
    let us = |ns: u64| ns as f64 / 1e3;
    report
        .float("p50_us", us(latency.quantile(0.50)))
        .float("p90_us", us(latency.quantile(0.90)))
        .float("p99_us", us(latency.quantile(0.99)))
        .float("max_us", us(latency.max()));
}

/// The summary line of the keys [`add_latency`] adds.
pub fn latency_line(r: &Report) -> String {
    let ms = |k: &str| r.number(k) / 1e3;
    format!(
        "latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms("p50_us"),
        ms("p90_us"),
        ms("p99_us"),
        ms("max_us")
    )
}

/// The summary line of the keys [`add_client_cpu`] adds.
pub fn client_line(r: &Report) -> String {
    format!(
        "client: {:.2} s CPU ({:.0}% of one core)",
        r.number("client_cpu_s"),
        r.number("client_cpu_util") * 100.0
    )
}

/// The summary line of the keys [`add_server_figures`] adds; `unit` names what a delivery is
/// (`delivery`, `write`).
pub fn server_line(r: &Report, unit: &str) -> String {
    let f = |k: &str| r.number(k);
    format!(
        "server: {:.2} s CPU, {:.0} ns/{unit} (user {:.0}, kernel {:.0}), {:.2} write calls/{unit}, \
         RSS {:.1} MiB (peak {:.1} MiB)",
        f("server_cpu_s"),
        f("server_ns_per_delivery"),
        f("server_user_ns_per_delivery"),
        f("server_sys_ns_per_delivery"),
        f("server_write_calls_per_delivery"),
        f("server_rss_kib") / 1024.0,
        f("server_peak_rss_kib") / 1024.0
    )
}

/// Runs `work` to its end unless `stop` turns true first; says whether it was stopped.
pub(crate) async fn stopped_before_done(
    work: impl std::future::Future<Output = ()>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        () = work => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Waits for every task until `deadline`; then tells the rest to stop (through `stop`) and waits
/// for them. Errors: a task panicked or was cancelled.
pub(crate) async fn wait_all<T>(
    tasks: Vec<JoinHandle<T>>,
    deadline: Instant,
    stop: &watch::Sender<bool>,
) -> Result<Vec<T>, BenchError> {
    let mut out = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        let result = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(r) => r,
            Err(_) => {
                stop.send_replace(true);
                task.await
            }
        };
        out.push(result.map_err(|e| BenchError::new(format!("bench task failed: {e}")))?);
    }
    Ok(out)
}
