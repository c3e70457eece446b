//! Message compression on the wire, seen through a raw h2 client: what grpcio cannot show
//! (per-message flags) and what it never sends (an encoding the server does not know).

use crate::support::wire::{compress, decompress, frame, message, Code, WireClient};
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::pb::grpc::testing::{
    BoolValue, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};
use prost::Message;

fn zeros(n: usize) -> Payload {
    Payload {
        r#type: 0,
        body: vec![0; n],
    }
}

fn flag(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

#[tokio::test]
async fn unknown_request_encoding_is_unimplemented_and_lists_ours() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_request_encoding_is_unimplemented_and_lists_ours",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/EmptyCall",
                    &[("grpc-encoding", "snappy")],
                )
                .await;
            call.send(message(&Empty {}), true);
            let (status, headers) = call.finish().await;
            assert_eq!(status.code(), Code::Unimplemented, "{status}");
            assert!(status.message().contains("snappy"), "{status}");
            let accept = headers
                .get("grpc-accept-encoding")
                .and_then(|v| v.to_str().ok())
                .expect("grpc-accept-encoding in the response");
            // A comma-separated list of names, optional whitespace around each (RFC 9110 #list).
            let listed: Vec<&str> = accept.split(',').map(str::trim).collect();
            for encoding in ["identity", "gzip", "deflate"] {
                assert!(listed.contains(&encoding), "{accept:?} lacks {encoding:?}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

/// server_compressed_unary, with the flag checked: compressed when asked, plain otherwise.
#[tokio::test]
async fn unary_response_is_compressed_exactly_when_asked() {
    within(
        TEST_PATIENCE,
        "the whole of test unary_response_is_compressed_exactly_when_asked",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            for compressed in [true, false] {
                let mut call = client
                    .start(
                        "/grpc.testing.TestService/UnaryCall",
                        &[("grpc-accept-encoding", "identity,gzip")],
                    )
                    .await;
                let req = SimpleRequest {
                    response_size: 314_159,
                    payload: Some(zeros(271_828)),
                    response_compressed: flag(compressed),
                    ..SimpleRequest::default()
                };
                call.send(message(&req), true);
                let encoding = call.headers().await.get("grpc-encoding").cloned();
                let frame = call.next_frame().await.expect("a response");
                assert_eq!(
                    frame.compressed, compressed,
                    "response_compressed={compressed}"
                );
                if compressed {
                    assert_eq!(encoding.as_ref().map(|v| v.as_bytes()), Some(&b"gzip"[..]));
                    let plain = decompress("gzip", &frame.payload);
                    let resp = SimpleResponse::decode(plain).expect("SimpleResponse");
                    assert_eq!(resp.payload.map(|p| p.body.len()), Some(314_159));
                } else {
                    let resp = SimpleResponse::decode(frame.payload).expect("SimpleResponse");
                    assert_eq!(resp.payload.map(|p| p.body.len()), Some(314_159));
                }
                assert_eq!(call.finish().await.0.code(), Code::Ok);
            }
            server.shutdown().await;
        },
    )
    .await;
}

/// server_compressed_streaming, with the flags checked message by message.
#[tokio::test]
async fn streaming_responses_are_compressed_message_by_message() {
    within(
        TEST_PATIENCE,
        "the whole of test streaming_responses_are_compressed_message_by_message",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/StreamingOutputCall",
                    &[("grpc-accept-encoding", "gzip")],
                )
                .await;
            let param = |size, compressed| ResponseParameters {
                size,
                interval_us: 0,
                compressed: flag(compressed),
            };
            let req = StreamingOutputCallRequest {
                response_parameters: vec![param(31_415, true), param(92_653, false)],
                ..StreamingOutputCallRequest::default()
            };
            call.send(message(&req), true);
            let first = call.next_frame().await.expect("first response");
            let second = call.next_frame().await.expect("second response");
            assert!(first.compressed, "first response must be compressed");
            assert!(!second.compressed, "second response must not be compressed");
            let first = decompress("gzip", &first.payload);
            let sizes: Vec<_> = [first, second.payload]
                .into_iter()
                .map(|p| StreamingOutputCallResponse::decode(p).expect("response"))
                .map(|r| r.payload.map_or(0, |p| p.body.len()))
                .collect();
            assert_eq!(sizes, [31_415, 92_653]);
            assert!(call.next_frame().await.is_none(), "exactly two responses");
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

/// client_compressed_streaming exactly as described: zeros in both messages, the first
/// compressed, the second not, on one gzip stream.
#[tokio::test]
async fn request_stream_may_mix_compressed_and_plain_messages() {
    within(
        TEST_PATIENCE,
        "the whole of test request_stream_may_mix_compressed_and_plain_messages",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/StreamingInputCall",
                    &[("grpc-encoding", "gzip")],
                )
                .await;
            let first = StreamingInputCallRequest {
                payload: Some(zeros(27_182)),
                expect_compressed: flag(true),
            };
            let second = StreamingInputCallRequest {
                payload: Some(zeros(45_904)),
                expect_compressed: flag(false),
            };
            let gz = compress("gzip", &first.encode_to_vec());
            call.send(frame(true, &gz), false);
            call.send(message(&second), true);
            let resp: StreamingInputCallResponse = call.next_message().await.expect("a response");
            assert_eq!(resp.aggregated_payload_size, 73_086);
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn uncompressed_message_expected_compressed_is_invalid_argument() {
    within(
        TEST_PATIENCE,
        "the whole of test uncompressed_message_expected_compressed_is_invalid_argument",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/StreamingInputCall",
                    &[("grpc-encoding", "gzip")],
                )
                .await;
            let probe = StreamingInputCallRequest {
                payload: Some(zeros(27_182)),
                expect_compressed: flag(true),
            };
            call.send(message(&probe), true);
            assert_eq!(call.finish().await.0.code(), Code::InvalidArgument);
            server.shutdown().await;
        },
    )
    .await;
}

/// The server never compresses with an algorithm the client did not list.
#[tokio::test]
async fn responses_use_only_an_encoding_the_client_accepts() {
    within(
        TEST_PATIENCE,
        "the whole of test responses_use_only_an_encoding_the_client_accepts",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            // (client's grpc-accept-encoding, expected grpc-encoding of the response)
            let cases: [(Option<&str>, Option<&str>); 4] = [
                (None, None),
                (Some("identity"), None),
                (Some("snappy, deflate"), Some("deflate")),
                (Some("deflate"), Some("deflate")),
            ];
            for (accept, want) in cases {
                let headers: Vec<(&str, &str)> = accept
                    .map(|a| vec![("grpc-accept-encoding", a)])
                    .unwrap_or_default();
                let mut call = client
                    .start("/grpc.testing.TestService/UnaryCall", &headers)
                    .await;
                let req = SimpleRequest {
                    response_size: 1000,
                    response_compressed: flag(true),
                    ..SimpleRequest::default()
                };
                call.send(message(&req), true);
                let got = call
                    .headers()
                    .await
                    .get("grpc-encoding")
                    .map(|v| v.to_str().unwrap_or("?").to_owned());
                assert_eq!(got.as_deref(), want, "accept {accept:?}");
                let frame = call.next_frame().await.expect("a response");
                assert_eq!(frame.compressed, want.is_some(), "accept {accept:?}");
                let resp: Option<SimpleResponse> = match want {
                    Some(encoding) => {
                        SimpleResponse::decode(decompress(encoding, &frame.payload)).ok()
                    }
                    None => SimpleResponse::decode(frame.payload).ok(),
                };
                assert_eq!(
                    resp.and_then(|r| r.payload).map(|p| p.body.len()),
                    Some(1000)
                );
                assert_eq!(call.finish().await.0.code(), Code::Ok);
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn compressed_flag_without_an_encoding_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test compressed_flag_without_an_encoding_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start("/grpc.testing.TestService/EmptyCall", &[])
                .await;
            call.send(frame(true, b"not really compressed"), true);
            assert_eq!(call.finish().await.0.code(), Code::Internal);
            server.shutdown().await;
        },
    )
    .await;
}

/// A client that accepts both gzip and deflate (in either order, with or without spaces) gets
/// a response compressed with one of them, named exactly in `grpc-encoding`.
#[tokio::test]
async fn with_gzip_and_deflate_both_accepted_the_response_names_one_exactly() {
    within(
        TEST_PATIENCE,
        "the whole of test with_gzip_and_deflate_both_accepted_the_response_names_one_exactly",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            for accept in ["gzip,deflate", "deflate, gzip", "identity, gzip , deflate"] {
                let mut call = client
                    .start(
                        "/grpc.testing.TestService/UnaryCall",
                        &[("grpc-accept-encoding", accept)],
                    )
                    .await;
                let req = SimpleRequest {
                    response_size: 1000,
                    response_compressed: flag(true),
                    ..SimpleRequest::default()
                };
                call.send(message(&req), true);
                let encoding = call
                    .headers()
                    .await
                    .get("grpc-encoding")
                    .map(|v| v.as_bytes().to_vec())
                    .expect("a compressed response names its encoding");
                let encoding = String::from_utf8(encoding).expect("ASCII");
                assert!(
                    encoding == "gzip" || encoding == "deflate",
                    "accept {accept:?}: grpc-encoding {encoding:?}"
                );
                let frame = call.next_frame().await.expect("a response");
                assert!(frame.compressed, "accept {accept:?}");
                let resp = SimpleResponse::decode(decompress(&encoding, &frame.payload))
                    .expect("SimpleResponse");
                assert_eq!(resp.payload.map(|p| p.body.len()), Some(1000));
                assert_eq!(call.finish().await.0.code(), Code::Ok);
            }
            server.shutdown().await;
        },
    )
    .await;
}

