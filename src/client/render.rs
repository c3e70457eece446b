//! How a chat session looks: room events and session notices as lines of text or JSON.
//!
//! Text lines, one per event:
//! - a message: `[14:40:12] alice: hi` (the server's `sent_at` in local time);
//! - presence: `* bob joined`, `* bob left` (`(connection lost)` or `(server shutting down)` when
//!   the member did not leave by choice);
//! - presence batched by a large room: `* 12 joined: ana, bo, cy … and 9 more; 2 left: dee, ed`
//!   (at most [`PRESENCE_NAMES_SHOWN`] names a list; a single change reads as above);
//! - a gap: `! missed 12 events (seq 40..=51)`.
//!
//! Names and texts come from other people: [`safe`] says how what could
//! steer the terminal or forge a line is shown instead (escaped, padding visible, continuation
//! lines of a multi-line text marked `  | `). JSON lines are one object per event (see
//! [`JsonEvent`]), with C1, bidi and other invisible characters escaped as `\uXXXX`.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::Serialize;

use crate::client::safe;
use crate::client::session::Update;
use crate::pb::chat::v1::{ChatMessage, EventKind, LeaveReason};

/// Names a batched presence line shows per list before "… and N more".
pub const PRESENCE_NAMES_SHOWN: usize = 3;

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line per event.
    Json,
}

/// An event as a line (without the newline) in `format`.
pub fn event_line(format: Format, event: &ChatMessage) -> String {
    match format {
        Format::Text => text_line(event),
        Format::Json => json_line(event),
    }
}

/// A session update that is not a room event, as a line of text (without the newline). `None`
/// for events, which [`event_line`] renders.
pub fn notice_line(update: &Update) -> Option<String> {
    let line = match update {
        Update::Event(_) => return None,
        Update::Members(Ok(names)) => {
            let names: Vec<Cow<'_, str>> = names.iter().map(|n| safe::one_line(n)).collect();
            format!("members ({}): {}", names.len(), names.join(", "))
        }
        Update::Members(Err(status)) => format!("! /who failed: {}", status.message()),
        Update::Reconnecting {
            attempt: 1,
            error,
            retry_in,
        } => format!(
            "! connection lost ({}); reconnecting… (in {})",
            safe::one_line(error),
            seconds(*retry_in)
        ),
        Update::Reconnecting {
            error, retry_in, ..
        } => format!(
            "! still reconnecting… ({}; next try in {})",
            safe::one_line(error),
            seconds(*retry_in)
        ),
        Update::Reconnected => "! reconnected".to_string(),
        Update::TooLong { bytes, limit } => {
            format!("! not sent: {bytes} bytes is over the server's limit of {limit} bytes")
        }
        Update::PostsUnconfirmed(n) => format!(
            "! {n} of your messages may not have reached the room (the connection was lost and \
             the events that would tell are gone)"
        ),
    };
    Some(line)
}

/// An event as text.
pub fn text_line(event: &ChatMessage) -> String {
    let sender = safe::one_line(&event.sender_id);
    match EventKind::try_from(event.kind) {
        Ok(EventKind::Message) => {
            format!(
                "[{}] {sender}: {}",
                clock(event.sent_at.as_ref()),
                safe::text(&event.text)
            )
        }
        Ok(EventKind::Joined) => format!("* {sender} joined"),
        Ok(EventKind::Left) => match LeaveReason::try_from(event.leave_reason) {
            Ok(LeaveReason::Disconnected) => format!("* {sender} left (connection lost)"),
            Ok(LeaveReason::ServerShuttingDown) => {
                format!("* {sender} left (server shutting down)")
            }
            Ok(LeaveReason::CallFailed) => format!("* {sender} left (the server ended their call)"),
            _ => format!("* {sender} left"),
        },
        Ok(EventKind::Gap) => {
            let missed = event
                .gap_to
                .saturating_sub(event.gap_from)
                .saturating_add(1);
            format!(
                "! missed {missed} events (seq {}..={})",
                event.gap_from, event.gap_to
            )
        }
        Ok(EventKind::Reset) => {
            "! the room's history started over; what follows is the room's history from its start"
                .to_string()
        }
        Ok(EventKind::Presence) => presence_text(event),
        Err(_) => format!("? event of unknown kind {} (seq {})", event.kind, event.seq),
    }
}

