//! `grpc.testing.TestService`: the service every gRPC implementation's interop clients test
//! against (grpc/grpc `doc/interop-test-descriptions.md`, "Server" section).
//!
//! Features served: EmptyCall, UnaryCall, CacheableUnaryCall, StreamingInputCall,
//! StreamingOutputCall, FullDuplexCall, HalfDuplexCall; CompressedRequest (`expect_compressed`
//! checked against each message's compressed flag), CompressedResponse (`response_compressed`
//! and per-message `ResponseParameters.compressed`), Echo Status, Echo Metadata and
//! `interval_us`. UnimplementedCall answers UNIMPLEMENTED, as the test descriptions require.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::grpc::{BoxFuture, Call, CallResult, Code, Service, Status};
use crate::pb::grpc::testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// The service's fully-qualified name.
pub const SERVICE_NAME: &str = "grpc.testing.TestService";

/// Request metadata echoed back in the response headers (Echo Metadata).
pub const ECHO_INITIAL_KEY: &str = "x-grpc-test-echo-initial";
/// Request metadata echoed back in the trailers (Echo Metadata).
pub const ECHO_TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";

/// Largest response payload a request may ask for: 4 MiB, what a default gRPC client accepts.
/// Larger asks are INVALID_ARGUMENT rather than an allocation a client chooses.
pub const MAX_RESPONSE_PAYLOAD_BYTES: usize = 4 << 20;

/// Most response parameters a HalfDuplexCall buffers before it replies.
pub const MAX_HALF_DUPLEX_RESPONSES: usize = 10_000;

/// The interop test service. Stateless: every call stands alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct InteropService;

impl InteropService {
    /// The service.
    pub fn new() -> InteropService {
        InteropService
    }
}

impl Service for InteropService {
    fn name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        Some(match method {
            "EmptyCall" => Box::pin(empty_call(call)),
            "UnaryCall" => Box::pin(unary_call(call)),
            "CacheableUnaryCall" => Box::pin(cacheable_unary_call(call)),
            "StreamingInputCall" => Box::pin(streaming_input_call(call)),
            "StreamingOutputCall" => Box::pin(streaming_output_call(call)),
            "FullDuplexCall" => Box::pin(full_duplex_call(call)),
            "HalfDuplexCall" => Box::pin(half_duplex_call(call)),
            // Declared in test.proto precisely so that clients can see it refused.
            "UnimplementedCall" => Box::pin(async {
                Err(Status::unimplemented(
                    "grpc.testing.TestService/UnimplementedCall is not implemented",
                ))
            }),
            _ => return None,
        })
    }
}

async fn empty_call(call: &Call) -> CallResult {
    echo_metadata(call);
    call.recv_one::<Empty>().await?;
    call.send(&Empty {}).await
}

async fn unary_call(call: &Call) -> CallResult {
    echo_metadata(call);
    let req: SimpleRequest = call.recv_one().await?;
    check_expected_compression(
        req.expect_compressed.as_ref(),
        call.last_request_compressed(),
    )?;
    echo_status(req.response_status.as_ref())?;
    let response = SimpleResponse {
        payload: Some(payload(req.response_type, req.response_size)?),
        ..SimpleResponse::default()
    };
    let compress = is_true(req.response_compressed.as_ref());
    if compress {
        enable_response_compression(call);
    }
    call.send_with(&response, compress).await
}

/// The payload is the current time in nanoseconds, so that two calls differ unless a caching
/// proxy answered the second; `cache-control` lets such a proxy cache it.
async fn cacheable_unary_call(call: &Call) -> CallResult {
    echo_metadata(call);
    call.recv_one::<SimpleRequest>().await?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    call.with_headers(|h| h.insert("cache-control", "max-age=60, public"))?;
    let response = SimpleResponse {
        payload: Some(Payload {
            r#type: PayloadType::Compressable.into(),
            body: nanos.to_string().into_bytes(),
        }),
        ..SimpleResponse::default()
    };
    call.send(&response).await
}

async fn streaming_input_call(call: &Call) -> CallResult {
    echo_metadata(call);
    let mut total: usize = 0;
    while let Some(req) = call.recv::<StreamingInputCallRequest>().await? {
        check_expected_compression(
            req.expect_compressed.as_ref(),
            call.last_request_compressed(),
        )?;
        total = total.saturating_add(req.payload.map_or(0, |p| p.body.len()));
    }
    let response = StreamingInputCallResponse {
        aggregated_payload_size: i32::try_from(total).unwrap_or(i32::MAX),
    };
    call.send(&response).await
}

async fn streaming_output_call(call: &Call) -> CallResult {
    echo_metadata(call);
    let req: StreamingOutputCallRequest = call.recv_one().await?;
    echo_status(req.response_status.as_ref())?;
    respond(call, req.response_type, &req.response_parameters).await
}

/// Replies to each request as it arrives: a client may wait for the reply before it sends the
/// next request (ping_pong).
async fn full_duplex_call(call: &Call) -> CallResult {
    echo_metadata(call);
    while let Some(req) = call.recv::<StreamingOutputCallRequest>().await? {
        echo_status(req.response_status.as_ref())?;
        respond(call, req.response_type, &req.response_parameters).await?;
    }
    Ok(())
}

