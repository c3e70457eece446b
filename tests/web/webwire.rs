//! A raw gRPC-Web client on h2, written from grpc/grpc `doc/PROTOCOL-WEB.md` and nothing of the
//! crate's: it sends one request body (binary or base64 in any number of padded chunks) and reads
//! the response as the spec frames it — messages with flag 0x00, then one trailers frame with
//! flag 0x80 holding `name: value\r\n` lines — or a Trailers-Only answer in the headers.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use tokio::net::TcpStream;

use crate::support::{within, PATIENCE};

/// An h2 connection to the server.
pub struct Conn {
    send: SendRequest<Bytes>,
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Message payloads, in order.
    pub messages: Vec<Vec<u8>>,
    /// The trailers frame's lines (empty when there was none).
    pub trailers: BTreeMap<String, String>,
    /// Whether the body held a trailers frame.
    pub trailers_frame: bool,
    /// Whether HTTP/2 trailers (a HEADERS frame after the data) came too.
    pub http_trailers: bool,
}

impl Answer {
    /// `grpc-status` from the trailers frame, else from the headers (Trailers-Only).
    pub fn grpc_status(&self) -> Option<u32> {
        let from_body = self.trailers.get("grpc-status").cloned();
        let from_headers = self
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        from_body.or(from_headers)?.parse().ok()
    }
}

impl Conn {
    /// Connects over plaintext h2.
    pub async fn open(addr: SocketAddr) -> Conn {
        let tcp = within(PATIENCE, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let (send, conn) = within(PATIENCE, "h2 handshake", h2::client::handshake(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { send }
    }

    /// Sends a request without a body; the status, headers and the body as it came.
    pub async fn exchange_raw(&mut self, request: Request<()>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut send = within(PATIENCE, "room for a stream", self.send.clone().ready())
            .await
            .expect("ready");
        let (response, _) = send.send_request(request, true).expect("send");
        let response = within(PATIENCE, "response headers", response)
            .await
            .expect("response");
        let (parts, mut recv) = response.into_parts();
        let raw = read_body(&mut recv).await;
        (parts.status, parts.headers, raw)
    }

    /// Sends `request` (its body `body`) and reads the whole answer.
    pub async fn exchange(&mut self, request: Request<()>, body: &[u8]) -> Answer {
        let text = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc-web-text"));
        let mut send = within(PATIENCE, "room for a stream", self.send.clone().ready())
            .await
            .expect("ready");
        let (response, mut stream) = send.send_request(request, body.is_empty()).expect("send");
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body), true)
                .expect("body");
        }
        let response = within(PATIENCE, "response headers", response)
            .await
            .expect("response");
        let (parts, mut recv) = response.into_parts();
        let raw = read_body(&mut recv).await;
        let http_trailers = within(PATIENCE, "end of response", recv.trailers())
            .await
            .expect("trailers")
            .is_some();
        let body = if text { decode_chunks(&raw) } else { raw };
        let (messages, trailers, trailers_frame) = split_frames(&body);
        Answer {
            status: parts.status,
            headers: parts.headers,
            messages,
            trailers,
            trailers_frame,
            http_trailers,
        }
    }
}

/// The whole body, its capacity given back as it comes.
async fn read_body(recv: &mut h2::RecvStream) -> Vec<u8> {
    let mut raw = Vec::new();
    while let Some(chunk) = within(PATIENCE, "response body", recv.data()).await {
        let chunk = chunk.expect("body chunk");
        let _ = recv.flow_control().release_capacity(chunk.len());
        raw.extend_from_slice(&chunk);
    }
    raw
}

/// A POST of `path` with `content_type`.
pub fn post(path: &str, content_type: &str) -> http::request::Builder {
    Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
}

/// One message frame: flag 0, big-endian length, payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Base64 of `bytes` as several padded chunks, cut every `every` input bytes.
pub fn text_chunks(bytes: &[u8], every: usize) -> Vec<u8> {
    bytes
        .chunks(every)
        .flat_map(|c| STANDARD.encode(c).into_bytes())
        .collect()
}

/// Decodes base64 that may be several padded chunks back to back.
fn decode_chunks(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, group) in text.chunks(4).enumerate() {
        if group.contains(&b'=') || (i + 1) * 4 >= text.len() {
            let end = ((i + 1) * 4).min(text.len());
            out.extend(
                STANDARD
                    .decode(&text[start..end])
                    .expect("response is base64"),
            );
            start = end;
        }
    }
    out
}

fn split_frames(body: &[u8]) -> (Vec<Vec<u8>>, BTreeMap<String, String>, bool) {
    let mut messages = Vec::new();
    let mut trailers = BTreeMap::new();
    let mut seen_trailers = false;
    let mut rest = body;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a frame prefix is cut short: {rest:?}");
        assert!(!seen_trailers, "a frame after the trailers frame");
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        match flag {
            0x00 => messages.push(payload.to_vec()),
            0x80 => {
                seen_trailers = true;
                let text = std::str::from_utf8(payload).expect("trailers are text");
                for line in text.split_terminator("\r\n") {
                    let (name, value) = line.split_once(':').expect("name: value");
                    assert_eq!(
                        name,
                        name.to_ascii_lowercase(),
                        "trailer names are lower case"
                    );
                    trailers.insert(name.to_owned(), value.trim().to_owned());
                }
            }
            other => panic!("unexpected frame flag {other:#x}"),
        }
    }
    (messages, trailers, seen_trailers)
}
