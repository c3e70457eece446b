//! `bench write-floor-server`: every post read from any connection becomes one write of the chunk
//! to every open connection, and nothing else happens.
//!
//! Connections live in one registry behind a lock. Each has a task that reads its posts; the task
//! that reads a post writes the chunk to every registered connection itself, one `writev` each,
//! under the lock — so writes on one socket never interleave and no queue stands between a post and
//! its writes. A write that would block, fails or is short closes that connection: the floor never
//! buffers in user space.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::debug;

use super::{FILL, POST, READY};
use crate::grpc::server::admission::FALLBACK_MAX_CONNECTIONS;

/// Bytes read from a connection at a time: posts are single bytes, so this bounds how many one
/// read can carry, not what the server keeps.
const READ_BUFFER_BYTES: usize = 64;

/// What the server did in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloorStats {
    /// Connections registered (each got the [`READY`] byte).
    pub accepted: u64,
    /// Connections refused: [`FALLBACK_MAX_CONNECTIONS`] were open, or the greeting failed.
    pub refused: u64,
    /// Posts read.
    pub posts: u64,
    /// Whole chunks written.
    pub writes: u64,
    /// Connections closed because a write of the chunk would have blocked, failed or was short.
    pub closed_slow: u64,
    /// Connections closed because they sent a byte that is not [`POST`].
    pub closed_garbage: u64,
}

/// One registered connection: its socket, and how to tell its reading task to let go of it.
struct Conn {
    id: u64,
    stream: Arc<TcpStream>,
    closed: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    conns: Vec<Conn>,
    next_id: u64,
    stats: FloorStats,
}

/// The server's state: the chunk every post writes, and the registry.
struct Floor {
    chunk: Box<[u8]>,
    registry: Mutex<Registry>,
}

impl Floor {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; if something did, the counts are still counts.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `stream` and greets it with [`READY`]; `None` when refused. The greeting is
    /// written under the lock, so it comes before any chunk, and a client that has it receives
    /// every later post. The caller has seen the socket writable (tokio's `try_write` does not try
    /// before that).
    fn register(&self, stream: &Arc<TcpStream>) -> Option<(u64, Arc<Notify>)> {
        let mut registry = self.lock();
        if registry.conns.len() >= FALLBACK_MAX_CONNECTIONS
            || !matches!(stream.try_write(&[READY]), Ok(1))
        {
            registry.stats.refused += 1;
            return None;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        registry.stats.accepted += 1;
        let closed = Arc::new(Notify::new());
        registry.conns.push(Conn {
            id,
            stream: stream.clone(),
            closed: closed.clone(),
        });
        Some((id, closed))
    }

    fn unregister(&self, id: u64) {
        self.lock().conns.retain(|c| c.id != id);
    }

    /// One post: the chunk to every registered connection, one `writev` each — the system call h2
    /// writes with (a plain `try_write` is a `send`). A connection whose write does not take the
    /// whole chunk leaves the registry, and its task is told to close it.
    fn fan_out(&self) {
        let mut registry = self.lock();
        let Registry { conns, stats, .. } = &mut *registry;
        stats.posts += 1;
        let chunk = [IoSlice::new(&self.chunk)];
        conns.retain(|conn| match conn.stream.try_write_vectored(&chunk) {
            Ok(n) if n == self.chunk.len() => {
                stats.writes += 1;
                true
            }
            _ => {
                stats.closed_slow += 1;
                conn.closed.notify_one();
                false
            }
        });
    }

    fn garbage(&self) {
        self.lock().stats.closed_garbage += 1;
    }
}

/// Serves connections from `listener`, writing `size` bytes per post to each (the caller checks
/// `size` with [`super::check_size`]), until `signal` resolves; returns what it did. Connections
/// still open then are dropped with the runtime.
///
/// Errors: accepting fails (e.g. out of file descriptors).
pub async fn serve(
    listener: TcpListener,
    size: usize,
    signal: impl Future<Output = ()>,
) -> io::Result<FloorStats> {
    let floor = Arc::new(Floor {
        chunk: vec![FILL; size].into_boxed_slice(),
        registry: Mutex::new(Registry::default()),
    });
    tokio::pin!(signal);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut signal => return Ok(floor.lock().stats),
        };
        tokio::spawn(connection(floor.clone(), socket, peer));
    }
}

async fn connection(floor: Arc<Floor>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let stream = Arc::new(socket);
    if stream.writable().await.is_err() {
        return;
    }
    let Some((id, closed)) = floor.register(&stream) else {
        debug!(%peer, "write-floor connection refused");
        return;
    };
    let why = read_posts(&floor, &stream, &closed).await;
    floor.unregister(id);
    debug!(%peer, why, "write-floor connection closed");
}

/// Reads posts until the peer closes, sends something else, or the connection is dropped from
/// the registry; says which.
async fn read_posts(floor: &Floor, stream: &TcpStream, closed: &Notify) -> &'static str {
    let mut buf = [0u8; READ_BUFFER_BYTES];
    loop {
        tokio::select! {
            biased;
            () = closed.notified() => return "a write of the chunk would block",
            ready = stream.readable() => if ready.is_err() {
                return "read error";
            },
        }
        let n = match stream.try_read(&mut buf) {
            Ok(0) => return "the peer closed",
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return "read error",
        };
        for &byte in buf.iter().take(n) {
            if byte != POST {
                floor.garbage();
                return "not a post";
            }
            floor.fan_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    /// A server on 127.0.0.1 writing `size`-byte chunks; the sender stops it and gets its stats.
    async fn start(
        size: usize,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<FloorStats>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async {
                let _ = stopped.await;
            };
            serve(listener, size, signal).await.expect("serve")
        });
        (addr, stop, task)
    }

    /// A connection the server has registered (it read the greeting).
    async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(stream.read_u8().await.expect("greeting"), READY);
        stream
    }

    #[tokio::test]
    async fn every_post_is_one_chunk_on_every_connection() {
        let (addr, stop, task) = start(5).await;
        let mut conns = vec![
            connect(addr).await,
            connect(addr).await,
            connect(addr).await,
        ];
        conns[1].write_all(&[POST, POST]).await.expect("post");
        for conn in &mut conns {
            let mut got = [0u8; 10];
            conn.read_exact(&mut got).await.expect("two chunks");
            assert_eq!(got, [FILL; 10]);
        }
        let _ = stop.send(());
        let stats = task.await.expect("server task");
        assert_eq!((stats.accepted, stats.posts, stats.writes), (3, 2, 6));
    }

    #[tokio::test]
    async fn a_connection_that_sends_anything_but_posts_is_closed() {
        let (addr, stop, task) = start(5).await;
        let mut bad = connect(addr).await;
        bad.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let mut rest = Vec::new();
        // Closed with unread bytes pending, the socket may end in a reset rather than an EOF.
        let _ = bad.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "no chunk for garbage: {rest:?}");
        let _ = stop.send(());
        let stats = task.await.expect("server task");
        assert_eq!((stats.closed_garbage, stats.posts), (1, 0));
    }
}
