//! Responses a client never grants window for: what they may hold is the send budget, and the
//! send timeout gives it back.
//!
//! The attack (issue 12, first rows): streams that ask `StreamingOutputCall` for 4 MiB responses
//! and grant no window, so nothing can ever be written. Before the budget, each call encoded its
//! response and held it: 256 streams on one connection took the server from 8 to 1,035 MB.

use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2chat::pb::grpc::testing::{ResponseParameters, StreamingOutputCallRequest};

use crate::harness::{message, mib, within, Attacker, Server, PATIENCE};

/// The per-connection send budget the tests configure: 16 MiB, four 4 MiB responses.
const PER_CONNECTION: u64 = 16 << 20;
/// The total send budget of the many-connection test: 64 MiB.
const TOTAL: u64 = 64 << 20;
/// The send timeout the tests configure, in seconds.
const SEND_TIMEOUT_S: u64 = 3;
/// What the server may grow by beyond the budget for the calls themselves (documented in the
/// README's limits section): each open call costs its task, h2's stream state and its decoded
/// request, about 3 KiB; 256 of them, plus the allocator's slack for the freed 4 MiB buffers.
const ALLOWANCE_PER_CONNECTION: u64 = 4 << 20;

fn output_call_request() -> Bytes {
    message(&StreamingOutputCallRequest {
        response_type: 0,
        response_parameters: vec![ResponseParameters {
            size: 4 << 20,
            ..ResponseParameters::default()
        }],
        ..StreamingOutputCallRequest::default()
    })
}

/// Opens `streams` zero-window StreamingOutputCalls on one new connection, then a probe whose
/// Trailers-Only answer (no window needed) says the server has taken every stream before it.
async fn attack(server: &Server, streams: usize) -> (Attacker, Vec<ResponseFuture>) {
    let mut attacker = Attacker::connect(server.addr, 0).await;
    let request = output_call_request();
    let mut calls = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (response, _tx) = attacker
            .call(
                "/grpc.testing.TestService/StreamingOutputCall",
                &[],
                request.clone(),
                true,
            )
            .await;
        calls.push(response);
    }
    let (probe, _tx) = attacker
        .call(
            "/grpc.testing.TestService/UnimplementedCall",
            &[],
            Bytes::new(),
            true,
        )
        .await;
    within(PATIENCE, "the probe's Trailers-Only answer", probe)
        .await
        .expect("probe answered");
    (attacker, calls)
}

/// Waits until every call has ended one way or another (reset by the send timeout, or refused
/// for want of budget); returns how many were reset.
async fn all_ended(calls: Vec<ResponseFuture>) -> usize {
    let mut reset = 0;
    for response in calls {
        let ended = within(PATIENCE, "an attacking call to end", async {
            match response.await {
                Err(_) => true,
                Ok(resp) => {
                    let mut body = resp.into_body();
                    loop {
                        match body.data().await {
                            Some(Ok(_)) => continue,
                            Some(Err(_)) => break true,
                            None => break body.trailers().await.is_err(),
                        }
                    }
                }
            }
        })
        .await;
        reset += usize::from(ended);
    }
    reset
}

fn server(extra: &[&str]) -> Server {
    let per_conn = PER_CONNECTION.to_string();
    let timeout = SEND_TIMEOUT_S.to_string();
    let mut args = vec![
        "--interop",
        "--max-send-buffer-per-connection",
        &per_conn,
        "--send-timeout",
        &timeout,
        "--max-concurrent-streams",
        "300",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_streams_on_one_connection_hold_at_most_its_send_budget() {
    let server = server(&[]);
    crate::harness::well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();

    let (attacker, calls) = attack(&server, 256).await;
    crate::harness::well_behaved_check(server.addr).await;
    let peak = server.settled_peak().await;
    let grown = peak.saturating_sub(base);
    eprintln!(
        "one connection: base {:.1} MiB, peak {:.1} MiB, grown {:.1} MiB",
        mib(base),
        mib(peak),
        mib(grown)
    );
    assert!(
        grown <= PER_CONNECTION + ALLOWANCE_PER_CONNECTION,
        "256 zero-window streams grew the server by {:.1} MiB; the budget is {:.1} MiB + {:.1} MiB",
        mib(grown),
        mib(PER_CONNECTION),
        mib(ALLOWANCE_PER_CONNECTION)
    );

    // After the send timeout every call has ended and its memory is back.
    let reset = all_ended(calls).await;
    assert!(reset >= 1, "the stalled calls are reset");
    crate::harness::well_behaved_check(server.addr).await;
    let after = server.rss();
    eprintln!(
        "after the send timeout: {:.1} MiB ({reset} reset)",
        mib(after)
    );
    assert!(
        after <= base + ALLOWANCE_PER_CONNECTION,
        "after the send timeout the server still holds {:.1} MiB more than before",
        mib(after.saturating_sub(base))
    );
    drop(attacker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_streams_on_twenty_connections_hold_at_most_the_total_budget() {
    let total = TOTAL.to_string();
    let server = server(&["--max-send-buffer-total", &total]);
    crate::harness::well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();

    let mut attackers = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (attacker, c) = attack(&server, 256).await;
        attackers.push(attacker);
        calls.extend(c);
    }
    // A small answer fits in its connection's own reserve, whatever the others hold.
    crate::harness::well_behaved_check(server.addr).await;
    let peak = server.settled_peak().await;
    let grown = peak.saturating_sub(base);
    // 20 connections' reserves (16 KiB each) and 20 times the per-connection allowance.
    let allowed = TOTAL + 20 * (16 << 10) + 20 * ALLOWANCE_PER_CONNECTION;
    eprintln!(
        "twenty connections: base {:.1} MiB, peak {:.1} MiB, grown {:.1} MiB",
        mib(base),
        mib(peak),
        mib(grown)
    );
    assert!(
        grown <= allowed,
        "5,120 zero-window streams grew the server by {:.1} MiB; allowed {:.1} MiB",
        mib(grown),
        mib(allowed)
    );
    let _ = within(
        Duration::from_secs(4 * SEND_TIMEOUT_S + 60),
        "every attacking call to end",
        all_ended(calls),
    )
    .await;
    crate::harness::well_behaved_check(server.addr).await;
    drop(attackers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_unary_calls_hold_at_most_the_send_budget() {
    let server = server(&[]);
    crate::harness::well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();
    let mut attacker = Attacker::connect(server.addr, 0).await;
    let request = message(&h2chat::pb::grpc::testing::SimpleRequest {
        response_size: 4 << 20,
        ..Default::default()
    });
    let mut calls = Vec::new();
    for _ in 0..48 {
        let (response, _tx) = attacker
            .call(
                "/grpc.testing.TestService/UnaryCall",
                &[],
                request.clone(),
                true,
            )
            .await;
        calls.push(response);
    }
    crate::harness::well_behaved_check(server.addr).await;
    let grown = server.settled_peak().await.saturating_sub(base);
    eprintln!("48 zero-window unary calls: grown {:.1} MiB", mib(grown));
    assert!(
        grown <= PER_CONNECTION + ALLOWANCE_PER_CONNECTION,
        "grew by {:.1} MiB",
        mib(grown)
    );
    drop((calls, attacker));
}
