//! A call's task: spawned for every call that was not refused outright, it routes the call (an
//! unknown service or method is refused UNIMPLEMENTED) and runs its handler beside the watch for
//! the client going away, a stalled send, the deadline or credential expiry, and shutdown; then
//! it ends the call and counts it.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tracing::{debug, Instrument};

use crate::grpc::server::accept::accept_call;
use crate::grpc::server::budget::ConnectionBudget;
use crate::grpc::server::call::Call;
use crate::grpc::server::call_log::{log_failed_call, refuse_unimplemented};
use crate::grpc::server::lifetime::CallSlot;
use crate::grpc::server::stats::{self, MethodLabels};
use crate::grpc::server::written::Chunk;
use crate::grpc::server::{ConnInfo, Shared};
use crate::grpc::status::{Code, Status};

/// Spawns the task of one call, unless the request is refused outright.
///
/// The setup is synchronous and the task holds only the call: the request's headers are gone
/// before the long wait starts. A task lives as long as its call (a chat member's, for hours), so
/// its size is per-member memory: the call's span is kept only when it is enabled (a disabled
/// span still takes 80 bytes in the task).
pub(super) fn start_call(
    shared: Arc<Shared>,
    request: Request<RecvStream>,
    respond: SendResponse<Chunk>,
    (conn, budget): (&Arc<ConnInfo>, &Arc<ConnectionBudget>),
    permit: Option<CallSlot>,
) {
    let stream_id: u32 = respond.stream_id().as_u32();
    let span = tracing::debug_span!("call", stream_id, method = %request.uri().path());
    let Some(call) = span.in_scope(|| accept_call(&shared, request, respond, conn, budget, permit))
    else {
        return;
    };
    if span.is_disabled() {
        tokio::spawn(call_task(shared, call));
    } else {
        tokio::spawn(call_task(shared, call).instrument(span));
    }
}

/// What a call's task runs: the handler, beside the watch for the client going away, the deadline
/// and shutdown. An `async` block, not an `async fn`: an `async fn` keeps a second copy of the
/// call it takes by value for as long as it runs (1,008 bytes instead of 648).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn call_task(shared: Arc<Shared>, call: Call) -> impl Future<Output = ()> + Send + 'static {
    async move { drive_call(&shared, &call).await }
}

/// The status of a call whose end came: its credentials expired (UNAUTHENTICATED with the
/// authenticator's message, `expiry`) or its deadline passed (`expiry` is `None`).
fn ended(expiry: Option<&'static str>) -> Status {
    match expiry {
        Some(message) => Status::unauthenticated(message),
        None => Status::deadline_exceeded("deadline exceeded"),
    }
}

/// Runs the call's handler until it returns, the client goes away, the deadline passes or the
/// server shuts down; then ends the call.
async fn drive_call(shared: &Shared, call: &Call) {
    let (service, method) = match shared.router.route(&call.info().path) {
        Ok(found) => found,
        Err(status) => return refuse_unimplemented(call, status),
    };
    let Some(mut handler) = service.call(method, call) else {
        let status = Status::unimplemented(format!(
            "unknown method {} for service {}",
            crate::grpc::status::truncate(method, crate::grpc::status::MAX_QUOTED_BYTES),
            service.name()
        ));
        return refuse_unimplemented(call, status);
    };
    let labels = MethodLabels::served(&call.info().path);
    stats::call_started(*labels);
    let started = Instant::now();
    // The call ends at its deadline or when its principal's credential expires, whichever is
    // first. Boxed, and only when there is one: a timer is large, and most calls have none.
    let expiry = call
        .info()
        .principal
        .as_ref()
        .and_then(|p| Some((p.expires_at?, p.expiry_message)));
    let end = match (call.info().deadline, expiry) {
        (Some(at), Some((exp, _))) if at <= exp => Some((at, None)),
        (_, Some((exp, message))) => Some((exp, Some(message))),
        (Some(at), None) => Some((at, None)),
        (None, None) => None,
    };
    // Of the end, only what its status needs is kept while the call runs (the task is
    // per-member memory).
    let expiry = end.and_then(|(_, expired)| expired);
    let mut deadline = end.map(|(at, _)| Box::pin(tokio::time::sleep_until(at.into())));
    let mut expired = poll_fn(|cx| match deadline.as_mut() {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    });
    let send_stalled = call.send_stalled(shared.config.send_timeout);
    let raced = tokio::select! {
        // The handler first: on shutdown it may still say goodbye (health sends NOT_SERVING).
        biased;
        result = &mut handler => Raced::Ended(Some(result)),
        cause = call.watch_peer() => {
            debug!(?cause, "client went away; handler stopped");
            Raced::Ended(None)
        }
        () = send_stalled => Raced::Ended(None),
        () = &mut expired => Raced::Ended(Some(Err(ended(expiry)))),
        () = shared.signal.wait() => Raced::ShuttingDown,
    };
    // Shutdown is handled after the race, not in its branch: what the race returns is then not
    // kept while the handler says goodbye, and the two share room in the task.
    let outcome = match raced {
        Raced::Ended(outcome) => outcome,
        Raced::ShuttingDown => on_shutdown(call, &mut handler, &mut expired, expiry).await,
    };
    let code = match &outcome {
        None => Code::Cancelled,
        Some(Ok(())) => Code::Ok,
        Some(Err(status)) => status.code(),
    };
    stats::call_handled(*labels, code, started.elapsed());
    if let Some(Err(status)) = &outcome {
        log_failed_call(call, status, shared.signal.is_shutting_down());
    }
    if let Some(result) = outcome {
        call.finish(result);
    }
}

