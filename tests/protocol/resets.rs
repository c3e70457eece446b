//! The two reset limits h2 enforces with the values the server's flags give it, checked on the
//! real binary with frames written by hand (an HTTP/2 library will not send them):
//!
//! - `--max-pending-accept-reset-streams` (20): streams a client opens and resets before the
//!   server has accepted them (the rapid-reset attack, CVE-2023-44487). Past it the connection
//!   gets GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets") and is closed.
//! - `--max-local-error-reset-streams` (1024): streams the server resets because the client got
//!   them wrong (here: a `te` header other than `trailers`, RST_STREAM(PROTOCOL_ERROR) each).
//!   The next one gets GOAWAY(ENHANCE_YOUR_CALM, "too_many_internal_resets") and the connection
//!   is closed.
//!
//! In every case a well-behaved client on another connection goes on being served.

use crate::support::frames::{code, grpc_request, headers, kind, rst_stream, RawConnection};
use crate::support::process::ServerProcess;
use crate::support::wire::{Bystander, ECHO_BIDI};
use crate::support::{within, TEST_PATIENCE};

/// `n` echo calls from stream `first` on (odd ids), each opened and at once reset with CANCEL,
/// all in one write so that the server reads them before it can accept any.
fn opened_and_reset(first: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = first + 2 * i;
        out.extend_from_slice(&grpc_request(id, ECHO_BIDI, &[]));
        out.extend_from_slice(&rst_stream(id, code::CANCEL));
    }
    out
}

/// `n` requests from stream `first` on whose `te` is not `trailers`: a malformed request
/// (RFC 9113 §8.2.2) that h2 resets with PROTOCOL_ERROR before the server sees it.
fn malformed(first: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", ECHO_BIDI),
            ("content-type", "application/grpc"),
            ("te", "gzip"),
        ];
        out.extend_from_slice(&headers(first + 2 * i, &fields, false));
    }
    out
}

/// Reads the GOAWAY and the close that must follow; asserts the code and debug data.
async fn goaway_then_closed(conn: &mut RawConnection, debug: &str) {
    let (goaway, _) = conn.goaway().await;
    assert_eq!(
        (goaway.code, goaway.debug.as_str()),
        (code::ENHANCE_YOUR_CALM, debug),
        "{goaway:?}"
    );
    within(
        crate::support::PATIENCE,
        "the server to close the connection after its GOAWAY",
        conn.closed(),
    )
    .await;
}

/// Proves with a PING that the connection read everything sent and stayed open, then reads
/// until `n` RST_STREAMs have come (they may trail the PING's ACK); returns them as (stream,
/// code).
async fn reset_streams_and_alive(conn: &mut RawConnection, n: usize) -> Vec<(u32, u32)> {
    let mut frames = conn.ping_answered(1).await;
    let mut got = Vec::new();
    loop {
        for f in frames.drain(..) {
            assert_ne!(f.kind, kind::GOAWAY, "GOAWAY after {} resets", got.len());
            if f.kind == kind::RST_STREAM {
                got.push((f.stream, f.rst_code()));
            }
        }
        if got.len() >= n {
            return got;
        }
        frames.push(conn.next_frame().await.expect("the connection stays open"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_before_they_are_accepted_past_the_default_20_get_goaway_enhance_your_calm() {
    within(
        TEST_PATIENCE,
        "the whole of test streams_reset_before_they_are_accepted_past_the_default_20_get_goaway_enhance_your_calm",
        async {
            let server = ServerProcess::start(&[]).await;
            let mut bystander = Bystander::start(server.addr).await;
            let mut conn = RawConnection::connect(server.addr, &[]).await;

            // 20 at once is the default's worth: the connection stays.
            conn.send(&opened_and_reset(1, 20)).await;
            conn.ping_answered(1).await;
            // 100 more at once are not.
            conn.send(&opened_and_reset(41, 100)).await;
            goaway_then_closed(&mut conn, "too_many_resets").await;

            bystander.still_served().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_accept_reset_streams_sets_the_rapid_reset_limit() {
    within(
        TEST_PATIENCE,
        "the whole of test max_pending_accept_reset_streams_sets_the_rapid_reset_limit",
        async {
            let server = ServerProcess::start(&["--max-pending-accept-reset-streams", "200"]).await;
            let mut bystander = Bystander::start(server.addr).await;
            let mut conn = RawConnection::connect(server.addr, &[]).await;

            // Five times the default, within the flag's 200.
            conn.send(&opened_and_reset(1, 100)).await;
            conn.ping_answered(1).await;
            conn.send(&opened_and_reset(201, 300)).await;
            goaway_then_closed(&mut conn, "too_many_resets").await;

            bystander.still_served().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1025th_stream_the_server_resets_for_an_error_closes_the_connection() {
    within(
        TEST_PATIENCE,
        "the whole of test the_1025th_stream_the_server_resets_for_an_error_closes_the_connection",
        async {
            let server = ServerProcess::start(&[]).await;
            let mut bystander = Bystander::start(server.addr).await;
            let mut conn = RawConnection::connect(server.addr, &[]).await;

            conn.send(&malformed(1, 1024)).await;
            let got = reset_streams_and_alive(&mut conn, 1024).await;
            let want: Vec<(u32, u32)> = (0..1024)
                .map(|i| (1 + 2 * i, code::PROTOCOL_ERROR))
                .collect();
            assert_eq!(
                got, want,
                "one RST_STREAM(PROTOCOL_ERROR) per malformed request"
            );

            conn.send(&malformed(2049, 1)).await;
            goaway_then_closed(&mut conn, "too_many_internal_resets").await;

            bystander.still_served().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_local_error_reset_streams_sets_how_many_error_resets_a_connection_may_cause() {
    within(
        TEST_PATIENCE,
        "the whole of test max_local_error_reset_streams_sets_how_many_error_resets_a_connection_may_cause",
        async {
            let server = ServerProcess::start(&["--max-local-error-reset-streams", "10"]).await;
            let mut bystander = Bystander::start(server.addr).await;
            let mut conn = RawConnection::connect(server.addr, &[]).await;

            conn.send(&malformed(1, 10)).await;
            let got = reset_streams_and_alive(&mut conn, 10).await;
            assert!(got.iter().all(|&(_, c)| c == code::PROTOCOL_ERROR), "{got:?}");
            conn.send(&malformed(21, 1)).await;
            goaway_then_closed(&mut conn, "too_many_internal_resets").await;

            bystander.still_served().await;
        },
    )
    .await;
}
