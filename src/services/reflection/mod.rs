//! gRPC server reflection: lets grpcurl, buf curl and grpcui discover the services and message
//! types without the `.proto` files (grpc/grpc `doc/server-reflection.md`).
//!
//! One implementation is served under both names, `grpc.reflection.v1.ServerReflection` and
//! `grpc.reflection.v1alpha.ServerReflection` (grpcurl tries v1 and falls back to v1alpha). The two
//! protos differ only in their package, so their messages are the same bytes on the wire and both
//! are decoded and answered as the v1 types.
//!
//! The answers come from [`crate::pb::FILE_DESCRIPTOR_SET`], indexed once on first use
//! (`reflection/index.rs`). Behaviour follows grpc-go's reflection server:
//! - A file answer carries the requested file first, then each file it imports, directly or not,
//!   that was not yet sent on this stream. The requested file itself is always sent.
//! - Symbols are protobuf full names: services, methods, messages (nested ones too), fields, oneofs,
//!   enums, enum values (scoped beside their enum, as in C++: `chat.v1.EVENT_KIND_JOINED`) and
//!   extensions. Packages are not symbols.
//! - An unknown file, symbol, extension or type is answered in the stream with an `error_response`
//!   carrying NOT_FOUND; the stream stays open.
//! - `all_extension_numbers_of_type` of a known message type lists its extensions, in ascending
//!   order (empty when it has none); of anything else it is NOT_FOUND.
//! - A request with no question in it ends the call with INVALID_ARGUMENT.

use std::sync::Arc;

use tracing::debug;

use crate::grpc::status::{quote, MAX_QUOTED_BYTES};
use crate::grpc::{BoxFuture, Call, CallResult, Code, Service, Status};
use crate::pb::grpc::reflection::v1::server_reflection_request::MessageRequest;
use crate::pb::grpc::reflection::v1::server_reflection_response::MessageResponse;
use crate::pb::grpc::reflection::v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};

mod index;

use index::{Index, SentFiles, SHIPPED_INDEX};

/// The reflection service's name, version 1.
pub const SERVICE_V1: &str = "grpc.reflection.v1.ServerReflection";
/// The reflection service's name, the pre-release version older clients still ask for.
pub const SERVICE_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
/// The one method of both services (a bidirectional stream).
const METHOD: &str = "ServerReflectionInfo";

/// Longest file name or symbol a reflection request may carry: 1 KiB (real ones are well under
/// 200 bytes). Longer is INVALID_ARGUMENT, and the call ends without echoing the request.
pub const MAX_REFLECTION_NAME_BYTES: usize = 1 << 10;

/// The reflection service over the crate's descriptor set; add [`Reflection::services`] to a server.
/// Cheap to clone.
#[derive(Clone)]
pub struct Reflection {
    /// What `list_services` answers, sorted.
    services: Arc<[String]>,
    index: &'static Index,
}

impl Reflection {
    /// Reflection for a server that serves `served` (service full names); the two reflection
    /// services are listed too. Indexes the descriptor set now if no one has yet.
    pub fn new(served: impl IntoIterator<Item = impl Into<String>>) -> Reflection {
        let mut services: Vec<String> = served
            .into_iter()
            .map(Into::into)
            .chain([SERVICE_V1.to_owned(), SERVICE_V1ALPHA.to_owned()])
            .collect();
        services.sort_unstable();
        services.dedup();
        Reflection {
            services: services.into(),
            index: &SHIPPED_INDEX,
        }
    }

    /// The services to add to the server: v1 and v1alpha, both answering from this reflection.
    pub fn services(&self) -> [Arc<dyn Service>; 2] {
        [SERVICE_V1, SERVICE_V1ALPHA].map(|name| {
            Arc::new(ReflectionService {
                name,
                reflection: self.clone(),
            }) as Arc<dyn Service>
        })
    }

    /// One `ServerReflectionInfo` call: an answer per request until the client half-closes.
    async fn serve(&self, call: &Call) -> CallResult {
        let mut sent = SentFiles::new(self.index);
        while let Some(request) = call.recv::<ServerReflectionRequest>().await? {
            let response = answer(self.index, &self.services, request, &mut sent)?;
            call.send(&response).await?;
        }
        Ok(())
    }
}

/// [`Reflection`] under one of its two names.
struct ReflectionService {
    name: &'static str,
    reflection: Reflection,
}

impl Service for ReflectionService {
    fn name(&self) -> &'static str {
        self.name
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        if method != METHOD {
            return None;
        }
        Some(Box::pin(self.reflection.serve(call)))
    }
}

