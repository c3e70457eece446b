//! The TestService features no interop case reaches, checked on the wire with the raw h2 client.

use crate::support::wire::{message, Code, WireClient};
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::pb::grpc::testing::{
    ResponseParameters, SimpleRequest, SimpleResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};

fn sizes(params: &[i32]) -> Vec<ResponseParameters> {
    params
        .iter()
        .map(|&size| ResponseParameters {
            size,
            interval_us: 1000,
            compressed: None,
        })
        .collect()
}

/// HalfDuplexCall answers every request, in order, after the client half-closes.
#[tokio::test]
async fn half_duplex_replies_in_order_after_the_half_close() {
    within(
        TEST_PATIENCE,
        "the whole of test half_duplex_replies_in_order_after_the_half_close",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start("/grpc.testing.TestService/HalfDuplexCall", &[])
                .await;
            for batch in [&[3, 1][..], &[4][..]] {
                let req = StreamingOutputCallRequest {
                    response_parameters: sizes(batch),
                    ..StreamingOutputCallRequest::default()
                };
                call.send(message(&req), false);
            }
            call.send(bytes::Bytes::new(), true);
            let mut got = Vec::new();
            while let Some(resp) = call.next_message::<StreamingOutputCallResponse>().await {
                got.push(resp.payload.map_or(0, |p| p.body.len()));
            }
            assert_eq!(got, [3, 1, 4]);
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

/// CacheableUnaryCall answers a fresh timestamp with cache-control headers.
#[tokio::test]
async fn cacheable_unary_answers_a_timestamp_with_cache_control() {
    within(
        TEST_PATIENCE,
        "the whole of test cacheable_unary_answers_a_timestamp_with_cache_control",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let mut call = client
                    .start("/grpc.testing.TestService/CacheableUnaryCall", &[])
                    .await;
                call.send(message(&SimpleRequest::default()), true);
                let cache = call.headers().await.get("cache-control").cloned();
                assert_eq!(
                    cache.as_ref().map(|v| v.as_bytes()),
                    Some(&b"max-age=60, public"[..])
                );
                let resp: SimpleResponse = call.next_message().await.expect("a response");
                bodies.push(resp.payload.map(|p| p.body).unwrap_or_default());
                assert_eq!(call.finish().await.0.code(), Code::Ok);
            }
            assert!(bodies.iter().all(|b| !b.is_empty()), "{bodies:?}");
            assert_ne!(bodies[0], bodies[1], "two calls, two timestamps");
            server.shutdown().await;
        },
    )
    .await;
}

/// A response type the server does not have, or an impossible size, is INVALID_ARGUMENT.
#[tokio::test]
async fn unsupported_response_type_or_size_is_invalid_argument() {
    within(
        TEST_PATIENCE,
        "the whole of test unsupported_response_type_or_size_is_invalid_argument",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            for req in [
                SimpleRequest {
                    response_type: 7,
                    response_size: 1,
                    ..SimpleRequest::default()
                },
                SimpleRequest {
                    response_size: -1,
                    ..SimpleRequest::default()
                },
                SimpleRequest {
                    response_size: i32::MAX,
                    ..SimpleRequest::default()
                },
            ] {
                let mut call = client
                    .start("/grpc.testing.TestService/UnaryCall", &[])
                    .await;
                call.send(message(&req), true);
                let (status, _) = call.finish().await;
                assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status}");
            }
            server.shutdown().await;
        },
    )
    .await;
}
