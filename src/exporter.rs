//! The Prometheus endpoint (`h2chat serve --metrics-addr`): plain HTTP/1.1 on its own port,
//! served by `metrics-exporter-prometheus`, in the Prometheus text format.
//!
//! The gRPC layer and the services record through the `metrics` facade
//! ([`crate::grpc::server::stats`], [`crate::services::chat::stats`]); this module installs the
//! recorder that keeps the values and the listener that serves them, describes every metric, and
//! exports at 0 the series that only count events (so a dashboard shows 0 rather than nothing):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `h2chat_tls_handshake_failures_total` | | TLS handshakes that failed or did not choose `h2` |
//! | `h2chat_auth_token_rejections_total` | `reason` | calls refused for their bearer token: `missing`, `invalid` |
//! | `h2chat_budget_bytes_in_use` | `budget` (`send`) | response bytes encoded and not yet written (the send budget, [`crate::grpc::server::budget`]) |
//! | `h2chat_redis_operations_total`, `h2chat_redis_errors_total` | | Redis calls (0 until Redis lands) |

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::grpc::server::stats;
use crate::services::chat::stats as chat_stats;

/// Bucket bounds of `grpc_server_handling_seconds`: go-grpc-prometheus's defaults (Prometheus'
/// `DefBuckets`), then minutes and an hour for the long streaming calls chat members make.
pub const HANDLING_SECONDS_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Why the endpoint could not start.
#[derive(Debug)]
pub struct ExporterError(String);

impl std::fmt::Display for ExporterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExporterError {}

/// Serves the metrics on `addr` (port 0: a free one) from now on, inside the current Tokio
/// runtime; returns the address it listens on. Call it once per process.
pub fn install(addr: SocketAddr) -> Result<SocketAddr, ExporterError> {
    // The exporter does not say which port it took for port 0: find a free one first.
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|e| ExporterError(format!("cannot listen on {addr} for metrics: {e}")))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("grpc_server_handling_seconds".into()),
            &HANDLING_SECONDS_BUCKETS,
        )
        .and_then(|b| b.install())
        .map_err(|e| ExporterError(format!("cannot serve metrics on {addr}: {e}")))?;
    describe();
    stats::enable();
    // Series that exist before anything happens, so a dashboard shows 0 rather than nothing.
    stats::zero();
    chat_stats::zero();
    metrics::counter!("h2chat_tls_handshake_failures_total").absolute(0);
    for reason in ["missing", "invalid"] {
        metrics::counter!("h2chat_auth_token_rejections_total", "reason" => reason).absolute(0);
    }
    metrics::counter!("h2chat_redis_operations_total").absolute(0);
    metrics::counter!("h2chat_redis_errors_total").absolute(0);
    Ok(addr)
}

/// The HELP lines.
fn describe() {
    describe_counter!("grpc_server_started_total", "RPCs started on the server.");
    describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "Response latency of RPCs handled by the server (a streaming call: its whole life)."
    );
    describe_counter!(
        "grpc_server_msg_received_total",
        "RPC stream messages received on the server."
    );
    describe_counter!(
        "grpc_server_msg_sent_total",
        "gRPC stream messages sent by the server."
    );
    describe_counter!(
        "h2chat_calls_refused_total",
        "Requests refused before any handler, by reason."
    );
    describe_counter!(
        "h2chat_connections_accepted_total",
        "TCP connections accepted."
    );
    describe_gauge!(
        "h2chat_connections_open",
        "Connections past their HTTP/2 handshake, still open."
    );
    describe_counter!(
        "h2chat_connections_refused_total",
        "Connections closed before their HTTP/2 handshake completed, by reason."
    );
    describe_counter!(
        "h2chat_connection_limit_reached_total",
        "Times new clients waited because --max-connections connections were open."
    );
    chat_stats::describe();
    describe_counter!(
        "h2chat_tls_handshake_failures_total",
        "TLS handshakes that failed."
    );
    describe_counter!(
        "h2chat_auth_token_rejections_total",
        "Bearer tokens refused, by reason."
    );
    describe_gauge!(
        "h2chat_budget_bytes_in_use",
        Unit::Bytes,
        "Response bytes encoded and not yet written (the send budget), reserves included."
    );
    describe_counter!("h2chat_redis_operations_total", "Redis operations.");
    describe_counter!("h2chat_redis_errors_total", "Redis operations that failed.");
}
