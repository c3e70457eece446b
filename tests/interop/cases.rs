//! The gRPC interop test cases that exercise a server, driven by grpcio (Python over the gRPC C
//! core) through `tests/interop/client.py`, one test per case against the real server.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`pip install -r
//! tests/interop/requirements.txt`); a test fails, with that message, when they are missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{require_tool, TestServer};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

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
