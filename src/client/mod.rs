//! `h2chat chat`: the chat client in a terminal, or driven by a script.
//!
//! [`run`] picks the mode: [`interactive`] when stdin and stdout are both terminals the line
//! editor can drive, else [`scripted`]. Both run a [`Session`](session::Session), which
//! reconnects and resumes by itself; [`options`] holds what they share.
//!
//! - [`options`]: the options, the exit codes, joining and finishing.
//! - [`interactive`]: the line-editing front.
//! - [`scripted`]: the front for a script on standard input.
//! - [`render`]: how events and notices look, as text or JSON.
//! - [`session`]: one member kept joined across lost connections (`session/link.rs` is one
//!   joined call, `session/runner.rs` the task that owns it).
//!
//! # Exit codes
//! | code | meaning |
//! |---|---|
//! | 0 | left normally: `/quit`, `exit`, Ctrl-D, Ctrl-C; scripted: end of input, every post echoed |
//! | 1 | a local failure: the terminal, standard output, or a session that failed unexpectedly |
//! | 2 | bad command line (from `clap`), or no name given in scripted mode |
//! | 3 | the server cannot be reached (`cannot connect to 127.0.0.1:50051: connection refused`) |
//! | 4 | the name is taken in that room (ALREADY_EXISTS) |
//! | 5 | the room, name or a text is invalid (INVALID_ARGUMENT) |
//! | 6 | the server refused the join otherwise (e.g. RESOURCE_EXHAUSTED: room full) |
//! | 130 | stopped by SIGINT or SIGTERM (after leaving cleanly) |

use std::io::IsTerminal;

pub mod credentials;
pub mod interactive;
pub mod options;
pub mod render;
pub mod safe;
pub mod scripted;
pub mod session;

pub use options::*;

/// Runs the chat client until the user leaves or the session fails; returns the exit code (see
/// the module documentation).
pub async fn run(options: ChatOptions) -> u8 {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        interactive::run(options).await
    } else {
        scripted::run(options).await
    }
}
