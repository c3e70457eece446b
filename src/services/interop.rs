//! `grpc.testing.TestService`: the service every gRPC implementation's interop clients test
//! against (grpc/grpc `doc/interop-test-descriptions.md`, "Server" section).
//!
//! Features served: EmptyCall, UnaryCall, CacheableUnaryCall, StreamingInputCall,
//! StreamingOutputCall, FullDuplexCall, HalfDuplexCall; CompressedRequest (`expect_compressed`
//! checked against each message's compressed flag), CompressedResponse (`response_compressed`
//! and per-message `ResponseParameters.compressed`), Echo Status, Echo Metadata and
//! `interval_us`. UnimplementedCall answers UNIMPLEMENTED, as the test descriptions require.
//!
//! A client chooses how much this service sends, so it is served only when asked for
//! (`h2chat serve --interop`), and bounded when served: a response payload is at most
//! [`MAX_RESPONSE_PAYLOAD_BYTES`], one request asks for at most [`MAX_RESPONSES_PER_REQUEST`]
//! responses of at most [`MAX_RESPONSE_BYTES_PER_REQUEST`] together, and the count of
//! `response_parameters` is checked on the encoded request *before* it is decoded (2 million
//! entries fit in 4 MiB and decode to 24 MB). Every response waits for the send budget before it
//! is built.

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

/// Most responses one request may ask for (`response_parameters` entries).
pub const MAX_RESPONSES_PER_REQUEST: usize = 1_000;

/// Most payload bytes one request may ask for, all its responses together: 16 MiB.
pub const MAX_RESPONSE_BYTES_PER_REQUEST: usize = 16 << 20;

/// Longest message an Echo Status request may have the server send back.
pub const MAX_ECHO_STATUS_MESSAGE_BYTES: usize = 1 << 10;

/// `StreamingOutputCallRequest.response_parameters`' field number.
const RESPONSE_PARAMETERS_FIELD: u32 = 2;

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
    let size = payload_size(req.response_size)?;
    let compress = is_true(req.response_compressed.as_ref());
    if compress {
        enable_response_compression(call);
    }
    // The response exists only once the send budget has room for it.
    let reservation = call
        .reserve(call.frame_bound(size + RESPONSE_OVERHEAD_BYTES, compress))
        .await?;
    let response = SimpleResponse {
        payload: Some(payload(req.response_type, req.response_size)?),
        server_id: if req.fill_server_id {
            server_id().to_owned()
        } else {
            String::new()
        },
        ..SimpleResponse::default()
    };
    call.queue_message(&response, compress, reservation)?;
    drop(response);
    call.flush().await
}

/// Bytes a response message takes beyond its payload's body (tags, lengths, the type, a
/// server id).
const RESPONSE_OVERHEAD_BYTES: usize = 64;

/// An id for this process, the same for every call (grpc-go's interop client compares the
/// `server_id` of two calls in `pick_first_unary`).
fn server_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("h2chat-{}-{started:x}", std::process::id())
    })
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
    let req = recv_output_request(call)
        .await?
        .ok_or_else(|| Status::unimplemented("expected one request message, got none"))?;
    if call.recv_raw().await?.is_some() {
        return Err(Status::unimplemented(
            "expected one request message, got more",
        ));
    }
    echo_status(req.response_status.as_ref())?;
    respond(call, req.response_type, &req.response_parameters).await
}

/// Replies to each request as it arrives: a client may wait for the reply before it sends the
/// next request (ping_pong).
async fn full_duplex_call(call: &Call) -> CallResult {
    echo_metadata(call);
    while let Some(req) = recv_output_request(call).await? {
        echo_status(req.response_status.as_ref())?;
        respond(call, req.response_type, &req.response_parameters).await?;
    }
    Ok(())
}

