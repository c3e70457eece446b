//! Message framing on the request stream (the 5-byte prefix, DATA frame boundaries, what a bad
//! body gets), checked on the wire against the echo service: frame boundaries have nothing to do
//! with message boundaries, and a bad message ends its own call only.

use crate::support::{within, TEST_PATIENCE};
use bytes::{Bytes, BytesMut};
use h2chat::pb::h2chat::echo::v1::EchoMessage;

use crate::support::wire::{message, Code, WireClient};
use crate::support::TestServer;

const BIDI_CHAT: &str = "/h2chat.echo.v1.Chat/BiDiChat";

fn echo(text: &str) -> EchoMessage {
    EchoMessage { text: text.into() }
}

#[tokio::test]
async fn a_message_split_into_one_byte_data_frames_is_understood() {
    within(
        TEST_PATIENCE,
        "the whole of test a_message_split_into_one_byte_data_frames_is_understood",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client.start(BIDI_CHAT, &[]).await;
            let frame = message(&echo("in pieces"));
            for i in 0..frame.len() {
                call.send(frame.slice(i..i + 1), false);
            }
            let reply: EchoMessage = call.next_message().await.expect("a reply");
            assert_eq!(reply.text, "echo: in pieces");
            call.send(Bytes::new(), true);
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn many_messages_in_one_data_frame_are_all_answered_in_order() {
    within(
        TEST_PATIENCE,
        "the whole of test many_messages_in_one_data_frame_are_all_answered_in_order",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut call = client.start(BIDI_CHAT, &[]).await;
            let mut all = BytesMut::new();
            for text in ["one", "two", "three"] {
                all.extend_from_slice(&message(&echo(text)));
            }
            call.send(all.freeze(), true);
            for text in ["one", "two", "three"] {
                let reply: EchoMessage = call.next_message().await.expect("a reply");
                assert_eq!(reply.text, format!("echo: {text}"));
            }
            assert_eq!(call.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

/// Sends `bytes` as the whole request body of an echo call on `client` and returns the status.
async fn status_for_body(
    client: &mut WireClient,
    bytes: &'static [u8],
) -> crate::support::wire::Status {
    let mut call = client.start(BIDI_CHAT, &[]).await;
    call.send(Bytes::from_static(bytes), true);
    call.finish().await.0
}

#[tokio::test]
async fn oversize_length_prefix_is_resource_exhausted() {
    within(
        TEST_PATIENCE,
        "the whole of test oversize_length_prefix_is_resource_exhausted",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let status = status_for_body(&mut client, &[0, 0xff, 0xff, 0xff, 0xff]).await;
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn compressed_flag_out_of_range_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test compressed_flag_out_of_range_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let status = status_for_body(&mut client, &[2, 0, 0, 0, 0]).await;
            assert_eq!(status.code(), Code::Internal, "{status}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn compressed_flag_without_grpc_encoding_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test compressed_flag_without_grpc_encoding_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let status = status_for_body(&mut client, &[1, 0, 0, 0, 1, 0]).await;
            assert_eq!(status.code(), Code::Internal, "{status}");
            assert!(status.message().contains("grpc-encoding"), "{status}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn stream_ending_inside_a_message_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test stream_ending_inside_a_message_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let status = status_for_body(&mut client, &[0, 0, 0, 0, 10, 1, 2]).await;
            assert_eq!(status.code(), Code::Internal, "{status}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn body_that_is_not_the_methods_message_is_internal() {
    within(
        TEST_PATIENCE,
        "the whole of test body_that_is_not_the_methods_message_is_internal",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            // Field 1 as a length-delimited string claiming 100 bytes that are not there.
            let status = status_for_body(&mut client, &[0, 0, 0, 0, 2, 0x0a, 100]).await;
            assert_eq!(status.code(), Code::Internal, "{status}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_connection_and_its_other_streams_survive_bad_streams() {
    within(
        TEST_PATIENCE,
        "the whole of test the_connection_and_its_other_streams_survive_bad_streams",
        async {
            let server = TestServer::default().await;
            let mut client = WireClient::connect(server.addr).await;
            let mut live = client.start(BIDI_CHAT, &[]).await;
            live.send(message(&echo("before")), false);
            let reply: EchoMessage = live.next_message().await.expect("a reply");
            assert_eq!(reply.text, "echo: before");
            for bad in [&[7u8, 0, 0, 0, 0][..], &[0, 0xff, 0xff, 0xff, 0xff]] {
                let mut call = client.start(BIDI_CHAT, &[]).await;
                call.send(Bytes::from_static(bad), true);
                assert_ne!(call.finish().await.0.code(), Code::Ok);
            }
            live.send(message(&echo("after")), true);
            let reply: EchoMessage = live.next_message().await.expect("a reply");
            assert_eq!(reply.text, "echo: after");
            assert_eq!(live.finish().await.0.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}
