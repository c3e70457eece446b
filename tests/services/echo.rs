//! `h2chat.echo.v1.Chat/BiDiChat` over real sockets: the library's client for ping-pong, grpcurl
//! (schema by reflection) as an independent client.

use crate::support::{grpcurl, within, TestServer, TEST_PATIENCE};
use h2chat::grpc::{CallOptions, Channel};
use h2chat::pb::h2chat::echo::v1::EchoMessage;

const BIDI_CHAT: &str = "/h2chat.echo.v1.Chat/BiDiChat";

#[tokio::test]
async fn bidi_chat_answers_each_message_before_the_next_and_ends_ok_on_half_close() {
    within(TEST_PATIENCE, "the whole of test bidi_chat_answers_each_message_before_the_next_and_ends_ok_on_half_close", async {
            let server = TestServer::default().await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut call = ch
                .start(BIDI_CHAT, CallOptions::default())
                .await
                .expect("start");
            for text in ["hello", "", "wörld"] {
                call.send(&EchoMessage { text: text.into() })
                    .await
                    .expect("send");
                let reply: EchoMessage = call.recv().await.expect("ok").expect("reply");
                assert_eq!(reply.text, format!("echo: {text}"));
            }
            call.close_send().expect("close");
            assert!(call.recv::<EchoMessage>().await.expect("OK").is_none());
            server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bidi_chat_echoes_through_grpcurl() {
    within(
        TEST_PATIENCE,
        "the whole of test bidi_chat_echoes_through_grpcurl",
        async {
            let server = TestServer::default().await;
            let target = server.target();
            let out = grpcurl::ok(&[
                "-plaintext",
                "-v",
                "-d",
                r#"{"text":"hello"} {"text":"again"}"#,
                &target,
                "h2chat.echo.v1.Chat/BiDiChat",
            ])
            .await;
            let texts: Vec<&str> = out
                .lines()
                .filter_map(|l| l.trim().strip_prefix("\"text\": "))
                .collect();
            assert_eq!(texts, ["\"echo: hello\"", "\"echo: again\""]);
            server.shutdown().await;
        },
    )
    .await;
}