/// The next `StreamingOutputCallRequest`, its response count and sizes checked against the
/// limits — the count on the encoded bytes, before decoding builds the list.
async fn recv_output_request(call: &Call) -> Result<Option<StreamingOutputCallRequest>, Status> {
    let Some(raw) = call.recv_raw().await? else {
        return Ok(None);
    };
    let asked = count_field(&raw, RESPONSE_PARAMETERS_FIELD).unwrap_or(0);
    if asked > MAX_RESPONSES_PER_REQUEST {
        return Err(Status::resource_exhausted(format!(
            "a request may ask for at most {MAX_RESPONSES_PER_REQUEST} responses, not {asked}"
        )));
    }
    let req = <StreamingOutputCallRequest as prost::Message>::decode(raw)
        .map_err(|e| Status::internal(format!("request message does not decode: {e}")))?;
    let total: usize = req
        .response_parameters
        .iter()
        .map(|p| usize::try_from(p.size).unwrap_or(0))
        .fold(0, usize::saturating_add);
    if total > MAX_RESPONSE_BYTES_PER_REQUEST {
        return Err(Status::resource_exhausted(format!(
            "a request may ask for at most {MAX_RESPONSE_BYTES_PER_REQUEST} response bytes, not {total}"
        )));
    }
    Ok(Some(req))
}

/// How many times field `number` occurs at the top level of an encoded protobuf message, or
/// `None` when the bytes are not a well-formed message (decoding then says why).
fn count_field(mut bytes: &[u8], number: u32) -> Option<usize> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut count = 0;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        if key >> 3 == u64::from(number) {
            count += 1;
        }
        let skip = match key & 7 {
            0 => {
                varint(&mut bytes)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut bytes)?).ok()?,
            5 => 4,
            _ => return None,
        };
        bytes = bytes.get(skip..)?;
    }
    Some(count)
}

/// Reads every request first, then replies to them in order.
async fn half_duplex_call(call: &Call) -> CallResult {
    echo_metadata(call);
    let mut pending: Vec<(i32, ResponseParameters)> = Vec::new();
    while let Some(req) = recv_output_request(call).await? {
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
        let compress = is_true(p.compressed.as_ref());
        let size = payload_size(p.size)?;
        // The response exists only once the send budget has room for it.
        let reservation = call
            .reserve(call.frame_bound(size + RESPONSE_OVERHEAD_BYTES, compress))
            .await?;
        let response = StreamingOutputCallResponse {
            payload: Some(payload(kind, p.size)?),
        };
        call.queue_message(&response, compress, reservation)?;
        drop(response);
        call.flush().await?;
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
        Some(s) if s.code != 0 => Err(Status::new(
            Code::from_i32(s.code),
            crate::grpc::status::truncate(&s.message, MAX_ECHO_STATUS_MESSAGE_BYTES),
        )),
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
    let size = payload_size(size)?;
    Ok(Payload {
        r#type: kind,
        body: vec![0; size],
    })
}

/// A requested payload size: negative or over [`MAX_RESPONSE_PAYLOAD_BYTES`] is
/// INVALID_ARGUMENT.
fn payload_size(size: i32) -> Result<usize, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative payload size {size}")))?;
    if size > MAX_RESPONSE_PAYLOAD_BYTES {
        return Err(Status::invalid_argument(format!(
            "payload size {size} over the limit of {MAX_RESPONSE_PAYLOAD_BYTES} bytes"
        )));
    }
    Ok(size)
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
    fn response_parameters_are_counted_without_decoding() {
        let req = StreamingOutputCallRequest {
            response_type: 0,
            response_parameters: vec![ResponseParameters::default(); 3],
            payload: Some(Payload {
                r#type: 0,
                body: vec![2; 10],
            }),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&req);
        assert_eq!(count_field(&bytes, RESPONSE_PARAMETERS_FIELD), Some(3));
        assert_eq!(count_field(&[0x12, 0x7f], RESPONSE_PARAMETERS_FIELD), None);
    }

    #[test]
    fn server_id_is_stable() {
        assert_eq!(server_id(), server_id());
        assert!(!server_id().is_empty());
    }

    #[test]
    fn payload_sizes_are_bounded() {
        assert_eq!(payload(0, 3).map(|p| p.body), Ok(vec![0, 0, 0]));
        assert!(payload(0, -1).is_err());
        assert!(payload(1, 1).is_err());
        assert!(payload(0, i32::MAX).is_err());
    }
}
