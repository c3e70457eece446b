//! `h2chat bench` smoke runs: every mode with tiny numbers, nothing lost, never a timing.

#[path = "../support/mod.rs"]
mod support;

mod smoke;
