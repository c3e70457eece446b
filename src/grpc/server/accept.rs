//! From an h2 request to a call: what is refused before any handler runs (not POST, not gRPC or
//! gRPC-Web, a browser's origin that is not allowed, a bad `grpc-timeout` or `grpc-encoding`, no
//! room for another handler), and the call's facts read from its headers. A CORS preflight
//! (`OPTIONS`) and a `GET` of a static page are answered here too, without a call.

use std::sync::Arc;
use std::time::Instant;

use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tracing::debug;

use super::call_log::{log_refused, log_refused_http};
use super::{ConnInfo, ServerConfig, Shared};
use crate::grpc::compression::{Encoding, Encodings};
use crate::grpc::headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT};
use crate::grpc::metadata::Metadata;
use crate::grpc::server::auth::{AuthRequest, Authenticator, Principal};
use crate::grpc::server::budget::ConnectionBudget;
use crate::grpc::server::call::{Call, CallInfo, WebCall};
use crate::grpc::server::cors::Verdict;
use crate::grpc::server::lifetime::CallSlot;
use crate::grpc::server::pages;
use crate::grpc::server::stats;
use crate::grpc::server::written::Chunk;
use crate::grpc::status::Status;
use crate::grpc::timeout;
use crate::grpc::web::Protocol;

/// Refuses a request that is not gRPC with a bare HTTP status.
fn refuse_http(respond: &mut SendResponse<Chunk>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    let _ = respond.send_response(response, true);
}