/// The answer to one request. `Err` ends the call (only for a request that asks nothing).
fn answer(
    index: &Index,
    services: &[String],
    request: ServerReflectionRequest,
    sent: &mut SentFiles,
) -> Result<ServerReflectionResponse, Status> {
    let files = |file: Option<usize>, sent: &mut SentFiles| {
        file.map(|f| {
            MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: index.with_imports(f, sent),
            })
        })
    };
    let name = match &request.message_request {
        Some(MessageRequest::FileByFilename(name)) => name,
        Some(MessageRequest::FileContainingSymbol(name)) => name,
        Some(MessageRequest::FileContainingExtension(ext)) => &ext.containing_type,
        Some(MessageRequest::AllExtensionNumbersOfType(name)) => name,
        _ => "",
    };
    if name.len() > MAX_REFLECTION_NAME_BYTES || request.host.len() > MAX_REFLECTION_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "reflection names and hosts are at most {MAX_REFLECTION_NAME_BYTES} bytes"
        )));
    }
    let q = |s: &str| quote(s, MAX_QUOTED_BYTES);
    let (found, not_found) = match &request.message_request {
        None => {
            return Err(Status::invalid_argument(
                "reflection request without a message_request",
            ))
        }
        Some(MessageRequest::FileByFilename(name)) => (
            files(index.by_filename.get(name).copied(), sent),
            format!("file {} not found", q(name)),
        ),
        Some(MessageRequest::FileContainingSymbol(symbol)) => (
            files(index.by_symbol.get(symbol).copied(), sent),
            format!("symbol {} not found", q(symbol)),
        ),
        Some(MessageRequest::FileContainingExtension(ext)) => {
            let file = index
                .extensions
                .get(&ext.containing_type)
                .and_then(|numbers| numbers.get(&ext.extension_number))
                .copied();
            (
                files(file, sent),
                format!(
                    "extension {} of {} not found",
                    ext.extension_number,
                    q(&ext.containing_type)
                ),
            )
        }
        Some(MessageRequest::AllExtensionNumbersOfType(ty)) => (
            index.extensions.get(ty).map(|numbers| {
                MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: ty.clone(),
                    extension_number: numbers.keys().copied().collect(),
                })
            }),
            format!("message type {} not found", q(ty)),
        ),
        Some(MessageRequest::ListServices(_)) => (
            Some(MessageResponse::ListServicesResponse(ListServiceResponse {
                service: services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            })),
            String::new(),
        ),
    };
    let message_response = found.unwrap_or_else(|| {
        debug!(%not_found, "reflection: NOT_FOUND");
        MessageResponse::ErrorResponse(ErrorResponse {
            error_code: Code::NotFound.as_i32(),
            error_message: not_found,
        })
    });
    Ok(ServerReflectionResponse {
        valid_host: request.host.clone(),
        original_request: Some(request),
        message_response: Some(message_response),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message;
    use prost_types::{
        field_descriptor_proto, DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
        FileDescriptorSet,
    };

    fn file_names(encoded: &[Vec<u8>]) -> Vec<String> {
        encoded
            .iter()
            .map(|bytes| {
                FileDescriptorProto::decode(bytes.as_slice())
                    .expect("decodes")
                    .name()
                    .to_owned()
            })
            .collect()
    }

    fn ask(index: &Index, request: MessageRequest, sent: &mut SentFiles) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        answer(index, &[], request, sent)
            .expect("answered")
            .message_response
            .expect("has a response")
    }

    fn file_of(index: &Index, symbol: &str) -> Option<String> {
        let f = *index.by_symbol.get(symbol)?;
        let encoded = &index.files.get(f)?.encoded;
        Some(
            FileDescriptorProto::decode(encoded.as_slice())
                .ok()?
                .name()
                .to_owned(),
        )
    }

    #[test]
    fn shipped_set_decodes_and_holds_every_import() {
        let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("decodes");
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert!(
            names.contains(&"google/protobuf/timestamp.proto"),
            "{names:?}"
        );
        for file in &set.file {
            for dep in &file.dependency {
                assert!(
                    names.contains(&dep.as_str()),
                    "{} imports missing {dep}",
                    file.name()
                );
            }
        }
        assert_eq!(SHIPPED_INDEX.files.len(), set.file.len());
    }

    #[test]
    fn every_kind_of_symbol_resolves_to_its_file() {
        let cases = [
            ("chat.v1.ChatService", "chat/v1/chat.proto"),
            ("chat.v1.ChatService.Chat", "chat/v1/chat.proto"),
            ("chat.v1.ChatMessage", "chat/v1/chat.proto"),
            ("chat.v1.ChatMessage.sent_at", "chat/v1/chat.proto"),
            (
                "chat.v1.ChatMessage._resume_after_seq",
                "chat/v1/chat.proto",
            ),
            ("chat.v1.EventKind", "chat/v1/chat.proto"),
            ("chat.v1.EVENT_KIND_JOINED", "chat/v1/chat.proto"),
            (
                "google.protobuf.Timestamp",
                "google/protobuf/timestamp.proto",
            ),
            (
                "grpc.testing.LoadBalancerStatsResponse.RpcsByPeer",
                "grpc/testing/messages.proto",
            ),
            (
                "grpc.testing.ClientConfigureRequest.RpcType",
                "grpc/testing/messages.proto",
            ),
            (
                "grpc.health.v1.HealthCheckResponse.SERVING",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc/reflection/v1alpha/reflection.proto",
            ),
        ];
        for (symbol, file) in cases {
            assert_eq!(
                file_of(&SHIPPED_INDEX, symbol).as_deref(),
                Some(file),
                "{symbol}"
            );
        }
        for not_a_symbol in ["chat.v1", "chat", "chat.v1.EventKind.EVENT_KIND_JOINED", ""] {
            assert_eq!(
                file_of(&SHIPPED_INDEX, not_a_symbol),
                None,
                "{not_a_symbol}"
            );
        }
    }

    #[test]
    fn imports_are_sent_once_per_stream_and_the_asked_file_always() {
        let index = &*SHIPPED_INDEX;
        let mut sent = SentFiles::new(index);
        let by_symbol = |s: &str| MessageRequest::FileContainingSymbol(s.to_owned());
        let names = |r: MessageResponse| match r {
            MessageResponse::FileDescriptorResponse(f) => file_names(&f.file_descriptor_proto),
            other => panic!("not files: {other:?}"),
        };
        let first = names(ask(index, by_symbol("grpc.testing.TestService"), &mut sent));
        assert_eq!(
            first,
            [
                "grpc/testing/test.proto",
                "grpc/testing/empty.proto",
                "grpc/testing/messages.proto"
            ]
        );
        let again = names(ask(index, by_symbol("grpc.testing.TestService"), &mut sent));
        assert_eq!(again, ["grpc/testing/test.proto"]);
        let import = names(ask(index, by_symbol("grpc.testing.Empty"), &mut sent));
        assert_eq!(import, ["grpc/testing/empty.proto"]);
        // A fresh stream starts over.
        let mut fresh = SentFiles::new(index);
        let first = names(ask(
            index,
            by_symbol("grpc.testing.TestService"),
            &mut fresh,
        ));
        assert_eq!(first.len(), 3);
    }

    /// A proto2 file extending a message of another file, built by hand (the shipped protos
    /// declare no extensions).
    fn set_with_extensions() -> FileDescriptorSet {
        let base = FileDescriptorProto {
            name: Some("base.proto".into()),
            package: Some("t".into()),
            message_type: vec![DescriptorProto {
                name: Some("Base".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ext = |name: &str, number: i32| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(field_descriptor_proto::Label::Optional as i32),
            r#type: Some(field_descriptor_proto::Type::Int32 as i32),
            extendee: Some(".t.Base".into()),
            ..Default::default()
        };
        let extending = FileDescriptorProto {
            name: Some("ext.proto".into()),
            package: Some("t".into()),
            dependency: vec!["base.proto".into()],
            extension: vec![ext("b", 200)],
            message_type: vec![DescriptorProto {
                name: Some("Holder".into()),
                extension: vec![ext("a", 100)],
                ..Default::default()
            }],
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![base, extending],
        }
    }

    #[test]
    fn extensions_are_found_by_type_and_number() {
        let index = Index::new(&set_with_extensions());
        let mut sent = SentFiles::new(&index);
        match ask(
            &index,
            MessageRequest::AllExtensionNumbersOfType("t.Base".into()),
            &mut sent,
        ) {
            MessageResponse::AllExtensionNumbersResponse(r) => {
                assert_eq!(r.base_type_name, "t.Base");
                assert_eq!(r.extension_number, [100, 200]);
            }
            other => panic!("{other:?}"),
        }
        let request =
            MessageRequest::FileContainingExtension(pb::grpc::reflection::v1::ExtensionRequest {
                containing_type: "t.Base".into(),
                extension_number: 100,
            });
        match ask(&index, request, &mut sent) {
            MessageResponse::FileDescriptorResponse(f) => {
                assert_eq!(
                    file_names(&f.file_descriptor_proto),
                    ["ext.proto", "base.proto"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(file_of(&index, "t.Holder.a").as_deref(), Some("ext.proto"));
        assert_eq!(file_of(&index, "t.b").as_deref(), Some("ext.proto"));
    }

    #[test]
    fn unknown_extension_and_non_message_types_are_not_found() {
        let index = Index::new(&set_with_extensions());
        let mut sent = SentFiles::new(&index);
        let not_found = |r: MessageResponse| matches!(r, MessageResponse::ErrorResponse(e) if e.error_code == Code::NotFound.as_i32());
        let request =
            MessageRequest::FileContainingExtension(pb::grpc::reflection::v1::ExtensionRequest {
                containing_type: "t.Base".into(),
                extension_number: 101,
            });
        assert!(not_found(ask(&index, request, &mut sent)));
        for ty in ["t.Nope", "t", "t.b"] {
            let request = MessageRequest::AllExtensionNumbersOfType(ty.into());
            assert!(not_found(ask(&index, request, &mut sent)), "{ty}");
        }
    }

    #[test]
    fn a_request_without_a_question_ends_the_call() {
        let mut sent = SentFiles::new(&SHIPPED_INDEX);
        let request = ServerReflectionRequest::default();
        let status = answer(&SHIPPED_INDEX, &[], request, &mut sent).expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
