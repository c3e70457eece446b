//! From an h2 request to a call: what is refused before any handler runs (not POST, not gRPC, a
//! bad `grpc-timeout` or `grpc-encoding`, no room for another handler), and the call's facts read
//! from its headers.

use std::sync::Arc;
use std::time::Instant;

use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::call_log::{log_refused, log_refused_http};
use super::{ConnInfo, ServerConfig, Shared};
use crate::grpc::compression::{Encoding, Encodings};
use crate::grpc::headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT};
use crate::grpc::metadata::Metadata;
use crate::grpc::server::auth::{AuthRequest, Authenticator, Principal};
use crate::grpc::server::call::{Call, CallInfo};
use crate::grpc::server::stats;
use crate::grpc::server::written::Chunk;
use crate::grpc::status::Status;
use crate::grpc::timeout;

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
    conn: &ConnInfo,
    permit: Option<OwnedSemaphorePermit>,
) -> Option<Call> {
    let stream_id: u32 = respond.stream_id().as_u32();
    if request.method() != Method::POST {
        debug!(method = %request.method(), "refused: not POST");
        stats::call_refused("not_post");
        log_refused_http(conn.peer, StatusCode::METHOD_NOT_ALLOWED, "not POST");
        refuse_http(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return None;
    }
    let grpc_content = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !grpc_content {
        debug!("refused: content-type is not application/grpc");
        stats::call_refused("not_grpc");
        log_refused_http(
            conn.peer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type is not application/grpc",
        );
        refuse_http(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return None;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (mut info, mut early) = call_info(&shared.config, &parts.headers, path, stream_id, conn);
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
    let call = Call::new(info, body, respond, permit, conn.dropped.clone());
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
    conn: &ConnInfo,
) -> (CallInfo, Option<Status>) {
    let mut early = None;
    // Read the clock only for calls that have a deadline.
    let now = Instant::now;
    let mut deadline = config.max_call_duration.and_then(|d| now().checked_add(d));
    if let Some(raw) = headers.get(GRPC_TIMEOUT) {
        match timeout::parse(raw.as_bytes()) {
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
                    "grpc-encoding {:?} is not supported",
                    String::from_utf8_lossy(v.as_bytes())
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
        connection_id: conn.id,
        peer: Some(conn.peer),
        peer_identity: conn.identity.clone(),
        principal: None,
        metadata: Metadata::from_headers(headers),
        deadline,
        request_encoding,
        accepted_encoding,
        accepted_encodings,
        max_message_bytes: config.max_message_bytes,
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
        peer_identity: info.peer_identity.as_deref(),
    })
}
