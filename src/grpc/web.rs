//! gRPC-Web on the wire (grpc/grpc `doc/PROTOCOL-WEB.md`): which protocol a request's
//! `content-type` asks for, the trailers frame, and the base64 body of the `-text` variants.
//! Bytes in, bytes out; no I/O.
//!
//! - `application/grpc-web[+proto]`: messages framed exactly as in gRPC; the trailers travel as
//!   the body's last frame, flag byte `0x80`, then `name: value\r\n` lines with lower-case names.
//! - `application/grpc-web-text[+proto]`: the same bytes, base64. A body may be several base64
//!   chunks, each padded on its own; the server pads at each of its flushes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

use crate::grpc::codec::PREFIX_BYTES;

/// The flag byte of a gRPC-Web trailers frame (the MSB set; bit 0 would mean compressed).
pub const TRAILERS_FLAG: u8 = 0x80;

/// The protocol a request asks for through its `content-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`, `application/grpc+proto`, …: gRPC over HTTP/2 with HTTP trailers.
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`: trailers in the body.
    Web,
    /// `application/grpc-web-text`, `application/grpc-web-text+proto`: as `Web`, base64.
    WebText,
}

impl Protocol {
    /// The protocol `content_type` names, or `None` when it is not a gRPC content type (the
    /// server answers HTTP 415). Parameters after `;` are ignored; a subtype suffix must follow
    /// `+` (`application/grpcfoo` is not gRPC).
    pub fn from_content_type(content_type: &str) -> Option<Protocol> {
        let base = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let (kind, suffix) = match base.split_once('+') {
            Some((kind, suffix)) => (kind, Some(suffix)),
            None => (base.as_str(), None),
        };
        if suffix.is_some_and(str::is_empty) {
            return None;
        }
        match kind {
            "application/grpc" => Some(Protocol::Grpc),
            "application/grpc-web" => Some(Protocol::Web),
            "application/grpc-web-text" => Some(Protocol::WebText),
            _ => None,
        }
    }

    /// Whether trailers go in the body (both gRPC-Web variants).
    pub fn is_web(self) -> bool {
        self != Protocol::Grpc
    }
}

/// The trailers frame: `0x80`, the 4-byte big-endian length, then one `name: value\r\n` line per
/// header (names are already lower case in an `http::HeaderMap`).
pub fn encode_trailers(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        block.put_slice(name.as_str().as_bytes());
        block.put_slice(b": ");
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(PREFIX_BYTES + block.len());
    frame.put_u8(TRAILERS_FLAG);
    // A trailer block is far below 4 GiB: the server writes it from a bounded header map.
    frame.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    frame.put_slice(&block);
    frame.freeze()
}

/// Base64 of `bytes`, padded: one `-text` chunk.
pub fn encode_text(bytes: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(bytes))
}

/// A `-text` request body that is not valid base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError;

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("grpc-web-text body is not base64")
    }
}

/// Decodes a `-text` request body as it arrives in pieces of any size: a piece may end inside a
/// 4-character group (kept for the next piece, at most 3 bytes), and the body may be several
/// padded chunks one after the other.
#[derive(Debug, Default)]
pub struct TextDecoder {
    carry: [u8; 3],
    carried: u8,
}

impl TextDecoder {
    /// Decodes what `input` completes, appending the bytes to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), TextError> {
        let carried = usize::from(self.carried);
        let mut joined = Vec::with_capacity(carried + input.len());
        joined.extend_from_slice(self.carry.get(..carried).unwrap_or_default());
        joined.extend_from_slice(input);
        let whole = joined.len() / 4 * 4;
        let (groups, rest) = joined.split_at(whole);
        // A padded group ends a chunk: decode up to and including it, then start anew.
        let mut start = 0;
        for (i, group) in groups.chunks_exact(4).enumerate() {
            if group.contains(&b'=') {
                let end = (i + 1) * 4;
                decode_into(groups.get(start..end).unwrap_or_default(), out)?;
                start = end;
            }
        }
        decode_into(groups.get(start..).unwrap_or_default(), out)?;
        self.carried = rest.len() as u8;
        self.carry
            .get_mut(..rest.len())
            .unwrap_or_default()
            .copy_from_slice(rest);
        Ok(())
    }

    /// At the end of the body: an unfinished group is an error.
    pub fn finish(&self) -> Result<(), TextError> {
        if self.carried == 0 {
            Ok(())
        } else {
            Err(TextError)
        }
    }
}

fn decode_into(text: &[u8], out: &mut BytesMut) -> Result<(), TextError> {
    if text.is_empty() {
        return Ok(());
    }
    let bytes = STANDARD.decode(text).map_err(|_| TextError)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_types_name_their_protocol() {
        use Protocol::*;
        for (ct, want) in [
            ("application/grpc", Some(Grpc)),
            ("application/grpc+proto", Some(Grpc)),
            ("application/grpc; charset=utf-8", Some(Grpc)),
            ("application/grpc-web", Some(Web)),
            ("application/grpc-web+proto", Some(Web)),
            ("application/grpc-web-text", Some(WebText)),
            ("application/grpc-web-text+proto", Some(WebText)),
            ("application/grpcfoo", None),
            ("application/grpc-webfoo", None),
            ("application/grpc+", None),
            ("application/json", None),
            ("", None),
        ] {
            assert_eq!(Protocol::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn trailers_frame_is_flag_length_and_crlf_lines() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frame = encode_trailers(&trailers);
        let body = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        let mut want = vec![0x80, 0, 0, 0, body.len() as u8];
        want.extend_from_slice(body);
        assert_eq!(&frame[..], &want[..]);
    }

    #[test]
    fn text_bodies_decode_across_pieces_and_padded_chunks() {
        // "AB" + "CDE" + "F" as three padded chunks, split at every position.
        let text = b"QUI=Q0RF" as &[u8];
        let text = [text, b"Rg=="].concat();
        for split in 0..=text.len() {
            let mut decoder = TextDecoder::default();
            let mut out = BytesMut::new();
            let (a, b) = text.split_at(split);
            decoder.push(a, &mut out).expect("first piece");
            decoder.push(b, &mut out).expect("second piece");
            decoder.finish().expect("whole");
            assert_eq!(&out[..], b"ABCDEF", "split at {split}");
        }
    }

    #[test]
    fn broken_text_is_refused() {
        let mut out = BytesMut::new();
        assert!(TextDecoder::default().push(b"Q!==", &mut out).is_err());
        let mut decoder = TextDecoder::default();
        decoder
            .push(b"QUJ", &mut out)
            .expect("a partial group waits");
        assert_eq!(decoder.finish(), Err(TextError));
    }
}
