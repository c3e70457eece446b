//! `bench idle`: what joined members that post nothing cost the server — memory per connection,
//! memory per member, and how long joining takes.
//!
//! Steps, each measured on the server's `/proc` after `settle`: nothing yet (base); `conns`
//! connections open, each having made one `Members` call so the server has surely set it up
//! ([`connect_all`](crate::bench::members::connect_all));
//! `members` members joined over those connections (member `i` on connection `i % conns`, rooms of
//! `members_per_room`). Every member keeps reading the join events of its room, as a real client
//! would, so none of them lags behind.
//!
//! Per-connection memory is `(conns - base) / conns`, per-member `(joined - conns) / members`, and
//! all-in `(joined - base) / members` (with one connection per member: a connection plus a member).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::members::{check_open_files, connect_spread, join_all, room_names, JoinSpec};
use super::proc::ProcSample;
use super::report::Report;
use super::{deadline_after, sample_server, BenchError, Outcome};
use crate::cli::Seconds;

/// Default members per room: rooms stay small, so join events do not dominate.
pub const DEFAULT_MEMBERS_PER_ROOM: usize = 100;
/// Default pause before each memory reading, for the server to finish what it was doing.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// Default bound on connecting plus joining.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run: the bench's command line (`h2chat bench idle --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct IdleConfig {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Other servers sharing the rooms (`serve --redis`, the same Redis), repeatable: connection
    /// c goes to the (c % (P + 1))th of --addr and the P peers, so each room's members are spread
    /// over every node (`--server-pid` then reads one node; the scale run reads each node's own).
    #[arg(long)]
    pub peer: Vec<SocketAddr>,
    /// Members to join (0: connections only).
    #[arg(long, default_value_t = 5000)]
    pub members: usize,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Members per room.
    #[arg(long, default_value_t = DEFAULT_MEMBERS_PER_ROOM)]
    pub members_per_room: usize,
    /// The server's process id, to report its memory and CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pause before each memory reading.
    #[arg(long, default_value_t = Seconds(DEFAULT_SETTLE))]
    pub settle: Seconds,
    /// Bound on connecting plus joining.
    #[arg(long, default_value_t = Seconds(DEFAULT_TIMEOUT))]
    pub timeout: Seconds,
    /// Once every member is joined (and settled), write the report so far to this file, then
    /// keep the members joined for `--hold` before ending: a run of several benches (the scale
    /// run) measures the servers while all of them hold their members.
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// How long to keep the members joined after writing `--ready-file`.
    #[arg(long, default_value_t = Seconds(Duration::ZERO))]
    pub hold: Seconds,
    /// Members never read: their calls are held open and nothing they are sent is consumed, so
    /// their windows fill and stay full (the cost of clients that stopped reading).
    #[arg(long)]
    pub no_read: bool,
}

