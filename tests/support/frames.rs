//! HTTP/2 by hand on a TCP socket, written from RFC 9113 (frames) and RFC 7541 (HPACK: literal
//! fields only), for tests that send what no HTTP/2 library will — a stream reset before the
//! server could accept it, a header h2 forbids, thousands of 1-byte DATA frames in one write —
//! and must see exactly what the server answers: GOAWAY with its error code and debug data,
//! RST_STREAM with its code, the PING ACK that proves every earlier frame was read.
//!
//! Not an HTTP/2 implementation: it answers the server's SETTINGS with an ACK and otherwise only
//! reads. Every wait has a deadline ([`PATIENCE`]) naming what it waited for.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, PATIENCE};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA (§6.1).
    pub const DATA: u8 = 0x0;
    /// HEADERS (§6.2).
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM (§6.4).
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS (§6.5).
    pub const SETTINGS: u8 = 0x4;
    /// PING (§6.7).
    pub const PING: u8 = 0x6;
    /// GOAWAY (§6.8).
    pub const GOAWAY: u8 = 0x7;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    /// END_STREAM on DATA and HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// ACK on SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    /// END_HEADERS on HEADERS.
    pub const END_HEADERS: u8 = 0x4;
}

/// Error codes of RST_STREAM and GOAWAY (RFC 9113 §7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 §6.5.2): the window the peer grants each stream.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Largest frame payload the client accepts: SETTINGS_MAX_FRAME_SIZE's initial value, which the
/// client never raises (RFC 9113 §4.2).
const MAX_FRAME_PAYLOAD: usize = 1 << 14;

/// One frame: 9-byte header (24-bit length, type, flags, 31-bit stream id) and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a frame payload under 16 MiB");
    assert!(len < 1 << 24, "a frame payload under 16 MiB");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with these (identifier, value) pairs.
pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// An HPACK integer with an `prefix_bits`-bit prefix whose other bits are `first` (RFC 7541
/// §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK string literal, not Huffman-coded (RFC 7541 §5.2).
fn hpack_string(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A header block of "literal header field without indexing, new name" entries (RFC 7541
/// §6.2.2), in the order given: nothing enters either side's dynamic table.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name);
        hpack_string(&mut out, value);
    }
    out
}

/// A HEADERS frame carrying `fields` in one block (END_HEADERS), ending the stream if `end`.
pub fn headers(stream: u32, fields: &[(&str, &str)], end: bool) -> Vec<u8> {
    let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
    frame(kind::HEADERS, flags, stream, &header_block(fields))
}

/// The HEADERS of a gRPC call to `path` (POST, `content-type: application/grpc`,
/// `te: trailers`), the stream left open for messages, with `extra` fields after those.
pub fn grpc_request(stream: u32, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    headers(stream, &fields, false)
}

/// A DATA frame (unpadded), ending the stream if `end`.
pub fn data(stream: u32, payload: &[u8], end: bool) -> Vec<u8> {
    frame(
        kind::DATA,
        if end { flag::END_STREAM } else { 0 },
        stream,
        payload,
    )
}

/// A RST_STREAM frame with error `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A PING frame (not an ACK) carrying `opaque`.
pub fn ping(opaque: u64) -> Vec<u8> {
    frame(kind::PING, 0, 0, &opaque.to_be_bytes())
}

/// A frame as received.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream id (reserved bit cleared).
    pub stream: u32,
    /// Its payload.
    pub payload: Bytes,
}

impl Frame {
    /// The error code of a RST_STREAM frame.
    pub fn rst_code(&self) -> u32 {
        assert_eq!(self.kind, kind::RST_STREAM, "not a RST_STREAM: {self:?}");
        let b: [u8; 4] = self
            .payload
            .get(..4)
            .expect("RST_STREAM payload")
            .try_into()
            .expect("4");
        u32::from_be_bytes(b)
    }
}

/// A GOAWAY frame's fields (RFC 9113 §6.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// The last stream the server processed.
    pub last_stream: u32,
    /// The error code.
    pub code: u32,
    /// The debug data, as text.
    pub debug: String,
}

/// One HTTP/2 connection driven by hand.
pub struct RawConnection {
    tcp: TcpStream,
    buf: BytesMut,
}

