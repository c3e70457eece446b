//! The floor under fan-out: what one small write per delivery costs on this machine, with no h2,
//! no gRPC and no chat in the way.
//!
//! At a modest post rate every post reaches each member alone, so the chat server makes one write
//! system call per delivery, each on the member's own connection; on loopback that call also runs
//! the receiving socket's TCP processing and wakes the reader. This pair of benches measures that
//! cost and nothing else:
//!
//! - `bench write-floor-server` ([`server`]) accepts TCP connections and, for every post it reads
//!   from any of them, writes [`DEFAULT_SIZE`] bytes (or `--size`) to every open connection, one
//!   non-blocking `writev` each (as h2 writes): the least user space can do for one write per
//!   delivery. Its CPU time per write is the floor. A server that delivers each post with one
//!   write per member cannot spend less per delivery, whatever its own code does; only fewer
//!   writes (several deliveries per write) go below it.
//! - `bench write-floor` ([`run`]) opens the connections, posts on the first one at a fixed rate,
//!   and on every connection times each chunk from its post's send time: expected, delivered and
//!   lost writes, latency, and, given the server's pid, server CPU per write split into user and
//!   kernel time. Run it in the fan-out bench's shape (connections = members, the same rate) and
//!   the figures compare one to one.
//!
//! The wire: a post is one byte, [`POST`], so there is no framing. The server greets each
//! connection it has registered with one byte, [`READY`], before anything else; after that, chunk
//! k on a connection is the copy of post k. Anything but a post closes the connection. The server
//! must serve this bench alone: someone else's post would shift every chunk (such chunks arrive
//! before the bench sent their post and are counted as `unmatched`).

pub mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::members::check_open_files;
use super::proc::ProcSample;
use super::report::{Report, Value};
use super::ticker::ticker;
use super::{
    add_client_cpu, add_latency, add_server_figures, client_line, deadline_after, latency_line,
    sample_server, server_line, stopped_before_done, wait_all, BenchError, Clock, Outcome,
};
use crate::cli::Seconds;

/// A post, from the bench to the server.
pub const POST: u8 = b'p';
/// The server's greeting: the connection is registered and will receive every later post.
pub const READY: u8 = b'r';
/// What chunks are made of (their content is not looked at).
pub const FILL: u8 = b'.';
/// Default chunk size: a 100-byte chat text as the chat server writes it — a 9-byte HTTP/2 DATA
/// frame header, the 5-byte gRPC prefix and a message of about 100 bytes.
pub const DEFAULT_SIZE: usize = 114;
/// Largest chunk: one write of it must fit a socket's send buffer.
pub const MAX_SIZE: usize = 64 << 10;
/// Default connections: the fan-out scenarios' 100 members.
pub const DEFAULT_CONNS: usize = 100;
/// Default posts per second: scenario (b)'s rate.
pub const DEFAULT_RATE: f64 = 5000.0;
/// Default number of posts.
pub const DEFAULT_POSTS: u64 = 20_000;
/// Most posts one run may plan (the bench keeps a send time per post: 8 bytes each).
pub const MAX_POSTS: u64 = 10_000_000;
/// Default bound on the whole run: connecting, sending, receiving.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes one read on a receiving connection may take.
const RECEIVE_BUFFER_BYTES: usize = 16 << 10;

/// Checks a chunk size, for the server and the bench alike.
pub fn check_size(size: usize) -> Result<(), BenchError> {
    if (1..=MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(BenchError::new(format!(
            "--size must be between 1 and {MAX_SIZE} bytes"
        )))
    }
}

/// What to run: the bench's command line (`h2chat bench write-floor --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct WriteFloorConfig {
    /// The `write-floor-server`.
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub addr: SocketAddr,
    /// Connections, each receiving every post.
    #[arg(long, default_value_t = DEFAULT_CONNS)]
    pub conns: usize,
    /// Posts per second.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Posts to send.
    #[arg(long, default_value_t = DEFAULT_POSTS)]
    pub posts: u64,
    /// Bytes the server writes per post and connection (must match its `--size`).
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    pub size: usize,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Bound on the whole run; what has not arrived by then is lost.
    #[arg(long, default_value_t = Seconds(DEFAULT_TIMEOUT))]
    pub timeout: Seconds,
}

impl WriteFloorConfig {
    fn check(&self) -> Result<(), BenchError> {
        if self.conns == 0 || self.posts == 0 || self.posts > MAX_POSTS {
            return Err(BenchError::new(format!(
                "--conns must be at least 1 and --posts between 1 and {MAX_POSTS}"
            )));
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(BenchError::new(
                "--rate must be a positive number of posts per second",
            ));
        }
        check_size(self.size)
    }
}

