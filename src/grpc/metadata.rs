//! Custom metadata: the headers and trailers that belong to the application.
//!
//! Names are `[0-9a-z_.-]`. Values of names ending in `-bin` are binary and travel base64-encoded
//! (accepted padded or unpadded, sent unpadded). Reserved headers — pseudo-headers, `grpc-*`,
//! `content-type`, `te`, `user-agent` and the HTTP/2 connection headers — never reach a handler as
//! metadata and a handler cannot set them.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use super::status::Status;

/// Base64 that accepts both padded and unpadded input.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `name` is for the transport, not the application.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type"
                | "te"
                | "user-agent"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "host"
                | "content-length"
        )
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'.' | b'-'))
}

/// Application metadata of one direction of a call.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Boxed and absent when empty: most calls carry no metadata, and every call holds three of
    /// these (received, headers to send, trailers to send) for as long as it lives.
    headers: Option<Box<HeaderMap>>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// The application's part of received headers: reserved names are dropped.
    pub fn from_headers(headers: &HeaderMap) -> Metadata {
        let mut out = HeaderMap::new();
        for (name, value) in headers {
            if !is_reserved(name.as_str()) {
                out.append(name.clone(), value.clone());
            }
        }
        Metadata {
            headers: (!out.is_empty()).then(|| Box::new(out)),
        }
    }

    fn map_mut(&mut self) -> &mut HeaderMap {
        self.headers.get_or_insert_with(Box::default)
    }

    /// The first ASCII value for `name`, if any and if it is visible ASCII.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()?
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// The first binary value for a `-bin` name, base64-decoded (padded or not); `None` when
    /// there is none or it is not base64. A header value holding several values joined by `,`
    /// counts as those values (see [`get_all_bin`](Metadata::get_all_bin)).
    pub fn get_bin(&self, name: &str) -> Option<Vec<u8>> {
        let v = self.headers.as_ref()?.get(name)?;
        let first = v.as_bytes().split(|&b| b == b',').next()?;
        decode_bin_piece(first)
    }

    /// Every binary value for a `-bin` name, in order, base64-decoded (padded or not). A sender
    /// may join repeated values into one header with `,` (grpc/grpc `doc/PROTOCOL-HTTP2.md`:
    /// implementations must split binary headers on `,` before decoding), so each header value
    /// is split first. `None` when any value is not base64.
    pub fn get_all_bin(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        let Some(map) = self.headers.as_ref() else {
            return Some(Vec::new());
        };
        map.get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(decode_bin_piece)
            .collect()
    }

    /// Sets an ASCII value. Errors (INTERNAL) for reserved or invalid names and for values that are
    /// not printable ASCII.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), Status> {
        let name = checked_name(name, false)?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Status::internal(format!("metadata value for {name} is not ASCII")))?;
        self.map_mut().append(name, value);
        Ok(())
    }

    /// Sets a binary value under a `-bin` name; it is sent base64-encoded without padding.
    pub fn insert_bin(&mut self, name: &str, value: &[u8]) -> Result<(), Status> {
        let name = checked_name(name, true)?;
        let encoded = STANDARD_NO_PAD.encode(value);
        // Base64 output is always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            self.map_mut().append(name, v);
        }
        Ok(())
    }

    /// Copies a received entry as it came (for echoing metadata back).
    pub fn copy_from(&mut self, other: &Metadata, name: &str) {
        // Most calls carry no metadata: look at the name only when there is something to copy.
        let Some(from) = &other.headers else { return };
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            return;
        };
        for v in from.get_all(&n) {
            self.map_mut().append(n.clone(), v.clone());
        }
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.headers.as_ref().is_none_or(|h| h.is_empty())
    }

    /// All entries, as header name and raw value.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers.iter().flat_map(|h| h.iter())
    }

    /// Adds every entry to `headers` (for sending).
    pub fn add_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers.iter().flat_map(|h| h.iter()) {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Moves every entry to `headers` (for sending), leaving this empty: a call's metadata is
    /// sent once, and a streaming call should not hold a copy of it for the rest of its life.
    pub fn move_to(&mut self, headers: &mut HeaderMap) {
        let Some(map) = self.headers.take() else {
            return;
        };
        // A name comes with the first of its values only.
        let mut name = None;
        for (next, value) in *map {
            if next.is_some() {
                name = next;
            }
            if let Some(name) = &name {
                headers.append(name.clone(), value);
            }
        }
    }
}

