//! How a client maps what it got from h2 to a gRPC status: HTTP statuses and content types of
//! responses that are not gRPC, stream resets, and h2 errors.

use h2::Reason;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};

use crate::grpc::status::{Code, Status};

/// The status for a response that is not gRPC, as grpc-go decides it: a non-200 HTTP status maps
/// per grpc/grpc `doc/http-grpc-status-mapping.md`; a 200 without a gRPC `content-type` is
/// INTERNAL. `None` for a gRPC response.
pub(super) fn non_grpc_response(http_status: StatusCode, headers: &HeaderMap) -> Option<Status> {
    let content_type = headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    let grpc_content = content_type.is_some_and(is_grpc_content_type);
    if http_status == StatusCode::OK && grpc_content {
        return None;
    }
    let mut problems = Vec::with_capacity(2);
    if http_status != StatusCode::OK {
        problems.push(format!(
            "unexpected HTTP status code received from server: {} ({})",
            http_status.as_u16(),
            http_status.canonical_reason().unwrap_or("unknown")
        ));
    }
    if !grpc_content {
        problems.push(match content_type {
            None => "malformed header: missing HTTP content-type".to_string(),
            Some(ct) => format!("unexpected content-type {:?}", String::from_utf8_lossy(ct)),
        });
    }
    let code = if http_status == StatusCode::OK {
        Code::Internal
    } else {
        code_from_http(http_status)
    };
    Some(Status::new(code, problems.join("; ")))
}

/// `application/grpc`, optionally followed by `+subtype` or `;parameters` (not `grpc-web`).
fn is_grpc_content_type(ct: &[u8]) -> bool {
    match ct.strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"),
        None => false,
    }
}

/// The gRPC code for the HTTP status of a response without `grpc-status`
/// (grpc/grpc `doc/http-grpc-status-mapping.md`): every status the table does not list is
/// UNKNOWN — 405 and 415 included.
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The gRPC code for a stream reset with `reason` (grpc-go's `http2ErrConvTab`).
pub fn code_from_reset(reason: Reason) -> Code {
    match reason {
        Reason::CANCEL => Code::Cancelled,
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        Reason::NO_ERROR
        | Reason::PROTOCOL_ERROR
        | Reason::INTERNAL_ERROR
        | Reason::FLOW_CONTROL_ERROR
        | Reason::SETTINGS_TIMEOUT
        | Reason::STREAM_CLOSED
        | Reason::FRAME_SIZE_ERROR
        | Reason::COMPRESSION_ERROR
        | Reason::CONNECT_ERROR
        | Reason::HTTP_1_1_REQUIRED => Code::Internal,
        _ => Code::Unknown,
    }
}

pub(super) fn status_from_reset(reason: Reason) -> Status {
    Status::new(
        code_from_reset(reason),
        format!("stream terminated by RST_STREAM with error code {reason:?}"),
    )
}

/// The status for an h2 error: a stream reset maps by its reason; anything else (connection
/// lost, GOAWAY, I/O) is UNAVAILABLE.
pub(super) fn status_from_h2(err: &h2::Error) -> Status {
    match err.reason() {
        Some(reason) if err.is_reset() => status_from_reset(reason),
        _ => Status::unavailable(format!("connection: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn http_statuses_map_as_the_grpc_table_says() {
        let code = |n: u16| StatusCode::from_u16(n).map(code_from_http).ok();
        assert_eq!(code(400), Some(Code::Internal));
        assert_eq!(code(401), Some(Code::Unauthenticated));
        assert_eq!(code(403), Some(Code::PermissionDenied));
        assert_eq!(code(404), Some(Code::Unimplemented));
        for n in [429, 502, 503, 504] {
            assert_eq!(code(n), Some(Code::Unavailable), "{n}");
        }
        for n in [405, 415, 500, 302] {
            assert_eq!(code(n), Some(Code::Unknown), "{n}");
        }
    }

    #[test]
    fn a_200_without_grpc_content_type_is_internal() {
        let mut h = HeaderMap::new();
        assert_eq!(
            non_grpc_response(StatusCode::OK, &h).map(|s| s.code()),
            Some(Code::Internal)
        );
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web"),
        );
        assert_eq!(
            non_grpc_response(StatusCode::OK, &h).map(|s| s.code()),
            Some(Code::Internal)
        );
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;x=1",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(non_grpc_response(StatusCode::OK, &h), None, "{ct}");
        }
        let refused = non_grpc_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &HeaderMap::new());
        assert_eq!(refused.as_ref().map(Status::code), Some(Code::Unknown));
        assert!(refused.is_some_and(|s| s.message().contains("415")));
    }

    #[test]
    fn resets_map_as_grpc_go() {
        assert_eq!(code_from_reset(Reason::CANCEL), Code::Cancelled);
        assert_eq!(code_from_reset(Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(code_from_reset(Reason::NO_ERROR), Code::Internal);
        assert_eq!(
            code_from_reset(Reason::ENHANCE_YOUR_CALM),
            Code::ResourceExhausted
        );
        assert_eq!(code_from_reset(Reason::from(0xff)), Code::Unknown);
    }
}
