//! A `Chat` call's join: the join message checked, the member's name (a token's, a client
//! certificate's or its own), the join counted against its connection, and the membership that
//! leaves the room when the call ends.

use tracing::{debug, info};

use super::{
    identity, peer_text, stats, ChatService, EPOCH_METADATA, JOINED_SEQ_METADATA,
    MAX_TEXT_BYTES_METADATA,
};
use crate::auth::Claims;
use crate::grpc::{Call, CallState, CloseCause, ShutdownSignal, Status};
use crate::pb::chat::v1::{ChatMessage, LeaveReason};
use crate::services::chat::room::{Member, Posted, StartAt};

impl ChatService {
    /// Validates the join message, joins, sends the response headers and posts the join's text.
    pub(super) async fn join<'a>(
        &'a self,
        call: &'a Call,
        first: ChatMessage,
    ) -> Result<Membership<'a>, Status> {
        let max = self.config.max_id_bytes;
        let room_id = identity::normalize("room_id", &first.room_id, max)?;
        // An authenticated member may leave its name out; one that gives it is held to the rules.
        let given = if !first.sender_id.is_empty() || !is_authenticated(call) {
            identity::normalize("sender_id", &first.sender_id, max)?
        } else {
            String::new()
        };
        let first = ChatMessage {
            room_id: room_id.clone(),
            sender_id: given,
            ..first
        };
        let name = identity::normalize("sender_id", &member_name(call, &first)?, max)?;
        self.check_text(&first.text)?;
        let slot = self.join_slot(call.info().connection_id())?;
        let start = match first.resume_after_seq {
            Some(after) => StartAt::Resume {
                epoch: (!first.resume_epoch.is_empty()).then_some(first.resume_epoch),
                after,
            },
            None => StartAt::RecentHistory,
        };
        let member = match &self.shared {
            Some(shared) => Box::pin(shared.join(&room_id, &name, start)).await?,
            None => self.rooms.join(&room_id, &name, start)?,
        };
        debug!(room = ?room_id, member = ?name, cursor = member.cursor(), "joined");
        // Names are a client's free text: `?` writes them quoted and escaped.
        info!(
            room = ?room_id,
            name = ?name,
            peer = %peer_text(call),
            seq = member.joined_seq(),
            epoch = member.epoch(),
            "joined"
        );
        stats::joined();
        let joined = Membership {
            member,
            call,
            shutdown: &self.shutdown,
            _slot: slot,
        };
        let joined_seq = joined.member.joined_seq().to_string();
        let max_text = self.config.max_text_bytes.to_string();
        call.with_headers(|h| {
            h.insert(JOINED_SEQ_METADATA, &joined_seq)?;
            h.insert(EPOCH_METADATA, joined.member.epoch())?;
            h.insert(MAX_TEXT_BYTES_METADATA, &max_text)
        })?;
        // Handled here, not by the server: on shutdown this call still delivers its room's last
        // events before it ends.
        call.drain_on_shutdown();
        call.send_headers()?;
        if !first.text.is_empty() {
            // A room that closed this instant: the post is refused and the loop drains.
            if let Posted::At(_) = self.post_text(&joined.member.poster(), &first.text).await? {
                stats::posted();
            }
        }
        Ok(joined)
    }

    /// Counts a joined call against its connection's limit until the slot is dropped.
    fn join_slot(&self, connection_id: u64) -> Result<JoinSlot<'_>, Status> {
        let mut joins = self.joins.lock().unwrap_or_else(|e| e.into_inner());
        let n = joins.entry(connection_id).or_insert(0);
        if *n >= self.config.max_joins_per_connection {
            return Err(Status::resource_exhausted(format!(
                "too many joined chats on this connection (max-joins-per-connection {})",
                self.config.max_joins_per_connection
            )));
        }
        *n += 1;
        Ok(JoinSlot {
            service: self,
            connection_id,
        })
    }
}

/// Whether the call has an identity nobody else can claim: a token's, or a client certificate's.
fn is_authenticated(call: &Call) -> bool {
    call.info().principal.is_some() || call.info().peer_identity().is_some()
}

/// The name a join makes its member: with a token, its name (the `name` claim, else `sub`); else
/// with a verified client certificate, its identity; else the `sender_id` the client chose. A
/// non-empty `sender_id` that differs from an authenticated name is PERMISSION_DENIED, and so is a
/// room the token's `rooms` claim does not allow.
fn member_name(call: &Call, join: &ChatMessage) -> Result<String, Status> {
    let info = call.info();
    let (identity, claims) = match &info.principal {
        Some(p) => (Some(p.name.as_str()), p.attributes::<Claims>()),
        None => (info.peer_identity(), None),
    };
    let Some(identity) = identity else {
        return Ok(join.sender_id.clone());
    };
    if !join.sender_id.is_empty() && join.sender_id != identity {
        return Err(Status::permission_denied(format!(
            "sender_id {:?} is not the authenticated name {identity:?}",
            join.sender_id
        )));
    }
    if claims.is_some_and(|c| !c.allows_room(&join.room_id)) {
        return Err(Status::permission_denied(format!(
            "the token does not allow room {:?}",
            join.room_id
        )));
    }
    Ok(identity.to_string())
}

/// A member and the call it belongs to; leaving happens on drop.
pub(super) struct Membership<'a> {
    pub(super) member: Member,
    call: &'a Call,
    shutdown: &'a ShutdownSignal,
    _slot: JoinSlot<'a>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let reason = match self.call.state() {
            _ if self.shutdown.is_shutting_down() => LeaveReason::ServerShuttingDown,
            // A cancel, or a client that closed its connection (its process ended).
            CallState::Closed(CloseCause::Reset(_) | CloseCause::ConnectionClosed) => {
                LeaveReason::Left
            }
            CallState::Closed(_) => LeaveReason::Disconnected,
            // The stream is still open: the server is ending the call, because the member's
            // loop failed (a bad post) or the call's deadline passed.
            _ => LeaveReason::CallFailed,
        };
        // The member itself is dropped right after this, which posts the leave event.
        self.member.set_leave_reason(reason);
        stats::left(reason);
        info!(
            room = ?self.member.room_id(),
            name = ?self.member.name(),
            reason = stats::reason_label(reason),
            peer = %peer_text(self.call),
            "left"
        );
    }
}

struct JoinSlot<'a> {
    service: &'a ChatService,
    connection_id: u64,
}

impl Drop for JoinSlot<'_> {
    fn drop(&mut self) {
        let mut joins = self.service.joins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = joins.get_mut(&self.connection_id) {
            *n -= 1;
            if *n == 0 {
                joins.remove(&self.connection_id);
            }
        }
    }
}