/// A batched presence event: `* 12 joined: a, b, c … and 9 more; 2 left: d, e`.
fn presence_text(event: &ChatMessage) -> String {
    let mut parts = Vec::new();
    if event.joined_count > 0 {
        parts.push(name_list("joined", &event.joined_ids, event.joined_count));
    }
    if event.left_count > 0 {
        parts.push(name_list("left", &event.left_ids, event.left_count));
    }
    if parts.is_empty() {
        return "* nobody joined or left".to_string();
    }
    format!("* {}", parts.join("; "))
}

/// `bob joined`, `12 joined: a, b, c … and 9 more`, `3 left`.
fn name_list(verb: &str, names: &[String], count: u64) -> String {
    let shown: Vec<Cow<'_, str>> = names
        .iter()
        .take(PRESENCE_NAMES_SHOWN)
        .map(|n| safe::one_line(n))
        .collect();
    if count == 1 && shown.len() == 1 {
        return format!("{} {verb}", shown[0]);
    }
    if shown.is_empty() {
        return format!("{count} {verb}");
    }
    let more = count.saturating_sub(shown.len() as u64);
    let mut line = format!("{count} {verb}: {}", shown.join(", "));
    if more > 0 {
        line.push_str(&format!(" … and {more} more"));
    }
    line
}

/// An event as one JSON object. Fields that do not apply to the kind are left out.
#[derive(Debug, Serialize)]
pub struct JsonEvent<'a> {
    /// `message`, `joined`, `left`, `presence`, `gap`, `reset`, or `unknown`.
    pub kind: &'static str,
    /// The room's sequence number (absent for gaps and resets, which have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The room.
    pub room: &'a str,
    /// Who posted, joined or left.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub sender: &'a str,
    /// The message text (for gaps, the server's description).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub text: &'a str,
    /// When the server stamped the event, RFC 3339 in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// On resets: the epoch of the history that follows.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub epoch: &'a str,
    /// Why the member left: `left`, `disconnected`, `server_shutting_down` or `call_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave_reason: Option<&'static str>,
    /// The first sequence number missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_from: Option<u64>,
    /// The last sequence number missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_to: Option<u64>,
    /// On presence: the first sequence number the event covers (`seq` is the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_from: Option<u64>,
    /// On presence: who joined (the first of them; `joined_count` counts all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<&'a [String]>,
    /// On presence: how many joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_count: Option<u64>,
    /// On presence: who left (the first of them; `left_count` counts all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<&'a [String]>,
    /// On presence: how many left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_count: Option<u64>,
}

