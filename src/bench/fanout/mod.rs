//! `bench fanout`: members of chat rooms receive what a few of them post, and every delivery is
//! checked and timed.
//!
//! - Every member is one `Chat` call, joined before anything is posted; members are spread over
//!   the connections round-robin. Each member runs in its own task and decodes only `seq`, `kind`,
//!   the gap range and the stamp at the front of the text ([`super::event`]).
//! - Each sender posts `messages` texts of `size` bytes whose stamp holds the send time; a member
//!   records `now - sent` for every post it receives, its own included (the echo is the ack).
//! - Pacing: a sender never lets its room's posts get more than `window` ahead of the room's
//!   slowest member (counted by the bench itself, not by the server), so a flat-out run measures
//!   the server, not the history window. It wakes when its own echo arrives, and looks again at
//!   least every millisecond. With a rate the senders also keep to their schedule: post k at
//!   k / rate seconds, released by a thread with sub-millisecond sleeps (tokio's timer would send
//!   them in bursts, once per millisecond).
//! - Nothing is hidden: every gap event, every missed or repeated sequence number and every post
//!   that did not reach every member is counted; `lost` is `expected - delivered`.
//! - Bounded: set-up and sending end by `timeout`; members get `drain` after the last post to
//!   receive the rest, then stop where they are.
//! - A flood (`--window 0`): the senders post as fast as the server reads, with no pacing of their
//!   own; only the server's backpressure holds them. `--stalled N` makes the last N members of each
//!   room read nothing until the flood is over (the senders are done and every reading member has
//!   everything, so the room no longer moves), each on a connection of its own with a small
//!   window ([`STALLED_WINDOW_BYTES`]); then they read what the server has for them (a gap, and the
//!   room's history) until [`STALLED_IDLE`] passes with nothing new. They are counted apart: the
//!   report's `expected`, `lost` and `gap_events` are the reading members'.

mod member;
mod sender;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::grpc::client::{CallReceiver, CallSender, Channel, ChannelConfig, ClientCall};

use member::{run_member, MemberCtx, MemberStats, RoomProgress, Slot};
use sender::{run_sender, SenderCtx, SenderStats};

use super::members::{check_open_files, connect_spread, join_all, room_names, JoinSpec};
use super::proc::ProcSample;
use super::report::{Report, Value};
use super::ticker::ticker;
use super::{
    add_client_cpu, add_latency, add_server_figures, client_line, deadline_after, latency_line,
    sample_server, server_line, wait_all, BenchError, Clock, Outcome,
};
use crate::cli::Seconds;

/// Default number of a room's posts that may be ahead of its slowest member: half the server's
/// default history, so a member that keeps up within the window never gets a gap.
pub const DEFAULT_WINDOW: usize = 500;
/// Default bound on set-up plus sending.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time members have after the last post to receive everything.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// The receive window of a stalled member's connection and call: what it takes before it stalls.
pub const STALLED_WINDOW_BYTES: u32 = 16 << 10;
/// A stalled member, reading at last, is done when nothing has come for this long.
pub const STALLED_IDLE: Duration = Duration::from_secs(1);

/// What to run: the bench's command line (`h2chat bench fanout --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct FanoutConfig {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Other servers sharing the rooms (`serve --redis`, the same Redis), repeatable: with P of
    /// them, connection c goes to --addr when c % (P + 1) is 0 and to the (c % (P + 1))th peer
    /// otherwise, so the senders (each room's first member, on connection 0 of its room when
    /// --members is a multiple of P + 1) post on --addr and the other nodes' members receive
    /// across nodes; their latency is also reported apart (`peer_p50_us`, `peer_p99_us`).
    #[arg(long)]
    pub peer: Vec<SocketAddr>,
    /// Number of rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Members per room that post (the first ones of each room).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Posts per sender.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Bytes of each post's text (at least its stamp, about 20 bytes).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Posts per second per sender (default: flat out, paced by acks).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections to spread all members over (default: one per member).
    #[arg(long)]
    pub conns: Option<usize>,
    /// Posts a room may have ahead of its slowest member; 0 = a flood: no pacing at all, only the
    /// server's backpressure holds the senders.
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: usize,
    /// Members per room (the last ones) that read nothing until the flood is over (the senders
    /// are done and every other member has everything), each on a connection of its own with a
    /// small window (needs --window 0).
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Bound on set-up plus sending.
    #[arg(long, default_value_t = Seconds(DEFAULT_TIMEOUT))]
    pub timeout: Seconds,
    /// Time after the last post for the members to receive everything.
    #[arg(long, default_value_t = Seconds(DEFAULT_DRAIN))]
    pub drain: Seconds,
}

