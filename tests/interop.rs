//! The gRPC interop test cases that exercise a server, driven by grpcio (Python over the gRPC C
//! core) through `tests/interop/client.py`, one test per case against the real server; then the
//! TestService features no case reaches, checked on the wire.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`pip install -r
//! tests/interop/requirements.txt`); a test fails, with that message, when they are missing.

mod common;
mod wire;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::{require_tool, TestServer};
use h2chat::grpc::Code;
use h2chat::pb::grpc::testing::{
    ResponseParameters, SimpleRequest, SimpleResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use wire::{message, WireClient};

/// Longest a case may run before it is taken to hang (a guard, not an assertion on speed).
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client.py")
}

/// The Python stubs, generated once per test process into a directory keyed by its id.
fn stubs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = require_tool("python3");
        let dir = std::env::temp_dir().join(format!("h2chat-interop-stubs-{}", std::process::id()));
        let out = std::process::Command::new(python)
            .arg(script())
            .arg("--generate")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        assert!(
            out.status.success(),
            "generating the interop stubs failed (is grpcio-tools installed? \
             pip install grpcio grpcio-tools):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Starts the server, runs one case of the interop client against it and fails with the
/// client's own explanation when the case fails (or hangs).
async fn run_case(case: &str) {
    let python = require_tool("python3");
    let stubs = stubs_dir();
    let server = TestServer::default().await;
    let mut child = tokio::process::Command::new(python)
        .arg(script())
        .arg(server.target())
        .arg(case)
        .arg("--stubs")
        .arg(stubs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let finished = match tokio::time::timeout(CASE_TIMEOUT, child.wait()).await {
        Ok(status) => {
            Some(status.unwrap_or_else(|e| panic!("{case}: waiting for the client: {e}")))
        }
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let output = format!(
        "{}{}",
        stdout.await.unwrap_or_default(),
        stderr.await.unwrap_or_default()
    );
    server.shutdown().await;
    match finished {
        None => panic!("{case}: the interop client did not finish in {CASE_TIMEOUT:?}:\n{output}"),
        Some(status) => assert!(status.success(), "{case} failed ({status}):\n{output}"),
    }
}

/// Reads a child's output pipe to the end, in its own task.
fn read_all<R>(pipe: Option<R>) -> JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

macro_rules! interop_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                run_case(stringify!($case)).await;
            }
        )*
    };
}

interop_cases!(
    empty_unary,
    large_unary,
    client_compressed_unary,
    server_compressed_unary,
    client_streaming,
    client_compressed_streaming,
    server_streaming,
    server_compressed_streaming,
    ping_pong,
    empty_stream,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
    cancel_after_begin,
    cancel_after_first_response,
    timeout_on_sleeping_server,
);

// Server features no interop case reaches, checked on the wire.

fn sizes(params: &[i32]) -> Vec<ResponseParameters> {
    params
        .iter()
        .map(|&size| ResponseParameters {
            size,
            interval_us: 1000,
            compressed: None,
        })
        .collect()
}

/// HalfDuplexCall answers every request, in order, after the client half-closes.
#[tokio::test]
async fn half_duplex_replies_in_order_after_the_half_close() {
    let server = TestServer::default().await;
    let mut client = WireClient::connect(server.addr).await;
    let mut call = client
        .start("/grpc.testing.TestService/HalfDuplexCall", &[])
        .await;
    for batch in [&[3, 1][..], &[4][..]] {
        let req = StreamingOutputCallRequest {
            response_parameters: sizes(batch),
            ..StreamingOutputCallRequest::default()
        };
        call.send(message(&req), false);
    }
    call.send(bytes::Bytes::new(), true);
    let mut got = Vec::new();
    while let Some(resp) = call.next_message::<StreamingOutputCallResponse>().await {
        got.push(resp.payload.map_or(0, |p| p.body.len()));
    }
    assert_eq!(got, [3, 1, 4]);
    assert_eq!(call.finish().await.0.code(), Code::Ok);
    server.shutdown().await;
}

/// CacheableUnaryCall answers a fresh timestamp with cache-control headers.
#[tokio::test]
async fn cacheable_unary_answers_a_timestamp_with_cache_control() {
    let server = TestServer::default().await;
    let mut client = WireClient::connect(server.addr).await;
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut call = client
            .start("/grpc.testing.TestService/CacheableUnaryCall", &[])
            .await;
        call.send(message(&SimpleRequest::default()), true);
        let cache = call.headers().await.get("cache-control").cloned();
        assert_eq!(
            cache.as_ref().map(|v| v.as_bytes()),
            Some(&b"max-age=60, public"[..])
        );
        let resp: SimpleResponse = call.next_message().await.expect("a response");
        bodies.push(resp.payload.map(|p| p.body).unwrap_or_default());
        assert_eq!(call.finish().await.0.code(), Code::Ok);
    }
    assert!(bodies.iter().all(|b| !b.is_empty()), "{bodies:?}");
    assert_ne!(bodies[0], bodies[1], "two calls, two timestamps");
    server.shutdown().await;
}

/// A response type the server does not have, or an impossible size, is INVALID_ARGUMENT.
#[tokio::test]
async fn unsupported_response_type_or_size_is_invalid_argument() {
    let server = TestServer::default().await;
    let mut client = WireClient::connect(server.addr).await;
    for req in [
        SimpleRequest {
            response_type: 7,
            response_size: 1,
            ..SimpleRequest::default()
        },
        SimpleRequest {
            response_size: -1,
            ..SimpleRequest::default()
        },
        SimpleRequest {
            response_size: i32::MAX,
            ..SimpleRequest::default()
        },
    ] {
        let mut call = client
            .start("/grpc.testing.TestService/UnaryCall", &[])
            .await;
        call.send(message(&req), true);
        let (status, _) = call.finish().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status}");
    }
    server.shutdown().await;
}
