//! What the attack tests share beyond `tests/support`: the real `h2chat serve` as a child process
//! measured from /proc (under `prlimit` when asked, with its log filter as shipped when asked),
//! an attacker on raw h2, and a well-behaved client that must keep working meanwhile.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2chat::grpc::{CallOptions, Channel};
use h2chat::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use http::Request;
use tokio::net::TcpStream;

pub use crate::support::within;

/// How long any single wait in an attack may take before the test fails: longer than the
/// support's, since an attack loads the one busy core on purpose. A safety net, never a timing
/// check.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `h2chat serve`, killed (by its PID) when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server's stderr, line by line.
    log: mpsc::Receiver<String>,
    /// The lines taken from `log` so far.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Server {
    /// Starts `h2chat serve --addr 127.0.0.1:0 <args>`.
    pub fn start(args: &[&str]) -> Server {
        Server::spawn(None, args)
    }

    /// Starts the server with the log filter it has when `RUST_LOG` is not set.
    pub fn start_default_log(args: &[&str]) -> Server {
        Server::spawn_with(None, args, None)
    }

    /// Starts the server with its address space limited to `bytes` (`prlimit --as`, as
    /// `ulimit -v` would).
    pub fn start_with_address_space(bytes: u64, args: &[&str]) -> Server {
        Server::spawn(Some(bytes), args)
    }

    fn spawn(address_space: Option<u64>, args: &[&str]) -> Server {
        Server::spawn_with(address_space, args, Some("info"))
    }

    fn spawn_with(address_space: Option<u64>, args: &[&str], rust_log: Option<&str>) -> Server {
        let bin = env!("CARGO_BIN_EXE_h2chat");
        let mut cmd = match address_space {
            None => Command::new(bin),
            Some(bytes) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--as={bytes}")).arg("--").arg(bin);
                c
            }
        };
        // The child dies with the test (see `support::process`).
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.env_remove("RUST_LOG");
        // glibc's mmap threshold pinned at its initial 128 KiB: a freed large buffer then goes
        // back to the kernel at once, so RSS shows what the server holds (by default glibc
        // raises the threshold after the first large free and may keep such buffers in its heap).
        cmd.env("MALLOC_MMAP_THRESHOLD_", "131072");
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start h2chat");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the server never blocks.
                    continue;
                }
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(PATIENCE)
                .expect("the server logs 'listening' (or it exited)");
            if let Some(rest) = line
                .split("addr=")
                .nth(1)
                .filter(|_| line.contains("listening"))
            {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().expect("listening address");
            }
        };
        Server {
            child,
            addr,
            log: rx,
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `Vm*` figure of /proc/PID/status, in bytes.
    pub fn proc_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{field} in /proc/{}/status", self.pid()))
    }

    /// Resident set size now.
    pub fn rss(&self) -> u64 {
        self.proc_bytes("VmRSS")
    }

    /// Peak resident set size since the last [`reset_peak`](Server::reset_peak).
    pub fn peak_rss(&self) -> u64 {
        self.proc_bytes("VmHWM")
    }

    /// Resets the peak to the current RSS (Linux 4.0+: `5` into clear_refs).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("reset VmHWM");
    }

    /// Log lines the server wrote so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(self.log.try_iter());
        seen.iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until RSS has not grown for a while (the server has finished reacting), at most
    /// `PATIENCE`; returns the peak seen.
    pub async fn settled_peak(&self) -> u64 {
        let mut last = self.peak_rss();
        let mut still = 0;
        within(PATIENCE, "the server's RSS to settle", async {
            while still < 5 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = self.peak_rss();
                if now > last + (64 << 10) {
                    still = 0;
                } else {
                    still += 1;
                }
                last = now.max(last);
            }
        })
        .await;
        last
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that behaves: one Health/Check on a connection of its own must succeed.
pub async fn well_behaved_check(addr: SocketAddr) {
    within(
        Duration::from_secs(20),
        "a well-behaved client's Health/Check",
        async {
            let ch = Channel::connect(addr).await.expect("connect");
            let resp: HealthCheckResponse = ch
                .unary(
                    "/grpc.health.v1.Health/Check",
                    &HealthCheckRequest::default(),
                    CallOptions::default(),
                )
                .await
                .expect("Health/Check answers");
            assert_eq!(resp.status, 1, "SERVING");
        },
    )
    .await
}

