//! `h2chat_budget_bytes_in_use{budget="send"}` is what the send budget holds: during a
//! zero-window attack it shows the stalled responses, and once `--send-timeout` has reset them
//! it is back to 0.

use h2chat::pb::grpc::testing::{ResponseParameters, StreamingOutputCallRequest};

use crate::scrape::Scrape;
use crate::server::LoggedServer;
use crate::support::wire::{message, WireClient};

/// Stalled calls, and the response each asks for.
const CALLS: usize = 4;
const RESPONSE_BYTES: usize = 1 << 20;
/// The per-connection send budget the test configures.
const PER_CONNECTION: usize = 8 << 20;

const SEND: [(&str, &str); 1] = [("budget", "send")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_budget_gauge_shows_stalled_responses_and_returns_to_zero_after_the_send_timeout()
{
    let per_connection = PER_CONNECTION.to_string();
    let server = LoggedServer::start(
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--interop",
            "--send-timeout",
            "2",
            "--max-send-buffer-per-connection",
            &per_connection,
        ],
        &[],
    )
    .await;
    let metrics = server.metrics_addr();
    assert_eq!(
        Scrape::get(metrics)
            .await
            .must("h2chat_budget_bytes_in_use", &SEND),
        0.0
    );

    // A client that grants no window: every response is encoded (within the budget) and stays.
    let mut attacker = WireClient::connect_with_window(server.addr, 0).await;
    let request = message(&StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: RESPONSE_BYTES as i32,
            ..ResponseParameters::default()
        }],
        ..StreamingOutputCallRequest::default()
    });
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let mut call = attacker
            .start("/grpc.testing.TestService/StreamingOutputCall", &[])
            .await;
        call.send(request.clone(), true);
        calls.push(call);
    }
    let held = Scrape::until(metrics, "every stalled response counted", |s| {
        s.value("h2chat_budget_bytes_in_use", &SEND)
            .is_some_and(|v| v >= (CALLS * RESPONSE_BYTES) as f64)
    })
    .await
    .must("h2chat_budget_bytes_in_use", &SEND);
    assert!(
        held <= PER_CONNECTION as f64,
        "{held} bytes held, over the connection's budget of {PER_CONNECTION}"
    );

    // The send timeout resets the stalled calls and gives their bytes back, while the client
    // still holds every stream open (so nothing else could have).
    Scrape::until(metrics, "the send budget back at 0", |s| {
        s.value("h2chat_budget_bytes_in_use", &SEND) == Some(0.0)
    })
    .await;
    drop((calls, attacker));
}