impl<'a> JsonEvent<'a> {
    /// The JSON view of `event`.
    pub fn new(event: &'a ChatMessage) -> JsonEvent<'a> {
        let kind = EventKind::try_from(event.kind).ok();
        let is = |k: EventKind| kind == Some(k);
        JsonEvent {
            kind: match kind {
                Some(EventKind::Message) => "message",
                Some(EventKind::Joined) => "joined",
                Some(EventKind::Left) => "left",
                Some(EventKind::Gap) => "gap",
                Some(EventKind::Reset) => "reset",
                Some(EventKind::Presence) => "presence",
                None => "unknown",
            },
            seq: (!is(EventKind::Gap) && !is(EventKind::Reset)).then_some(event.seq),
            room: &event.room_id,
            sender: &event.sender_id,
            text: &event.text,
            epoch: &event.epoch,
            sent_at: event
                .sent_at
                .as_ref()
                .and_then(utc)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            leave_reason: is(EventKind::Left).then(|| {
                match LeaveReason::try_from(event.leave_reason) {
                    Ok(LeaveReason::Left) => "left",
                    Ok(LeaveReason::Disconnected) => "disconnected",
                    Ok(LeaveReason::ServerShuttingDown) => "server_shutting_down",
                    Ok(LeaveReason::CallFailed) => "call_failed",
                    _ => "unspecified",
                }
            }),
            gap_from: is(EventKind::Gap).then_some(event.gap_from),
            gap_to: is(EventKind::Gap).then_some(event.gap_to),
            presence_from: is(EventKind::Presence).then_some(event.presence_from),
            joined: is(EventKind::Presence).then_some(event.joined_ids.as_slice()),
            joined_count: is(EventKind::Presence).then_some(event.joined_count),
            left: is(EventKind::Presence).then_some(event.left_ids.as_slice()),
            left_count: is(EventKind::Presence).then_some(event.left_count),
        }
    }
}

/// An event as one line of JSON.
pub fn json_line(event: &ChatMessage) -> String {
    // Serialising plain strings and numbers cannot fail.
    safe::json(serde_json::to_string(&JsonEvent::new(event)).unwrap_or_default())
}

/// `HH:MM:SS` in local time, `--:--:--` without a (valid) timestamp.
pub fn clock(ts: Option<&prost_types::Timestamp>) -> String {
    match ts.and_then(utc) {
        Some(t) => t.with_timezone(&Local).format("%H:%M:%S").to_string(),
        None => "--:--:--".to_string(),
    }
}

fn utc(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// `0.4s`, `5s`.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, sender: &str, text: &str) -> ChatMessage {
        ChatMessage {
            room_id: "r".into(),
            sender_id: sender.into(),
            text: text.into(),
            seq: 7,
            kind: kind as i32,
            sent_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn messages_read_time_sender_text() {
        let line = text_line(&event(EventKind::Message, "alice", "hi"));
        let (time, rest) = line.split_once(' ').unwrap_or_default();
        assert_eq!(rest, "alice: hi");
        assert_eq!(time.len(), "[14:40:12]".len());
        assert!(time.starts_with('[') && time.ends_with(']'));
    }

    #[test]
    fn presence_and_gaps() {
        assert_eq!(
            text_line(&event(EventKind::Joined, "bob", "")),
            "* bob joined"
        );
        let mut left = event(EventKind::Left, "bob", "");
        left.leave_reason = LeaveReason::Left as i32;
        assert_eq!(text_line(&left), "* bob left");
        left.leave_reason = LeaveReason::Disconnected as i32;
        assert_eq!(text_line(&left), "* bob left (connection lost)");
        let mut gap = event(EventKind::Gap, "", "");
        gap.gap_from = 40;
        gap.gap_to = 51;
        assert_eq!(text_line(&gap), "! missed 12 events (seq 40..=51)");
    }

    fn batch(joined: &[&str], joined_count: u64, left: &[&str], left_count: u64) -> ChatMessage {
        ChatMessage {
            presence_from: 3,
            joined_ids: joined.iter().map(|s| s.to_string()).collect(),
            joined_count,
            left_ids: left.iter().map(|s| s.to_string()).collect(),
            left_count,
            ..event(EventKind::Presence, "", "")
        }
    }

    #[test]
    fn batched_presence_names_the_first_few_and_counts_the_rest() {
        // The README's example line.
        let twelve = [
            "ana", "bo", "cy", "d", "e", "f", "g", "h", "i", "j", "k", "l",
        ];
        assert_eq!(
            text_line(&batch(&twelve, 12, &["dee", "ed"], 2)),
            "* 12 joined: ana, bo, cy … and 9 more; 2 left: dee, ed"
        );
        assert_eq!(text_line(&batch(&["bob"], 1, &[], 0)), "* bob joined");
        assert_eq!(text_line(&batch(&[], 0, &["eve"], 1)), "* eve left");
        assert_eq!(
            text_line(&batch(&["a", "b", "c"], 3, &[], 0)),
            "* 3 joined: a, b, c"
        );
        // More joined than the event lists (the server lists the first 32): the count rules.
        assert_eq!(
            text_line(&batch(&["a"], 40, &[], 0)),
            "* 40 joined: a … and 39 more"
        );
        // Names are other people's text here too.
        let hostile = text_line(&batch(&["eve\x1b[2J\n* root joined"], 1, &[], 0));
        assert!(!hostile.chars().any(char::is_control), "{hostile:?}");
        assert_eq!(hostile.lines().count(), 1, "{hostile:?}");
    }

    #[test]
    fn batched_presence_in_json_has_its_lists_counts_and_range() {
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&batch(&["a", "b"], 5, &["c"], 1))).unwrap_or_default();
        assert_eq!(v["kind"], "presence");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["presence_from"], 3);
        assert_eq!(v["joined"], serde_json::json!(["a", "b"]));
        assert_eq!(v["joined_count"], 5);
        assert_eq!(v["left"], serde_json::json!(["c"]));
        assert_eq!(v["left_count"], 1);
        assert!(v.get("gap_from").is_none() && v.get("sender").is_none());
        let plain: serde_json::Value =
            serde_json::from_str(&json_line(&event(EventKind::Joined, "bob", "")))
                .unwrap_or_default();
        assert!(plain.get("joined").is_none() && plain.get("presence_from").is_none());
    }

    #[test]
    fn control_characters_are_not_passed_to_the_terminal() {
        let line = text_line(&event(EventKind::Message, "eve\x1b[2J", "a\x07b"));
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.ends_with("eve\\u{001B}[2J: a\\u{0007}b"), "{line:?}");
    }

    #[test]
    fn hostile_text_cannot_reverse_hide_or_forge_a_line() {
        let bidi = text_line(&event(EventKind::Message, "mallory", "\u{202E}drowssap"));
        assert!(bidi.ends_with("mallory: \\u{202E}drowssap"), "{bidi:?}");
        let hidden = text_line(&event(EventKind::Message, "ali\u{200B}ce", "hi"));
        assert!(hidden.contains("ali\\u{200B}ce: hi"), "{hidden:?}");
        // A second line that looks like alice's message is marked as a continuation.
        let forged = text_line(&event(
            EventKind::Message,
            "mallory",
            "ok\n[14:40:12] alice: send me your password",
        ));
        let lines: Vec<&str> = forged.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "  | [14:40:12] alice: send me your password");
        // Padding meant to wrap onto a line of its own shows.
        let padded = text_line(&event(EventKind::Message, "mallory", "hi      alice: x"));
        assert!(padded.ends_with("hi ␣␣␣␣␣alice: x"), "{padded:?}");
    }

    #[test]
    fn json_escapes_c1_and_bidi_characters() {
        let line = json_line(&event(
            EventKind::Message,
            "ev\u{202E}e",
            "\u{9B}2J\u{2028}",
        ));
        assert!(
            !line.chars().any(|c| c as u32 >= 0x7F && c.is_control()),
            "{line:?}"
        );
        assert!(line.contains(r#""sender":"ev\u202ee""#), "{line}");
        assert!(line.contains(r#""text":"\u009b2J\u2028""#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(
            v["text"], "\u{9B}2J\u{2028}",
            "still the same text once parsed"
        );
    }

    #[test]
    fn json_has_the_fields_of_the_kind() {
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&event(EventKind::Message, "alice", "hi")))
                .unwrap_or_default();
        assert_eq!(v["kind"], "message");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["sender"], "alice");
        assert_eq!(v["text"], "hi");
        assert_eq!(v["sent_at"], "2023-11-14T22:13:20.005Z");
        assert!(v.get("leave_reason").is_none() && v.get("gap_from").is_none());
    }

    #[test]
    fn notices_say_what_the_session_does() {
        let lost = |attempt| Update::Reconnecting {
            attempt,
            error: "connection reset".into(),
            retry_in: Duration::from_millis(200),
        };
        assert_eq!(
            notice_line(&lost(1)).as_deref(),
            Some("! connection lost (connection reset); reconnecting… (in 0.2s)")
        );
        assert_eq!(
            notice_line(&lost(2)).as_deref(),
            Some("! still reconnecting… (connection reset; next try in 0.2s)")
        );
        assert_eq!(
            notice_line(&Update::Reconnected).as_deref(),
            Some("! reconnected")
        );
        let members = Update::Members(Ok(vec!["dave".into(), "carol".into()]));
        assert_eq!(
            notice_line(&members).as_deref(),
            Some("members (2): dave, carol")
        );
        let event = Update::Event(event(EventKind::Joined, "bob", ""));
        assert_eq!(notice_line(&event), None);
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(seconds(Duration::from_millis(400)), "0.4s");
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
    }
}
