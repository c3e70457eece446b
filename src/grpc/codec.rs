//! The gRPC message framing: bytes in, messages out, no I/O.
//!
//! Every message on a gRPC stream is a 5-byte prefix — one compressed-flag byte (0 or 1) and a
//! 4-byte big-endian length — followed by that many payload bytes. HTTP/2 DATA frame boundaries have
//! nothing to do with message boundaries, so [`Decoder`] accepts bytes split anywhere.
//!
//! The decoder is a two-state machine (reading a prefix, reading a body). The length prefix is
//! checked against the limit, and no memory is ever reserved for a body before its bytes arrive:
//! the buffer grows with what is pushed, by at most a quarter more than it holds (never to twice
//! its content) and never past the end of the message being read.
//!
//! It needs nothing but `bytes` (the status each [`DecodeError`] ends a call with is in
//! `status.rs`), so the fuzz crate (`fuzz/`) compiles this file on its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the prefix in front of every message.
pub const PREFIX_BYTES: usize = 5;

/// Default largest message a server accepts: 4 MiB, as grpc-go and tonic.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Spare room the buffer may get when it grows, beyond a quarter of its content: 1 KiB.
const GROWTH_SLACK_BYTES: usize = 1 << 10;

/// One decoded message: its flag and its (possibly compressed) payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The compressed flag was 1: the payload is compressed with the stream's `grpc-encoding`.
    pub compressed: bool,
    /// The payload bytes, without the prefix.
    pub payload: Bytes,
}

/// Why a byte stream is not a valid sequence of gRPC messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The compressed-flag byte was neither 0 nor 1.
    BadFlag(u8),
    /// A prefix announced a message longer than the limit.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The stream ended inside a message.
    Truncated {
        /// Bytes buffered when the stream ended.
        buffered: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadFlag(flag) => {
                write!(f, "invalid compressed flag {flag} (must be 0 or 1)")
            }
            DecodeError::TooLarge { len, max } => {
                write!(f, "received message larger than max ({len} vs. {max})")
            }
            DecodeError::Truncated { buffered } => write!(
                f,
                "stream ended inside a message ({buffered} bytes of an incomplete message)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Where the decoder is within the current message.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Waiting for the 5-byte prefix.
    Prefix,
    /// The prefix was read; waiting for `len` payload bytes.
    Body { compressed: bool, len: usize },
}

/// Incremental decoder: [`push`](Decoder::push) bytes as they arrive, then call
/// [`next_frame`](Decoder::next_frame) until it returns `Ok(None)`.
///
/// Memory: the decoder holds at most the bytes pushed and not yet returned, in a buffer at most a
/// quarter (plus 1 KiB) larger than them. A length prefix reserves nothing: a peer that announces
/// 4 MiB and sends 5 bytes costs 5 bytes. Callers bound the content by pushing only while
/// `next_frame` yields nothing; then it never exceeds one message of at most `max_message_bytes`
/// plus one pushed chunk.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    state: State,
    max_message_bytes: usize,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            state: State::Prefix,
            max_message_bytes,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        // Once the stream is known to be broken there is no point in keeping its bytes.
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        let needed = self.buf.len().saturating_add(data.len());
        if self.buf.capacity() < needed {
            self.grow(needed);
        }
        self.buf.extend_from_slice(data);
    }

    /// Moves the buffer into one with room for `needed` bytes and some spare: a quarter of
    /// `needed` (plus a little), but not past the end of the message being read while the
    /// buffer holds less than it, so that the copies stay few (about five times a large message
    /// in all) and the spare stays small.
    fn grow(&mut self, needed: usize) {
        let spare = (needed / 4).saturating_add(GROWTH_SLACK_BYTES);
        let message_end = match self.state {
            // The buffer holds the body read so far (and perhaps more after it).
            State::Body { len, .. } => len,
            State::Prefix => PREFIX_BYTES,
        };
        // Beyond the current message the bytes are already here: the spare may follow them.
        let spare = match message_end.checked_sub(needed) {
            Some(to_end) => spare.min(to_end),
            None => spare,
        };
        let mut grown = BytesMut::with_capacity(needed.saturating_add(spare));
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    /// Bytes the buffer has room for (what it costs), at least [`buffered`](Decoder::buffered).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the decoder has failed (it then ignores further input).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Bytes pushed but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After an error the decoder
    /// keeps returning that error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            match self.state {
                State::Prefix => {
                    if self.buf.len() < PREFIX_BYTES {
                        return Ok(None);
                    }
                    let flag = self.buf.get_u8();
                    let len = self.buf.get_u32() as usize;
                    let compressed = match flag {
                        0 => false,
                        1 => true,
                        other => return Err(self.fail(DecodeError::BadFlag(other))),
                    };
                    if len > self.max_message_bytes {
                        return Err(self.fail(DecodeError::TooLarge {
                            len,
                            max: self.max_message_bytes,
                        }));
                    }
                    // Nothing is reserved for the body: it grows as its bytes arrive (see `push`).
                    self.state = State::Body { compressed, len };
                }
                State::Body { compressed, len } => {
                    if self.buf.len() < len {
                        return Ok(None);
                    }
                    let payload = self.buf.split_to(len).freeze();
                    if self.buf.is_empty() {
                        // An empty view would still pin the buffer it was cut from: a long-lived
                        // call that is not sending (a chat member) should hold no memory here.
                        self.buf = BytesMut::new();
                    }
                    self.state = State::Prefix;
                    return Ok(Some(Frame {
                        compressed,
                        payload,
                    }));
                }
            }
        }
    }

    /// Called when the peer ends the stream: an error if it ended inside a message.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let partial = match self.state {
            State::Prefix => self.buf.len(),
            State::Body { .. } => self.buf.len() + PREFIX_BYTES,
        };
        if partial == 0 {
            Ok(())
        } else {
            Err(DecodeError::Truncated { buffered: partial })
        }
    }

    fn fail(&mut self, err: DecodeError) -> DecodeError {
        self.failed = Some(err.clone());
        self.buf = BytesMut::new();
        err
    }
}

