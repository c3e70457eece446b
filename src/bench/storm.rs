//! `bench join-storm`: many members joining one room at once — how many events the server delivers
//! for it (histories, join confirmations, presence), its CPU time and its peak memory.
//!
//! Member 0 joins first, alone; then every other member joins over `conns` connections,
//! [`JOIN_CONCURRENCY`] at a time, and reads from the moment it is joined, as a real client would
//! (the costliest case: a member that reads late gets what piled up merged). The storm is over
//! when member 0 has been told of every join (one event per join in a small room, presence events
//! counting several in a large one); `settle` later the events every member received are summed.
//! Nobody posts, so every event counted is presence or history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::event::scan;
use super::members::{check_open_files, connect_all, join, room_names, JoinSpec, JOIN_CONCURRENCY};
use super::report::Report;
use super::{deadline_after, sample_server, BenchError, Outcome};
use crate::cli::Seconds;
use crate::grpc::client::ClientCall;

/// Default pause after the storm before the events are summed.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// Default bound on the whole storm.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run: the bench's command line (`h2chat bench join-storm --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct StormConfig {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Members joining the room.
    #[arg(long, default_value_t = 5000)]
    pub members: usize,
    /// Connections they join over.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pause after the storm before the events are summed.
    #[arg(long, default_value_t = Seconds(DEFAULT_SETTLE))]
    pub settle: Seconds,
    /// Bound on the whole storm.
    #[arg(long, default_value_t = Seconds(DEFAULT_TIMEOUT))]
    pub timeout: Seconds,
}

/// Counts shared by every member's reader.
#[derive(Default)]
struct Tally {
    /// Events received by every member.
    events: AtomicU64,
    /// Joins member 0 has been told of (its own included).
    first_saw: AtomicU64,
    /// Woken when `first_saw` grows.
    grew: Notify,
}

/// Runs the bench. Errors when it cannot run: bad arguments, too few open files, a connection or
/// a join that fails, or the timeout.
pub async fn run(cfg: StormConfig) -> Result<Outcome, BenchError> {
    if cfg.conns == 0 || cfg.members == 0 {
        return Err(BenchError::new("--conns and --members must be at least 1"));
    }
    check_open_files(cfg.conns)?;
    let deadline = deadline_after(cfg.timeout.0);
    let channels = connect_all(cfg.addr, cfg.conns, deadline).await?;
    let room = room_names(1).remove(0);
    let tally = Arc::new(Tally::default());
    let before = sample_server(cfg.server_pid)?;
    let t = Instant::now();

    let spec = |i: usize| JoinSpec {
        room: room.clone(),
        name: format!("m{i}"),
        channel: i % cfg.conns,
    };
    let first = join(&channels[0], &spec(0)).await?;
    let mut readers = vec![tokio::spawn(read(first, tally.clone(), true))];
    let limit = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut joins = Vec::with_capacity(cfg.members);
    for i in 1..cfg.members {
        let (channel, spec, limit) = (channels[i % cfg.conns].clone(), spec(i), limit.clone());
        let tally = tally.clone();
        joins.push(tokio::spawn(async move {
            let call = {
                let _permit = limit.acquire_owned().await;
                join(&channel, &spec).await?
            };
            Ok::<_, BenchError>(tokio::spawn(read(call, tally, false)))
        }));
    }
    for j in joins {
        let joined = tokio::time::timeout_at(deadline, j)
            .await
            .map_err(|_| BenchError::new("joining did not finish in time"))?
            .map_err(|e| BenchError::new(format!("join task failed: {e}")))??;
        readers.push(joined);
    }
    let join_s = t.elapsed().as_secs_f64();
    let all = cfg.members as u64;
    let told = async {
        loop {
            let notified = tally.grew.notified();
            if tally.first_saw.load(Ordering::Relaxed) >= all {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout_at(deadline, told).await.map_err(|_| {
        BenchError::new(format!(
            "member 0 was told of {} of {all} joins before the timeout",
            tally.first_saw.load(Ordering::Relaxed)
        ))
    })?;
    let told_s = t.elapsed().as_secs_f64();
    let after = sample_server(cfg.server_pid)?;
    tokio::time::sleep(cfg.settle.0).await;
    let events = tally.events.load(Ordering::Relaxed);
    for r in &readers {
        r.abort();
    }

    let mut report = Report::new("join-storm");
    report
        .int("members", all)
        .int("conns", cfg.conns as u64)
        .float("join_s", join_s)
        .float("presence_complete_s", told_s)
        .int("events_delivered", events)
        .float("events_per_member", events as f64 / all as f64)
        .opt_float(
            "server_cpu_s",
            before.zip(after).map(|(b, a)| a.cpu_seconds_since(&b)),
        )
        .opt_int("server_rss_kib", after.map(|a| a.rss_kib))
        .opt_int("server_peak_rss_kib", after.map(|a| a.peak_rss_kib));
    let f = |k: &str| report.number(k);
    let mut summary = format!(
        "join storm: {all} members into one room over {} connections: joined in {:.2} s, member 0 \
         told of every join after {:.2} s\n{events} events delivered ({:.2} per member)",
        cfg.conns,
        f("join_s"),
        f("presence_complete_s"),
        f("events_per_member"),
    );
    if cfg.server_pid.is_some() {
        summary.push_str(&format!(
            "\nserver: {:.2} s CPU, RSS {:.1} MiB (peak {:.1} MiB)",
            f("server_cpu_s"),
            f("server_rss_kib") / 1024.0,
            f("server_peak_rss_kib") / 1024.0
        ));
    }
    drop(channels);
    Ok(Outcome { report, summary })
}

/// Reads a member's events until its call ends, counting them; member 0 also counts the joins it
/// is told of.
async fn read(mut call: ClientCall, tally: Arc<Tally>, first: bool) {
    while let Ok(Some(msg)) = call.recv_raw().await {
        tally.events.fetch_add(1, Ordering::Relaxed);
        if first {
            let joins = scan(&msg).map_or(0, |e| e.joins());
            if joins > 0 {
                tally.first_saw.fetch_add(joins, Ordering::Relaxed);
                tally.grew.notify_waiters();
            }
        }
    }
}
