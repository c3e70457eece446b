//! The served methods as the descriptor set describes them: names to methods, each method's kind,
//! and its messages in JSON (the proto3 JSON mapping) and protobuf.
//!
//! The descriptors are those reflection serves ([`crate::pb::FILE_DESCRIPTOR_SET`]), so what a JSON
//! front accepts is exactly what grpcurl would send. Only services the server actually has are
//! resolved.

use std::fmt;

use bytes::Bytes;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
    ServiceDescriptor,
};
use serde_json::Value;

use crate::grpc::Status;

/// How many messages each direction of a method carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// Whether the client sends exactly one message (unary and server streaming).
    pub fn single_request(self) -> bool {
        matches!(self, MethodKind::Unary | MethodKind::ServerStreaming)
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MethodKind::Unary => "unary",
            MethodKind::ClientStreaming => "client streaming",
            MethodKind::ServerStreaming => "server streaming",
            MethodKind::BidiStreaming => "bidirectional streaming",
        })
    }
}

/// One resolved method.
#[derive(Clone, Debug)]
pub struct Method {
    /// The request path, `/package.Service/Method`.
    pub path: String,
    /// The method's kind.
    pub kind: MethodKind,
    input: MessageDescriptor,
    output: MessageDescriptor,
}

impl Method {
    /// A request message from its JSON form. Unknown fields and values of the wrong type are
    /// INVALID_ARGUMENT.
    pub fn request_from_json(&self, json: &Value) -> Result<DynamicMessage, Status> {
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        DynamicMessage::deserialize_with_options(self.input.clone(), json, &options).map_err(|e| {
            Status::invalid_argument(format!(
                "request does not fit {}: {e}",
                self.input.full_name()
            ))
        })
    }

    /// A response message's JSON form (canonical mapping: lowerCamelCase names, default values
    /// left out, 64-bit integers as strings). A payload that is not the method's response type
    /// is INTERNAL.
    pub fn response_to_json(&self, payload: Bytes) -> Result<Value, Status> {
        let internal =
            |e: &dyn fmt::Display| Status::internal(format!("response does not decode: {e}"));
        let msg = DynamicMessage::decode(self.output.clone(), payload).map_err(|e| internal(&e))?;
        msg.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
            .map_err(|e| internal(&e))
    }
}

/// The services a server has, from its descriptor set.
pub struct Schema {
    services: Vec<ServiceDescriptor>,
}

impl Schema {
    /// The schema of the services named in `served` (fully-qualified names), read from an encoded
    /// `FileDescriptorSet`. Served names the set does not describe are left out.
    pub fn new(
        descriptor_set: &[u8],
        served: &[&str],
    ) -> Result<Schema, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(descriptor_set)?;
        let services = pool
            .services()
            .filter(|s| served.contains(&s.full_name()))
            .collect();
        Ok(Schema { services })
    }

    /// The method `method` of `service`, which is a full name (`h2chat.logs.v1.LogWatcher`) or a
    /// short name that exactly one served service has (`LogWatcher`).
    ///
    /// Errors: UNIMPLEMENTED for an unknown service or method, INVALID_ARGUMENT for a short name
    /// several services share.
    pub fn resolve(&self, service: &str, method: &str) -> Result<Method, Status> {
        let svc = self.service(service)?;
        let m = svc.methods().find(|m| m.name() == method).ok_or_else(|| {
            Status::unimplemented(format!(
                "unknown method {method} for service {}",
                svc.full_name()
            ))
        })?;
        let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => MethodKind::Unary,
            (true, false) => MethodKind::ClientStreaming,
            (false, true) => MethodKind::ServerStreaming,
            (true, true) => MethodKind::BidiStreaming,
        };
        Ok(Method {
            path: format!("/{}/{}", svc.full_name(), m.name()),
            kind,
            input: m.input(),
            output: m.output(),
        })
    }

    fn service(&self, name: &str) -> Result<&ServiceDescriptor, Status> {
        if let Some(s) = self.services.iter().find(|s| s.full_name() == name) {
            return Ok(s);
        }
        let mut short = self.services.iter().filter(|s| s.name() == name);
        match (short.next(), short.next()) {
            (Some(s), None) => Ok(s),
            (None, _) => Err(Status::unimplemented(format!("unknown service {name}"))),
            (Some(a), Some(b)) => Err(Status::invalid_argument(format!(
                "service name {name} is ambiguous ({}, {}, ...): use the full name",
                a.full_name(),
                b.full_name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;
    use crate::pb;

    fn schema() -> Schema {
        let served = [
            "h2chat.logs.v1.LogWatcher",
            "h2chat.echo.v1.Chat",
            "chat.v1.ChatService",
        ];
        Schema::new(pb::FILE_DESCRIPTOR_SET, &served).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn short_and_full_names_resolve_with_their_kind() {
        let s = schema();
        let m = s
            .resolve("LogWatcher", "WatchLogs")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.path, "/h2chat.logs.v1.LogWatcher/WatchLogs");
        assert_eq!(m.kind, MethodKind::ServerStreaming);
        let m = s
            .resolve("Chat", "BiDiChat")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.path, "/h2chat.echo.v1.Chat/BiDiChat");
        assert_eq!(m.kind, MethodKind::BidiStreaming);
        let m = s
            .resolve("chat.v1.ChatService", "Members")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.kind, MethodKind::Unary);
    }

    #[test]
    fn unknown_or_unserved_names_are_unimplemented() {
        let s = schema();
        let code = |r: Result<Method, Status>| r.err().map(|e| e.code());
        assert_eq!(code(s.resolve("Nope", "X")), Some(Code::Unimplemented));
        assert_eq!(code(s.resolve("Chat", "Nope")), Some(Code::Unimplemented));
        // In the descriptor set, but not served.
        assert_eq!(
            code(s.resolve("TestService", "EmptyCall")),
            Some(Code::Unimplemented)
        );
    }

    #[test]
    fn json_round_trips_through_protobuf() {
        let s = schema();
        let m = s
            .resolve("LogWatcher", "WatchLogs")
            .unwrap_or_else(|e| panic!("{e}"));
        let req = m
            .request_from_json(&serde_json::json!({"filter": "ERROR", "limit": 3}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            prost::Message::encode_to_vec(&req),
            prost::Message::encode_to_vec(&pb::h2chat::logs::v1::WatchLogsRequest {
                filter: "ERROR".into(),
                limit: 3
            })
        );
        let entry = pb::h2chat::logs::v1::LogEntry {
            level: "ERROR".into(),
            msg: "disk full".into(),
            seq: 7,
            ..Default::default()
        };
        let json = m
            .response_to_json(prost::Message::encode_to_vec(&entry).into())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            serde_json::json!({"level": "ERROR", "msg": "disk full", "seq": "7"})
        );
    }

    #[test]
    fn requests_that_do_not_fit_are_invalid_argument() {
        let s = schema();
        let m = s
            .resolve("LogWatcher", "WatchLogs")
            .unwrap_or_else(|e| panic!("{e}"));
        for bad in [
            serde_json::json!({"filter": 5}),
            serde_json::json!({"nope": 1}),
            serde_json::json!({"limit": -1}),
            serde_json::json!("text"),
        ] {
            let err = m.request_from_json(&bad).err().map(|e| e.code());
            assert_eq!(err, Some(Code::InvalidArgument), "{bad}");
        }
    }
}
