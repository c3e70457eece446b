//! One member of one room, from the client's side, kept joined across lost connections.
//!
//! [`Session::join`] connects and joins once; the errors a person has to act on (server
//! unreachable, name taken, invalid room or name) come back from it. After that a task owns the
//! call and reports everything as [`Update`]s, in order:
//!
//! - Events are shown once each. The session remembers the highest sequence number it reported and
//!   rejoins with `resume_after_seq` set to it, so the server sends exactly what was missed (or a
//!   gap event for what fell out of the room's history meanwhile); anything at or below it is
//!   dropped, should it come again. If the room's numbers went backwards on rejoining (the server
//!   restarted), counting starts over ([`Update::RoomRestarted`]).
//! - A lost connection is retried with exponential backoff ([`SessionConfig::backoff_initial`] up
//!   to [`SessionConfig::backoff_max`]), forever, until the session is told to leave. A connection
//!   that goes silent is probed with a `Members` call after [`SessionConfig::probe_after`].
//! - Posts are acknowledged by their echo: the server delivers a member's own posts back to it in
//!   order. They are told from earlier posts under the same name in the history by the join's
//!   `chat-joined-seq` header: the session's own are its name's messages numbered above it. A post is *in flight* from the moment it is handed to a call until its echo arrives.
//!   After a reconnect, posts still in flight once the new join event has been delivered never
//!   reached the room (their echo would have come before it), and are sent again, in order, before
//!   anything newer: each post reaches the room once. Only if the resumed stream itself had a gap
//!   is their fate unknown; they are then dropped and reported ([`Update::PostsUnconfirmed`]).
//!
//! Leaving cancels the call (the room records a leave with reason `LEFT`) and waits, briefly, for
//! the connection to close so the cancellation is on the wire before the process exits.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant, Sleep};
use tracing::debug;

use crate::grpc::client::{CallSender, Channel};
use crate::grpc::{Code, Status};
use crate::link::{members, Attempt, Link, MembersFuture};
use crate::pb::chat::v1::{ChatMessage, EventKind};

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
        }
    }
}

