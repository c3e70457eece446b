//! The operator's log lines for calls that did not succeed, and the unimplemented refusal.
//!
//! At `info`, one line per refused call (`call refused`: before a handler ran), per failed call
//! (`call failed`: the handler ended with an error status) and per request that is not gRPC at
//! all (`request refused`), each with the peer, the path and the status; client-chosen text is
//! written escaped (`?`). A peer can cause these at will, so they share a [`LogRate`]: ten a
//! second, then a count of what was left out.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::info;

use crate::grpc::server::call::Call;
use crate::grpc::server::log_rate::LogRate;
use crate::grpc::server::stats::{self, MethodLabels};
use crate::grpc::status::{Code, Status};

/// Ends a call to a path the router does not serve.
pub(super) fn refuse_unimplemented(call: &Call, status: Status) {
    stats::call_refused("unimplemented");
    stats::call_handled(MethodLabels::UNKNOWN, status.code(), Duration::ZERO);
    log_refused(call, &status);
    call.finish(Err(status));
}

/// Lines for calls that failed or were refused: ten a second at most.
static FAILED_CALL_LOG: LogRate = LogRate::per_second(10);

/// Logs, at info and rate-limited, a request refused with an HTTP status: not gRPC at all.
pub(super) fn log_refused_http(peer: SocketAddr, status: http::StatusCode, why: &str) {
    if let Some(suppressed) = FAILED_CALL_LOG.allow() {
        info!(%peer, http_status = status.as_u16(), why, suppressed, "request refused");
    }
}

/// Logs, at info and rate-limited, a call refused before its handler ran.
pub(super) fn log_refused(call: &Call, status: &Status) {
    log_call_end(call, status, "call refused");
}

/// Logs, at info and rate-limited, a call its handler ended with an error status — but not a
/// client's cancel, a deadline that passed, nor the end every call gets when the server shuts
/// down.
pub(super) fn log_failed_call(call: &Call, status: &Status, shutting_down: bool) {
    if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) || shutting_down {
        return;
    }
    log_call_end(call, status, "call failed");
}

fn log_call_end(call: &Call, status: &Status, what: &'static str) {
    if let Some(suppressed) = FAILED_CALL_LOG.allow() {
        let info = call.info();
        info!(
            peer = %info.peer(),
            path = ?info.path,
            code = ?status.code(),
            why = ?status.message(),
            suppressed,
            "{what}"
        );
    }
}
