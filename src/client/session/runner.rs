//! The session's task: drives one joined call at a time, reconnects when it is lost, and keeps
//! the posts in order across calls (see the module documentation of [`crate::client::session`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep, Instant, Sleep};
use tracing::debug;

use super::{open, Control, SessionConfig, SessionError, Update, MAX_POSTS_PENDING};
use crate::client::session::link::{members, Attempt, Link, MembersFuture};
use crate::grpc::client::CallSender;
use crate::grpc::{Code, Status};
use crate::pb::chat::v1::{ChatMessage, EventKind};

type SendFuture = Pin<Box<dyn Future<Output = (CallSender, Result<(), Status>)> + Send>>;

/// A joined call and what the session keeps about it.
pub(super) struct Joined {
    link: Link,
    /// The send in progress: owns the sending half until it is done.
    sending: Option<SendFuture>,
    /// The join event (or a gap past it) has been delivered: what was in flight before this call
    /// is known lost, and new posts may go out.
    caught_up: bool,
    /// A gap was delivered on this call before it caught up.
    gap_before_catch_up: bool,
    /// The call began with a reset: the room's history started over, so whatever was in flight
    /// on an earlier call is not in it.
    reset: bool,
    /// Fires after a silence on the call.
    idle: Pin<Box<Sleep>>,
    /// The `Members` call probing the connection after a silence.
    probe: Option<MembersFuture>,
}

