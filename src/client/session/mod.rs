//! One member of one room, from the client's side, kept joined across lost connections.
//!
//! [`Session::join`] connects and joins once; the errors a person has to act on (server
//! unreachable, name taken, invalid room or name) come back from it. After that a task owns the
//! call and reports everything as [`Update`]s, in order:
//!
//! - Events are shown once each. The session remembers the room's epoch and the highest sequence
//!   number it reported in it, and rejoins with `resume_epoch` and `resume_after_seq` set to them,
//!   so the server sends exactly what was missed (or a gap event for what fell out of the room's
//!   history meanwhile); anything at or below it is dropped, should it come again. If the room's
//!   history started over (it was recreated, or the server restarted), the server says so with a
//!   reset event naming the new epoch, then sends the new history from its start: the session
//!   reports the reset and counts over from there. Nothing is guessed from the numbers.
//! - The session's own leave and rejoin around a reconnect are not reported as events (they are
//!   not someone else's): [`Update::Reconnecting`] and [`Update::Reconnected`] tell them. In a
//!   large room's batched presence events its own name is taken out of the lists and counts.
//!   There the join's `chat-joined-seq` is the last event before the join (the batch naming it
//!   comes later): delivering that event is what "caught up" means, as delivering the join event
//!   is in a small room.
//! - A text longer than the server takes (its `chat-max-text-bytes`) is not sent:
//!   [`Update::TooLong`] says so, and the session goes on.
//! - A lost connection is retried with exponential backoff ([`SessionConfig::backoff_initial`] up
//!   to [`SessionConfig::backoff_max`]), forever, until the session is told to leave; the
//!   attempts are reported with backoff too (attempts 1, 2, 4, 8, …). A connection
//!   that goes silent is probed with a `Members` call after [`SessionConfig::probe_after`].
//!   Each attempt reads the token again ([`SessionConfig::token`]): a call ended UNAUTHENTICATED
//!   because its token expired is resumed with the renewed one. A rejoin refused as
//!   PERMISSION_DENIED or INVALID_ARGUMENT ends the session: retrying cannot change that.
//! - Posts are acknowledged by their echo: the server delivers a member's own posts back to it in
//!   order. They are told from earlier posts under the same name in the history by the join's
//!   `chat-joined-seq` header: the session's own are its name's messages numbered above it. A
//!   post is *in flight* from the moment it is handed to a call until its echo arrives. After a
//!   reconnect, posts still in flight once the new join event has been delivered never
//!   reached the room (their echo would have come before it), and are sent again, in order, before
//!   anything newer: each post reaches the room once. Only if the resumed stream itself had a gap
//!   is their fate unknown; they are then dropped and reported ([`Update::PostsUnconfirmed`]).
//!
//! Leaving cancels the call (the room records a leave with reason `LEFT`) and waits, briefly, for
//! the connection to close so the cancellation is on the wire before the process exits.

use std::fmt;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use unicode_normalization::UnicodeNormalization;

use crate::client::credentials::TokenSource;
use crate::client::session::link::{Attempt, Link};
use crate::grpc::client::ClientTls;
use crate::grpc::{Code, Status};
use crate::pb::chat::v1::ChatMessage;

mod link;
mod runner;

use runner::{Joined, Runner};

/// Default first delay before reconnecting.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Default longest delay between reconnect attempts (the delay doubles up to it).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default limit on connecting and joining, each attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default silence on the call after which the connection is probed.
pub const DEFAULT_PROBE_AFTER: Duration = Duration::from_secs(20);
/// Default time a probe or a `/who` may take.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Posts accepted and not yet echoed, at most; beyond it the session stops taking posts, so a
/// fast writer is slowed down to what the server accepts.
pub const MAX_POSTS_PENDING: usize = 256;
/// Updates queued for a front end that is busy writing.
const UPDATE_QUEUE: usize = 256;
/// Posts queued from a front end.
const POST_QUEUE: usize = 64;

/// Where and as whom to chat, and how hard to try.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The server, `host:port`.
    pub addr: String,
    /// The room to join.
    pub room: String,
    /// The member's name.
    pub name: String,
    /// First delay before reconnecting.
    pub backoff_initial: Duration,
    /// Longest delay between reconnect attempts.
    pub backoff_max: Duration,
    /// Limit on connecting and joining, each attempt.
    pub connect_timeout: Duration,
    /// Silence after which the connection is probed.
    pub probe_after: Duration,
    /// Time a probe or a `/who` may take.
    pub probe_timeout: Duration,
    /// Speak TLS with these settings; plaintext when `None`.
    pub tls: Option<ClientTls>,
    /// Send this bearer token with every call, read again on every connection attempt.
    pub token: Option<TokenSource>,
}

impl SessionConfig {
    /// A configuration with the default timings.
    pub fn new(addr: impl Into<String>, room: impl Into<String>, name: impl Into<String>) -> Self {
        SessionConfig {
            addr: addr.into(),
            room: room.into(),
            name: name.into(),
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            probe_after: DEFAULT_PROBE_AFTER,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            tls: None,
            token: None,
        }
    }
}

