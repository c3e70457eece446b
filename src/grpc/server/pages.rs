//! Static files the server answers `GET` (and `HEAD`) with on the same port as gRPC, e.g. a page
//! whose script calls the server with gRPC-Web. The files are given to the server whole (compiled
//! into the binary): a response body is one shared `&'static` buffer, so answering costs no copy
//! and no memory per request.

use bytes::Bytes;
use h2::server::SendResponse;
use http::{header, HeaderValue, Method, Response};

use crate::grpc::server::written::Chunk;

/// One static file.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// The request path it answers (`/`, `/app.js`).
    pub path: &'static str,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Answers a `GET`/`HEAD` for `path` from `pages`; `false` (nothing sent) when no page has that
/// path, which the server then refuses like any request that is not a gRPC call (HTTP 405).
pub(in crate::grpc) fn answer(
    pages: &[Page],
    method: &Method,
    path: &str,
    respond: &mut SendResponse<Chunk>,
) -> bool {
    let Some(page) = pages.iter().find(|p| p.path == path) else {
        return false;
    };
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(page.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(page.body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page runs only its own script and talks only to its own origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    let head_only = *method == Method::HEAD || page.body.is_empty();
    let Ok(mut stream) = respond.send_response(response, head_only) else {
        return true;
    };
    if !head_only {
        // A static buffer: h2 queues a reference to it, not a copy.
        let _ = stream.send_data(Chunk::from(Bytes::from_static(page.body)), true);
    }
    true
}
