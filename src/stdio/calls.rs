//! The stdio node's calls: single-request calls, and bidirectional streams with their states.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use prost_reflect::DynamicMessage;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{body, Outbox, Request};
use crate::grpc::client::CallReceiver;
use crate::grpc::{CallOptions, Channel, ClientCall, Code, Status};
use crate::stdio::schema::Method;

/// Requests a stream may have waiting for the server before a send is refused.
const STREAM_SEND_QUEUE: usize = 64;
/// Sends a stream remembers for pairing responses with them; beyond it the oldest is forgotten.
const MAX_UNANSWERED_SENDS: usize = 1024;

/// Who asked: the requester to answer and the request's `msg_id`.
type Asker = (Value, Value);

/// The state of a bidirectional stream as the harness sees it:
///
/// ```text
///          grpc_bidi_stream_close
///   OPEN ─────────────────────────▶ HALF_CLOSED
///     │                                  │
///     │   the call ended (any status,    │
///     │   cancel included)               │
///     ▼                                  ▼
///   CLOSED ◀─────────────────────────────┘
/// ```
///
/// Sends are accepted only when OPEN; the call's end is reported once, as `grpc_stream_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    Open,
    HalfClosed,
    Closed,
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamState::Open => "OPEN",
            StreamState::HalfClosed => "HALF_CLOSED",
            StreamState::Closed => "CLOSED",
        })
    }
}

/// What the input loop and the stream's task share.
struct StreamShared {
    state: StreamState,
    /// Sends not yet answered, oldest first: each response answers the oldest.
    unanswered: VecDeque<Asker>,
    opened_by: Asker,
    /// The close or cancel request, which `grpc_stream_end` answers.
    ended_by: Option<Asker>,
}

impl StreamShared {
    /// Who a response answers: the oldest unanswered send, else the open.
    fn answer(&mut self) -> Asker {
        self.unanswered
            .pop_front()
            .unwrap_or_else(|| self.opened_by.clone())
    }
}

enum Outbound {
    Message(DynamicMessage),
    Close,
}

struct StreamHandle {
    shared: Arc<Mutex<StreamShared>>,
    method: Method,
    requests: mpsc::Sender<Outbound>,
    cancel: Option<oneshot::Sender<()>>,
}

impl StreamHandle {
    fn lock(&self) -> MutexGuard<'_, StreamShared> {
        lock(&self.shared)
    }
}

fn lock(shared: &Mutex<StreamShared>) -> MutexGuard<'_, StreamShared> {
    // Nothing panics while holding it; a poisoned lock still holds consistent data.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's bidirectional streams, by id.
#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<String, StreamHandle>,
    /// Streams opened so far; ids are `s1` ..= `s{issued}`.
    issued: u64,
}

impl Streams {
    /// Reserves the next stream id.
    pub(super) fn next_id(&mut self) -> String {
        self.issued += 1;
        format!("s{}", self.issued)
    }

    /// Starts stream `id` for `method` in a task of `calls`. Requests may be sent at once: they
    /// wait until the call has started.
    pub(super) fn open(
        &mut self,
        id: String,
        calls: &mut JoinSet<()>,
        channel: &Channel,
        method: Method,
        out: &Outbox,
        opened_by: Asker,
    ) {
        self.map
            .retain(|_, s| s.lock().state != StreamState::Closed);
        let shared = Arc::new(Mutex::new(StreamShared {
            state: StreamState::Open,
            unanswered: VecDeque::new(),
            opened_by,
            ended_by: None,
        }));
        let (requests, requests_rx) = mpsc::channel(STREAM_SEND_QUEUE);
        let (cancel, cancelled) = oneshot::channel();
        let task = StreamTask {
            channel: channel.clone(),
            method: method.clone(),
            shared: shared.clone(),
            out: out.clone(),
            stream_id: id.clone(),
        };
        calls.spawn(task.run(requests_rx, cancelled));
        let handle = StreamHandle {
            shared,
            method,
            requests,
            cancel: Some(cancel),
        };
        self.map.insert(id, handle);
    }