/// Refuses what cannot become a call (with an HTTP status or a Trailers-Only gRPC status);
/// otherwise returns the call, ready for its handler.
pub(super) fn accept_call(
    shared: &Shared,
    request: Request<RecvStream>,
    mut respond: SendResponse<Chunk>,
    conn: &Arc<ConnInfo>,
    budget: &Arc<ConnectionBudget>,
    permit: Option<CallSlot>,
) -> Option<Call> {
    let stream_id: u32 = respond.stream_id().as_u32();
    let method = request.method();
    if *method == Method::OPTIONS {
        let answer = shared.cors.preflight(&request);
        debug!(status = %answer.status(), "CORS preflight");
        let _ = respond.send_response(answer, true);
        return None;
    }
    let page = *method == Method::GET || *method == Method::HEAD;
    if page && pages::answer(&shared.pages, method, request.uri().path(), &mut respond) {
        return None;
    }
    if *method != Method::POST {
        debug!(%method, "refused: not POST");
        stats::call_refused("not_post");
        log_refused_http(conn.peer, StatusCode::METHOD_NOT_ALLOWED, "not POST");
        refuse_http(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return None;
    }
    let content_type = request.headers().get(http::header::CONTENT_TYPE);
    let protocol = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(Protocol::from_content_type);
    let Some(protocol) = protocol else {
        debug!("refused: content-type is not application/grpc or application/grpc-web");
        stats::call_refused("not_grpc");
        log_refused_http(
            conn.peer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type is not application/grpc or application/grpc-web",
        );
        refuse_http(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return None;
    };
    let web = match (protocol.is_web(), content_type) {
        (true, Some(content_type)) => {
            let response_headers = match shared.cors.verdict(&request) {
                Verdict::NoOrigin => HeaderMap::new(),
                Verdict::Allowed(origin) => shared.cors.response_headers(&origin),
                Verdict::Refused => {
                    debug!("refused: gRPC-Web call from an origin that is not allowed");
                    refuse_http(&mut respond, StatusCode::FORBIDDEN);
                    return None;
                }
            };
            Some(Box::new(WebCall {
                text: protocol == Protocol::WebText,
                content_type: content_type.clone(),
                response_headers,
            }))
        }
        _ => None,
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (mut info, mut early) = call_info(&shared.config, &parts.headers, path, stream_id, conn);
    info.web = web;
    let mut reason = "bad_headers";
    if let (None, Some(authenticator)) = (&early, &shared.authenticator) {
        match authenticate(authenticator.as_ref(), &info) {
            Ok(principal) => info.principal = principal,
            Err(status) => {
                reason = "unauthenticated";
                early = Some(status);
            }
        }
    }
    let call = Call::new(
        info,
        body,
        respond,
        permit,
        budget.clone(),
        conn.dropped.clone(),
    );
    if let Some(status) = early {
        debug!(%status, "refused before the handler");
        stats::call_refused(reason);
        log_refused(&call, &status);
        call.finish(Err(status));
        return None;
    }
    if !call.has_permit() {
        let status = Status::resource_exhausted(format!(
            "too many running calls on this connection (max {})",
            shared.config.max_concurrent_streams
        ));
        stats::call_refused("too_many_calls");
        log_refused(&call, &status);
        call.finish(Err(status));
        return None;
    }
    Some(call)
}

/// Reads the call's facts from its headers; the status is set when the call must be refused.
fn call_info(
    config: &ServerConfig,
    headers: &HeaderMap,
    path: String,
    stream_id: u32,
    conn: &Arc<ConnInfo>,
) -> (CallInfo, Option<Status>) {
    let mut early = None;
    // Read the clock only for calls that have a deadline.
    let now = Instant::now;
    let mut deadline = config.max_call_duration.and_then(|d| now().checked_add(d));
    if let Some(raw) = headers.get(GRPC_TIMEOUT) {
        match timeout::parse(raw.as_bytes()) {
            // Already over (`0n`): the handler would only be stopped at once.
            Ok(d) if d.is_zero() => {
                early = Some(Status::deadline_exceeded(
                    "deadline exceeded before the call began",
                ));
            }
            Ok(d) => {
                let at = now().checked_add(d);
                deadline = match (deadline, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Err(status) => early = Some(status),
        }
    }
    let request_encoding = match headers.get(GRPC_ENCODING) {
        None => Encoding::Identity,
        Some(v) => match v.to_str().ok().and_then(Encoding::from_name) {
            Some(encoding) => encoding,
            None => {
                early = Some(Status::unimplemented(format!(
                    "grpc-encoding {} is not supported",
                    crate::grpc::status::quote(
                        &String::from_utf8_lossy(v.as_bytes()),
                        crate::grpc::status::MAX_QUOTED_BYTES
                    )
                )));
                Encoding::Identity
            }
        },
    };
    // The list may also arrive split over several header lines.
    let accepted_encodings = headers
        .get_all(GRPC_ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(Encodings::listed_in)
        .fold(Encodings::default(), Encodings::union);
    let accepted_encoding = accepted_encodings.preferred();
    let info = CallInfo {
        path,
        stream_id,
        conn: conn.clone(),
        principal: None,
        metadata: Metadata::from_headers(headers),
        deadline,
        request_encoding,
        accepted_encoding,
        accepted_encodings,
        max_message_bytes: config.max_message_bytes,
        web: None,
        send_timeout: config.send_timeout,
    };
    (info, early)
}

/// Asks the authenticator about a call whose facts are read; `Err` refuses it.
fn authenticate(
    authenticator: &dyn Authenticator,
    info: &CallInfo,
) -> Result<Option<Arc<Principal>>, Status> {
    // A malformed path is refused later, by the router, as UNIMPLEMENTED.
    let (service, method) = info
        .path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    authenticator.authenticate(&AuthRequest {
        service,
        method,
        metadata: &info.metadata,
        peer_identity: info.peer_identity(),
    })
}

#[cfg(test)]
mod tests {
    use crate::grpc::web::Protocol;

    fn is_grpc_content_type(ct: &str) -> bool {
        Protocol::from_content_type(ct) == Some(Protocol::Grpc)
    }

    #[test]
    fn content_type_is_grpc_or_grpc_with_a_codec() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok), "{ok}");
        }
        for bad in [
            "application/grpcfoo",
            "application/grpc-web-textx",
            "text/plain",
            "",
        ] {
            assert!(!is_grpc_content_type(bad), "{bad}");
        }
    }
}