/// How the race of a call's handler against its ends came out.
enum Raced {
    /// The call is over: `None` if the client went away or its sends stalled, else its result.
    Ended(Option<Result<(), Status>>),
    /// The server is shutting down.
    ShuttingDown,
}

/// What a call does once the server shuts down: the signal may have fired after the handler was
/// polled in the same round (the task was woken by something else), so the handler is polled once
/// more, now that the signal is set, so that a handler waiting on it gets its goodbye out. A
/// handler that drains on shutdown then ends the call itself; any other is ended UNAVAILABLE.
/// `None`: the client went away meanwhile.
///
/// A function of its own: what it keeps across its waits then shares room with the handler's
/// race in the call's task instead of adding to it.
async fn on_shutdown(
    call: &Call,
    handler: &mut Pin<Box<dyn Future<Output = Result<(), Status>> + Send + '_>>,
    expired: &mut (impl Future<Output = ()> + Unpin),
    expiry: Option<&'static str>,
) -> Option<Result<(), Status>> {
    match poll_fn(|cx| Poll::Ready(handler.as_mut().poll(cx))).await {
        Poll::Ready(result) => Some(result),
        Poll::Pending if call.drains_on_shutdown() => tokio::select! {
            // The handler ends the call itself once it has drained.
            biased;
            result = &mut *handler => Some(result),
            _ = call.watch_peer() => None,
            () = expired => Some(Err(ended(expiry))),
        },
        Poll::Pending => Some(Err(Status::unavailable("server shutting down"))),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::grpc::server::lifetime::Activity;
    use crate::grpc::server::{Server, ServerConfig};

    /// See the size check in `a_call_task_holds_the_call_and_its_driver_only`.
    const MAX_CALL_TASK_BYTES: usize = 784;

    /// A call's task lives as long as the call (a chat member's, for hours), so its size is
    /// per-member memory: it holds the call and the future driving it, nothing else (a span kept
    /// twice, or a second copy of the call, would show here).
    #[tokio::test]
    async fn a_call_task_holds_the_call_and_its_driver_only() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let (mut send, conn) = h2::client::handshake(client_io)
                .await
                .expect("client handshake");
            tokio::spawn(conn);
            let request = http::Request::post("http://localhost/a.B/C")
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(())
                .expect("request");
            let (response, _body) = send.send_request(request, false).expect("send request");
            let _ = response.await;
        });
        let mut conn = h2::server::Builder::new()
            .handshake::<_, Chunk>(server_io)
            .await
            .expect("server handshake");
        let (request, respond) = conn.accept().await.expect("a request").expect("no error");
        let (shared, _stopper) = Server::new(ServerConfig::default()).start();
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .ok()
            .map(|p| Activity::new().enter(p));
        let conn_info = Arc::new(ConnInfo::new(peer, None));
        let budget = ConnectionBudget::new(1 << 20, 0, shared.send_total.clone());
        let call =
            accept_call(&shared, request, respond, &conn_info, &budget, permit).expect("accepted");
        let parts = std::mem::size_of_val(&call)
            + std::mem::size_of_val(&drive_call(&shared, &call))
            + std::mem::size_of_val(&shared);
        let task = call_task(shared, call);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= parts + 16,
            "a call's task is {size} bytes, its parts {parts}"
        );
        // Tokio adds 112 bytes of header and trailer and rounds the cell to 128: at most 784
        // bytes of task make an 896-byte cell (it was 904, a 1,024-byte cell).
        assert!(
            size <= MAX_CALL_TASK_BYTES,
            "a call's task is {size} bytes (at most {MAX_CALL_TASK_BYTES})"
        );
        drop(task);
        drop(conn);
        let _ = client.await;
    }
}