impl FanoutConfig {
    fn check(&self) -> Result<(), BenchError> {
        let fail = |m: &str| Err(BenchError::new(m));
        if self.rooms == 0 || self.members == 0 || self.messages == 0 {
            return fail("--rooms, --members and --messages must be at least 1");
        }
        if self.senders == 0 || self.senders > self.members {
            return fail("--senders must be between 1 and --members");
        }
        if self.stalled > 0 && (self.window > 0 || self.stalled > self.members - self.senders) {
            return fail("--stalled needs --window 0 and at most --members minus --senders");
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return fail("--rate must be a positive number of posts per second");
        }
        if self.conns == Some(0) {
            return fail("--conns must be at least 1");
        }
        Ok(())
    }
}

/// Runs the bench. Errors only when it cannot run (connecting, joining, bad arguments); losses
/// and failed calls during the run are in the report.
pub async fn run(cfg: FanoutConfig) -> Result<Outcome, BenchError> {
    cfg.check()?;
    let cfg = Arc::new(cfg);
    let deadline = deadline_after(cfg.timeout.0);
    let total = cfg.rooms * (cfg.members - cfg.stalled);
    let conns = cfg.conns.unwrap_or(total).min(total);
    check_open_files(conns + cfg.rooms * cfg.stalled)?;
    let clock = Clock::new();

    let join_start = Instant::now();
    let nodes: Vec<SocketAddr> = std::iter::once(cfg.addr).chain(cfg.peer.clone()).collect();
    let channels = connect_spread(&nodes, conns, deadline).await?;
    let names = room_names(cfg.rooms);
    let calls = join_members(&cfg, &names, &channels, conns, deadline).await?;
    let stalled = join_stalled(&cfg, &names, deadline).await?;
    let join_s = join_start.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (flood_over, flood_over_rx) = watch::channel(false);
    let cast = spawn_members(&cfg, calls, stalled, clock, &stop_rx, &flood_over_rx);

    let server_before = sample_server(cfg.server_pid)?;
    let self_before = ProcSample::read_self().ok();
    let start = Instant::now();
    let start_ns = clock.now_ns();
    let ticks = match cfg.rate {
        Some(rate) => Some(
            ticker(rate, cfg.messages as u64)
                .map_err(|e| BenchError::new(format!("starting the ticker thread: {e}")))?,
        ),
        None => None,
    };
    let senders: Vec<_> = cast
        .senders
        .into_iter()
        .map(|(tx, ctx)| {
            let stop = stop_rx.clone();
            tokio::spawn(run_sender(tx, ctx, cfg.clone(), ticks.clone(), stop))
        })
        .collect();
    let senders = wait_all(senders, deadline, &stop_tx).await?;
    let senders_end = Instant::now();
    let drain_deadline = deadline_after(cfg.drain.0).min(deadline.max(Instant::now()));
    // The reading members first: until they have everything the room still moves, and a stalled
    // member that read then could fall behind the ring a second time while it catches up.
    let mut members = wait_all(cast.reading, drain_deadline, &stop_tx).await?;
    flood_over.send_replace(true);
    let stalled_deadline = deadline_after(cfg.drain.0);
    members.extend(wait_all(cast.stalled, stalled_deadline, &stop_tx).await?);
    let end = Instant::now();
    let server_after = sample_server(cfg.server_pid)?;
    let self_after = ProcSample::read_self().ok();

    let mut report = Report::new("fanout");
    add_setup(&mut report, &cfg, conns, join_s);
    let sender_stats: Vec<&SenderStats> = senders.iter().map(|(stats, _)| stats).collect();
    let (member_stats, stalled_stats): (Vec<&MemberStats>, Vec<&MemberStats>) = members
        .iter()
        .map(|(stats, _)| stats)
        .partition(|stats| !stats.stalled_member);
    let delivered = add_outcome(
        &mut report,
        &cfg,
        &cast.rooms,
        &sender_stats,
        &member_stats,
        (start_ns, end.duration_since(start)),
    );
    add_stalled(&mut report, &stalled_stats);
    let send_s = senders_end.duration_since(start).as_secs_f64();
    report.float("send_s", send_s).float(
        "sender_posts_per_s",
        sender_stats.iter().map(|s| s.posted).sum::<u64>() as f64 / send_s,
    );
    let wall = end.duration_since(start).as_secs_f64();
    add_client_cpu(&mut report, self_before, self_after, wall);
    add_server_figures(&mut report, server_before, server_after, delivered);
    let summary = summary(&report, &cfg, conns);
    // Ending the calls makes every member leave; nothing is measured any more.
    drop((members, senders, cast.quiet_halves, channels));
    Ok(Outcome { report, summary })
}

