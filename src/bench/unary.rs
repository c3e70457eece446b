//! The unary bench's request, as `h2load` sends it, and a check that a server answers it.
//!
//! `h2load` counts any HTTP 200 as a success, and a gRPC error is an HTTP 200 too: a server
//! without `grpc.testing.TestService` would answer every request with UNIMPLEMENTED at a fine
//! rate. So the bench first makes one real call with h2chat's client ([`check`]), and only then
//! hands the request body to `h2load`:
//!
//! ```text
//! h2chat bench unary-request --check 127.0.0.1:50051 --out /tmp/unary.bin
//! h2load -n 200000 -c 10 -m 100 -H 'content-type: application/grpc' -H 'te: trailers' \
//!     -d /tmp/unary.bin http://127.0.0.1:50051/grpc.testing.TestService/UnaryCall
//! ```

use std::net::SocketAddr;

use bytes::Bytes;

use super::BenchError;
use crate::grpc::client::{CallOptions, Channel};
use crate::grpc::codec::encode_message;
use crate::pb::grpc::testing::{Payload, SimpleRequest, SimpleResponse};

/// The method the unary bench calls.
pub const UNARY_PATH: &str = "/grpc.testing.TestService/UnaryCall";
/// Bytes of payload in the request, and asked for in the response.
pub const PAYLOAD_BYTES: usize = 10;

/// The request: a `SimpleRequest` with a 10-byte payload that asks for a 10-byte payload back
/// (so the response is as large as the raw-h2 baseline's echo).
pub fn request() -> SimpleRequest {
    SimpleRequest {
        response_size: PAYLOAD_BYTES as i32,
        payload: Some(Payload {
            body: vec![0; PAYLOAD_BYTES],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request body `h2load -d` sends: [`request`] as one gRPC message, 5-byte prefix included.
pub fn request_body() -> Bytes {
    encode_message(&request())
}

/// Makes one UnaryCall to `addr` with [`request`].
///
/// Errors: the call fails (e.g. UNIMPLEMENTED: the server has no TestService), or the response
/// payload is not [`PAYLOAD_BYTES`] long.
pub async fn check(addr: SocketAddr) -> Result<(), BenchError> {
    let channel = Channel::connect(addr)
        .await
        .map_err(|e| BenchError::new(format!("connecting to {addr}: {e}")))?;
    let response: SimpleResponse = channel
        .unary(UNARY_PATH, &request(), CallOptions::default())
        .await
        .map_err(|e| BenchError::new(format!("{UNARY_PATH} on {addr}: {e}")))?;
    let got = response.payload.map_or(0, |p| p.body.len());
    if got != PAYLOAD_BYTES {
        return Err(BenchError::new(format!(
            "{UNARY_PATH} on {addr} answered with {got} payload bytes, not {PAYLOAD_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_is_one_prefixed_message() {
        let body = request_body();
        assert_eq!(body[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize,
            body.len() - 5
        );
        // response_size (2 bytes) and payload (2 + 2 + 10 bytes).
        assert_eq!(body.len(), 5 + 16);
    }
}
