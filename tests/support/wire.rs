//! A deliberately small gRPC client on raw h2, for tests that must see or shape the wire:
//! per-message compressed flags, unknown encodings, compression bombs, flow control. Not a
//! client library: it panics (the test fails) on anything unexpected, and every wait has a
//! deadline ([`PATIENCE`]) naming what it waited for.
//!
//! It reads what the server sends from the spec (grpc/grpc `doc/PROTOCOL-HTTP2.md`,
//! `doc/statuscodes.md`, `doc/compression.md`) with code of its own — the 5-byte message prefix,
//! `grpc-status` and the percent-decoding of `grpc-message`, trailers or Trailers-Only, gzip and
//! deflate through flate2 — and never with the crate's codec, status or compression code: a bug
//! made the same way on both sides would otherwise cancel out.

use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request};
use tokio::net::TcpStream;

use super::{within, PATIENCE};

/// Largest message the test client accepts.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A gRPC status code, numbered as in grpc/grpc `doc/statuscodes.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 0
    Ok,
    /// 1
    Cancelled,
    /// 2
    Unknown,
    /// 3
    InvalidArgument,
    /// 4
    DeadlineExceeded,
    /// 5
    NotFound,
    /// 6
    AlreadyExists,
    /// 7
    PermissionDenied,
    /// 8
    ResourceExhausted,
    /// 9
    FailedPrecondition,
    /// 10
    Aborted,
    /// 11
    OutOfRange,
    /// 12
    Unimplemented,
    /// 13
    Internal,
    /// 14
    Unavailable,
    /// 15
    DataLoss,
    /// 16
    Unauthenticated,
}

impl Code {
    /// The code numbered `n`, if the spec has one.
    pub fn from_number(n: u32) -> Option<Code> {
        const ALL: [Code; 17] = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        ALL.get(usize::try_from(n).ok()?).copied()
    }
}

/// A call's status as the server sent it: `grpc-status` and the percent-decoded `grpc-message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message, percent-decoded (empty when the server sent none).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status in `headers` (trailers, or the headers of a Trailers-Only response); `None`
    /// without `grpc-status`. Panics on a `grpc-status` that is not a spec code in decimal.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let raw = headers.get("grpc-status")?;
        let text = std::str::from_utf8(raw.as_bytes()).expect("ASCII grpc-status");
        assert!(
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
            "grpc-status {text:?} is not a decimal number"
        );
        let n: u32 = text.parse().expect("grpc-status fits u32");
        let code = Code::from_number(n).unwrap_or_else(|| panic!("grpc-status {n} is no code"));
        let message = headers
            .get("grpc-message")
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        Some(Status { code, message })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// `grpc-message` decoding per the spec: `%XX` is the byte 0xXX, anything else stands for
/// itself (a bad escape is kept as it is, never an error), and the bytes are UTF-8.
pub fn percent_decode(raw: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let escaped = match (b, raw.get(i + 1), raw.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One message as it came: its compressed flag and its payload as sent.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The compressed flag (prefix byte 0).
    pub compressed: bool,
    /// The payload as sent (compressed if the flag says so).
    pub payload: Bytes,
}

/// Takes one whole message off the front of `buf` (flag byte, 4-byte big-endian length,
/// payload); `None` until it is all there. Panics on a flag other than 0/1 or an absurd length.
pub fn take_frame(buf: &mut BytesMut) -> Option<Frame> {
    let header: [u8; 5] = buf.get(..5)?.try_into().ok()?;
    let compressed = match header[0] {
        0 => false,
        1 => true,
        flag => panic!("the server sent compressed flag {flag}"),
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(
        len <= MAX_MESSAGE_BYTES,
        "the server sent a {len}-byte message"
    );
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    let payload = buf.split_to(len).freeze();
    Some(Frame {
        compressed,
        payload,
    })
}

/// A message of `payload` with the compressed flag `compressed`, framed per the spec.
pub fn frame(compressed: bool, payload: &[u8]) -> Bytes {
    let len = u32::try_from(payload.len()).expect("a message under 4 GiB");
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.extend_from_slice(&[u8::from(compressed)]);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// An uncompressed message holding `msg`.
pub fn message<M: prost::Message>(msg: &M) -> Bytes {
    frame(false, &msg.encode_to_vec())
}

/// `data` compressed as `encoding` ("gzip": RFC 1952; "deflate": zlib, RFC 1950).
pub fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    match encoding {
        "gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), level);
            w.write_all(data).expect("gzip");
            w.finish().expect("gzip")
        }
        "deflate" => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), level);
            w.write_all(data).expect("deflate");
            w.finish().expect("deflate")
        }
        other => panic!("the test client has no {other:?}"),
    }
}

/// `data` decompressed as `encoding`; panics on corrupt data or output over the client's limit.
pub fn decompress(encoding: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let limit = MAX_MESSAGE_BYTES as u64 + 1;
    let read = match encoding {
        "gzip" => flate2::read::GzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        other => panic!("the server compressed with {other:?}, which the test client lacks"),
    };
    read.unwrap_or_else(|e| panic!("the server's {encoding} data does not decompress: {e}"));
    assert!(
        out.len() <= MAX_MESSAGE_BYTES,
        "decompressed past the limit"
    );
    out.into()
}