/// What a session reports, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A room event to show: a message, a join, a leave, or a gap. Each sequence number comes at
    /// most once, in increasing order.
    Event(ChatMessage),
    /// The answer to [`Session::who`]: the room's members in join order.
    Members(Result<Vec<String>, Status>),
    /// The connection is lost (`attempt` 1) or an attempt to restore it failed; the next attempt
    /// is in `retry_in`.
    Reconnecting {
        /// Which attempt comes next, from 1.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Joined again; the events missed meanwhile follow.
    Reconnected,
    /// The room's numbering started over (the server restarted): what was missed is gone.
    RoomRestarted,
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
        config: SessionConfig,
    ) -> Result<(Session, mpsc::Sender<String>), SessionError> {
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
        let runner = Runner {
            own_after: link.joined_seq,
            config,
            updates: update_tx,
            posts: Some(post_rx),
            control: control_rx,
            last_seq: 0,
            unsent: VecDeque::new(),
            in_flight: VecDeque::new(),
        };
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

/// Connects and joins as `config` says, resuming after `resume` if given.
async fn open(config: &SessionConfig, resume: Option<u64>) -> Result<Link, Attempt> {
    let join = ChatMessage {
        room_id: config.room.clone(),
        sender_id: config.name.clone(),
        resume_after_seq: resume,
        ..Default::default()
    };
    Link::open(&config.addr, &join, config.connect_timeout).await
}

/// The error for a refused first join.
fn join_error(status: Status) -> SessionError {
    match status.code() {
        Code::AlreadyExists => SessionError::NameTaken(status),
        Code::InvalidArgument => SessionError::Invalid(status),
        _ => SessionError::Refused(status),
    }
}

type SendFuture = Pin<Box<dyn Future<Output = (CallSender, Result<(), Status>)> + Send>>;

/// A joined call and what the session keeps about it.
struct Joined {
    link: Link,
    /// The send in progress: owns the sending half until it is done.
    sending: Option<SendFuture>,
    /// The join event (or a gap past it) has been delivered: what was in flight before this call
    /// is known lost, and new posts may go out.
    caught_up: bool,
    /// A gap was delivered on this call before it caught up.
    gap_before_catch_up: bool,
    /// Fires after a silence on the call.
    idle: Pin<Box<Sleep>>,
    /// The `Members` call probing the connection after a silence.
    probe: Option<MembersFuture>,
}

impl Joined {
    fn new(link: Link, probe_after: Duration) -> Joined {
        Joined {
            link,
            sending: None,
            caught_up: false,
            gap_before_catch_up: false,
            idle: Box::pin(sleep(probe_after)),
            probe: None,
        }
    }

    /// Leaves: drops what holds the call or the connection, then closes the link.
    async fn close(self) {
        drop((self.sending, self.probe));
        self.link.close().await;
    }
}

/// How driving one joined call ended.
enum CallEnd {
    /// Leave: asked to, every post echoed after the sender was dropped, or nobody listens.
    Leave,
    /// The call or connection failed with this status.
    Lost(Status),
}

/// The session's task.
struct Runner {
    config: SessionConfig,
    updates: mpsc::Sender<Update>,
    /// `None` once the front end dropped the sender.
    posts: Option<mpsc::Receiver<String>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// The highest sequence number reported; 0 before the first.
    last_seq: u64,
    /// This session's own posts are its name's messages numbered above this (the first join).
    own_after: u64,
    /// Posts not yet handed to a call, oldest first.
    unsent: VecDeque<String>,
    /// Posts handed to a call whose echo has not arrived, oldest first.
    in_flight: VecDeque<String>,
}

impl Runner {
    async fn run(mut self, mut joined: Joined) -> Result<(), SessionError> {
        loop {
            match self.drive(&mut joined).await {
                CallEnd::Leave => {
                    joined.close().await;
                    return Ok(());
                }
                CallEnd::Lost(status) => {
                    drop(joined);
                    if status.code() == Code::InvalidArgument {
                        return Err(SessionError::Invalid(status));
                    }
                    match self.reconnect(status).await? {
                        Some(next) => joined = next,
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    /// Whether the front end is done posting and every post was echoed.
    fn finished(&self) -> bool {
        self.posts.is_none() && self.unsent.is_empty() && self.in_flight.is_empty()
    }

    /// Whether another post may be taken from the front end.
    fn takes_posts(&self) -> bool {
        self.posts.is_some() && self.unsent.len() + self.in_flight.len() < MAX_POSTS_PENDING
    }

    fn take_post(&mut self, post: Option<String>) {
        match post {
            Some(text) if !text.is_empty() => self.unsent.push_back(text),
            Some(_) => {}
            None => self.posts = None,
        }
    }

    /// Runs one joined call until it ends.
    async fn drive(&mut self, joined: &mut Joined) -> CallEnd {
        loop {
            if joined.caught_up && joined.sending.is_none() && !self.unsent.is_empty() {
                if let (Some(mut tx), Some(text)) = (joined.link.tx.take(), self.unsent.pop_front())
                {
                    let post = ChatMessage {
                        text: text.clone(),
                        ..Default::default()
                    };
                    self.in_flight.push_back(text);
                    joined.sending = Some(Box::pin(async move {
                        let sent = tx.send(&post).await;
                        (tx, sent)
                    }));
                }
            }
            // The room's history up to the join is shown before leaving, even with nothing to post.
            if self.finished() && joined.caught_up {
                return CallEnd::Leave;
            }
            let takes_posts = self.takes_posts();
            tokio::select! {
                event = joined.link.rx.recv::<ChatMessage>() => match event {
                    Ok(Some(event)) => {
                        let deadline = Instant::now() + self.config.probe_after;
                        joined.idle.as_mut().reset(deadline);
                        if !self.on_event(joined, event).await {
                            return CallEnd::Leave;
                        }
                    }
                    Ok(None) => {
                        return CallEnd::Lost(Status::unavailable("the server ended the chat"));
                    }
                    Err(status) => return CallEnd::Lost(status),
                },
                (tx, sent) = poll_some(&mut joined.sending) => {
                    joined.sending = None;
                    // After a failed send the receiving half reports how the call ended.
                    if sent.is_ok() {
                        joined.link.tx = Some(tx);
                    }
                }
                post = recv_some(&mut self.posts), if takes_posts => self.take_post(post),
                control = self.control.recv() => match control {
                    Some(Control::Who) => self.who(Some(&joined.link.channel)).await,
                    Some(Control::Leave) | None => return CallEnd::Leave,
                },
                () = joined.idle.as_mut(), if joined.probe.is_none() => {
                    let (room, within) = (&self.config.room, self.config.probe_timeout);
                    joined.probe = Some(members(&joined.link.channel, room, within));
                }
                probed = poll_some(&mut joined.probe) => {
                    joined.probe = None;
                    let deadline = Instant::now() + self.config.probe_after;
                    joined.idle.as_mut().reset(deadline);
                    if let Err(status) = probed {
                        if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
                            return CallEnd::Lost(status);
                        }
                    }
                }
            }
        }
    }

    /// Handles one event from the call; `false` when nobody listens any more.
    async fn on_event(&mut self, joined: &mut Joined, event: ChatMessage) -> bool {
        let kind = EventKind::try_from(event.kind).ok();
        if kind == Some(EventKind::Gap) {
            if !joined.caught_up {
                joined.gap_before_catch_up = true;
                if event.gap_to >= joined.link.joined_seq {
                    self.catch_up(joined).await;
                }
            }
            self.last_seq = self.last_seq.max(event.gap_to);
            return self.report(Update::Event(event)).await;
        }
        if event.seq <= self.last_seq {
            debug!(seq = event.seq, last = self.last_seq, "event already shown");
            return true;
        }
        self.last_seq = event.seq;
        if kind == Some(EventKind::Message)
            && event.sender_id == self.config.name
            && event.seq > self.own_after
        {
            // Own posts come back in the order they were sent.
            if self.in_flight.pop_front().is_none() {
                debug!(seq = event.seq, "echo of a post not in flight");
            }
        }
        let catching_up = !joined.caught_up && event.seq >= joined.link.joined_seq;
        let shown = self.report(Update::Event(event)).await;
        if catching_up {
            self.catch_up(joined).await;
        }
        shown
    }

    /// The call has delivered its own join: whatever is still in flight was sent on an earlier
    /// call and never reached the room, unless a gap hid the answer.
    async fn catch_up(&mut self, joined: &mut Joined) {
        joined.caught_up = true;
        if self.in_flight.is_empty() {
            return;
        }
        if joined.gap_before_catch_up {
            let n = self.in_flight.len();
            self.in_flight.clear();
            self.report(Update::PostsUnconfirmed(n)).await;
        } else {
            debug!(
                posts = self.in_flight.len(),
                "sending again what the lost connection lost"
            );
            while let Some(text) = self.in_flight.pop_back() {
                self.unsent.push_front(text);
            }
        }
    }

    /// Sends an update to the front end; `false` if it is gone.
    async fn report(&self, update: Update) -> bool {
        self.updates.send(update).await.is_ok()
    }

    /// Answers a `/who` from another task, so events keep flowing meanwhile.
    async fn who(&self, channel: Option<&Channel>) {
        let Some(channel) = channel else {
            let err = Status::unavailable("not connected; reconnecting");
            self.report(Update::Members(Err(err))).await;
            return;
        };
        let answer = members(channel, &self.config.room, self.config.probe_timeout);
        let updates = self.updates.clone();
        tokio::spawn(async move {
            let members = answer.await.map(|m| m.member_ids);
            let _ = updates.send(Update::Members(members)).await;
        });
    }

    /// Reconnects after `error`, with backoff. `None` when the session should end instead (asked
    /// to leave, or finished, while disconnected).
    async fn reconnect(&mut self, error: Status) -> Result<Option<Joined>, SessionError> {
        let mut delay = self.config.backoff_initial;
        let mut error = error.message().to_string();
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let retry_in = delay;
            let update = Update::Reconnecting {
                attempt,
                error,
                retry_in,
            };
            if !self.report(update).await {
                return Ok(None);
            }
            let wake = Instant::now() + delay;
            loop {
                let takes_posts = self.takes_posts();
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    post = recv_some(&mut self.posts), if takes_posts => self.take_post(post),
                    control = self.control.recv() => match control {
                        Some(Control::Who) => self.who(None).await,
                        Some(Control::Leave) | None => return Ok(None),
                    },
                }
            }
            if self.finished() {
                return Ok(None);
            }
            let resume = (self.last_seq > 0).then_some(self.last_seq);
            let config = self.config.clone();
            let opening = open(&config, resume);
            tokio::pin!(opening);
            let opened = loop {
                tokio::select! {
                    opened = &mut opening => break opened,
                    control = self.control.recv() => match control {
                        Some(Control::Who) => self.who(None).await,
                        Some(Control::Leave) | None => return Ok(None),
                    },
                }
            };
            match opened {
                Ok(link) => {
                    let mut joined = Joined::new(link, self.config.probe_after);
                    if !self.report(Update::Reconnected).await {
                        return Ok(None);
                    }
                    if resume.is_some_and(|seq| joined.link.joined_seq <= seq) {
                        // Numbers went backwards: a new room on a restarted server. Nothing from
                        // before can be resumed or confirmed.
                        self.last_seq = joined.link.joined_seq;
                        self.own_after = joined.link.joined_seq;
                        self.report(Update::RoomRestarted).await;
                        self.catch_up(&mut joined).await;
                    }
                    return Ok(Some(joined));
                }
                Err(Attempt::Join(status)) if status.code() == Code::InvalidArgument => {
                    return Err(SessionError::Invalid(status));
                }
                Err(Attempt::Join(status)) => error = status.message().to_string(),
                Err(Attempt::Connect(reason)) => error = reason,
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }
}

/// Polls the future in `slot`; pending forever when there is none.
async fn poll_some<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

/// Receives from `rx`; pending forever when there is none.
async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