/// client_compressed_unary with deflate (zlib, RFC 1950) instead of gzip.
#[tokio::test]
async fn a_deflate_compressed_request_is_understood() {
    within(
        TEST_PATIENCE,
        "the whole of test a_deflate_compressed_request_is_understood",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/UnaryCall",
                    &[("grpc-encoding", "deflate")],
                )
                .await;
            let req = SimpleRequest {
                response_size: 314_159,
                payload: Some(zeros(271_828)),
                expect_compressed: flag(true),
                ..SimpleRequest::default()
            };
            let zlib = compress("deflate", &req.encode_to_vec());
            call.send(frame(true, &zlib), true);
            let resp: SimpleResponse = call.next_message().await.expect("a response");
            assert_eq!(resp.payload.map(|p| p.body.len()), Some(314_159));
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

/// `grpc-encoding: identity` means no compression: a message flagged compressed is INTERNAL.
#[tokio::test]
async fn compressed_flag_with_grpc_encoding_identity_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test compressed_flag_with_grpc_encoding_identity_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start(
                    "/grpc.testing.TestService/EmptyCall",
                    &[("grpc-encoding", "identity")],
                )
                .await;
            call.send(frame(true, b"not really compressed"), true);
            let (status, _) = call.finish().await;
            assert_eq!(status.code(), Code::Internal, "{status}");
            server.shutdown().await;
        },
    )
    .await;
}