/// Joins every member: room `g / members`, name `m{g % members}`, on connection `g % conns`.
async fn join_members(
    cfg: &FanoutConfig,
    names: &[Arc<str>],
    channels: &[Channel],
    conns: usize,
    deadline: Instant,
) -> Result<Vec<ClientCall>, BenchError> {
    let reading = cfg.members - cfg.stalled;
    let specs = (0..cfg.rooms * reading)
        .map(|g| JoinSpec {
            room: names[g / reading].clone(),
            name: format!("m{}", g % reading),
            channel: g % conns,
        })
        .collect();
    join_all(channels, specs, deadline).await
}

/// Joins the stalled members, `m{members - stalled}` and up in each room, each on a connection of
/// its own with a small window ([`STALLED_WINDOW_BYTES`]).
async fn join_stalled(
    cfg: &FanoutConfig,
    names: &[Arc<str>],
    deadline: Instant,
) -> Result<Vec<ClientCall>, BenchError> {
    let mut channels = Vec::new();
    let mut specs = Vec::new();
    for room in names {
        for j in cfg.members - cfg.stalled..cfg.members {
            let config = ChannelConfig {
                stream_window_bytes: STALLED_WINDOW_BYTES,
                connection_window_bytes: STALLED_WINDOW_BYTES,
                ..ChannelConfig::default()
            };
            let connect = Channel::connect_with(cfg.addr, config);
            let channel = tokio::time::timeout_at(deadline, connect)
                .await
                .map_err(|_| BenchError::new("connecting a stalled member: timed out"))?
                .map_err(|e| BenchError::new(format!("connecting a stalled member: {e}")))?;
            specs.push(JoinSpec {
                room: room.clone(),
                name: format!("m{j}"),
                channel: channels.len(),
            });
            channels.push(channel);
        }
    }
    let calls = join_all(&channels, specs, deadline).await?;
    // The calls keep their connections open.
    drop(channels);
    Ok(calls)
}

/// The joined calls, put to work: every member's receiving half reads in a task of its own; the
/// first `senders` members of each room also post (their sending halves wait for the start).
struct Cast {
    rooms: Vec<Arc<RoomProgress>>,
    /// The members that read from the start.
    reading: Vec<tokio::task::JoinHandle<(MemberStats, CallReceiver)>>,
    /// The stalled members ([`MemberCtx::hold`]).
    stalled: Vec<tokio::task::JoinHandle<(MemberStats, CallReceiver)>>,
    senders: Vec<(CallSender, SenderCtx)>,
    /// The sending halves of members that never post, kept open so they stay joined.
    quiet_halves: Vec<CallSender>,
}