/// An attacker's HTTP/2 connection on raw h2.
pub struct Attacker {
    send: SendRequest<Bytes>,
}

/// The connection task of an attacker made with [`Attacker::connect_paused`], not yet running.
pub struct Paused(h2::client::Connection<TcpStream, Bytes>);

impl Paused {
    /// Starts the connection: everything queued on it goes out at once.
    pub fn resume(self) {
        tokio::spawn(async move {
            let _ = self.0.await;
        });
    }
}

impl Attacker {
    /// Like [`connect`](Attacker::connect), but nothing is sent until [`Paused::resume`]: the
    /// calls opened meanwhile (up to `streams` of them) reach the server in one burst, before it
    /// has accepted any. That is the worst case for the server's per-connection buffers (h2 holds
    /// every stream's frames until the stream is accepted, and keeps the room afterwards), and it
    /// does not depend on how the two sides happen to interleave.
    pub async fn connect_paused(
        addr: SocketAddr,
        window: u32,
        streams: usize,
    ) -> (Attacker, Paused) {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(window)
            .initial_max_send_streams(streams)
            .max_concurrent_reset_streams(10_000);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = builder.handshake(tcp).await.expect("h2 handshake");
        (Attacker { send }, Paused(conn))
    }

    /// Connects granting the server a stream window of `window` bytes (0: never any).
    pub async fn connect(addr: SocketAddr, window: u32) -> Attacker {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(window)
            .max_concurrent_reset_streams(10_000);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = builder.handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Attacker { send }
    }

    /// Opens a gRPC call on `path` with these extra headers and sends `body` (ending the stream
    /// when `end`); returns the response future and the open send side.
    pub async fn call(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        end: bool,
    ) -> (ResponseFuture, h2::SendStream<Bytes>) {
        let mut req = Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).expect("request");
        let mut send = within(PATIENCE, "the server to allow another stream", async {
            self.send.clone().ready().await.expect("connection ready")
        })
        .await;
        let (response, mut body_tx) = send.send_request(req, false).expect("send request");
        // A server may answer and end the stream before it reads the request body (an unknown
        // method's UNIMPLEMENTED does): the send then fails, and the response says what the
        // server answered, which is what the caller asserts on.
        // (Any other failure shows there too: a stream h2 could not send on has no answer.)
        if !body.is_empty() || end {
            let _ = body_tx.send_data(body, end);
        }
        (response, body_tx)
    }
}

/// A joined chat call: its response (headers in, body unread) and its open request stream.
pub type Joined = (http::Response<h2::RecvStream>, h2::SendStream<Bytes>);

/// Waits for each chat join started with [`Attacker::call`]: its response headers need no
/// window, so each member is in the room once they come.
pub async fn joined(joins: Vec<(ResponseFuture, h2::SendStream<Bytes>)>) -> Vec<Joined> {
    let mut streams = Vec::with_capacity(joins.len());
    for (response, tx) in joins {
        let resp = within(PATIENCE, "a member's join", response)
            .await
            .expect("joined");
        assert_eq!(resp.status(), 200);
        streams.push((resp, tx));
    }
    streams
}

/// One gRPC message frame (prefix and payload) of an encoded protobuf, framed by the support's
/// spec-written code (not the crate's codec, which the server decodes with).
pub fn message(msg: &impl prost::Message) -> Bytes {
    crate::support::wire::frame(false, &msg.encode_to_vec())
}

/// One gRPC frame of gzip'd `payload`, compressed flag set (flate2 directly, not the crate's
/// compression code).
pub fn gzip_message(payload: &[u8]) -> Bytes {
    let gz = crate::support::wire::compress("gzip", payload);
    crate::support::wire::frame(true, &gz)
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
