//! `h2chat stdio`: the server as a node of a JSON-lines test harness.
//!
//! Each input line is one JSON object `{"src", "dest", "body"}`; each reply is one line
//! `{"src": <node id>, "dest": <requester>, "body": {...}}` whose body carries the node's own
//! `msg_id` (a counter from 0) and `in_reply_to`. The bodies:
//!
//! | request `type` | replies |
//! |---|---|
//! | `init` (`node_id`) | `init_ok` |
//! | `grpc_server_stream` (`service`, `method`, `request`) | one `grpc_stream_msg` (`seq` from 1, `data`) per response, then `grpc_stream_end` (`status`, `count`) |
//! | `grpc_unary` (`service`, `method`, `request`) | `grpc_unary_ok` (`data`) |
//! | `grpc_bidi_stream_open` (`service`, `method`) | `grpc_bidi_stream_open_ok` (`stream_id`: `s1`, `s2`, ...) |
//! | `grpc_bidi_stream_send` (`stream_id`, `data`) | `grpc_bidi_stream_recv` (`data`) per response |
//! | `grpc_bidi_stream_close` (`stream_id`) | half-closes; the stream's `grpc_stream_end` answers it |
//! | `grpc_bidi_stream_cancel` (`stream_id`) | cancels; `grpc_stream_end` with CANCELLED |
//!
//! Anything wrong — malformed JSON, an unknown type, service, method or stream, a request that does
//! not fit the method's message, a send on a stream that is no longer open — is answered with
//! `{"type": "error", "in_reply_to", "code": <gRPC code number>, "text"}`, and the node goes on with
//! its other calls. A call that ends with a status other than OK ends with `grpc_stream_end`
//! carrying that status's name, `code` and `text` (a unary call: with `error`).
//!
//! The node runs the same server as `h2chat serve` ([`app::build`]) over an in-process
//! `tokio::io::duplex` and talks to it with the gRPC client: the transport is the only difference.
//! JSON ↔ protobuf follows the proto3 JSON mapping from the descriptors reflection serves
//! ([`crate::stdio::schema`]).
//!
//! At the end of input every open stream is half-closed; the node waits for its calls to end, at
//! most [`StdioConfig::drain_timeout`], then shuts the server down (calls still running end with
//! UNAVAILABLE) and exits.

mod calls;
pub mod schema;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::grpc::{Channel, Status};
use crate::pb;
use crate::services::app::{self, AppConfig};
use crate::stdio::schema::Schema;
use calls::Streams;

/// Default time the node waits for running calls after its input ends.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest input line, in bytes (a 4 MiB message as JSON, and then some).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;
/// Replies waiting for stdout; when it is full, the node stops reading input and the calls stop
/// reading responses.
const OUTPUT_QUEUE_LINES: usize = 256;
/// Buffer of each direction of the in-process transport.
const DUPLEX_BUFFER_BYTES: usize = 256 << 10;
/// The peer address calls see.
const STDIO_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Everything `h2chat stdio` can be told.
#[derive(Clone, Debug)]
pub struct StdioConfig {
    /// The server, as for `h2chat serve`.
    pub app: AppConfig,
    /// How long running calls may go on after the input ends.
    pub drain_timeout: Duration,
    /// Longest input line; a longer one is answered with an error and skipped.
    pub max_line_bytes: usize,
}