fn spawn_members(
    cfg: &FanoutConfig,
    calls: Vec<ClientCall>,
    stalled: Vec<ClientCall>,
    clock: Clock,
    stop_rx: &watch::Receiver<bool>,
    flood_over: &watch::Receiver<bool>,
) -> Cast {
    let total = cfg.rooms * cfg.members;
    let rooms: Vec<Arc<RoomProgress>> = (0..cfg.rooms)
        .map(|_| {
            Arc::new(RoomProgress {
                posted: AtomicU64::new(0),
                accounted: (0..cfg.members).map(|_| Slot::default()).collect(),
            })
        })
        .collect();
    let expected_each = (cfg.senders * cfg.messages) as u64;
    let mut members = Vec::with_capacity(total);
    let mut held = Vec::with_capacity(cfg.rooms * cfg.stalled);
    let mut senders = Vec::with_capacity(cfg.rooms * cfg.senders);
    let mut quiet_halves = Vec::with_capacity(total);
    let reading = cfg.members - cfg.stalled;
    for (g, call) in stalled.into_iter().enumerate() {
        let (r, j) = (g / cfg.stalled, reading + g % cfg.stalled);
        let (tx, rx) = call.split();
        quiet_halves.push(tx);
        let ctx = MemberCtx {
            room: rooms[r].clone(),
            index: j,
            expected: expected_each,
            own: None,
            clock,
            hold: Some(flood_over.clone()),
        };
        held.push(tokio::spawn(run_member(rx, ctx, stop_rx.clone())));
    }
    for (g, call) in calls.into_iter().enumerate() {
        let (r, j) = (g / reading, g % reading);
        let room = rooms[r].clone();
        let (tx, rx) = call.split();
        let own = if j < cfg.senders {
            let id = (r * cfg.senders + j) as u32;
            let notify = Arc::new(Notify::new());
            let ctx = SenderCtx {
                room: room.clone(),
                id,
                notify: notify.clone(),
                clock,
            };
            senders.push((tx, ctx));
            Some((id, notify))
        } else {
            quiet_halves.push(tx);
            None
        };
        let ctx = MemberCtx {
            room,
            index: j,
            expected: expected_each,
            own,
            clock,
            hold: None,
        };
        members.push(tokio::spawn(run_member(rx, ctx, stop_rx.clone())));
    }
    Cast {
        rooms,
        reading: members,
        stalled: held,
        senders,
        quiet_halves,
    }
}

/// What the stalled members saw once they read: each should have one gap.
fn add_stalled(report: &mut Report, stalled: &[&MemberStats]) {
    let count = |f: &dyn Fn(&MemberStats) -> u64| stalled.iter().map(|s| f(s)).sum::<u64>();
    report
        .int("stalled_members", stalled.len() as u64)
        .int("stalled_gap_events", count(&|s| s.gap_events))
        .int(
            "stalled_with_one_gap",
            stalled.iter().filter(|s| s.gap_events == 1).count() as u64,
        )
        .int("stalled_missed_in_gaps", count(&|s| s.missed))
        .int("stalled_delivered", count(&|s| s.delivered))
        .int("stalled_seq_errors", count(&|s| s.seq_errors));
}

/// The run's shape, as configured.
fn add_setup(report: &mut Report, cfg: &FanoutConfig, conns: usize, join_s: f64) {
    report
        .int("rooms", cfg.rooms as u64)
        .int("members_per_room", cfg.members as u64)
        .int("senders_per_room", cfg.senders as u64)
        .int("messages_per_sender", cfg.messages as u64)
        .int("size", cfg.size as u64)
        .opt_float("rate", cfg.rate)
        .int("conns", conns as u64)
        .str(
            "pacing",
            match (cfg.rate, cfg.window) {
                (Some(_), _) => "rate",
                (None, 0) => "none",
                (None, _) => "acks",
            },
        )
        .int("stalled_per_room", cfg.stalled as u64)
        .int("window", cfg.window as u64)
        .float("join_s", join_s);
}