/// Reads every request first, then replies to them in order.
async fn half_duplex_call(call: &Call) -> CallResult {
    echo_metadata(call);
    let mut pending: Vec<(i32, ResponseParameters)> = Vec::new();
    while let Some(req) = call.recv::<StreamingOutputCallRequest>().await? {
        echo_status(req.response_status.as_ref())?;
        if pending.len() + req.response_parameters.len() > MAX_HALF_DUPLEX_RESPONSES {
            return Err(Status::resource_exhausted(format!(
                "HalfDuplexCall buffers at most {MAX_HALF_DUPLEX_RESPONSES} responses"
            )));
        }
        let kind = req.response_type;
        pending.extend(req.response_parameters.into_iter().map(|p| (kind, p)));
    }
    for (kind, params) in pending {
        respond(call, kind, std::slice::from_ref(&params)).await?;
    }
    Ok(())
}

/// Sends one `StreamingOutputCallResponse` per parameter set, each after its `interval_us`,
/// compressed when its `compressed` says so.
async fn respond(call: &Call, kind: i32, params: &[ResponseParameters]) -> CallResult {
    if params.iter().any(|p| is_true(p.compressed.as_ref())) {
        enable_response_compression(call);
    }
    for p in params {
        if let Ok(us) = u64::try_from(p.interval_us) {
            if us > 0 {
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
        }
        let response = StreamingOutputCallResponse {
            payload: Some(payload(kind, p.size)?),
        };
        call.send_with(&response, is_true(p.compressed.as_ref()))
            .await?;
    }
    Ok(())
}

/// Echo Metadata: `x-grpc-test-echo-initial` back in the headers, `x-grpc-test-echo-trailing-bin`
/// back in the trailers, values as they came.
fn echo_metadata(call: &Call) {
    let md = call.metadata();
    call.with_headers(|h| h.copy_from(md, ECHO_INITIAL_KEY));
    call.with_trailers(|t| t.copy_from(md, ECHO_TRAILING_KEY));
}

/// Echo Status: a non-OK `response_status` ends the call with that code and message.
fn echo_status(status: Option<&EchoStatus>) -> CallResult {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// CompressedRequest: when the client says whether a message is compressed, it must be so.
/// An absent `expect_compressed` checks nothing (the field is nullable for that reason).
fn check_expected_compression(expect: Option<&BoolValue>, compressed: bool) -> CallResult {
    match expect.map(|b| b.value) {
        Some(true) if !compressed => Err(Status::invalid_argument(
            "expected a compressed request message, got an uncompressed one",
        )),
        Some(false) if compressed => Err(Status::invalid_argument(
            "expected an uncompressed request message, got a compressed one",
        )),
        _ => Ok(()),
    }
}

fn is_true(flag: Option<&BoolValue>) -> bool {
    flag.is_some_and(|b| b.value)
}

/// Turns on response compression with the best algorithm the client accepts (none if it accepts
/// none, or if responses have already begun).
fn enable_response_compression(call: &Call) {
    if let Some(encoding) = call.info().accepted_encoding {
        call.compress_responses(encoding);
    }
}

/// A payload of `size` zero bytes. Only COMPRESSABLE exists; anything else, a negative size or
/// one over [`MAX_RESPONSE_PAYLOAD_BYTES`] is INVALID_ARGUMENT.
fn payload(kind: i32, size: i32) -> Result<Payload, Status> {
    if PayloadType::try_from(kind) != Ok(PayloadType::Compressable) {
        return Err(Status::invalid_argument(format!(
            "unsupported payload type {kind}"
        )));
    }
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative payload size {size}")))?;
    if size > MAX_RESPONSE_PAYLOAD_BYTES {
        return Err(Status::invalid_argument(format!(
            "payload size {size} over the limit of {MAX_RESPONSE_PAYLOAD_BYTES} bytes"
        )));
    }
    Ok(Payload {
        r#type: kind,
        body: vec![0; size],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_compression_is_checked_only_when_stated() {
        let yes = BoolValue { value: true };
        let no = BoolValue { value: false };
        assert!(check_expected_compression(None, true).is_ok());
        assert!(check_expected_compression(None, false).is_ok());
        assert!(check_expected_compression(Some(&yes), true).is_ok());
        assert!(check_expected_compression(Some(&no), false).is_ok());
        let code = |r: CallResult| r.err().map(|s| s.code());
        assert_eq!(
            code(check_expected_compression(Some(&yes), false)),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            code(check_expected_compression(Some(&no), true)),
            Some(Code::InvalidArgument)
        );
    }

    #[test]
    fn payload_sizes_are_bounded() {
        assert_eq!(payload(0, 3).map(|p| p.body), Ok(vec![0, 0, 0]));
        assert!(payload(0, -1).is_err());
        assert!(payload(1, 1).is_err());
        assert!(payload(0, i32::MAX).is_err());
    }
}
