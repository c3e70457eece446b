//! The chat page served at `GET /`: `web/dist/`, built from `web/src/` (see `web/build.mjs`) and
//! compiled into the binary, so that serving it needs no files and `cargo build` needs no Node.

use crate::grpc::server::Page;

/// The page's files, by path.
pub const PAGES: [Page; 3] = [
    Page {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/dist/index.html"),
    },
    Page {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/app.js"),
    },
    Page {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/app.css"),
    },
];
