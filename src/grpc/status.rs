//! gRPC status: the 17 codes, and how a status travels in `grpc-status` / `grpc-message`.
//!
//! `grpc-message` is UTF-8 text, percent-encoded: every byte outside 0x20..=0x7E, and `%` itself,
//! becomes `%XX`. Decoding never fails: a bad escape is kept as written.
//!
//! Trailers are not flow controlled, so `grpc-message` is capped: at most
//! [`MAX_GRPC_MESSAGE_BYTES`] once encoded, cut at a character boundary.

use std::fmt;

use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

use super::codec::DecodeError;
use super::headers::{GRPC_MESSAGE, GRPC_STATUS};

/// The bytes `grpc-message` escapes: controls, everything above 0x7E (which `CONTROLS` plus the
/// non-ASCII rule of `utf8_percent_encode` covers) and `%`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Longest `grpc-message` the server sends, encoded: 1 KiB.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 1 << 10;

/// Most bytes of client input an error message quotes (see [`quote`]).
pub const MAX_QUOTED_BYTES: usize = 64;

/// A gRPC status code (doc/statuscodes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
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

    /// The code for a number; numbers outside 0..=16 are `Unknown`, as the spec asks.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's number as it appears in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical upper-case name, e.g. `RESOURCE_EXHAUSTED`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The `grpc-status` header value for this code.
    fn header_value(self) -> HeaderValue {
        // Static text: every call ends with one of these, so no allocation per call.
        const DIGITS: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        HeaderValue::from_static(DIGITS[self as usize])
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of a call: a code and an optional human-readable message.
///
/// Handlers return `Err(Status)`; the server turns it into trailers (or a Trailers-Only response),
/// never into a stream reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $fn:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with any code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// The OK status, with no message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    constructors! {
        /// CANCELLED: the caller cancelled the call.
        cancelled => Cancelled,
        /// UNKNOWN.
        unknown => Unknown,
        /// INVALID_ARGUMENT: the request is wrong whatever the server's state.
        invalid_argument => InvalidArgument,
        /// DEADLINE_EXCEEDED: the call's deadline passed.
        deadline_exceeded => DeadlineExceeded,
        /// NOT_FOUND.
        not_found => NotFound,
        /// ALREADY_EXISTS.
        already_exists => AlreadyExists,
        /// PERMISSION_DENIED.
        permission_denied => PermissionDenied,
        /// RESOURCE_EXHAUSTED: a limit was reached.
        resource_exhausted => ResourceExhausted,
        /// FAILED_PRECONDITION.
        failed_precondition => FailedPrecondition,
        /// ABORTED.
        aborted => Aborted,
        /// OUT_OF_RANGE.
        out_of_range => OutOfRange,
        /// UNIMPLEMENTED: no such service or method, or a feature the server does not have.
        unimplemented => Unimplemented,
        /// INTERNAL: the protocol was broken (bad framing, undecodable message, ...).
        internal => Internal,
        /// UNAVAILABLE: try again later (e.g. the server is shutting down).
        unavailable => Unavailable,
        /// DATA_LOSS.
        data_loss => DataLoss,
        /// UNAUTHENTICATED.
        unauthenticated => Unauthenticated,
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (already decoded; may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Adds `grpc-status` and, when there is a message, a percent-encoded `grpc-message` to `headers`.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        headers.insert(GRPC_STATUS, self.code.header_value());
        if !self.message.is_empty() {
            let encoded = encode_message_capped(&self.message, MAX_GRPC_MESSAGE_BYTES);
            // The encoded form is printable ASCII, which is always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                headers.insert(GRPC_MESSAGE, v);
            }
        }
    }

    /// Reads a status from trailers (or a Trailers-Only response). `None` when there is no
    /// `grpc-status`; an unparsable one reads as UNKNOWN, as grpc-go does.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let raw = headers.get(GRPC_STATUS)?;
        let code = raw
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(Code::from_i32)
            .unwrap_or(Code::Unknown);
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| decode_message(v.as_bytes()))
            .unwrap_or_default();
        Some(Status { code, message })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