impl Default for StdioConfig {
    fn default() -> Self {
        StdioConfig {
            app: AppConfig::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// What the writer task is told.
enum Out {
    /// From now on, replies come from this node id.
    NodeId(String),
    /// A reply to `dest`; the writer adds `msg_id`.
    Reply {
        dest: Value,
        body: Map<String, Value>,
    },
}

/// Where replies go: cheap to clone, one per task.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Out>,
}

impl Outbox {
    /// Queues a reply; waits while stdout is behind. A closed stdout drops it.
    async fn reply(&self, dest: &Value, body: Map<String, Value>) {
        let out = Out::Reply {
            dest: dest.clone(),
            body,
        };
        let _ = self.tx.send(out).await;
    }

    /// An `error` reply.
    async fn error(&self, dest: &Value, in_reply_to: &Value, status: &Status) {
        debug!(code = %status.code(), message = status.message(), "stdio: error reply");
        let body = body(
            "error",
            in_reply_to,
            [
                ("code", json!(status.code().as_i32())),
                ("text", json!(status.message())),
            ],
        );
        self.reply(dest, body).await;
    }
}

/// A reply body: `type`, `in_reply_to`, then `fields`.
fn body<const N: usize>(
    kind: &str,
    in_reply_to: &Value,
    fields: [(&str, Value); N],
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("in_reply_to".into(), in_reply_to.clone());
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    m
}

/// Runs the node: reads requests from `input`, writes replies to `output`, until `input` ends
/// and the calls are drained. Errors only for a server that cannot be set up.
pub async fn run<R, W>(config: StdioConfig, input: R, output: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let server = app::build(config.app.clone());
    let served = server.service_names();
    let schema = Schema::new(pb::FILE_DESCRIPTOR_SET, &served)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let (client_io, server_io) = tokio::io::duplex(DUPLEX_BUFFER_BYTES);
    let (stop, stopped) = oneshot::channel::<()>();
    let server_task = tokio::spawn(server.serve_io(server_io, STDIO_PEER, async {
        let _ = stopped.await;
    }));
    let channel = Channel::connect_io(client_io)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;

    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE_LINES);
    let writer = tokio::spawn(write_replies(rx, output));
    let mut node = Node {
        channel,
        schema: Arc::new(schema),
        out: Outbox { tx },
        node_id: None,
        streams: Streams::default(),
        calls: JoinSet::new(),
        max_calls: config.app.server.max_concurrent_streams as usize,
    };
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        match read_line(&mut input, &mut line, config.max_line_bytes).await {
            Ok(Some(LineRead::Whole)) => node.handle_line(&line).await,
            Ok(Some(LineRead::TooLong)) => {
                let status = Status::invalid_argument(format!(
                    "input line longer than {} bytes",
                    config.max_line_bytes
                ));
                node.out.error(&Value::Null, &Value::Null, &status).await;
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "stdio: cannot read input");
                break;
            }
        }
        while node.calls.try_join_next().is_some() {}
    }
    debug!("stdio: input ended; draining calls");
    node.streams.close_all();
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while node.calls.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!("stdio: drain timeout; shutting the server down");
    }
    let _ = stop.send(());
    while node.calls.join_next().await.is_some() {}
    let _ = server_task.await;
    drop(node);
    let _ = writer.await;
    Ok(())
}

/// Writes replies as JSON lines, numbering them from 0. Flushes whenever the queue is empty.
async fn write_replies<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<Out>, mut output: W) {
    let mut node_id = Value::Null;
    let mut next_msg_id: u64 = 0;
    while let Some(first) = rx.recv().await {
        let mut item = Some(first);
        while let Some(out) = item.take() {
            match out {
                Out::NodeId(id) => node_id = Value::String(id),
                Out::Reply { dest, mut body } => {
                    body.insert("msg_id".into(), json!(next_msg_id));
                    next_msg_id += 1;
                    let line = json!({"src": node_id, "dest": dest, "body": body});
                    let mut bytes = line.to_string().into_bytes();
                    bytes.push(b'\n');
                    if let Err(e) = output.write_all(&bytes).await {
                        warn!(error = %e, "stdio: cannot write output");
                        return;
                    }
                }
            }
            item = rx.try_recv().ok();
        }
        if output.flush().await.is_err() {
            return;
        }
    }
}

enum LineRead {
    Whole,
    TooLong,
}

/// Reads one line (without its `\n`) into `buf`, never holding more than `max` bytes of it.
/// `None` at the end of input.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<LineRead>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.unwrap_or(available.len());
        let chunk = available.get(..take).unwrap_or_default();
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = newline.map_or(take, |i| i + 1);
        input.consume(consumed);
        if newline.is_some() {
            return Ok(Some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
    }
}

/// The node's state, owned by the input loop.
struct Node {
    channel: Channel,
    schema: Arc<Schema>,
    out: Outbox,
    node_id: Option<String>,
    streams: Streams,
    /// Every running call's task.
    calls: JoinSet<()>,
    max_calls: usize,
}

/// One request line, parsed.
struct Request {
    /// Who to answer (the request's `src`).
    dest: Value,
    msg_id: Value,
    body: Map<String, Value>,
}

impl Request {
    fn str_field(&self, name: &str) -> Result<&str, Status> {
        self.body
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Status::invalid_argument(format!("body.{name} must be a string")))
    }
}

