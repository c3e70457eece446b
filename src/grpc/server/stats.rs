//! What the server counts: calls by method and status, messages, connections.
//!
//! Recorded through the [`metrics`] crate, a facade like `tracing`: it names no exporter and holds
//! no state of ours. The program that installs an exporter (h2chat's `--metrics-addr`) calls
//! [`enable`] too; until then nothing here does any work, so a server without metrics pays one
//! relaxed atomic load per record.
//!
//! Names and labels follow go-grpc-prometheus, so its dashboards apply:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `grpc_server_started_total` | `grpc_service`, `grpc_method` | calls that reached a handler |
//! | `grpc_server_handled_total` | `grpc_service`, `grpc_method`, `grpc_code` | calls that ended, by status |
//! | `grpc_server_handling_seconds` | `grpc_service`, `grpc_method` | histogram of a call's duration |
//! | `grpc_server_msg_received_total` | `grpc_service`, `grpc_method` | request messages |
//! | `grpc_server_msg_sent_total` | `grpc_service`, `grpc_method` | response messages |
//! | `h2chat_calls_refused_total` | `reason` | requests refused before any handler |
//! | `h2chat_connections_accepted_total` | | TCP connections accepted |
//! | `h2chat_connections_open` | | connections whose HTTP/2 handshake completed and that are still open |
//! | `h2chat_connections_refused_total` | `reason` | connections closed before their handshake completed |
//! | `h2chat_connection_limit_reached_total` | | times new clients had to wait for `--max-connections` |
//! | `h2chat_tls_handshake_failures_total` | | TLS handshakes that failed or did not choose `h2` |
//! | `h2chat_budget_bytes_in_use` | `budget` (`send`) | response bytes encoded and not yet written, every connection's together (the send budget's leases, reserves included) |
//!
//! Label values are bounded: `grpc_service` and `grpc_method` are the names of served methods
//! (a path the router does not serve is `unknown`/`unknown`), `grpc_code` is one of the 17 codes
//! in go-grpc-prometheus spelling (`OK`, `Canceled`, `InvalidArgument`, …). No label ever holds
//! anything a client chose freely. go-grpc-prometheus's `grpc_type` label is left out: the gRPC
//! layer does not know a method's streaming shape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge};

use crate::grpc::status::Code;

/// Whether an exporter listens; see [`enable`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Each served path seen so far and its labels and per-message counters, leaked once: bounded
/// by the methods the router serves. A message's count is then one read lock and an add, with
/// no label built.
static METHODS: RwLock<Option<HashMap<&'static str, &'static MethodStats>>> = RwLock::new(None);

/// The label value of a path the router does not serve.
const UNKNOWN: &str = "unknown";

/// Turns recording on; call it once the process has installed a `metrics` recorder, before the
/// server serves (the counters of each method are registered with the recorder on first use).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A served method's labels.
#[derive(Clone, Copy, Debug)]
pub(in crate::grpc) struct MethodLabels {
    service: &'static str,
    method: &'static str,
}

/// A served method's labels and message counters.
struct MethodStats {
    labels: MethodLabels,
    received: Counter,
    sent: Counter,
}

impl MethodLabels {
    /// The labels of a path the router does not serve.
    pub(in crate::grpc) const UNKNOWN: MethodLabels = MethodLabels {
        service: UNKNOWN,
        method: UNKNOWN,
    };

    /// The labels of `path` (`/pkg.Service/Method`); only for a path the router serves, which
    /// keeps the set of label values bounded. With recording off, nothing is looked up (and the
    /// labels are never used). A reference, kept by every running call: 8 bytes, not 32.
    pub(in crate::grpc) fn served(path: &str) -> &'static MethodLabels {
        if !is_enabled() {
            return &MethodLabels::UNKNOWN;
        }
        &method_stats(path).labels
    }
}

/// The entry of a served `path`, made on first sight.
fn method_stats(path: &str) -> &'static MethodStats {
    let known = METHODS.read().unwrap_or_else(|e| e.into_inner());
    if let Some(stats) = known.as_ref().and_then(|m| m.get(path)) {
        return stats;
    }
    drop(known);
    let mut known = METHODS.write().unwrap_or_else(|e| e.into_inner());
    let map = known.get_or_insert_with(HashMap::new);
    if let Some(stats) = map.get(path) {
        return stats;
    }
    let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
    let labels = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) => MethodLabels { service, method },
        None => MethodLabels::UNKNOWN,
    };
    let stats: &'static MethodStats = Box::leak(Box::new(MethodStats {
        labels,
        received: counter!("grpc_server_msg_received_total", "grpc_service" => labels.service, "grpc_method" => labels.method),
        sent: counter!("grpc_server_msg_sent_total", "grpc_service" => labels.service, "grpc_method" => labels.method),
    }));
    map.insert(path, stats);
    stats
}

/// A call reached its handler.
pub(in crate::grpc) fn call_started(labels: MethodLabels) {
    if is_enabled() {
        counter!("grpc_server_started_total", "grpc_service" => labels.service, "grpc_method" => labels.method)
            .increment(1);
    }
}