/// What every receiving connection shares: when each post was sent.
struct Posts {
    /// Per post, its send time on `clock` (0: not sent yet).
    sent_ns: Box<[AtomicU64]>,
    size: u64,
    clock: Clock,
}

#[derive(Default)]
struct ReceiverStats {
    /// Whole chunks matched to a post this bench sent.
    delivered: u64,
    /// Whole chunks that arrived before their post was sent: someone else posted.
    unmatched: u64,
    latency: Histogram,
    last_ns: u64,
    /// Why the connection ended before every post arrived (closed, an error).
    ended: Option<String>,
    /// Stopped by the timeout.
    stopped: bool,
}

#[derive(Default)]
struct SenderStats {
    posted: u64,
    error: Option<String>,
    stopped: bool,
}

/// Runs the bench. Errors only when it cannot run (bad arguments, connecting, a peer that does
/// not greet like a `write-floor-server`); what is lost during the run is in the report.
pub async fn run(cfg: WriteFloorConfig) -> Result<Outcome, BenchError> {
    cfg.check()?;
    check_open_files(cfg.conns)?;
    let deadline = deadline_after(cfg.timeout.0);
    let clock = Clock::new();

    let connect_start = Instant::now();
    let mut streams = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        let stream = tokio::time::timeout_at(deadline, connect(cfg.addr))
            .await
            .map_err(|_| BenchError::new("--timeout passed while connecting"))?
            .map_err(|e| BenchError::new(format!("connecting to {}: {e}", cfg.addr)))?;
        streams.push(Arc::new(stream));
    }
    let connect_s = connect_start.elapsed().as_secs_f64();

    let posts = Arc::new(Posts {
        sent_ns: (0..cfg.posts).map(|_| AtomicU64::new(0)).collect(),
        size: cfg.size as u64,
        clock,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let receivers: Vec<_> = streams
        .iter()
        .map(|s| tokio::spawn(receive(s.clone(), posts.clone(), stop_rx.clone())))
        .collect();

    let server_before = sample_server(cfg.server_pid)?;
    let self_before = ProcSample::read_self().ok();
    let start = Instant::now();
    let start_ns = clock.now_ns();
    let ticks = ticker(cfg.rate, cfg.posts)
        .map_err(|e| BenchError::new(format!("starting the ticker thread: {e}")))?;
    let sender = tokio::spawn(send(streams[0].clone(), posts.clone(), ticks, stop_rx));
    let sender = wait_all(vec![sender], deadline, &stop_tx).await?;
    let receivers = wait_all(receivers, deadline, &stop_tx).await?;
    let end = Instant::now();
    let server_after = sample_server(cfg.server_pid)?;
    let self_after = ProcSample::read_self().ok();

    let sent = sender.into_iter().next().unwrap_or_default();
    let mut all = ReceiverStats::default();
    let (mut ended, mut stopped, mut first_error) = (0, 0, sent.error.clone());
    for r in &receivers {
        all.delivered += r.delivered;
        all.unmatched += r.unmatched;
        all.latency.merge(&r.latency);
        all.last_ns = all.last_ns.max(r.last_ns);
        stopped += u64::from(r.stopped);
        if let Some(e) = &r.ended {
            ended += 1;
            first_error.get_or_insert_with(|| e.clone());
        }
    }
    let expected = sent.posted * cfg.conns as u64;
    let elapsed_s = if all.last_ns > start_ns {
        (all.last_ns - start_ns) as f64 / 1e9
    } else {
        end.duration_since(start).as_secs_f64()
    };

    let mut report = Report::new("write_floor");
    report
        .int("conns", cfg.conns as u64)
        .float("rate", cfg.rate)
        .int("planned_posts", cfg.posts)
        .int("size", cfg.size as u64)
        .float("connect_s", connect_s)
        .int("posted", sent.posted)
        .int("expected", expected)
        .int("delivered", all.delivered)
        .int("lost", expected.saturating_sub(all.delivered))
        .int("unmatched", all.unmatched)
        .int("conns_ended", ended)
        .int("stopped_by_timeout", stopped + u64::from(sent.stopped))
        .float("elapsed_s", elapsed_s)
        .float("writes_per_s", all.delivered as f64 / elapsed_s)
        .float("posts_per_s", sent.posted as f64 / elapsed_s);
    add_latency(&mut report, &all.latency);
    add_client_cpu(
        &mut report,
        self_before,
        self_after,
        end.duration_since(start).as_secs_f64(),
    );
    // A delivery here is one write of the chunk on one connection.
    add_server_figures(&mut report, server_before, server_after, all.delivered);
    if let Some(e) = first_error {
        report.str("first_error", e);
    }
    let summary = summary(&report, &cfg);
    Ok(Outcome { report, summary })
}

/// One connection the server has registered: connected, and its greeting read.
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut greeting = [0u8; 1];
    let n = when_ready(&stream, Interest::READABLE, || {
        stream.try_read(&mut greeting)
    })
    .await?;
    if n == 1 && greeting == [READY] {
        Ok(stream)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the server did not greet like `h2chat bench write-floor-server`",
        ))
    }
}

