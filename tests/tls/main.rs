//! TLS and identity, over real sockets with certificates made in the test (rcgen): serving gRPC
//! over TLS with ALPN `h2`, refusing what is not, client certificates, reloading the certificate,
//! and bearer tokens checked before any handler runs.

mod cli;
#[path = "../support/mod.rs"]
mod support;

mod harness;
mod identity;
mod metrics;
mod mtls;
mod pki;
mod reload;
// The ops target's scrape reader; this target uses part of it.
#[allow(dead_code)]
#[path = "../ops/scrape.rs"]
mod scrape;
mod tokens;
mod transport;