/// Runs the bench. Errors when it cannot run: bad arguments, too few open files, a connection or
/// a join that fails, the timeout.
pub async fn run(cfg: IdleConfig) -> Result<Outcome, BenchError> {
    if cfg.conns == 0 || cfg.members_per_room == 0 {
        return Err(BenchError::new(
            "--conns and --members-per-room must be at least 1",
        ));
    }
    check_open_files(cfg.conns)?;
    let deadline = deadline_after(cfg.timeout.0);
    let base = sample_server(cfg.server_pid)?;
    let self_base = ProcSample::read_self().ok();

    let t = Instant::now();
    let nodes: Vec<SocketAddr> = std::iter::once(cfg.addr).chain(cfg.peer.clone()).collect();
    let channels = connect_spread(&nodes, cfg.conns, deadline).await?;
    let connect_s = t.elapsed().as_secs_f64();
    let connect_cpu = cpu_since(base, sample_server(cfg.server_pid)?);
    let self_connect_cpu = cpu_since(self_base, ProcSample::read_self().ok());
    tokio::time::sleep(cfg.settle.0).await;
    let connected = sample_server(cfg.server_pid)?;
    let self_connected = ProcSample::read_self().ok();

    let rooms = room_names(cfg.members.div_ceil(cfg.members_per_room));
    let specs = (0..cfg.members)
        .map(|i| JoinSpec {
            room: rooms[i / cfg.members_per_room].clone(),
            name: format!("m{i}"),
            channel: i % cfg.conns,
        })
        .collect();
    let t = Instant::now();
    let calls = join_all(&channels, specs, deadline).await?;
    let join_s = t.elapsed().as_secs_f64();
    let join_cpu = cpu_since(connected, sample_server(cfg.server_pid)?);
    let self_join_cpu = cpu_since(self_connected, ProcSample::read_self().ok());
    let mut held = Vec::new();
    let readers: Vec<_> = if cfg.no_read {
        held = calls;
        Vec::new()
    } else {
        calls
            .into_iter()
            .map(|mut call| {
                tokio::spawn(async move { while let Ok(Some(_)) = call.recv_raw().await {} })
            })
            .collect()
    };
    tokio::time::sleep(cfg.settle.0).await;
    let joined = sample_server(cfg.server_pid)?;

    let mut report = Report::new("idle");
    report
        .int("members", cfg.members as u64)
        .int("conns", cfg.conns as u64)
        .int("members_per_room", cfg.members_per_room as u64)
        .int("no_read", u64::from(cfg.no_read))
        .float("connect_s", connect_s)
        .float("join_s", join_s)
        .float("connect_and_join_s", connect_s + join_s);
    let rss = |s: Option<ProcSample>| s.map(|s| s.rss_kib);
    let per = |a: Option<ProcSample>, b: Option<ProcSample>, n: usize| {
        let (a, b) = (a?, b?);
        (n > 0).then(|| (b.rss_kib as f64 - a.rss_kib as f64) / n as f64)
    };
    report
        .opt_int("server_rss_base_kib", rss(base))
        .opt_int("server_rss_conns_kib", rss(connected))
        .opt_int("server_rss_joined_kib", rss(joined))
        .opt_int("server_peak_rss_kib", joined.map(|s| s.peak_rss_kib))
        .opt_float("kib_per_conn", per(base, connected, cfg.conns))
        .opt_float("kib_per_member", per(connected, joined, cfg.members))
        .opt_float("kib_per_member_all_in", per(base, joined, cfg.members))
        .opt_float("server_connect_cpu_s", connect_cpu)
        .opt_float("server_join_cpu_s", join_cpu)
        .opt_float("client_connect_cpu_s", self_connect_cpu)
        .opt_float("client_join_cpu_s", self_join_cpu);
    let summary = summary(&report, &cfg);
    if let Some(path) = &cfg.ready_file {
        std::fs::write(path, format!("{}\n", report.to_json()))
            .map_err(|e| BenchError::new(format!("writing {}: {e}", path.display())))?;
        tokio::time::sleep(cfg.hold.0).await;
    }
    for reader in &readers {
        reader.abort();
    }
    drop((readers, held, channels));
    Ok(Outcome { report, summary })
}

fn cpu_since(before: Option<ProcSample>, after: Option<ProcSample>) -> Option<f64> {
    before.zip(after).map(|(b, a)| a.cpu_seconds_since(&b))
}

fn summary(r: &Report, cfg: &IdleConfig) -> String {
    let f = |k: &str| r.number(k);
    let mut s = format!(
        "idle: {} members over {} connection(s), rooms of {}{}\n\
         connect {:.2} s, join {:.2} s (together {:.2} s); client CPU {:.2} s + {:.2} s",
        cfg.members,
        cfg.conns,
        cfg.members_per_room,
        if cfg.no_read { ", never reading" } else { "" },
        f("connect_s"),
        f("join_s"),
        f("connect_and_join_s"),
        f("client_connect_cpu_s"),
        f("client_join_cpu_s"),
    );
    if cfg.server_pid.is_some() {
        s.push_str(&format!(
            "\nserver RSS: base {:.1} MiB, connected {:.1} MiB, joined {:.1} MiB\n\
             {:.2} KiB per connection, {:.2} KiB per member, {:.2} KiB per member all in\n\
             server CPU: connect {:.2} s, join {:.2} s",
            f("server_rss_base_kib") / 1024.0,
            f("server_rss_conns_kib") / 1024.0,
            f("server_rss_joined_kib") / 1024.0,
            f("kib_per_conn"),
            f("kib_per_member"),
            f("kib_per_member_all_in"),
            f("server_connect_cpu_s"),
            f("server_join_cpu_s"),
        ));
    }
    s
}