/// Runs the non-blocking `op` on `stream` once it is ready for `interest`, again as long as it
/// would block.
async fn when_ready<R>(
    stream: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        stream.ready(interest).await?;
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}

/// Posts on `stream` as the ticker releases them, recording each send time just before its write.
async fn send(
    stream: Arc<TcpStream>,
    posts: Arc<Posts>,
    mut ticks: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> SenderStats {
    let mut stats = SenderStats::default();
    let work = send_all(&stream, &posts, &mut ticks, &mut stats);
    stats.stopped = stopped_before_done(work, &mut stop).await;
    stats
}

async fn send_all(
    stream: &TcpStream,
    posts: &Posts,
    ticks: &mut watch::Receiver<u64>,
    stats: &mut SenderStats,
) {
    for (k, sent_ns) in posts.sent_ns.iter().enumerate() {
        // Post k (from 0) goes out on tick k + 1.
        if ticks.wait_for(|&t| t > k as u64).await.is_err() {
            stats.error = Some("the ticker stopped".into());
            return;
        }
        sent_ns.store(posts.clock.now_ns().max(1), Ordering::Release);
        if let Err(e) = write_post(stream).await {
            stats.error = Some(format!("posting: {e}"));
            return;
        }
        stats.posted += 1;
    }
}

async fn write_post(stream: &TcpStream) -> io::Result<()> {
    match when_ready(stream, Interest::WRITABLE, || stream.try_write(&[POST])).await? {
        1 => Ok(()),
        _ => Err(io::ErrorKind::WriteZero.into()),
    }
}

/// Reads chunks on `stream` until every planned post has arrived, the connection ends, or `stop`.
async fn receive(
    stream: Arc<TcpStream>,
    posts: Arc<Posts>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStats {
    let mut stats = ReceiverStats::default();
    let work = receive_all(&stream, &posts, &mut stats);
    stats.stopped = stopped_before_done(work, &mut stop).await;
    stats
}

async fn receive_all(stream: &TcpStream, posts: &Posts, stats: &mut ReceiverStats) {
    let planned = posts.sent_ns.len() as u64;
    let mut buf = vec![0u8; RECEIVE_BUFFER_BYTES];
    let (mut bytes, mut chunks) = (0u64, 0u64);
    while chunks < planned {
        let n = match when_ready(stream, Interest::READABLE, || stream.try_read(&mut buf)).await {
            Ok(0) => {
                stats.ended = Some("the server closed a connection".into());
                return;
            }
            Ok(n) => n,
            Err(e) => {
                stats.ended = Some(format!("reading: {e}"));
                return;
            }
        };
        // Chunks completed by one read share one reading of the clock.
        let now = posts.clock.now_ns();
        bytes += n as u64;
        let complete = (bytes / posts.size).min(planned);
        for k in chunks..complete {
            let sent = posts
                .sent_ns
                .get(k as usize)
                .map_or(0, |s| s.load(Ordering::Acquire));
            if sent == 0 {
                stats.unmatched += 1;
                continue;
            }
            stats.latency.record(now.saturating_sub(sent));
            stats.delivered += 1;
            stats.last_ns = now;
        }
        chunks = complete;
    }
}

fn summary(r: &Report, cfg: &WriteFloorConfig) -> String {
    let f = |k: &str| r.number(k);
    let mut s = format!(
        "write-floor: {} connection(s); {} posts of 1 byte on the first at {} posts/s; each post \
         one {}-byte write per connection\n\
         writes: {} expected, {} delivered, {} lost; {:.0}/s over {:.2} s\n{}\n{}",
        cfg.conns,
        cfg.posts,
        cfg.rate,
        cfg.size,
        f("expected"),
        f("delivered"),
        f("lost"),
        f("writes_per_s"),
        f("elapsed_s"),
        latency_line(r),
        client_line(r),
    );
    if cfg.server_pid.is_some() {
        s.push('\n');
        s.push_str(&server_line(r, "write"));
    }
    if f("unmatched") > 0.0 {
        s.push_str(&format!(
            "\n{} chunk(s) arrived before their post was sent: the server has other clients",
            f("unmatched")
        ));
    }
    if let Some(Value::Str(e)) = r.get("first_error") {
        s.push_str(&format!(
            "\n{} connection(s) ended early (first: {e})",
            f("conns_ended")
        ));
    }
    if f("stopped_by_timeout") > 0.0 {
        s.push_str("\nstopped by --timeout before every post arrived");
    }
    s
}
