//! The gRPC interop test cases that exercise a server, driven by grpcio (Python over the gRPC C
//! core) through `tests/interop/client.py`, one test per case against the real server.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`pip install -r
//! tests/interop/requirements.txt`); a test fails, with that message, when they are missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::Arc;

use crate::support::process::dies_with_the_test;
use crate::support::{require_tool, within, TestServer, PATIENCE, TEST_PATIENCE};
use h2chat::grpc::{
    BoxFuture, Call, CallResult, CallState, CloseCause, Code, Server, ServerConfig, Service,
};
use h2chat::services::interop::InteropService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest a case may run before it is taken to hang (a guard, not an assertion on speed).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client.py")
}

/// The Python stubs, generated once per test process into a directory keyed by its id, which
/// is removed when the process exits.
fn stubs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_stubs() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let python = require_tool("python3");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("interop-stubs-{}", std::process::id()));
        // SAFETY: registers a plain function to run at exit; it only removes a directory.
        unsafe { libc::atexit(remove_stubs) };
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

/// The interop client running one case.
struct InteropClient {
    case: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl InteropClient {
    /// Starts `client.py TARGET CASE --stubs DIR <extra>`.
    fn start(case: &'static str, target: &str, extra: &[&str]) -> InteropClient {
        let python = require_tool("python3");
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(script())
            .arg(target)
            .arg(case)
            .arg("--stubs")
            .arg(stubs_dir())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = dies_with_the_test(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let stdin = child.stdin.take();
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        InteropClient {
            case,
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Writes a line to the client's stdin.
    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the interop client");
        stdin.flush().await.expect("flush");
    }

    /// Waits for the client to exit and fails with its own explanation unless the case passed.
    async fn passes(mut self) {
        let case = self.case;
        self.stdin = None;
        let waited = within(
            CASE_TIMEOUT,
            "the interop client to finish",
            self.child.wait(),
        )
        .await;
        let status = waited.unwrap_or_else(|e| panic!("{case}: waiting for the client: {e}"));
        let output = format!(
            "{}{}",
            self.stdout.await.unwrap_or_default(),
            self.stderr.await.unwrap_or_default()
        );
        assert!(status.success(), "{case} failed ({status}):\n{output}");
    }
}

/// Starts the server, runs one case of the interop client against it and fails with the
/// client's own explanation when the case fails (or hangs).
async fn run_case(case: &'static str) {
    let server = TestServer::default().await;
    InteropClient::start(case, &server.target(), &[])
        .passes()
        .await;
    server.shutdown().await;
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

/// What the server's TestService handlers did, as [`Watched`] reports it.
#[derive(Debug, PartialEq, Eq)]
enum Handler {
    /// A handler began; `deadline`: the call has one.
    Started { method: String, deadline: bool },
    /// A handler ended: `returned` is its result's code if it returned, `None` if the server
    /// stopped it (dropped it before it returned); `state` is its stream's state at that moment.
    Ended {
        method: String,
        returned: Option<Code>,
        state: CallState,
    },
}

/// The interop service, reporting each handler's start and end.
struct Watched {
    inner: InteropService,
    events: mpsc::UnboundedSender<Handler>,
}

/// Reports the end of a handler when dropped (returned or stopped).
struct EndGuard<'a> {
    events: mpsc::UnboundedSender<Handler>,
    method: &'a str,
    call: &'a Call,
    returned: Option<Code>,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let _ = self.events.send(Handler::Ended {
            method: self.method.to_owned(),
            returned: self.returned,
            state: self.call.state(),
        });
    }
}

impl Service for Watched {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        let handler = self.inner.call(method, call)?;
        let events = self.events.clone();
        Some(Box::pin(async move {
            let _ = events.send(Handler::Started {
                method: method.to_owned(),
                deadline: call.info().deadline.is_some(),
            });
            let mut guard = EndGuard {
                events,
                method,
                call,
                returned: None,
            };
            let result = handler.await;
            guard.returned = Some(match &result {
                Ok(()) => Code::Ok,
                Err(status) => status.code(),
            });
            result
        }))
    }
}

/// A server with only the (watched) TestService, and what its handlers report.
async fn watched_server() -> (TestServer, mpsc::UnboundedReceiver<Handler>) {
    let (events, handlers) = mpsc::unbounded_channel();
    let mut server = Server::new(ServerConfig::default());
    server.add_service(Arc::new(Watched {
        inner: InteropService::new(),
        events,
    }));
    (TestServer::serve(server).await, handlers)
}

/// The next thing the server's handlers report (at most [`PATIENCE`]).
async fn next_handler(handlers: &mut mpsc::UnboundedReceiver<Handler>, what: &str) -> Handler {
    within(PATIENCE, what, handlers.recv())
        .await
        .expect("the server is running")
}

fn started(method: &str, deadline: bool) -> Handler {
    Handler::Started {
        method: method.into(),
        deadline,
    }
}

/// `end` is the end of a `method` handler that did not finish the call itself: the server
/// stopped it (or it returned CANCELLED) once the client's RST_STREAM(CANCEL) closed the stream.
fn assert_stopped_by_cancel(end: Handler, method: &str) {
    let Handler::Ended {
        method: ended,
        returned,
        state,
    } = end
    else {
        panic!("{end:?}");
    };
    assert_eq!(ended, method);
    assert!(
        matches!(returned, None | Some(Code::Cancelled)),
        "{method} ended with {returned:?}"
    );
    assert_eq!(
        state,
        CallState::Closed(CloseCause::Reset(h2::Reason::CANCEL))
    );
}

/// cancel_after_begin, seen from the server too: the client cancels once the server has the
/// call; the server's handler is stopped by the RST_STREAM(CANCEL) that arrives.
#[tokio::test]
async fn cancel_after_begin() {
    within(
        TEST_PATIENCE,
        "the whole of test cancel_after_begin",
        async {
            let (server, mut handlers) = watched_server().await;
            let mut client = InteropClient::start(
                "cancel_after_begin",
                &server.target(),
                &["--cancel-on-stdin"],
            );
            let first =
                next_handler(&mut handlers, "the StreamingInputCall handler to start").await;
            assert_eq!(first, started("StreamingInputCall", false));
            client.say("cancel now").await;
            let end = next_handler(&mut handlers, "the StreamingInputCall handler to end").await;
            assert_stopped_by_cancel(end, "StreamingInputCall");
            client.passes().await;
            server.shutdown().await;
        },
    )
    .await;
}

/// cancel_after_first_response, seen from the server too: the handler sent its first response
/// and then ended because of the client's RST_STREAM(CANCEL), not with a status of its own.
#[tokio::test]
async fn cancel_after_first_response() {
    within(
        TEST_PATIENCE,
        "the whole of test cancel_after_first_response",
        async {
            let (server, mut handlers) = watched_server().await;
            let client = InteropClient::start("cancel_after_first_response", &server.target(), &[]);
            let first = next_handler(&mut handlers, "the FullDuplexCall handler to start").await;
            assert_eq!(first, started("FullDuplexCall", false));
            let end = next_handler(&mut handlers, "the FullDuplexCall handler to end").await;
            assert_stopped_by_cancel(end, "FullDuplexCall");
            client.passes().await;
            server.shutdown().await;
        },
    )
    .await;
}

/// timeout_on_sleeping_server, seen from the server too. With the spec's 1 ms the call may end
/// before it reaches the server; with 300 ms the server gets the call with its deadline, the
/// handler sleeps (waits for a request that never comes), and the deadline stops it.
#[tokio::test]
async fn timeout_on_sleeping_server() {
    within(
        TEST_PATIENCE,
        "the whole of test timeout_on_sleeping_server",
        async {
            // The spec's own run: the client sees DEADLINE_EXCEEDED.
            run_case("timeout_on_sleeping_server").await;
            let (server, mut handlers) = watched_server().await;
            let client = InteropClient::start(
                "timeout_on_sleeping_server",
                &server.target(),
                &["--deadline-ms", "300"],
            );
            let first = next_handler(&mut handlers, "the FullDuplexCall handler to start").await;
            assert_eq!(first, started("FullDuplexCall", true));
            let end = next_handler(&mut handlers, "the FullDuplexCall handler to end").await;
            let Handler::Ended {
                method, returned, ..
            } = end
            else {
                panic!("{end:?}");
            };
            assert_eq!(method, "FullDuplexCall");
            assert_ne!(
                returned,
                Some(Code::Ok),
                "the handler was stopped, it did not finish"
            );
            client.passes().await;
            server.shutdown().await;
        },
    )
    .await;
}

macro_rules! interop_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let what = concat!("the whole of interop case ", stringify!($case));
                within(TEST_PATIENCE, what, run_case(stringify!($case))).await;
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
);