    /// The stream a request names. NOT_FOUND for an id never issued; FAILED_PRECONDITION for a
    /// stream that is CLOSED.
    fn get(&mut self, req: &Request) -> Result<&mut StreamHandle, Status> {
        let id = req.str_field("stream_id")?;
        let closed = || Status::failed_precondition(format!("stream {id} is CLOSED"));
        match self.map.get(id).map(|s| s.lock().state) {
            Some(StreamState::Closed) => {
                self.map.remove(id);
                Err(closed())
            }
            Some(_) => self.map.get_mut(id).ok_or_else(closed),
            None => {
                let issued = id
                    .strip_prefix('s')
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 1 && n <= self.issued);
                if issued {
                    Err(closed())
                } else {
                    Err(Status::not_found(format!("unknown stream {id:?}")))
                }
            }
        }
    }

    /// `grpc_bidi_stream_send`: queues one request message on an OPEN stream.
    pub(super) fn send(&mut self, req: &Request) -> Result<(), Status> {
        let stream = self.get(req)?;
        let state = stream.lock().state;
        if state != StreamState::Open {
            return Err(Status::failed_precondition(format!(
                "stream {} is {state}: sending needs OPEN",
                req.str_field("stream_id")?
            )));
        }
        let empty = Value::Object(Map::new());
        let msg = stream
            .method
            .request_from_json(req.body.get("data").unwrap_or(&empty))?;
        // One slot stays free for the close.
        if stream.requests.capacity() <= 1 {
            return Err(Status::resource_exhausted(format!(
                "{STREAM_SEND_QUEUE} sends are waiting for the server on this stream"
            )));
        }
        {
            let mut shared = stream.lock();
            if shared.unanswered.len() >= MAX_UNANSWERED_SENDS {
                shared.unanswered.pop_front();
            }
            shared
                .unanswered
                .push_back((req.dest.clone(), req.msg_id.clone()));
        }
        if stream.requests.try_send(Outbound::Message(msg)).is_err() {
            stream.lock().unanswered.pop_back();
            return Err(Status::failed_precondition("the stream's call is ending"));
        }
        Ok(())
    }

    /// `grpc_bidi_stream_close`: half-closes an OPEN stream; its `grpc_stream_end` answers.
    pub(super) fn close(&mut self, req: &Request) -> Result<(), Status> {
        let stream = self.get(req)?;
        let mut shared = stream.lock();
        if shared.state != StreamState::Open {
            return Err(Status::failed_precondition(format!(
                "stream {} is {}: closing needs OPEN",
                req.str_field("stream_id")?,
                shared.state
            )));
        }
        shared.state = StreamState::HalfClosed;
        shared.ended_by = Some((req.dest.clone(), req.msg_id.clone()));
        drop(shared);
        // The slot kept free by `send` is there; if the task is gone the call is ending anyway.
        let _ = stream.requests.try_send(Outbound::Close);
        Ok(())
    }

    /// `grpc_bidi_stream_cancel`: cancels the call; its `grpc_stream_end` (CANCELLED) answers.
    pub(super) fn cancel(&mut self, req: &Request) -> Result<(), Status> {
        let stream = self.get(req)?;
        let Some(cancel) = stream.cancel.take() else {
            return Err(Status::failed_precondition(format!(
                "stream {} is already being cancelled",
                req.str_field("stream_id")?
            )));
        };
        stream.lock().ended_by = Some((req.dest.clone(), req.msg_id.clone()));
        let _ = cancel.send(());
        Ok(())
    }

    /// Half-closes every OPEN stream (the input has ended: nothing more will be sent).
    pub(super) fn close_all(&mut self) {
        for stream in self.map.values() {
            let mut shared = stream.lock();
            if shared.state == StreamState::Open {
                shared.state = StreamState::HalfClosed;
                drop(shared);
                let _ = stream.requests.try_send(Outbound::Close);
            }
        }
    }
}

/// A bidirectional stream's task: starts the call, sends what the node queues, reports what
/// arrives, and reports the end.
struct StreamTask {
    channel: Channel,
    method: Method,
    shared: Arc<Mutex<StreamShared>>,
    out: Outbox,
    stream_id: String,
}

impl StreamTask {
    async fn run(self, requests: mpsc::Receiver<Outbound>, cancelled: oneshot::Receiver<()>) {
        let (status, count) = match self
            .channel
            .start(&self.method.path, CallOptions::default())
            .await
        {
            Ok(call) => self.drive(call, requests, cancelled).await,
            Err(status) => (status, 0),
        };
        let asker = {
            let mut shared = lock(&self.shared);
            shared.state = StreamState::Closed;
            shared
                .ended_by
                .clone()
                .unwrap_or_else(|| shared.opened_by.clone())
        };
        let end = stream_end(&asker.1, Some(&self.stream_id), &status, count);
        self.out.reply(&asker.0, end).await;
    }

