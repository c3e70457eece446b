//! The baseline for unary figures: the least a gRPC server on h2 must do, and nothing more.
//!
//! It answers any POST with what a gRPC server would send — HTTP 200, `content-type:
//! application/grpc`, one DATA frame echoing the request body, trailers `grpc-status: 0` — with no
//! router, no message decoder, no status or metadata handling. It uses the same h2 settings as
//! [`crate::grpc::server`] (windows, concurrent streams) and, like it, one task per request, so
//! `h2load` against it gives the ceiling of the stack h2chat stands on. Anything but POST gets
//! HTTP 405. Request bodies are limited to [`MAX_BODY_BYTES`].

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::debug;

use crate::grpc::server::coalesce::CoalescedWrites;
use crate::grpc::server::DEFAULT_MAX_CONCURRENT_STREAMS;

/// Largest request body echoed; a longer one is answered with RST_STREAM(CANCEL).
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// The per-stream and per-connection receive windows, as h2chat's server sets them.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

/// Serves connections from `listener` until `signal` resolves; connections still open then are
/// dropped with the runtime. With `coalesce_writes`, small writes wait one scheduler turn as
/// h2chat's server does (`grpc::coalesce`): the baseline for comparing like with like.
pub async fn serve(
    listener: TcpListener,
    coalesce_writes: bool,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(signal);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut signal => return Ok(()),
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let served = if coalesce_writes {
                serve_connection(CoalescedWrites::new(socket)).await
            } else {
                serve_connection(socket).await
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "raw-h2 connection ended");
            }
        });
    }
}

async fn serve_connection<T>(socket: T) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(DEFAULT_MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .handshake::<_, Bytes>(socket)
        .await?;
    while let Some(request) = conn.accept().await {
        let (request, respond) = request?;
        tokio::spawn(async move {
            if let Err(e) = answer(request, respond).await {
                debug!(error = %e, "raw-h2 request failed");
            }
        });
    }
    Ok(())
}

async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    if request.method() != Method::POST {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        respond.send_response(response, true)?;
        return Ok(());
    }
    let mut body = request.into_body();
    let mut echo = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if echo.len() + chunk.len() > MAX_BODY_BYTES {
            respond.send_reset(h2::Reason::CANCEL);
            return Ok(());
        }
        echo.extend_from_slice(&chunk);
    }
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .unwrap_or_default();
    let mut stream = respond.send_response(response, false)?;
    // h2 queues what the peer's window does not allow yet; MAX_BODY_BYTES bounds it.
    stream.send_data(echo.freeze(), false)?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    stream.send_trailers(trailers)
}