/// Percent-encodes a `grpc-message` value.
pub fn encode_message(message: &str) -> String {
    utf8_percent_encode(message, MESSAGE_ESCAPES).to_string()
}

/// Percent-encodes as much of `message` as fits in `max` encoded bytes, whole characters only.
pub fn encode_message_capped(message: &str, max: usize) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4];
    for c in message.chars() {
        let piece = utf8_percent_encode(c.encode_utf8(&mut buf), MESSAGE_ESCAPES);
        let len: usize = piece.clone().map(str::len).sum();
        if out.len() + len > max {
            break;
        }
        out.extend(piece);
    }
    out
}

/// At most the first `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// A short, escaped prefix of client input for an error message: at most `max` bytes of it,
/// cut at a character boundary, Debug-escaped, with "…" when cut. The cost is bounded by `max`
/// whatever the input's size.
pub fn quote(text: &str, max: usize) -> String {
    let cut = truncate(text, max);
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Decodes a `grpc-message` value. Never fails: invalid escapes stay as written and invalid UTF-8
/// becomes U+FFFD.
pub fn decode_message(raw: &[u8]) -> String {
    percent_decode(raw).decode_utf8_lossy().into_owned()
}

impl DecodeError {
    /// The status a call ends with for this error: RESOURCE_EXHAUSTED for an oversize message,
    /// INTERNAL for broken framing; the error's text is the message.
    pub fn to_status(&self) -> Status {
        match self {
            DecodeError::TooLarge { .. } => Status::resource_exhausted(self.to_string()),
            DecodeError::BadFlag(_) | DecodeError::Truncated { .. } => {
                Status::internal(self.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversize_message_is_resource_exhausted_and_broken_framing_internal() {
        let too_large = DecodeError::TooLarge { len: 11, max: 10 }.to_status();
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert_eq!(
            too_large.message(),
            "received message larger than max (11 vs. 10)"
        );
        assert_eq!(DecodeError::BadFlag(2).to_status().code(), Code::Internal);
        let truncated = DecodeError::Truncated { buffered: 3 }.to_status();
        assert_eq!(truncated.code(), Code::Internal);
    }

    #[test]
    fn message_round_trips_through_percent_encoding() {
        let text = "\t multi\nline 100% 😈 ünïcode ";
        let enc = encode_message(text);
        assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{enc}");
        assert!(enc.contains("%25"));
        assert_eq!(decode_message(enc.as_bytes()), text);
    }

    #[test]
    fn grpc_message_is_capped_at_a_character_boundary() {
        let long = "é".repeat(10_000);
        let mut h = HeaderMap::new();
        Status::internal(long).add_to(&mut h);
        let sent = h["grpc-message"].to_str().unwrap_or_default();
        assert!(sent.len() <= MAX_GRPC_MESSAGE_BYTES, "{}", sent.len());
        assert!(sent.len() > MAX_GRPC_MESSAGE_BYTES - 6);
        assert!(decode_message(sent.as_bytes()).chars().all(|c| c == 'é'));
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(quote("abc", 2), "\"ab\"…");
    }

    #[test]
    fn bad_escape_is_kept() {
        assert_eq!(decode_message(b"50%zz done%"), "50%zz done%");
    }

    #[test]
    fn status_survives_headers() {
        let mut h = HeaderMap::new();
        Status::resource_exhausted("too big: 5 > 4").add_to(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let back = Status::from_headers(&h).unwrap_or_else(Status::ok);
        assert_eq!(back, Status::resource_exhausted("too big: 5 > 4"));
    }

    #[test]
    fn numbers_map_to_codes() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_i32() as usize, i);
            assert_eq!(Code::from_i32(i as i32), *c);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }
}