/// What the senders and members counted, summed; returns the deliveries. `started` is the start
/// on the bench clock and the wall time until the members were done (the elapsed time when no
/// delivery was timed).
fn add_outcome(
    report: &mut Report,
    cfg: &FanoutConfig,
    rooms: &[Arc<RoomProgress>],
    senders: &[&SenderStats],
    members: &[&MemberStats],
    (start_ns, wall): (u64, Duration),
) -> u64 {
    let (mut posted, mut stalls, mut errors, mut first_error) = (0, 0, 0, None);
    for stats in senders {
        posted += stats.posted;
        stalls += stats.stalls;
        if let Some(e) = &stats.error {
            errors += 1;
            first_error.get_or_insert_with(|| format!("sender: {e}"));
        }
    }
    // What each room's members should have received: every post its senders began, each. A post
    // begun but never handed to h2 (a sender stopped mid-send) counts as lost, not as unsent.
    let expected: u64 = rooms
        .iter()
        .map(|room| room.posted.load(Ordering::Acquire) * (cfg.members - cfg.stalled) as u64)
        .sum();
    let mut all = MemberStats::default();
    let mut on_peer = super::histogram::Histogram::default();
    let conns = cfg.conns.unwrap_or(cfg.rooms * cfg.members).max(1);
    let mut stopped = 0;
    for (g, stats) in members.iter().enumerate() {
        if !(g % conns).is_multiple_of(cfg.peer.len() + 1) {
            on_peer.merge(&stats.latency);
        }
        all.delivered += stats.delivered;
        all.gap_events += stats.gap_events;
        all.missed += stats.missed;
        all.seq_errors += stats.seq_errors;
        all.undecodable += stats.undecodable;
        all.latency.merge(&stats.latency);
        all.last_ns = all.last_ns.max(stats.last_ns);
        stopped += u64::from(stats.stopped);
        if let Some(e) = &stats.error {
            errors += 1;
            first_error.get_or_insert_with(|| format!("member: {e}"));
        }
    }
    let planned = (cfg.rooms * cfg.senders * cfg.messages) as u64;
    let elapsed_s = if all.last_ns > start_ns {
        (all.last_ns - start_ns) as f64 / 1e9
    } else {
        wall.as_secs_f64()
    };
    report
        .int("planned_posts", planned)
        .int("posted", posted)
        .int("expected", expected)
        .int("delivered", all.delivered)
        .int("lost", expected.saturating_sub(all.delivered))
        .int("gap_events", all.gap_events)
        .int("missed_in_gaps", all.missed)
        .int("seq_errors", all.seq_errors)
        .int("undecodable", all.undecodable)
        .int("window_stalls", stalls)
        .int("members_stopped", stopped)
        .int("call_errors", errors)
        .float("elapsed_s", elapsed_s)
        .float("deliveries_per_s", all.delivered as f64 / elapsed_s)
        .float("posts_per_s", posted as f64 / elapsed_s);
    add_latency(report, &all.latency);
    if !cfg.peer.is_empty() {
        let us = |ns: u64| ns as f64 / 1e3;
        report
            .float("peer_p50_us", us(on_peer.quantile(0.50)))
            .float("peer_p99_us", us(on_peer.quantile(0.99)));
    }
    if let Some(e) = first_error {
        report.str("first_error", e);
    }
    all.delivered
}

fn summary(r: &Report, cfg: &FanoutConfig, conns: usize) -> String {
    let f = |k: &str| r.number(k);
    let pacing = match cfg.rate {
        Some(rate) => format!(
            "{rate} posts/s per sender (window {} as a safety net)",
            cfg.window
        ),
        None if cfg.window == 0 => "a flood: no pacing but the server's".to_owned(),
        None => format!("flat out, paced by acks, window {}", cfg.window),
    };
    let mut s = format!(
        "fanout: {} room(s) x {} members on {conns} connection(s); {} sender(s)/room x {} posts of {} B; {pacing}\n\
         deliveries: {} expected, {} delivered, {} lost, {} gap events, {} seq errors; {:.0}/s over {:.2} s\n\
         {}\n{}",
        cfg.rooms, cfg.members, cfg.senders, cfg.messages, cfg.size,
        f("expected"), f("delivered"), f("lost"), f("gap_events"), f("seq_errors"),
        f("deliveries_per_s"), f("elapsed_s"),
        latency_line(r), client_line(r),
    );
    if cfg.server_pid.is_some() {
        s.push('\n');
        s.push_str(&server_line(r, "delivery"));
    }
    if let Some(Value::Str(e)) = r.get("first_error") {
        s.push_str(&format!("\nerrors: {} (first: {e})", f("call_errors")));
    }
    if cfg.stalled > 0 {
        s.push_str(&format!(
            "\nstalled: {} member(s); {} gap event(s), {} with exactly one; {} seq errors",
            f("stalled_members"),
            f("stalled_gap_events"),
            f("stalled_with_one_gap"),
            f("stalled_seq_errors"),
        ));
    }
    s.push_str(&format!(
        "\nsenders: {:.0} posts/s while sending ({:.2} s)",
        f("sender_posts_per_s"),
        f("send_s")
    ));
    if f("members_stopped") > 0.0 {
        s.push_str(&format!(
            "\n{} member(s) stopped by --timeout/--drain before receiving everything",
            f("members_stopped")
        ));
    }
    s
}
