//! Connecting many channels and joining many members at once, bounded in concurrency and in time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::proc::open_files_limit;
use super::BenchError;
use crate::grpc::client::{CallOptions, Channel, ClientCall};
use crate::pb::chat::v1::{ChatMessage, MembersRequest, MembersResponse};
use crate::protocol::{CHAT_PATH, MEMBERS_PATH};

/// Connections being set up at once: well under the server's listen backlog (1024 with tokio), so
/// the kernel never falls back to SYN cookies and resets connections the server had no room for.
pub const CONNECT_CONCURRENCY: usize = 256;
/// Joins in flight at once.
pub const JOIN_CONCURRENCY: usize = 1024;
/// Files the bench needs besides one per connection (runtime, stdio, /proc reads).
const SPARE_FILES: u64 = 64;

/// Fails early, with what to do, when `ulimit -n` is too low for `conns` connections.
pub fn check_open_files(conns: usize) -> Result<(), BenchError> {
    let needed = conns as u64 + SPARE_FILES;
    match open_files_limit() {
        Some(limit) if limit < needed => Err(BenchError::new(format!(
            "{conns} connections need about {needed} open files but `ulimit -n` is {limit}: \
             raise it (e.g. `ulimit -n 65536` as root) in the shell that runs the bench and the server"
        ))),
        _ => Ok(()),
    }
}

/// Room names no earlier run against the same server has used: `b<pid>-<time>-<n>`.
pub fn room_names(rooms: usize) -> Vec<Arc<str>> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let pid = std::process::id();
    (0..rooms)
        .map(|r| Arc::from(format!("b{pid}-{nanos}-{r}")))
        .collect()
}

/// Loopback source addresses connections are spread over (127.0.0.1 and up).
///
/// Linux picks an ephemeral port for each `connect` by scanning for one that is free; with tens of
/// thousands of connections from one address that scan costs the bench seconds of kernel time.
/// Each source address has its own ports, so spreading the connections keeps the scans short.
pub const LOOPBACK_SOURCES: u8 = 64;

/// Opens `n` connections to `addr`, [`CONNECT_CONCURRENCY`] at a time, each counted as set up
/// only once the server answered one `Members` call on it (a TCP connect completes in the kernel
/// before the server has accepted anything). Connections to an IPv4 loopback server come from
/// [`LOOPBACK_SOURCES`] loopback addresses in turn.
///
/// Errors: any connection that fails, or `deadline` passing first.
pub async fn connect_all(
    addr: SocketAddr,
    n: usize,
    deadline: Instant,
) -> Result<Vec<Channel>, BenchError> {
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let tasks: Vec<JoinHandle<Result<Channel, BenchError>>> = (0..n)
        .map(|i| {
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let channel = connect(addr, i)
                    .await
                    .map_err(|e| BenchError::new(format!("connecting to {addr}: {e}")))?;
                let req = MembersRequest::default();
                channel
                    .unary::<_, MembersResponse>(MEMBERS_PATH, &req, CallOptions::default())
                    .await
                    .map_err(|e| BenchError::new(format!("first call on a connection: {e}")))?;
                Ok(channel)
            })
        })
        .collect();
    collect(tasks, deadline, "connecting").await
}

/// Opens `n` connections as [`connect_all`] does, spread over `nodes` (servers sharing their
/// rooms through one Redis): connection `i` goes to `nodes[i % nodes.len()]`.
///
/// Errors: as [`connect_all`]'s; no nodes at all.
pub async fn connect_spread(
    nodes: &[SocketAddr],
    n: usize,
    deadline: Instant,
) -> Result<Vec<Channel>, BenchError> {
    if nodes.is_empty() {
        return Err(BenchError::new("no server to connect to"));
    }
    let mut each = Vec::with_capacity(nodes.len());
    for (k, addr) in nodes.iter().enumerate() {
        // Connections k, k + len, k + 2 len, ... below n.
        let count = n.saturating_sub(k).div_ceil(nodes.len());
        each.push(connect_all(*addr, count, deadline).await?.into_iter());
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(channel) = each.get_mut(i % nodes.len()).and_then(Iterator::next) {
            out.push(channel);
        }
    }
    Ok(out)
}

/// Connection number `i` to `addr` (see [`LOOPBACK_SOURCES`]).
async fn connect(addr: SocketAddr, i: usize) -> std::io::Result<Channel> {
    let source = match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let n = (i % usize::from(LOOPBACK_SOURCES)) as u8;
            Ipv4Addr::new(127, 0, 0, 1 + n)
        }
        _ => {
            return Channel::connect(addr)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    };
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Channel::connect_io(stream)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// One member to join.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    /// The room.
    pub room: Arc<str>,
    /// The member's name (unique in its room).
    pub name: String,
    /// Index of the channel (from [`connect_all`]) its call goes on.
    pub channel: usize,
}

/// Joins every member, [`JOIN_CONCURRENCY`] at a time; a member is joined once the server sent
/// the call's response headers (they follow the join). The calls come back in `specs` order.
///
/// Errors: a join the server refused, or `deadline` passing first (e.g. more members on one
/// connection than the server's `--max-concurrent-streams` lets run).
pub async fn join_all(
    channels: &[Channel],
    specs: Vec<JoinSpec>,
    deadline: Instant,
) -> Result<Vec<ClientCall>, BenchError> {
    let limit = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(specs.len());
    for spec in specs {
        let channel = channels
            .get(spec.channel)
            .cloned()
            .ok_or_else(|| BenchError::new(format!("no channel {}", spec.channel)))?;
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            join(&channel, &spec).await
        }));
    }
    collect(tasks, deadline, "joining").await
}

/// Joins one member; it is joined once the server sent the call's response headers.
pub(crate) async fn join(channel: &Channel, spec: &JoinSpec) -> Result<ClientCall, BenchError> {
    let fail = |e: crate::grpc::Status| {
        BenchError::new(format!("joining {} to {}: {e}", spec.name, spec.room))
    };
    let mut call = channel
        .start(CHAT_PATH, CallOptions::default())
        .await
        .map_err(fail)?;
    let first = ChatMessage {
        room_id: spec.room.to_string(),
        sender_id: spec.name.clone(),
        ..Default::default()
    };
    call.send(&first).await.map_err(fail)?;
    call.headers().await.map_err(fail)?;
    Ok(call)
}

/// The results of set-up tasks in order, waiting until `deadline` at most. On the first failure
/// every task still running is aborted.
async fn collect<T>(
    tasks: Vec<JoinHandle<Result<T, BenchError>>>,
    deadline: Instant,
    what: &str,
) -> Result<Vec<T>, BenchError> {
    let mut out = Vec::with_capacity(tasks.len());
    let mut tasks = tasks.into_iter();
    while let Some(mut task) = tasks.next() {
        let failure = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(value))) => {
                out.push(value);
                continue;
            }
            Ok(Ok(Err(e))) => e,
            Ok(Err(e)) => BenchError::new(format!("{what}: task failed: {e}")),
            Err(_) => BenchError::new(format!(
                "{what} did not finish in time (more members per connection than the server \
                 lets run at once? try more --conns)"
            )),
        };
        task.abort();
        tasks.for_each(|t| t.abort());
        return Err(failure);
    }
    Ok(out)
}