impl Node {
    async fn handle_line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                let status = Status::invalid_argument(format!("malformed JSON: {e}"));
                return self.out.error(&Value::Null, &Value::Null, &status).await;
            }
        };
        let Value::Object(mut envelope) = value else {
            let status = Status::invalid_argument("a message must be a JSON object");
            return self.out.error(&Value::Null, &Value::Null, &status).await;
        };
        let dest = envelope.remove("src").unwrap_or(Value::Null);
        if self.node_id.is_none() {
            // Before init, answer as whoever the harness addressed.
            if let Some(Value::String(id)) = envelope.get("dest") {
                self.set_node_id(id.clone()).await;
            }
        }
        let Some(Value::Object(body)) = envelope.remove("body") else {
            let status = Status::invalid_argument("body must be a JSON object");
            return self.out.error(&dest, &Value::Null, &status).await;
        };
        let req = Request {
            dest,
            msg_id: body.get("msg_id").cloned().unwrap_or(Value::Null),
            body,
        };
        if let Err(status) = self.dispatch(&req).await {
            self.out.error(&req.dest, &req.msg_id, &status).await;
        }
    }

    async fn set_node_id(&mut self, id: String) {
        self.node_id = Some(id.clone());
        let _ = self.out.tx.send(Out::NodeId(id)).await;
    }

    async fn dispatch(&mut self, req: &Request) -> Result<(), Status> {
        match req.str_field("type")? {
            "init" => {
                let id = req.str_field("node_id")?.to_owned();
                self.set_node_id(id).await;
                self.out
                    .reply(&req.dest, body("init_ok", &req.msg_id, []))
                    .await;
                Ok(())
            }
            "grpc_server_stream" | "grpc_unary" => self.single_request_call(req),
            "grpc_bidi_stream_open" => self.open_stream(req).await,
            "grpc_bidi_stream_send" => self.streams.send(req),
            "grpc_bidi_stream_close" => self.streams.close(req),
            "grpc_bidi_stream_cancel" => self.streams.cancel(req),
            other => Err(Status::unimplemented(format!(
                "unknown message type {other:?}"
            ))),
        }
    }

    fn check_capacity(&self) -> Result<(), Status> {
        if self.calls.len() >= self.max_calls {
            return Err(Status::resource_exhausted(format!(
                "too many running calls (max {})",
                self.max_calls
            )));
        }
        Ok(())
    }

    /// `grpc_server_stream` and `grpc_unary`: one request, then the responses.
    fn single_request_call(&mut self, req: &Request) -> Result<(), Status> {
        let unary = req.str_field("type")? == "grpc_unary";
        let method = self
            .schema
            .resolve(req.str_field("service")?, req.str_field("method")?)?;
        let fits = if unary {
            method.kind == crate::stdio::schema::MethodKind::Unary
        } else {
            method.kind.single_request()
        };
        if !fits {
            return Err(Status::invalid_argument(format!(
                "{} is {}: use {}",
                method.path,
                method.kind,
                if method.kind.single_request() {
                    "grpc_server_stream"
                } else {
                    "grpc_bidi_stream_open"
                }
            )));
        }
        let empty = Value::Object(Map::new());
        let request = method.request_from_json(req.body.get("request").unwrap_or(&empty))?;
        self.check_capacity()?;
        let call = calls::SingleRequest {
            channel: self.channel.clone(),
            method,
            request,
            out: self.out.clone(),
            dest: req.dest.clone(),
            in_reply_to: req.msg_id.clone(),
        };
        if unary {
            self.calls.spawn(call.run_unary());
        } else {
            self.calls.spawn(call.run_server_stream());
        }
        Ok(())
    }

    /// `grpc_bidi_stream_open`: answers at once and registers the stream; the call starts in the
    /// stream's task.
    async fn open_stream(&mut self, req: &Request) -> Result<(), Status> {
        let method = self
            .schema
            .resolve(req.str_field("service")?, req.str_field("method")?)?;
        if method.kind.single_request() {
            return Err(Status::invalid_argument(format!(
                "{} is {}: use grpc_server_stream",
                method.path, method.kind
            )));
        }
        self.check_capacity()?;
        // Answer first: nothing of the stream may reach the output before its open_ok.
        let stream_id = self.streams.next_id();
        let reply = body(
            "grpc_bidi_stream_open_ok",
            &req.msg_id,
            [("stream_id", json!(stream_id))],
        );
        self.out.reply(&req.dest, reply).await;
        let opened_by = (req.dest.clone(), req.msg_id.clone());
        self.streams.open(
            stream_id,
            &mut self.calls,
            &self.channel,
            method,
            &self.out,
            opened_by,
        );
        Ok(())
    }
}
