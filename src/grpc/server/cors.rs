//! Cross-origin requests from browsers (the Fetch standard's CORS protocol) for gRPC-Web.
//!
//! A page from another origin may call the server only if that origin is allowed: by default
//! only the server's own (`https://` + the request's `:authority`), plus those the operator lists.
//! The browser first asks with a preflight `OPTIONS`; an allowed origin gets `204` with the method
//! (`POST`), the requested headers that are allowed, and how long to remember the answer; any
//! other origin gets `403`. A gRPC-Web call whose `Origin` is not allowed is refused with `403`
//! before it starts, and an allowed one's response names the origin and the response headers the
//! page may read (`access-control-expose-headers`).

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

/// How long a browser may remember a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// Request headers a gRPC-Web client sends, always allowed for an allowed origin.
const GRPC_WEB_REQUEST_HEADERS: [&str; 8] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "authorization",
    "connect-protocol-version",
];

/// Response headers a page may always read.
const GRPC_RESPONSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-encoding",
    "grpc-accept-encoding",
];

/// Which origins may call the server from a browser, and which extra headers they may send and
/// read (a service's own metadata).
#[derive(Clone, Debug, Default)]
pub struct CorsPolicy {
    /// Origins allowed besides the server's own, as a browser writes them
    /// (`https://chat.example.com`, `http://localhost:8080`); `*` allows every origin.
    pub origins: Vec<String>,
    /// Request metadata names a page may send besides the gRPC-Web ones.
    pub allow_headers: Vec<HeaderName>,
    /// Response metadata names a page may read besides `grpc-status` and `grpc-message`.
    pub expose_headers: Vec<HeaderName>,
}

/// What the policy says about one request's `Origin`.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::grpc) enum Verdict {
    /// No `Origin` header: not a browser's cross-origin request, nothing to add.
    NoOrigin,
    /// An allowed origin.
    Allowed(HeaderValue),
    /// An origin the policy does not allow.
    Refused,
}

impl CorsPolicy {
    /// Judges the request's `Origin` header.
    pub(in crate::grpc) fn verdict<B>(&self, request: &Request<B>) -> Verdict {
        let Some(origin) = request.headers().get(header::ORIGIN) else {
            return Verdict::NoOrigin;
        };
        let Ok(text) = origin.to_str() else {
            return Verdict::Refused;
        };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                let host = request.headers().get(header::HOST)?;
                host.to_str().ok().map(str::to_owned)
            });
        let same_origin =
            authority.is_some_and(|a| text.eq_ignore_ascii_case(&format!("https://{a}")));
        let listed = self
            .origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(text));
        if same_origin || listed {
            Verdict::Allowed(origin.clone())
        } else {
            Verdict::Refused
        }
    }

    /// The answer to a preflight `OPTIONS`.
    pub(in crate::grpc) fn preflight<B>(&self, request: &Request<B>) -> Response<()> {
        let origin = match self.verdict(request) {
            Verdict::Allowed(origin) => origin,
            Verdict::NoOrigin | Verdict::Refused => return bare(StatusCode::FORBIDDEN),
        };
        let method_ok = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_none_or(|m| m.as_bytes() == b"POST");
        if !method_ok {
            return bare(StatusCode::FORBIDDEN);
        }
        let requested = request
            .headers()
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        let allowed: Vec<String> = requested.filter(|h| self.allows_header(h)).collect();
        let mut response = bare(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        self.add_origin(&origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        if let Ok(list) = HeaderValue::from_str(&allowed.join(", ")) {
            if !allowed.is_empty() {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list);
            }
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_SECS),
        );
        response
    }

    /// The headers an allowed origin's gRPC-Web response carries.
    pub(in crate::grpc) fn response_headers(&self, origin: &HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.add_origin(origin, &mut headers);
        headers
    }

    fn add_origin(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        let exposed: Vec<&str> = GRPC_RESPONSE_HEADERS
            .into_iter()
            .chain(self.expose_headers.iter().map(HeaderName::as_str))
            .collect();
        if let Ok(list) = HeaderValue::from_str(&exposed.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, list);
        }
    }

    fn allows_header(&self, name: &str) -> bool {
        GRPC_WEB_REQUEST_HEADERS.contains(&name)
            || self.allow_headers.iter().any(|h| h.as_str() == name)
    }
}

fn bare(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>) -> Request<()> {
        let mut builder = Request::builder()
            .method("OPTIONS")
            .uri("https://chat.example:50051/chat.v1.Chat/Post");
        if let Some(o) = origin {
            builder = builder.header(header::ORIGIN, o);
        }
        builder
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type, x-grpc-web, x-evil",
            )
            .body(())
            .expect("request")
    }

    #[test]
    fn same_origin_is_allowed_by_default_and_others_are_not() {
        let policy = CorsPolicy::default();
        let same = request(Some("https://chat.example:50051"));
        assert!(matches!(policy.verdict(&same), Verdict::Allowed(_)));
        let plain = request(Some("http://chat.example:50051"));
        assert_eq!(policy.verdict(&plain), Verdict::Refused);
        let other = request(Some("https://evil.example"));
        assert_eq!(policy.verdict(&other), Verdict::Refused);
        assert_eq!(policy.verdict(&request(None)), Verdict::NoOrigin);
    }

    #[test]
    fn preflight_echoes_only_allowed_headers() {
        let policy = CorsPolicy {
            origins: vec!["https://app.example".into()],
            ..CorsPolicy::default()
        };
        let answer = policy.preflight(&request(Some("https://app.example")));
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let h = answer.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-grpc-web"
        );
        let refused = policy.preflight(&request(Some("https://evil.example")));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
}
