//! What the server does before a call reaches a handler, checked on the wire with raw h2 requests.

use crate::support::wire::{self, WireClient};
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::{CallOptions, Channel};
use h2chat::grpc::{Code, Status};
use h2chat::pb::chat::v1::{MembersRequest, MembersResponse};
use http::{Method, Request, StatusCode};

async fn setup() -> (TestServer, Channel) {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    (server, ch)
}

/// Sends bare headers (END_STREAM) and returns the response head.
async fn raw(ch: &Channel, req: Request<()>) -> http::Response<h2::RecvStream> {
    let (response, _send) = ch.send_request(req, true).await.expect("send request");
    response.await.expect("response")
}

fn grpc_request(method: Method, path: &str, content_type: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .expect("request")
}

#[tokio::test]
async fn method_other_than_post_is_http_405() {
    within(
        TEST_PATIENCE,
        "the whole of test method_other_than_post_is_http_405",
        async {
            let (_server, ch) = setup().await;
            let req = grpc_request(
                Method::GET,
                "/chat.v1.ChatService/Members",
                "application/grpc",
            );
            assert_eq!(raw(&ch, req).await.status(), StatusCode::METHOD_NOT_ALLOWED);
        },
    )
    .await;
}

#[tokio::test]
async fn content_type_not_grpc_is_http_415() {
    within(
        TEST_PATIENCE,
        "the whole of test content_type_not_grpc_is_http_415",
        async {
            let (_server, ch) = setup().await;
            let req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Members",
                "application/json",
            );
            assert_eq!(
                raw(&ch, req).await.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
            // A content-type with a suffix is gRPC; one that only starts like it is not.
            let req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Members",
                "application/grpc+proto",
            );
            assert_eq!(raw(&ch, req).await.status(), StatusCode::OK);
            let req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Members",
                "application/grpcfoo",
            );
            assert_eq!(
                raw(&ch, req).await.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        },
    )
    .await;
}

#[tokio::test]
async fn an_already_expired_grpc_timeout_is_deadline_exceeded_before_the_handler() {
    within(
        TEST_PATIENCE,
        "the whole of test an_already_expired_grpc_timeout_is_deadline_exceeded_before_the_handler",
        async {
            let (_server, ch) = setup().await;
            let mut req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Chat",
                "application/grpc",
            );
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static("0n"));
            let resp = raw(&ch, req).await;
            assert_eq!(resp.status(), StatusCode::OK);
            // Its handler would have answered INVALID_ARGUMENT (no join message) at once.
            assert_eq!(
                resp.headers()["grpc-status"],
                "4",
                "DEADLINE_EXCEEDED, Trailers-Only"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_service_and_method_are_trailers_only_unimplemented() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_service_and_method_are_trailers_only_unimplemented",
        async {
            let (_server, ch) = setup().await;
            for (path, needle) in [
                ("/no.such.Service/Chat", "unknown service no.such.Service"),
                ("/chat.v1.ChatService/Nope", "unknown method Nope"),
                ("/nonsense", "malformed"),
            ] {
                let resp = raw(&ch, grpc_request(Method::POST, path, "application/grpc")).await;
                assert_eq!(resp.status(), StatusCode::OK, "{path}");
                // Trailers-Only: the status is in the one HEADERS frame, which ends the stream.
                assert!(resp.body().is_end_stream(), "{path}: not Trailers-Only");
                let status =
                    wire::Status::from_headers(resp.headers()).expect("grpc-status in headers");
                assert_eq!(status.code(), wire::Code::Unimplemented, "{path}");
                assert!(status.message().contains(needle), "{path}: {status}");
                assert_eq!(resp.headers()["content-type"], "application/grpc");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_grpc_timeout_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test malformed_grpc_timeout_is_internal",
        async {
            let (_server, ch) = setup().await;
            let mut req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Members",
                "application/grpc",
            );
            req.headers_mut()
                .insert("grpc-timeout", "1.5S".parse().expect("value"));
            let resp = raw(&ch, req).await;
            let status = wire::Status::from_headers(resp.headers()).expect("grpc-status");
            assert_eq!(status.code(), wire::Code::Internal);
            assert!(status.message().contains("grpc-timeout"), "{status}");
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_grpc_encoding_is_unimplemented_with_accept_encoding() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_grpc_encoding_is_unimplemented_with_accept_encoding",
        async {
            let (_server, ch) = setup().await;
            let mut req = grpc_request(
                Method::POST,
                "/chat.v1.ChatService/Members",
                "application/grpc",
            );
            req.headers_mut()
                .insert("grpc-encoding", "snappy".parse().expect("value"));
            let resp = raw(&ch, req).await;
            let status = wire::Status::from_headers(resp.headers()).expect("grpc-status");
            assert_eq!(status.code(), wire::Code::Unimplemented);
            let accept = resp.headers()["grpc-accept-encoding"]
                .to_str()
                .unwrap_or("");
            assert!(
                accept.contains("gzip") && accept.contains("deflate"),
                "{accept}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn unary_with_zero_or_two_messages_is_unimplemented() {
    within(
        TEST_PATIENCE,
        "the whole of test unary_with_zero_or_two_messages_is_unimplemented",
        async {
            let (_server, ch) = setup().await;
            let path = "/chat.v1.ChatService/Members";
            let mut none = ch.start(path, CallOptions::default()).await.expect("start");
            none.close_send().expect("close");
            let err = none.recv::<MembersResponse>().await.expect_err("must fail");
            assert_eq!(err.code(), Code::Unimplemented);
            let mut two = ch.start(path, CallOptions::default()).await.expect("start");
            two.send(&MembersRequest {
                room_id: "a".into(),
            })
            .await
            .expect("send");
            two.send_last(&MembersRequest {
                room_id: "b".into(),
            })
            .await
            .expect("send");
            let err = two.recv::<MembersResponse>().await.expect_err("must fail");
            assert_eq!(err.code(), Code::Unimplemented);
        },
    )
    .await;
}

#[tokio::test]
async fn ok_calls_end_with_grpc_status_zero_in_trailers() {
    within(
        TEST_PATIENCE,
        "the whole of test ok_calls_end_with_grpc_status_zero_in_trailers",
        async {
            let (_server, ch) = setup().await;
            let mut call = ch
                .start("/chat.v1.ChatService/Members", CallOptions::default())
                .await
                .expect("start");
            call.send_last(&MembersRequest {
                room_id: "x".into(),
            })
            .await
            .expect("send");
            let resp: Option<MembersResponse> = call.recv().await.expect("response");
            assert!(resp.is_some());
            assert_eq!(call.recv::<MembersResponse>().await.expect("end"), None);
            assert_eq!(call.status().map(Status::code), Some(Code::Ok));
        },
    )
    .await;
}

/// The policy for a request without `te: trailers` (the grammar has it; grpc-go accepts its
/// absence): accepted, and the call runs.
#[tokio::test]
async fn a_request_without_te_is_accepted() {
    within(
        TEST_PATIENCE,
        "the whole of test a_request_without_te_is_accepted",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client
                .start_with_exactly(
                    "/grpc.testing.TestService/EmptyCall",
                    &[("content-type", "application/grpc")],
                )
                .await;
            call.send(wire::message(&h2chat::pb::grpc::testing::Empty {}), true);
            let got: Option<h2chat::pb::grpc::testing::Empty> = call.next_message().await;
            assert!(got.is_some(), "an answer");
            assert_eq!(call.finish().await.0.code(), wire::Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}