/// One HTTP/2 connection to the server.
pub struct WireClient {
    send: SendRequest<Bytes>,
}

impl WireClient {
    /// Connects with h2's default windows.
    pub async fn connect(addr: SocketAddr) -> WireClient {
        WireClient::connect_with(addr, h2::client::Builder::new()).await
    }

    /// Connects with a stream receive window of `window` bytes (to play a slow reader).
    pub async fn connect_with_window(addr: SocketAddr, window: u32) -> WireClient {
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(window);
        WireClient::connect_with(addr, builder).await
    }

    /// Connects with `builder`'s settings.
    pub async fn connect_with(addr: SocketAddr, builder: h2::client::Builder) -> WireClient {
        let handshake = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            builder.handshake(tcp).await.expect("h2 handshake")
        };
        let (send, conn) = within(PATIENCE, "the h2 handshake with the server", handshake).await;
        // The connection ends when the server closes it or the client is dropped; how it ended is
        // the tests' business through the calls.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        WireClient { send }
    }

    /// Connects with a stream receive window of 0: the server cannot send a byte of response
    /// data on any call until [`WindowGrant::grant`] raises the window of every stream (with a
    /// SETTINGS frame, as the only per-connection way to open a window that was never used).
    pub async fn connect_granting_nothing(addr: SocketAddr) -> (WireClient, WindowGrant) {
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(0);
        let handshake = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            builder
                .handshake::<_, Bytes>(tcp)
                .await
                .expect("h2 handshake")
        };
        let (send, mut conn) =
            within(PATIENCE, "the h2 handshake with the server", handshake).await;
        let (grant_tx, grant_rx) = tokio::sync::oneshot::channel::<u32>();
        tokio::spawn(async move {
            tokio::select! {
                _ = &mut conn => return,
                window = grant_rx => {
                    if let Ok(window) = window {
                        let _ = conn.set_initial_window_size(window);
                    }
                }
            }
            let _ = conn.await;
        });
        (WireClient { send }, WindowGrant(grant_tx))
    }

    /// Starts a call to `path` with `content-type: application/grpc`, `te: trailers` and these
    /// extra request headers.
    pub async fn start(&mut self, path: &str, headers: &[(&str, &str)]) -> WireCall {
        let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
        all.extend_from_slice(headers);
        self.start_with_exactly(path, &all).await
    }

    /// Starts a call to `path` with exactly these request headers (none added).
    pub async fn start_with_exactly(&mut self, path: &str, headers: &[(&str, &str)]) -> WireCall {
        let mut req = Request::post(format!("http://localhost{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).expect("request");
        let ready = self.send.clone().ready();
        let mut send = within(PATIENCE, "the connection to take a new stream", ready)
            .await
            .expect("connection ready");
        let (response, body) = send.send_request(req, false).expect("send request");
        WireCall {
            body: Some(body),
            response: Some(response),
            status: http::StatusCode::OK,
            headers: None,
            recv: None,
            buf: BytesMut::new(),
        }
    }
}

/// Opens the window of a [`WireClient::connect_granting_nothing`] connection.
pub struct WindowGrant(tokio::sync::oneshot::Sender<u32>);

impl WindowGrant {
    /// From now on every stream of the connection may receive `window` bytes before the client
    /// releases any (the client's calls release what they read).
    pub fn grant(self, window: u32) {
        let _ = self.0.send(window);
    }
}

/// One call: what was sent and what came back.
pub struct WireCall {
    body: Option<SendStream<Bytes>>,
    response: Option<h2::client::ResponseFuture>,
    status: http::StatusCode,
    headers: Option<HeaderMap>,
    recv: Option<RecvStream>,
    buf: BytesMut,
}

impl WireCall {
    /// Sends bytes on the request stream (h2 buffers them); `end` half-closes. A server may
    /// answer and end the stream before it reads the request (an unknown method's
    /// UNIMPLEMENTED does): then the bytes are not sent, and the response says what the server
    /// answered (or the reset it sent, [`server_reset`](WireCall::server_reset)), which is what a
    /// test asserts on.
    pub fn send(&mut self, data: Bytes, end: bool) {
        let body = self.body.as_mut().expect("request stream still open");
        let _ = body.send_data(data, end);
        if end {
            self.body = None;
        }
    }

    /// Resets the request stream with CANCEL, as a client cancelling the call does.
    pub fn cancel(&mut self) {
        if let Some(body) = self.body.as_mut() {
            body.send_reset(h2::Reason::CANCEL);
        }
    }

    /// The response's HTTP status (waits for the response headers, at most [`PATIENCE`]).
    pub async fn http_status(&mut self) -> http::StatusCode {
        if self.headers.is_none() {
            let response = self.response.take().expect("response pending");
            let response = within(PATIENCE, "the response headers", response)
                .await
                .expect("response headers");
            let (parts, recv) = response.into_parts();
            self.status = parts.status;
            self.headers = Some(parts.headers);
            self.recv = Some(recv);
        }
        self.status
    }

    /// The response headers (waits for them, at most [`PATIENCE`]); the HTTP status must be 200.
    pub async fn headers(&mut self) -> &HeaderMap {
        assert_eq!(self.http_status().await, 200, "HTTP status");
        self.headers.as_ref().expect("headers just set")
    }

    /// The reason of the RST_STREAM the server sent on this stream (waits for it, at most
    /// [`PATIENCE`]); only while the request stream is open (not half-closed by [`send`]).
    ///
    /// [`send`]: WireCall::send
    pub async fn server_reset(&mut self) -> h2::Reason {
        let body = self.body.as_mut().expect("request stream still open");
        let reset = std::future::poll_fn(|cx| body.poll_reset(cx));
        within(PATIENCE, "the server to reset the stream", reset)
            .await
            .expect("a RST_STREAM, not a connection error")
    }

    /// The next response message with its flag; `None` at the end of the response stream.
    /// Releases flow control for what it reads when `release` is set.
    pub async fn next_frame_with(&mut self, release: bool) -> Option<Frame> {
        self.headers().await;
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            let recv = self.recv.as_mut().expect("response body");
            let chunk = within(PATIENCE, "the next response DATA frame", recv.data()).await;
            let Some(chunk) = chunk else {
                assert!(self.buf.is_empty(), "the response ended inside a message");
                return None;
            };
            let chunk = chunk.expect("response data");
            if release {
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next response message with its flag, releasing flow control as it reads.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_with(true).await
    }

    /// The next response message decoded as `M` (decompressing it as the response's
    /// `grpc-encoding` says when its flag is set).
    pub async fn next_message<M: prost::Message + Default>(&mut self) -> Option<M> {
        let frame = self.next_frame().await?;
        let payload = if frame.compressed {
            let encoding = self.headers().await.get("grpc-encoding").cloned();
            let encoding = encoding.expect("compressed frame without grpc-encoding");
            decompress(
                encoding.to_str().expect("ASCII grpc-encoding"),
                &frame.payload,
            )
        } else {
            frame.payload
        };
        Some(M::decode(payload).expect("response message decodes"))
    }

    /// Releases `n` bytes of the response window (for a test that read without releasing).
    pub fn release(&mut self, n: usize) {
        if let Some(recv) = self.recv.as_mut() {
            let _ = recv.flow_control().release_capacity(n);
        }
    }

    /// The call's status and trailing metadata: from the trailers, or from the headers of a
    /// Trailers-Only response. Messages not yet read are skipped.
    pub async fn finish(&mut self) -> (Status, HeaderMap) {
        let headers = self.headers().await.clone();
        if let Some(status) = Status::from_headers(&headers) {
            return (status, headers);
        }
        while self.next_frame().await.is_some() {}
        let recv = self.recv.as_mut().expect("response body");
        let trailers = within(PATIENCE, "the response trailers", recv.trailers())
            .await
            .expect("trailers")
            .expect("trailers present");
        let status = Status::from_headers(&trailers).expect("grpc-status in trailers");
        (status, trailers)
    }
}

/// The echo service's bidirectional call, which answers each message at once.
pub const ECHO_BIDI: &str = "/h2chat.echo.v1.Chat/BiDiChat";

/// A well-behaved client beside an attack: an echo call kept open on a connection of its own,
/// which must go on answering while another connection misbehaves (and a fresh connection
/// must be served too).
pub struct Bystander {
    addr: SocketAddr,
    _client: WireClient,
    call: WireCall,
    round: u32,
}

impl Bystander {
    /// Connects and opens the echo call; one round trip proves it works.
    pub async fn start(addr: SocketAddr) -> Bystander {
        let mut client = WireClient::connect(addr).await;
        let call = client.start(ECHO_BIDI, &[]).await;
        let mut bystander = Bystander {
            addr,
            _client: client,
            call,
            round: 0,
        };
        bystander.round_trip().await;
        bystander
    }

    async fn round_trip(&mut self) {
        self.round += 1;
        let text = format!("bystander {}", self.round);
        let msg = h2chat::pb::h2chat::echo::v1::EchoMessage { text: text.clone() };
        self.call.send(message(&msg), false);
        let reply: h2chat::pb::h2chat::echo::v1::EchoMessage = self
            .call
            .next_message()
            .await
            .expect("the bystander's echo");
        assert_eq!(reply.text, format!("echo: {text}"), "the bystander's echo");
    }

    /// Asserts that the open call still answers and that a new connection is served.
    pub async fn still_served(&mut self) {
        self.round_trip().await;
        let mut fresh = WireClient::connect(self.addr).await;
        let mut call = fresh.start(ECHO_BIDI, &[]).await;
        let msg = h2chat::pb::h2chat::echo::v1::EchoMessage {
            text: "fresh".into(),
        };
        call.send(message(&msg), true);
        let reply: h2chat::pb::h2chat::echo::v1::EchoMessage = call
            .next_message()
            .await
            .expect("an echo on a fresh connection");
        assert_eq!(reply.text, "echo: fresh");
        assert_eq!(
            call.finish().await.0.code(),
            Code::Ok,
            "the fresh call's status"
        );
    }
}