/// Writes one framed message (prefix and payload) into `dst`.
///
/// # Panics
/// Never for payloads under 4 GiB; larger ones are a caller bug (messages are bounded far below).
pub fn encode_frame(compressed: bool, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(PREFIX_BYTES + payload.len());
    dst.put_u8(u8::from(compressed));
    dst.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    dst.put_slice(payload);
}

/// Encodes a protobuf message into one uncompressed frame with a single allocation.
pub fn encode_message<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[(bool, &[u8])]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for (c, p) in msgs {
            encode_frame(*c, p, &mut b);
        }
        b.to_vec()
    }

    fn decode_all(d: &mut Decoder) -> Vec<Frame> {
        let mut out = vec![];
        while let Ok(Some(f)) = d.next_frame() {
            out.push(f);
        }
        out
    }

    #[test]
    fn every_split_point_yields_the_same_messages() {
        let msgs: &[(bool, &[u8])] = &[(false, b"hello"), (true, b""), (false, b"world!")];
        let bytes = framed(msgs);
        for split in 0..=bytes.len() {
            let mut d = Decoder::new(100);
            d.push(&bytes[..split]);
            let mut got = decode_all(&mut d);
            d.push(&bytes[split..]);
            got.extend(decode_all(&mut d));
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(&got[2].payload[..], b"world!");
            assert!(got[1].compressed);
            assert_eq!(d.finish(), Ok(()));
        }
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body_arrives() {
        let mut d = Decoder::new(10);
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLarge {
                len: u32::MAX as usize,
                max: 10
            })
        );
        assert!(d.buf.capacity() < 1024);
        // The error sticks.
        assert!(matches!(d.next_frame(), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn a_length_prefix_reserves_nothing() {
        let mut d = Decoder::new(4 << 20);
        d.push(&[0, 0, 0x40, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.capacity() < 4096, "capacity {}", d.capacity());
    }

    #[test]
    fn the_buffer_grows_with_what_arrives_never_to_twice_its_content() {
        let len = 1 << 20;
        let mut bytes = framed(&[(false, &vec![7u8; len])]);
        bytes.extend(framed(&[(false, b"next")]));
        let mut d = Decoder::new(4 << 20);
        let mut frames = vec![];
        for chunk in bytes.chunks(16 << 10) {
            d.push(chunk);
            let held = d.buffered();
            assert!(
                d.capacity() <= held + held / 4 + GROWTH_SLACK_BYTES + (16 << 10),
                "capacity {} for {held} bytes",
                d.capacity()
            );
            frames.extend(decode_all(&mut d));
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload.len(), len);
        assert_eq!(&frames[1].payload[..], b"next");
    }

    #[test]
    fn bad_flag_and_truncation_are_errors() {
        let mut d = Decoder::new(10);
        d.push(&[2, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(DecodeError::BadFlag(2)));
        let mut d = Decoder::new(10);
        d.push(&[0, 0, 0, 0, 3, b'a']);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated { buffered: 6 }));
    }
}