    async fn drive(
        &self,
        call: ClientCall,
        mut requests: mpsc::Receiver<Outbound>,
        mut cancelled: oneshot::Receiver<()>,
    ) -> (Status, u64) {
        let (mut tx, mut rx) = call.split();
        let pump = async move {
            while let Some(outbound) = requests.recv().await {
                match outbound {
                    Outbound::Message(msg) => {
                        // A failed send means the call is ending: receiving reports how.
                        if tx.send(&msg).await.is_err() {
                            break;
                        }
                    }
                    Outbound::Close => {
                        let _ = tx.close_send();
                        break;
                    }
                }
            }
            // Keep the sending half (dropping it alone changes nothing) until the call ends.
            std::future::pending::<()>().await;
        };
        let mut count = 0;
        let mut cancel_armed = true;
        let receive = async {
            loop {
                let next = tokio::select! {
                    next = rx.recv_raw() => next,
                    asked = &mut cancelled, if cancel_armed => {
                        cancel_armed = false;
                        if asked.is_ok() {
                            rx.cancel();
                        }
                        continue;
                    }
                };
                match next {
                    Ok(Some(payload)) => match self.method.response_to_json(payload) {
                        Ok(data) => {
                            count += 1;
                            self.report(data).await;
                        }
                        Err(status) => {
                            rx.cancel();
                            return status;
                        }
                    },
                    Ok(None) => return Status::ok(),
                    Err(status) => return status,
                }
            }
        };
        let status = tokio::select! {
            status = receive => status,
            () = pump => Status::internal("request pump ended"),
        };
        (status, count)
    }

    /// One response, answering the oldest unanswered send.
    async fn report(&self, data: Value) {
        let (dest, in_reply_to) = lock(&self.shared).answer();
        let reply = body(
            "grpc_bidi_stream_recv",
            &in_reply_to,
            [("stream_id", json!(self.stream_id)), ("data", data)],
        );
        self.out.reply(&dest, reply).await;
    }
}

/// A `grpc_stream_end` body: the status's name and the count of messages; for a status other
/// than OK also its `code` and `text`.
fn stream_end(
    in_reply_to: &Value,
    stream_id: Option<&str>,
    status: &Status,
    count: u64,
) -> Map<String, Value> {
    let mut end = body("grpc_stream_end", in_reply_to, []);
    if let Some(id) = stream_id {
        end.insert("stream_id".into(), json!(id));
    }
    end.insert("status".into(), json!(status.code().name()));
    end.insert("count".into(), json!(count));
    if status.code() != Code::Ok {
        end.insert("code".into(), json!(status.code().as_i32()));
        end.insert("text".into(), json!(status.message()));
    }
    end
}

/// A call with one request message: server streaming (or unary, as a stream of one) and unary.
pub(super) struct SingleRequest {
    pub(super) channel: Channel,
    pub(super) method: Method,
    pub(super) request: DynamicMessage,
    pub(super) out: Outbox,
    pub(super) dest: Value,
    pub(super) in_reply_to: Value,
}

impl SingleRequest {
    async fn start(&self) -> Result<CallReceiver, Status> {
        let mut call = self
            .channel
            .start(&self.method.path, CallOptions::default())
            .await?;
        // A failed send is not the outcome: the status the server sent is, and receiving finds it.
        let _ = call.send_last(&self.request).await;
        Ok(call.split().1)
    }

    /// One `grpc_stream_msg` per response (`seq` from 1), then `grpc_stream_end`.
    pub(super) async fn run_server_stream(self) {
        let mut count = 0u64;
        let status = match self.start().await {
            Err(status) => status,
            Ok(mut rx) => loop {
                match rx.recv_raw().await {
                    Ok(Some(payload)) => match self.method.response_to_json(payload) {
                        Ok(data) => {
                            count += 1;
                            let msg = body(
                                "grpc_stream_msg",
                                &self.in_reply_to,
                                [("seq", json!(count)), ("data", data)],
                            );
                            self.out.reply(&self.dest, msg).await;
                        }
                        Err(status) => {
                            rx.cancel();
                            break status;
                        }
                    },
                    Ok(None) => break Status::ok(),
                    Err(status) => break status,
                }
            },
        };
        let end = stream_end(&self.in_reply_to, None, &status, count);
        self.out.reply(&self.dest, end).await;
    }

    /// `grpc_unary_ok` with the response, or `error` with the call's status.
    pub(super) async fn run_unary(self) {
        let result = async {
            let mut rx = self.start().await?;
            let Some(payload) = rx.recv_raw().await? else {
                return Err(Status::internal("the server sent no response message"));
            };
            if rx.recv_raw().await?.is_some() {
                rx.cancel();
                return Err(Status::internal("the server sent more than one response"));
            }
            self.method.response_to_json(payload)
        }
        .await;
        match result {
            Ok(data) => {
                let ok = body("grpc_unary_ok", &self.in_reply_to, [("data", data)]);
                self.out.reply(&self.dest, ok).await;
            }
            Err(status) => self.out.error(&self.dest, &self.in_reply_to, &status).await,
        }
    }
}
