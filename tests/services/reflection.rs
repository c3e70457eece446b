//! Server reflection, over real sockets: grpcurl as users run it, and the protocol itself through
//! the library's client (requests and answers on one stream, v1 and v1alpha).

use crate::support::{within, TEST_PATIENCE};
use std::net::SocketAddr;
use std::process::Output;

use crate::support::{require_tool, TestServer};
use h2chat::grpc::client::{CallOptions, Channel, ClientCall};
use h2chat::grpc::{Code, Status};
use h2chat::pb::grpc::reflection::{v1, v1alpha};
use prost::Message;
use prost_types::FileDescriptorProto;
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

const V1_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA_PATH: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

async fn grpcurl(server: &TestServer, args: &[&str]) -> Output {
    tokio::process::Command::new(require_tool("grpcurl"))
        .arg("-plaintext")
        .arg(server.target())
        .args(args)
        .output()
        .await
        .expect("grpcurl runs")
}

/// grpcurl's standard output; fails the test when grpcurl failed.
async fn grpcurl_ok(server: &TestServer, args: &[&str]) -> String {
    let out = grpcurl(server, args).await;
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One `ServerReflectionInfo` call on its own connection: each `ask` sends one request and reads
/// one answer.
struct ReflectionStream {
    call: ClientCall,
}

impl ReflectionStream {
    async fn open(addr: SocketAddr, path: &str) -> ReflectionStream {
        let channel = Channel::connect(addr).await.expect("connect");
        let call = channel
            .start(path, CallOptions::default())
            .await
            .expect("start the call");
        ReflectionStream { call }
    }

    async fn ask<Req: Message, Resp: Message + Default>(&mut self, request: &Req) -> Resp {
        self.call.send(request).await.expect("send request message");
        self.call
            .recv()
            .await
            .expect("an answer")
            .expect("stream ended before the answer")
    }

    /// Half-closes and returns the call's final status.
    async fn close(mut self) -> Status {
        self.call.close_send().expect("half-close");
        match self.call.recv_raw().await {
            Ok(None) => Status::ok(),
            Ok(Some(_)) => panic!("no answer without a request"),
            Err(status) => status,
        }
    }
}

fn ask_v1(request: MessageRequest) -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: "localhost".into(),
        message_request: Some(request),
    }
}

fn by_symbol(symbol: &str) -> v1::ServerReflectionRequest {
    ask_v1(MessageRequest::FileContainingSymbol(symbol.into()))
}

fn by_filename(file: &str) -> v1::ServerReflectionRequest {
    ask_v1(MessageRequest::FileByFilename(file.into()))
}

/// The files of a file answer, decoded; panics on any other answer.
fn files(response: v1::ServerReflectionResponse) -> Vec<FileDescriptorProto> {
    match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(r)) => r
            .file_descriptor_proto
            .iter()
            .map(|b| FileDescriptorProto::decode(b.as_slice()).expect("file decodes"))
            .collect(),
        other => panic!("expected files, got {other:?}"),
    }
}