impl Joined {
    pub(super) fn new(link: Link, probe_after: Duration) -> Joined {
        Joined {
            link,
            sending: None,
            caught_up: false,
            gap_before_catch_up: false,
            reset: false,
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
pub(super) struct Runner {
    config: SessionConfig,
    updates: mpsc::Sender<Update>,
    /// `None` once the front end dropped the sender.
    posts: Option<mpsc::Receiver<String>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// The epoch `last_seq` and `own_after` are numbered in.
    epoch: String,
    /// The highest sequence number reported in `epoch`; 0 before the first.
    last_seq: u64,
    /// This session's own posts are its name's messages numbered above this (its first join in
    /// `epoch`).
    own_after: u64,
    /// The longest text the server takes, as its last join said.
    max_text_bytes: usize,
    /// Posts not yet handed to a call, oldest first.
    unsent: VecDeque<String>,
    /// Posts handed to a call whose echo has not arrived, oldest first.
    in_flight: VecDeque<String>,
}

impl Runner {
    /// The task of a session whose first join is `first`.
    pub(super) fn new(
        config: SessionConfig,
        first: &Link,
        updates: mpsc::Sender<Update>,
        posts: mpsc::Receiver<String>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Runner {
        Runner {
            config,
            updates,
            posts: Some(posts),
            control,
            epoch: first.epoch.clone(),
            last_seq: 0,
            own_after: first.joined_seq,
            max_text_bytes: first.max_text_bytes,
            unsent: VecDeque::new(),
            in_flight: VecDeque::new(),
        }
    }

    /// Runs the session from its first joined call until it leaves or fails.
    pub(super) async fn run(mut self, mut joined: Joined) -> Result<(), SessionError> {
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

    async fn take_post(&mut self, post: Option<String>) {
        match post {
            Some(text) if text.len() > self.max_text_bytes => {
                let (bytes, limit) = (text.len(), self.max_text_bytes);
                self.report(Update::TooLong { bytes, limit }).await;
            }
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
                post = recv_some(&mut self.posts), if takes_posts => self.take_post(post).await,
                control = self.control.recv() => match control {
                    Some(Control::Who) => self.who(Some(&joined.link)).await,
                    Some(Control::Leave) | None => return CallEnd::Leave,
                },
                () = joined.idle.as_mut(), if joined.probe.is_none() => {
                    let (room, within) = (&self.config.room, self.config.probe_timeout);
                    joined.probe = Some(members(&joined.link, room, within));
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
        if kind == Some(EventKind::Reset) {
            // The room's history started over: count from its start, in its epoch, and this
            // call's join is the first of this session in it.
            debug!(from = %self.epoch, to = %event.epoch, "room history reset");
            self.epoch = event.epoch.clone();
            self.last_seq = 0;
            self.own_after = joined.link.joined_seq;
            joined.reset = true;
            return self.report(Update::Event(event)).await;
        }
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
        if kind == Some(EventKind::Presence) {
            return self.on_presence(joined, event).await;
        }
        let own_after_first_join =
            event.sender_id == self.config.name && event.seq > self.own_after;
        if own_after_first_join && matches!(kind, Some(EventKind::Joined | EventKind::Left)) {
            // This session's own leave and rejoin around a reconnect: not someone else's, and
            // already told as "reconnecting" and "reconnected".
            debug!(seq = event.seq, "own leave or rejoin not shown");
            if !joined.caught_up && event.seq >= joined.link.joined_seq {
                self.catch_up(joined).await;
            }
            return true;
        }
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

    /// A large room's batched presence event: shown without this session's own leaves and
    /// rejoins (as single ones are not), and not at all if nothing else is in it.
    async fn on_presence(&mut self, joined: &mut Joined, mut event: ChatMessage) -> bool {
        if event.seq > self.own_after {
            let name = self.config.name.as_str();
            let before = event.joined_ids.len() + event.left_ids.len();
            event.joined_ids.retain(|n| n != name);
            let dropped = before - event.joined_ids.len() - event.left_ids.len();
            event.joined_count = event.joined_count.saturating_sub(dropped as u64);
            let listed = event.left_ids.len();
            event.left_ids.retain(|n| n != name);
            let dropped = listed - event.left_ids.len();
            event.left_count = event.left_count.saturating_sub(dropped as u64);
        }
        let catching_up = !joined.caught_up && event.seq >= joined.link.joined_seq;
        let shown =
            event.joined_count + event.left_count == 0 || self.report(Update::Event(event)).await;
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
        // After a reset the gap can only be in the new history, where these posts never were.
        if joined.gap_before_catch_up && !joined.reset {
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
    async fn who(&self, link: Option<&Link>) {
        let Some(link) = link else {
            let err = Status::unavailable("not connected; reconnecting");
            self.report(Update::Members(Err(err))).await;
            return;
        };
        let answer = members(link, &self.config.room, self.config.probe_timeout);
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
            // Told on attempts 1, 2, 4, 8, …: the notices back off too.
            if attempt.is_power_of_two() {
                let update = Update::Reconnecting {
                    attempt,
                    error: error.clone(),
                    retry_in,
                };
                if !self.report(update).await {
                    return Ok(None);
                }
            }
            let wake = Instant::now() + delay;
            loop {
                let takes_posts = self.takes_posts();
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    post = recv_some(&mut self.posts), if takes_posts => self.take_post(post).await,
                    control = self.control.recv() => match control {
                        Some(Control::Who) => self.who(None).await,
                        Some(Control::Leave) | None => return Ok(None),
                    },
                }
            }
            if self.finished() {
                return Ok(None);
            }
            let resume = (self.epoch.clone(), self.last_seq);
            let config = self.config.clone();
            let opening = open(&config, Some(resume));
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
                    // A reset, if the room's history started over, is the call's first event.
                    self.max_text_bytes = link.max_text_bytes;
                    let mut joined = Joined::new(link, self.config.probe_after);
                    // In a room that batches presence the join's number is that of the last event
                    // before it: if that one was shown already, this call has caught up at once
                    // (the batch naming the rejoin may be seconds away).
                    if joined.link.epoch == self.epoch && self.last_seq >= joined.link.joined_seq {
                        self.catch_up(&mut joined).await;
                    }
                    if !self.report(Update::Reconnected).await {
                        return Ok(None);
                    }
                    return Ok(Some(joined));
                }
                Err(Attempt::Join(status)) if status.code() == Code::InvalidArgument => {
                    return Err(SessionError::Invalid(status));
                }
                // The credentials say who this is, and it is not allowed in: retrying cannot help
                // (an expired or missing token can: the token file may be renewed meanwhile).
                Err(Attempt::Join(status)) if status.code() == Code::PermissionDenied => {
                    return Err(SessionError::Refused(status));
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
