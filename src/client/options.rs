//! What `h2chat chat` is asked to do, how it ends (exit codes), and what its two fronts share:
//! joining, turning updates into lines, and the exit code a finished session gives.

use crate::client::credentials::{self, TokenSource};
use crate::client::render::{self, Format};
use crate::client::session::{Session, SessionConfig, SessionError, Update};
use crate::grpc::client::ClientTls;
use tokio::sync::mpsc;

/// Left normally.
pub const EXIT_OK: u8 = 0;
/// A local failure (terminal, standard output) or an unexpected one.
pub const EXIT_FAILURE: u8 = 1;
/// Bad command line, or no name to join with.
pub const EXIT_USAGE: u8 = 2;
/// The server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The name is taken in the room.
pub const EXIT_NAME_TAKEN: u8 = 4;
/// The room, name or a text is invalid.
pub const EXIT_INVALID: u8 = 5;
/// The server refused the join for another reason.
pub const EXIT_REFUSED: u8 = 6;
/// Stopped by SIGINT or SIGTERM, after leaving cleanly.
pub const EXIT_INTERRUPTED: u8 = 130;

/// What `h2chat chat` was asked to do.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// The server, `host:port`.
    pub addr: String,
    /// The room to join.
    pub room: String,
    /// The name to join as; asked for (or, scripted, read from the first input line) if `None`.
    pub name: Option<String>,
    /// How events are printed.
    pub format: Format,
    /// Speak TLS with these settings; plaintext when `None`.
    pub tls: Option<ClientTls>,
    /// The bearer token to send, read again on every reconnect.
    pub token: Option<TokenSource>,
}

impl ChatOptions {
    /// The session these options ask for, joining as `name`.
    pub fn session_config(&self, name: impl Into<String>) -> SessionConfig {
        let mut config = SessionConfig::new(&self.addr, &self.room, name);
        config.tls = self.tls.clone();
        config.token = self.token.clone();
        config
    }

    /// The name to join as: `--name`, else the name the token gives (its `name` claim, else
    /// `sub`), else `None` (to be asked for).
    pub fn known_name(&self) -> Option<String> {
        self.name.clone().or_else(|| {
            let token = self.token.as_ref()?.read().ok()?;
            credentials::token_name(&token)
        })
    }
}

/// The exit code for a session error.
pub fn exit_code(error: &SessionError) -> u8 {
    match error {
        SessionError::Connect { .. } => EXIT_UNREACHABLE,
        SessionError::NameTaken(_) => EXIT_NAME_TAKEN,
        SessionError::Invalid(_) => EXIT_INVALID,
        SessionError::Refused(_) => EXIT_REFUSED,
    }
}

/// The line to show for an update, in `format` for events and as text for notices.
pub fn update_line(format: Format, update: &Update) -> String {
    match update {
        Update::Event(event) => render::event_line(format, event),
        other => render::notice_line(other).unwrap_or_default(),
    }
}

/// Joins, or prints why not and gives the exit code to end with.
pub async fn join(config: SessionConfig) -> Result<(Session, mpsc::Sender<String>), u8> {
    Session::join(config).await.map_err(|e| {
        eprintln!("h2chat: {e}");
        exit_code(&e)
    })
}

/// The exit code of a session that ended with `ended`: the session error's (printed), else
/// [`EXIT_FAILURE`] after a local failure, else [`EXIT_INTERRUPTED`] after a signal, else
/// [`EXIT_OK`].
pub fn finish(ended: Result<(), SessionError>, failed: bool, signalled: bool) -> u8 {
    match ended {
        Ok(()) if failed => EXIT_FAILURE,
        Ok(()) if signalled => EXIT_INTERRUPTED,
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("h2chat: {e}");
            exit_code(&e)
        }
    }
}