fn file_names(response: v1::ServerReflectionResponse) -> Vec<String> {
    files(response)
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

fn error_code(response: &v1::ServerReflectionResponse) -> Option<Code> {
    match &response.message_response {
        Some(MessageResponse::ErrorResponse(e)) => Some(Code::from_i32(e.error_code)),
        _ => None,
    }
}

#[tokio::test]
async fn grpcurl_lists_every_served_service() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_lists_every_served_service",
        async {
            let server = TestServer::default().await;
            let out = grpcurl_ok(&server, &["list"]).await;
            let mut listed: Vec<&str> = out.lines().collect();
            listed.sort_unstable();
            // Every service the README lists.
            let served = [
                "chat.v1.ChatService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc.testing.TestService",
                "h2chat.echo.v1.Chat",
                "h2chat.logs.v1.LogWatcher",
            ];
            assert_eq!(listed, served);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn grpcurl_describes_a_message_with_its_fields() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_describes_a_message_with_its_fields",
        async {
            let server = TestServer::default().await;
            let out = grpcurl_ok(&server, &["describe", "chat.v1.ChatMessage"]).await;
            for line in [
                "chat.v1.ChatMessage is a message:",
                "message ChatMessage {",
                "string room_id = 1;",
                ".google.protobuf.Timestamp sent_at = 4;",
                "uint64 seq = 5;",
                ".chat.v1.EventKind kind = 6;",
                "optional uint64 resume_after_seq = 7;",
            ] {
                assert!(out.contains(line), "no {line:?} in:\n{out}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn grpcurl_describes_the_chat_service() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_describes_the_chat_service",
        async {
            let server = TestServer::default().await;
            let out = grpcurl_ok(&server, &["describe", "chat.v1.ChatService"]).await;
            for line in [
                "chat.v1.ChatService is a service:",
                "rpc Chat ( stream .chat.v1.ChatMessage ) returns ( stream .chat.v1.ChatMessage );",
                "rpc Members ( .chat.v1.MembersRequest ) returns ( .chat.v1.MembersResponse );",
            ] {
                assert!(out.contains(line), "no {line:?} in:\n{out}");
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn grpcurl_describes_the_health_service() {
    within(TEST_PATIENCE, "the whole of test grpcurl_describes_the_health_service", async {
        let server = TestServer::default().await;
        let out = grpcurl_ok(&server, &["describe", "grpc.health.v1.Health"]).await;
        for line in [
            "grpc.health.v1.Health is a service:",
            "rpc Check ( .grpc.health.v1.HealthCheckRequest ) returns ( .grpc.health.v1.HealthCheckResponse );",
            "rpc Watch ( .grpc.health.v1.HealthCheckRequest ) returns ( stream .grpc.health.v1.HealthCheckResponse );",
        ] {
            assert!(out.contains(line), "no {line:?} in:\n{out}");
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn grpcurl_describe_of_an_unknown_symbol_fails() {
    within(
        TEST_PATIENCE,
        "the whole of test grpcurl_describe_of_an_unknown_symbol_fails",
        async {
            let server = TestServer::default().await;
            let out = grpcurl(&server, &["describe", "chat.v1.NoSuchThing"]).await;
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("not found"), "{stderr}");
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn v1alpha_answers_like_v1() {
    within(
        TEST_PATIENCE,
        "the whole of test v1alpha_answers_like_v1",
        async {
            let server = TestServer::default().await;
            let mut stream = ReflectionStream::open(server.addr, V1ALPHA_PATH).await;
            let request = v1alpha::ServerReflectionRequest {
                host: "example".into(),
                message_request: Some(
                    v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            };
            let response: v1alpha::ServerReflectionResponse = stream.ask(&request).await;
            assert_eq!(response.valid_host, "example");
            assert_eq!(response.original_request.as_ref(), Some(&request));
            let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
                list,
            )) = response.message_response
            else {
                panic!("not a service list: {response:?}");
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            assert!(names.contains(&"grpc.reflection.v1alpha.ServerReflection".to_owned()));

            let request = v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "chat.v1.ChatService".into(),
                    ),
                ),
            };
            let response: v1alpha::ServerReflectionResponse = stream.ask(&request).await;
            let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(
                f,
            )) = response.message_response
            else {
                panic!("not files: {response:?}");
            };
            assert_eq!(f.file_descriptor_proto.len(), 2);
            assert_eq!(stream.close().await.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_symbol_is_not_found_and_the_stream_goes_on() {
    within(
        TEST_PATIENCE,
        "the whole of test unknown_symbol_is_not_found_and_the_stream_goes_on",
        async {
            let server = TestServer::default().await;
            let mut stream = ReflectionStream::open(server.addr, V1_PATH).await;
            let response: v1::ServerReflectionResponse =
                stream.ask(&by_symbol("chat.v1.Nope")).await;
            assert_eq!(error_code(&response), Some(Code::NotFound));
            assert_eq!(response.original_request, Some(by_symbol("chat.v1.Nope")));

            let response: v1::ServerReflectionResponse =
                stream.ask(&by_filename("no/such/file.proto")).await;
            assert_eq!(error_code(&response), Some(Code::NotFound));

            let response = stream.ask(&by_symbol("chat.v1.ChatMessage")).await;
            assert_eq!(
                file_names(response),
                ["chat/v1/chat.proto", "google/protobuf/timestamp.proto"]
            );
            assert_eq!(stream.close().await.code(), Code::Ok);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn well_known_imports_are_servable_by_filename() {
    within(
        TEST_PATIENCE,
        "the whole of test well_known_imports_are_servable_by_filename",
        async {
            let server = TestServer::default().await;
            let mut stream = ReflectionStream::open(server.addr, V1_PATH).await;
            let response = stream
                .ask(&by_filename("google/protobuf/timestamp.proto"))
                .await;
            let files = files(response);
            let [timestamp] = files.as_slice() else {
                panic!("expected one file, got {files:?}");
            };
            assert_eq!(timestamp.name(), "google/protobuf/timestamp.proto");
            assert_eq!(timestamp.package(), "google.protobuf");
            assert_eq!(
                timestamp.message_type.first().map(|m| m.name()),
                Some("Timestamp")
            );
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn transitive_imports_are_sent_once_per_stream() {
    within(
        TEST_PATIENCE,
        "the whole of test transitive_imports_are_sent_once_per_stream",
        async {
            let server = TestServer::default().await;
            let mut stream = ReflectionStream::open(server.addr, V1_PATH).await;
            let first = file_names(stream.ask(&by_symbol("grpc.testing.TestService")).await);
            assert_eq!(
                first,
                [
                    "grpc/testing/test.proto",
                    "grpc/testing/empty.proto",
                    "grpc/testing/messages.proto"
                ]
            );
            // The asked-for file comes again; its imports do not.
            let again = file_names(
                stream
                    .ask(&by_symbol("grpc.testing.TestService.UnaryCall"))
                    .await,
            );
            assert_eq!(again, ["grpc/testing/test.proto"]);
            let import = file_names(
                stream
                    .ask(&by_filename("grpc/testing/messages.proto"))
                    .await,
            );
            assert_eq!(import, ["grpc/testing/messages.proto"]);

            // Another stream has sent nothing yet.
            let mut other = ReflectionStream::open(server.addr, V1_PATH).await;
            let fresh = file_names(other.ask(&by_filename("grpc/testing/test.proto")).await);
            assert_eq!(fresh.len(), 3);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn all_extension_numbers_of_a_known_type_is_a_list_of_an_unknown_type_not_found() {
    within(TEST_PATIENCE, "the whole of test all_extension_numbers_of_a_known_type_is_a_list_of_an_unknown_type_not_found", async {
        let server = TestServer::default().await;
        let mut stream = ReflectionStream::open(server.addr, V1_PATH).await;
        let known = ask_v1(MessageRequest::AllExtensionNumbersOfType(
            "chat.v1.ChatMessage".into(),
        ));
        let response: v1::ServerReflectionResponse = stream.ask(&known).await;
        let Some(MessageResponse::AllExtensionNumbersResponse(numbers)) = response.message_response
        else {
            panic!("not extension numbers: {response:?}");
        };
        assert_eq!(numbers.base_type_name, "chat.v1.ChatMessage");
        assert!(numbers.extension_number.is_empty());

        let unknown = ask_v1(MessageRequest::AllExtensionNumbersOfType(
            "chat.v1.Nope".into(),
        ));
        let response: v1::ServerReflectionResponse = stream.ask(&unknown).await;
        assert_eq!(error_code(&response), Some(Code::NotFound));

        let extension = ask_v1(MessageRequest::FileContainingExtension(
            v1::ExtensionRequest {
                containing_type: "chat.v1.ChatMessage".into(),
                extension_number: 100,
            },
        ));
        let response: v1::ServerReflectionResponse = stream.ask(&extension).await;
        assert_eq!(error_code(&response), Some(Code::NotFound));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_without_a_question_ends_the_call_with_invalid_argument() {
    within(
        TEST_PATIENCE,
        "the whole of test a_request_without_a_question_ends_the_call_with_invalid_argument",
        async {
            let server = TestServer::default().await;
            let mut stream = ReflectionStream::open(server.addr, V1_PATH).await;
            stream
                .call
                .send(&v1::ServerReflectionRequest::default())
                .await
                .expect("send");
            // Trailers-Only: the response headers themselves carry the status.
            let status = stream
                .call
                .headers()
                .await
                .expect_err("Trailers-Only status");
            assert_eq!(status.code(), Code::InvalidArgument);
            server.shutdown().await;
        },
    )
    .await;
}
