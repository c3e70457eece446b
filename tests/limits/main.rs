//! Issue 12's attacks, one file each: nothing a client sends makes the server hold unbounded
//! memory, CPU or log. Every test runs the real binary, attacks it over real sockets (raw h2
//! where a client library would hide the attack), measures its memory from /proc against the
//! configured budget, and checks that a well-behaved client on another connection keeps working.

#[path = "../support/mod.rs"]
mod support;

mod amplification;
mod chat_members;
mod connections;
mod echoes;
mod harness;
mod logs;
mod members;
mod receive;
mod send_budget;