/// A call ended with `code` after `elapsed`.
pub(in crate::grpc) fn call_handled(labels: MethodLabels, code: Code, elapsed: Duration) {
    if is_enabled() {
        counter!(
            "grpc_server_handled_total",
            "grpc_service" => labels.service,
            "grpc_method" => labels.method,
            "grpc_code" => code_label(code)
        )
        .increment(1);
        histogram!("grpc_server_handling_seconds", "grpc_service" => labels.service, "grpc_method" => labels.method)
            .record(elapsed.as_secs_f64());
    }
}

/// `n` request messages arrived on a call to `path` (a served one: only handlers receive).
pub(in crate::grpc) fn messages_received(path: &str, n: u64) {
    if is_enabled() {
        method_stats(path).received.increment(n);
    }
}

/// The response messages in `frames` (whole gRPC frames) go out on a call to `path`.
pub(in crate::grpc) fn messages_sent(path: &str, frames: &[u8]) {
    if is_enabled() {
        method_stats(path).sent.increment(count_frames(frames));
    }
}

/// A request refused before any handler: `not_post`, `not_grpc`, `bad_headers`,
/// `too_many_calls`, `unimplemented`, `unauthenticated` (refused by the authenticator).
pub(in crate::grpc) fn call_refused(reason: &'static str) {
    if is_enabled() {
        counter!("h2chat_calls_refused_total", "reason" => reason).increment(1);
    }
}

/// A TLS handshake failed (or chose no `h2`); the connection was closed.
pub(in crate::grpc) fn tls_handshake_failed() {
    if is_enabled() {
        counter!("h2chat_tls_handshake_failures_total").increment(1);
    }
}

/// The send budget's gauge, registered on first use: a lease is taken per response message, so
/// its change is one atomic add, with no label built.
static SEND_BUDGET_BYTES: OnceLock<Gauge> = OnceLock::new();

fn send_budget_gauge() -> &'static Gauge {
    SEND_BUDGET_BYTES.get_or_init(|| gauge!("h2chat_budget_bytes_in_use", "budget" => "send"))
}

/// `n` more bytes are held against the send budget (a lease was taken).
pub(in crate::grpc) fn send_budget_taken(n: usize) {
    if is_enabled() && n > 0 {
        send_budget_gauge().increment(n as f64);
    }
}

/// `n` bytes held against the send budget were given back (written, or their call ended).
pub(in crate::grpc) fn send_budget_given_back(n: usize) {
    if is_enabled() && n > 0 {
        send_budget_gauge().decrement(n as f64);
    }
}

/// A TCP connection was accepted.
pub(in crate::grpc) fn connection_accepted() {
    if is_enabled() {
        counter!("h2chat_connections_accepted_total").increment(1);
    }
}

/// A connection's handshake completed (`open` true) or an open connection closed.
pub(in crate::grpc) fn connection_open(open: bool) {
    if is_enabled() {
        let gauge = gauge!("h2chat_connections_open");
        if open {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }
}

/// A connection ended before its handshake completed: `handshake_failed`, `handshake_timeout`.
pub(in crate::grpc) fn connection_refused(reason: &'static str) {
    if is_enabled() {
        counter!("h2chat_connections_refused_total", "reason" => reason).increment(1);
    }
}

/// New clients wait: the connection limit is reached.
pub(in crate::grpc) fn connection_limit_reached() {
    if is_enabled() {
        counter!("h2chat_connection_limit_reached_total").increment(1);
    }
}

/// How many whole frames `frames` holds (each a 5-byte prefix and its payload).
fn count_frames(frames: &[u8]) -> u64 {
    let mut rest = frames;
    let mut n = 0;
    while let Some((prefix, after)) = rest.split_first_chunk::<5>() {
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        n += 1;
        rest = after.get(len..).unwrap_or_default();
    }
    n
}

/// Every connection and refusal series at 0, so a new server's scrape shows them all; call it
/// after [`enable`].
pub fn zero() {
    if !is_enabled() {
        return;
    }
    counter!("h2chat_connections_accepted_total").absolute(0);
    gauge!("h2chat_connections_open").set(0.0);
    counter!("h2chat_connection_limit_reached_total").absolute(0);
    send_budget_gauge().set(0.0);
    for reason in ["handshake_failed", "handshake_timeout"] {
        counter!("h2chat_connections_refused_total", "reason" => reason).absolute(0);
    }
    for reason in [
        "not_post",
        "not_grpc",
        "bad_headers",
        "too_many_calls",
        "unimplemented",
        "unauthenticated",
    ] {
        counter!("h2chat_calls_refused_total", "reason" => reason).absolute(0);
    }
}

/// A code as go-grpc-prometheus spells it (grpc-go's `codes.Code.String()`).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_by_their_prefixes() {
        let mut buf = Vec::new();
        for payload in [&b"ab"[..], b"", b"xyz"] {
            buf.push(0);
            buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            buf.extend_from_slice(payload);
        }
        assert_eq!(count_frames(&buf), 3);
        assert_eq!(count_frames(&buf[..4]), 0);
        assert_eq!(count_frames(&[]), 0);
    }

    #[test]
    fn served_paths_are_interned_and_others_are_unknown() {
        // Without a recorder installed every counter is a no-op; the labels are what is tested.
        enable();
        let a = MethodLabels::served("/a.B/C");
        let b = MethodLabels::served("/a.B/C");
        assert!(std::ptr::eq(a.method, b.method));
        assert_eq!((a.service, a.method), ("a.B", "C"));
        assert_eq!(MethodLabels::served("nonsense").service, UNKNOWN);
    }
}