/// What a session reports, in the order it happened.
// An event is most of what a session reports, one at a time through a short queue: boxing it
// would cost an allocation per event to save a few hundred bytes per queued notice.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A room event to show: a message, a join, a leave, a large room's batched presence event
    /// (without this session's own comings and goings; not reported if nothing else is in it), or
    /// a gap. Each sequence number comes at most once, in increasing order.
    Event(ChatMessage),
    /// The answer to [`Session::who`]: the room's members in join order.
    Members(Result<Vec<String>, Status>),
    /// The connection is lost (`attempt` 1) or an attempt to restore it failed; the next attempt
    /// is in `retry_in`. Reported for attempts 1, 2, 4, 8, … only, so a long outage is told a few
    /// times, not every few seconds.
    Reconnecting {
        /// Which attempt comes next, from 1.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Joined again; the events missed meanwhile follow (after a reset event, if the room's
    /// history started over meanwhile).
    Reconnected,
    /// A post was not sent: it is longer than the server takes.
    TooLong {
        /// Its length in bytes.
        bytes: usize,
        /// The server's limit.
        limit: usize,
    },
    /// This many posts were in flight when the connection was lost and the events that would tell
    /// whether they reached the room are gone; they were not sent again.
    PostsUnconfirmed(usize),
}

/// Why a session could not start, or had to stop.
#[derive(Debug)]
pub enum SessionError {
    /// The server could not be reached (before the first join).
    Connect {
        /// The address tried.
        addr: String,
        /// Why, in a few words (`connection refused`).
        reason: String,
    },
    /// Another member of the room has the name (ALREADY_EXISTS).
    NameTaken(Status),
    /// The server refused the room, the name or a text as invalid (INVALID_ARGUMENT).
    Invalid(Status),
    /// The server refused the join or ended the chat for another reason.
    Refused(Status),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Connect { addr, reason } => {
                write!(f, "cannot connect to {addr}: {reason}")
            }
            SessionError::NameTaken(s) => write!(f, "name taken: {}", s.message()),
            SessionError::Invalid(s) => write!(f, "invalid: {}", s.message()),
            SessionError::Refused(s) => {
                write!(f, "the server refused: {} ({})", s.message(), s.code())
            }
        }
    }
}

impl std::error::Error for SessionError {}

/// Requests from the front end that are not posts.
enum Control {
    Who,
    Leave,
}

/// A running session. See the module documentation.
pub struct Session {
    control: mpsc::UnboundedSender<Control>,
    updates: mpsc::Receiver<Update>,
    task: JoinHandle<Result<(), SessionError>>,
}

impl Session {
    /// Connects, joins the room, and starts the session; the room's recent history is the first
    /// thing [`next`](Session::next) reports.
    ///
    /// Returns the session and the sender of posts: each `String` sent is posted as one message,
    /// in order (empty texts are skipped, the server would not post them). Dropping the sender
    /// means "that was all": the session leaves once every post has been echoed, and
    /// [`next`](Session::next) then returns `None`.
    ///
    /// Errors: [`SessionError::Connect`] when the server cannot be reached (no retry: the first
    /// connection must work), else how the server refused the join.
    pub async fn join(
        mut config: SessionConfig,
    ) -> Result<(Session, mpsc::Sender<String>), SessionError> {
        // The server takes ids in NFC and writes the name that way: so does the session, or it
        // would not know its own posts when they come back.
        config.room = config.room.nfc().collect();
        config.name = config.name.nfc().collect();
        let link = match open(&config, None).await {
            Ok(link) => link,
            Err(Attempt::Connect(reason)) => {
                return Err(SessionError::Connect {
                    addr: config.addr.clone(),
                    reason,
                })
            }
            Err(Attempt::Join(status)) => return Err(join_error(status)),
        };
        let probe_after = config.probe_after;
        let (post_tx, post_rx) = mpsc::channel(POST_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (update_tx, update_rx) = mpsc::channel(UPDATE_QUEUE);
        let runner = Runner::new(config, &link, update_tx, post_rx, control_rx);
        let task = tokio::spawn(runner.run(Joined::new(link, probe_after)));
        let session = Session {
            control: control_tx,
            updates: update_rx,
            task,
        };
        Ok((session, post_tx))
    }

    /// The next update; `None` once the session has ended (left, or failed: see
    /// [`end`](Session::end)). Cancel-safe.
    pub async fn next(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Asks the server who is in the room; the answer comes as [`Update::Members`].
    pub fn who(&self) {
        let _ = self.control.send(Control::Who);
    }

    /// Leaves now, whether or not every post was echoed.
    pub fn leave(&self) {
        let _ = self.control.send(Control::Leave);
    }

    /// Waits for the session to end and says how. Updates not yet read are discarded, and a
    /// session still running keeps running until it leaves (after [`leave`](Session::leave), or
    /// once the post sender is dropped and every post echoed).
    pub async fn end(self) -> Result<(), SessionError> {
        drop(self.updates);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(SessionError::Refused(Status::internal(format!(
                "session task failed: {e}"
            )))),
        }
    }
}

/// Connects and joins as `config` says, resuming after `(epoch, seq)` if given.
async fn open(config: &SessionConfig, resume: Option<(String, u64)>) -> Result<Link, Attempt> {
    let (resume_epoch, resume_after_seq) = match resume {
        Some((epoch, seq)) => (epoch, Some(seq)),
        None => (String::new(), None),
    };
    let join = ChatMessage {
        room_id: config.room.clone(),
        sender_id: config.name.clone(),
        resume_after_seq,
        resume_epoch,
        ..Default::default()
    };
    Link::open(config, &join).await
}

/// The error for a refused first join.
fn join_error(status: Status) -> SessionError {
    match status.code() {
        Code::AlreadyExists => SessionError::NameTaken(status),
        Code::InvalidArgument => SessionError::Invalid(status),
        _ => SessionError::Refused(status),
    }
}