impl RawConnection {
    /// Connects, sends the preface and a SETTINGS frame with `params` (the server's SETTINGS
    /// are acknowledged when read).
    pub async fn connect(addr: SocketAddr, params: &[(u16, u32)]) -> RawConnection {
        let tcp = within(
            PATIENCE,
            "a TCP connection to the server",
            TcpStream::connect(addr),
        )
        .await
        .expect("connect");
        let mut conn = RawConnection {
            tcp,
            buf: BytesMut::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(params));
        conn.send(&hello).await;
        conn
    }

    /// Writes `bytes` (any number of frames) in one write.
    pub async fn send(&mut self, bytes: &[u8]) {
        within(
            PATIENCE,
            "the server to take what the client writes",
            async {
                self.tcp
                    .write_all(bytes)
                    .await
                    .expect("write to the server");
                self.tcp.flush().await.expect("flush");
            },
        )
        .await;
    }

    /// The next frame, `None` once the server has closed the connection (a reset counts as
    /// closed). SETTINGS from the server are acknowledged and returned as well.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.take_frame() {
                if frame.kind == kind::SETTINGS && frame.flags & flag::ACK == 0 {
                    let ack = self::frame(kind::SETTINGS, flag::ACK, 0, &[]);
                    // The server may already be gone; what it sends next tells.
                    let _ = self.tcp.write_all(&ack).await;
                }
                return Some(frame);
            }
            let mut chunk = [0u8; 16 << 10];
            let read = within(
                PATIENCE,
                "the next frame from the server",
                self.tcp.read(&mut chunk),
            )
            .await;
            match read {
                Ok(0) | Err(_) => {
                    assert!(self.buf.is_empty(), "the connection ended inside a frame");
                    return None;
                }
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let head: [u8; 9] = self.buf.get(..9)?.try_into().ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        assert!(
            len <= MAX_FRAME_PAYLOAD,
            "the server sent a {len}-byte frame, over SETTINGS_MAX_FRAME_SIZE"
        );
        if self.buf.len() < 9 + len {
            return None;
        }
        self.buf.advance(9);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream,
            payload: self.buf.split_to(len).freeze(),
        })
    }

    /// Sends a PING and reads until its ACK: proof that the server read every frame sent
    /// before it and kept the connection. Returns the frames that came before the ACK; fails
    /// the test on a GOAWAY or the end of the connection.
    pub async fn ping_answered(&mut self, opaque: u64) -> Vec<Frame> {
        self.send(&ping(opaque)).await;
        let mut before = Vec::new();
        loop {
            let Some(frame) = self.next_frame().await else {
                panic!("the server closed the connection instead of answering PING {opaque}: {before:?}");
            };
            if frame.kind == kind::GOAWAY {
                panic!(
                    "the server sent {:?} instead of answering PING {opaque}",
                    parse_goaway(&frame)
                );
            }
            if frame.kind == kind::PING
                && frame.flags & flag::ACK != 0
                && frame.payload.as_ref() == opaque.to_be_bytes()
            {
                return before;
            }
            before.push(frame);
        }
    }

    /// Reads until a GOAWAY and returns it with the frames that came before; fails the test if
    /// the connection ends first.
    pub async fn goaway(&mut self) -> (GoAway, Vec<Frame>) {
        let mut before = Vec::new();
        loop {
            let Some(frame) = self.next_frame().await else {
                panic!("the connection ended without a GOAWAY: {before:?}");
            };
            if frame.kind == kind::GOAWAY {
                return (parse_goaway(&frame), before);
            }
            before.push(frame);
        }
    }

    /// Reads (and drops) frames until the server closes the connection.
    pub async fn closed(&mut self) {
        while self.next_frame().await.is_some() {}
    }
}

/// The fields of a GOAWAY frame.
pub fn parse_goaway(frame: &Frame) -> GoAway {
    assert_eq!(frame.kind, kind::GOAWAY, "not a GOAWAY: {frame:?}");
    let p = &frame.payload;
    let word = |at: usize| -> u32 {
        let b: [u8; 4] = p
            .get(at..at + 4)
            .unwrap_or_else(|| panic!("a GOAWAY of {} bytes", p.len()))
            .try_into()
            .expect("4 bytes");
        u32::from_be_bytes(b)
    };
    GoAway {
        last_stream: word(0) & 0x7fff_ffff,
        code: word(4),
        debug: String::from_utf8_lossy(p.get(8..).unwrap_or_default()).into_owned(),
    }
}
