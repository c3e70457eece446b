//! `h2chat stdio`, the JSON-lines front, driven through its stdin and stdout.

#[path = "../support/mod.rs"]
mod support;

mod front;
