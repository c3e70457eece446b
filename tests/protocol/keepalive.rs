//! Keepalive PINGs (`--keepalive-interval`, `--keepalive-timeout`) close only connections whose
//! peer does not answer: a client that answers every PING keeps its connection, whatever else
//! it does meanwhile. Checked with frames written by hand (RFC 9113 §6.7), so the test decides
//! exactly when the answer goes out.

use crate::support::frames::{data, flag, frame, grpc_request, kind, Frame, RawConnection};
use crate::support::process::ServerProcess;
use crate::support::{within, TEST_PATIENCE};

/// Reads until the server's next PING (not an ACK), answering nothing; fails on a GOAWAY or
/// the end of the connection. Returns the PING's opaque data.
async fn next_server_ping(conn: &mut RawConnection, what: &str) -> Vec<u8> {
    let mut before: Vec<Frame> = Vec::new();
    loop {
        let Some(f) = conn.next_frame().await else {
            panic!("the server closed the connection while {what}: {before:?}");
        };
        assert_ne!(
            f.kind,
            kind::GOAWAY,
            "the server sent GOAWAY while {what}: {before:?}"
        );
        if f.kind == kind::PING && f.flags & flag::ACK == 0 {
            return f.payload.to_vec();
        }
        before.push(f);
    }
}

/// Reads until the response HEADERS of `stream`: the server has accepted the call.
async fn accepted(conn: &mut RawConnection, stream: u32) {
    loop {
        let Some(f) = conn.next_frame().await else {
            panic!("the server closed the connection before answering stream {stream}");
        };
        assert_ne!(
            f.kind,
            kind::GOAWAY,
            "GOAWAY before answering stream {stream}"
        );
        if f.kind == kind::HEADERS && f.stream == stream {
            return;
        }
    }
}

#[tokio::test]
async fn a_call_that_arrives_while_a_keepalive_ping_is_unanswered_does_not_cost_the_connection() {
    within(TEST_PATIENCE, "the test", async {
        let server =
            ServerProcess::start(&["--keepalive-interval", "1", "--keepalive-timeout", "10"]).await;
        let mut conn = RawConnection::connect(server.addr, &[]).await;
        for round in 1..=3u32 {
            let opaque = next_server_ping(&mut conn, "waiting for a keepalive PING").await;
            // Between the PING and its answer, a new call: the server accepts it (its response
            // HEADERS come back) while its PING is still unanswered. An empty Health/Check
            // request: the gRPC frame of a zero-length message.
            let stream = 2 * round - 1;
            let mut call = grpc_request(stream, "/grpc.health.v1.Health/Check", &[]);
            call.extend_from_slice(&data(stream, &[0, 0, 0, 0, 0], true));
            conn.send(&call).await;
            accepted(&mut conn, stream).await;
            conn.send(&frame(kind::PING, flag::ACK, 0, &opaque)).await;
        }
        // Answered every time: the connection is still served, and PINGed again.
        conn.ping_answered(7).await;
        next_server_ping(&mut conn, "waiting for the PING after three answered ones").await;
    })
    .await;
}
