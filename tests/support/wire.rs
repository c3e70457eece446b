//! A deliberately small gRPC client on raw h2, for tests that must see or shape the wire:
//! per-message compressed flags, unknown encodings, compression bombs, flow control. Not a
//! client library: it panics (the test fails) on anything unexpected.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use h2chat::grpc::codec::{self, Decoder, Frame};
use h2chat::grpc::Status;
use http::{HeaderMap, Request};
use tokio::net::TcpStream;

/// Largest message the test client decodes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

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

    async fn connect_with(addr: SocketAddr, builder: h2::client::Builder) -> WireClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = builder.handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        WireClient { send }
    }

    /// Starts a call to `path` with these extra request headers.
    pub async fn start(&mut self, path: &str, headers: &[(&str, &str)]) -> WireCall {
        let mut req = Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).expect("request");
        let send = self.send.clone().ready().await.expect("connection ready");
        let mut send = send;
        let (response, body) = send.send_request(req, false).expect("send request");
        WireCall {
            body: Some(body),
            response: Some(response),
            headers: None,
            recv: None,
            decoder: Decoder::new(MAX_MESSAGE_BYTES),
        }
    }
}

/// One call: what was sent and what came back.
pub struct WireCall {
    body: Option<SendStream<Bytes>>,
    response: Option<h2::client::ResponseFuture>,
    headers: Option<HeaderMap>,
    recv: Option<RecvStream>,
    decoder: Decoder,
}

/// A frame of `payload` with the compressed flag `compressed`.
pub fn frame(compressed: bool, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    codec::encode_frame(compressed, payload, &mut buf);
    buf.freeze()
}

/// An uncompressed frame holding `msg`.
pub fn message<M: prost::Message>(msg: &M) -> Bytes {
    codec::encode_message(msg)
}

impl WireCall {
    /// Sends bytes on the request stream (h2 buffers them); `end` half-closes.
    pub fn send(&mut self, data: Bytes, end: bool) {
        let body = self.body.as_mut().expect("request stream still open");
        body.send_data(data, end).expect("send data");
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

    /// The response headers (waits for them).
    pub async fn headers(&mut self) -> &HeaderMap {
        if self.headers.is_none() {
            let response = self.response.take().expect("response pending");
            let response = response.await.expect("response headers");
            assert_eq!(response.status(), 200, "HTTP status");
            let (parts, recv) = response.into_parts();
            self.headers = Some(parts.headers);
            self.recv = Some(recv);
        }
        self.headers.as_ref().expect("headers just set")
    }

    /// The next response message with its flag; `None` at the end of the response stream.
    /// Releases flow control for what it reads when `release` is set.
    pub async fn next_frame_with(&mut self, release: bool) -> Option<Frame> {
        self.headers().await;
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("response framing") {
                return Some(frame);
            }
            let recv = self.recv.as_mut().expect("response body");
            let chunk = recv.data().await?.expect("response data");
            if release {
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            self.decoder.push(&chunk);
        }
    }

    /// The next response message with its flag, releasing flow control as it reads.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_with(true).await
    }

    /// The next response message decoded as `M` (decompressing a gzip frame).
    pub async fn next_message<M: prost::Message + Default>(&mut self) -> Option<M> {
        let frame = self.next_frame().await?;
        let payload = if frame.compressed {
            let encoding = self.headers().await.get("grpc-encoding").cloned();
            let encoding = encoding.expect("compressed frame without grpc-encoding");
            let encoding = h2chat::grpc::compression::Encoding::from_name(
                encoding.to_str().expect("ascii grpc-encoding"),
            )
            .expect("known grpc-encoding");
            encoding
                .decompress(frame.payload, MAX_MESSAGE_BYTES)
                .expect("decompress response")
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
        let trailers = recv
            .trailers()
            .await
            .expect("trailers")
            .expect("trailers present");
        let status = Status::from_headers(&trailers).expect("grpc-status in trailers");
        (status, trailers)
    }
}