fn checked_name(name: &str, binary: bool) -> Result<HeaderName, Status> {
    if !valid_name(name) || is_reserved(name) || name.ends_with("-bin") != binary {
        return Err(Status::internal(format!(
            "invalid or reserved metadata name {name:?}"
        )));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Status::internal(format!("invalid metadata name {name:?}")))
}

/// One value of a `-bin` header (after splitting on `,`), with optional whitespace around it.
fn decode_bin_piece(piece: &[u8]) -> Option<Vec<u8>> {
    LENIENT_B64.decode(piece.trim_ascii()).ok()
}

/// Decodes padded or unpadded base64 (for callers that read `-bin` values themselves).
pub fn decode_bin(value: &[u8]) -> Option<Vec<u8>> {
    LENIENT_B64
        .decode(value)
        .ok()
        .or_else(|| STANDARD.decode(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_do_not_reach_the_application() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-timeout", HeaderValue::from_static("1S"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-user", HeaderValue::from_static("alice"));
        let m = Metadata::from_headers(&h);
        assert_eq!(m.get("x-user"), Some("alice"));
        assert_eq!(m.iter().count(), 1);
    }

    #[test]
    fn bin_values_accept_padding_and_emit_none() {
        let mut h = HeaderMap::new();
        h.insert("a-bin", HeaderValue::from_static("AQI="));
        h.insert("b-bin", HeaderValue::from_static("AQI"));
        let m = Metadata::from_headers(&h);
        assert_eq!(m.get_bin("a-bin"), Some(vec![1, 2]));
        assert_eq!(m.get_bin("b-bin"), Some(vec![1, 2]));
        let mut out = Metadata::new();
        out.insert_bin("c-bin", &[1, 2]).unwrap_or(());
        assert_eq!(out.get("c-bin"), Some("AQI"));
        assert!(out.insert("grpc-status", "0").is_err());
        assert!(out.insert("x-bin", "no").is_err());
    }

    #[test]
    fn comma_joined_bin_values_are_split_before_decoding() {
        let mut joined = HeaderMap::new();
        joined.insert("x-bin", HeaderValue::from_static("AQI=,AwQ"));
        let mut apart = HeaderMap::new();
        apart.append("x-bin", HeaderValue::from_static("AQI"));
        apart.append("x-bin", HeaderValue::from_static("AwQ="));
        let mut spaced = HeaderMap::new();
        spaced.insert("x-bin", HeaderValue::from_static("AQI, AwQ"));
        for h in [joined, apart, spaced] {
            let m = Metadata::from_headers(&h);
            assert_eq!(m.get_bin("x-bin"), Some(vec![1, 2]), "{h:?}");
            assert_eq!(
                m.get_all_bin("x-bin"),
                Some(vec![vec![1, 2], vec![3, 4]]),
                "{h:?}"
            );
        }
        let mut bad = HeaderMap::new();
        bad.insert("x-bin", HeaderValue::from_static("AQI,*not base64*"));
        let m = Metadata::from_headers(&bad);
        assert_eq!(m.get_bin("x-bin"), Some(vec![1, 2]));
        assert_eq!(m.get_all_bin("x-bin"), None);
        assert_eq!(m.get_all_bin("y-bin"), Some(vec![]));
    }

    #[test]
    fn move_to_sends_every_value_once_and_keeps_nothing() {
        let mut m = Metadata::new();
        for (name, value) in [("x-a", "1"), ("x-b", "2"), ("x-a", "3")] {
            assert!(m.insert(name, value).is_ok());
        }
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        m.move_to(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(h.get("x-b").map(|v| v.as_bytes()), Some(&b"2"[..]));
        assert_eq!(h.len(), 4);
        assert!(m.is_empty());
        assert!(m.headers.is_none());
        m.move_to(&mut h);
        assert_eq!(h.len(), 4);
    }
}
