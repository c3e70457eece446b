//! A received chat event, decoded only as far as the bench needs, and the stamp a bench post's
//! text carries.
//!
//! Members see every event of their room, so the receiving side must cost as little as possible:
//! [`scan`] walks the protobuf fields of a `chat.v1.ChatMessage` once, copies nothing, and skips the
//! fields the bench does not read (room, sender, timestamp). A post's text starts with its
//! [`Stamp`]: the send time and the sender, in ASCII, so that no clock has to be shared with the
//! server and no extra field has to be decoded.

use crate::pb::chat::v1::EventKind;

/// The fields of a `ChatMessage` the bench reads. Fields that are absent read as zero / empty, as
/// protobuf says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    /// `seq` (field 5).
    pub seq: u64,
    /// `kind` (field 6), as its number.
    pub kind: i32,
    /// `gap_from` (field 8).
    pub gap_from: u64,
    /// `gap_to` (field 9).
    pub gap_to: u64,
    /// `text` (field 3), as bytes (not checked for UTF-8).
    pub text: &'a [u8],
    /// `joined_count` (field 15) of a presence event.
    pub joined_count: u64,
}

impl Event<'_> {
    /// A text posted by a member.
    pub fn is_message(&self) -> bool {
        self.kind == EventKind::Message as i32
    }

    /// A gap event: the member missed `gap_from ..= gap_to`.
    pub fn is_gap(&self) -> bool {
        self.kind == EventKind::Gap as i32
    }

    /// How many joins the event announces: 1 for a join, `joined_count` for a presence event.
    pub fn joins(&self) -> u64 {
        if self.kind == EventKind::Joined as i32 {
            1
        } else if self.kind == EventKind::Presence as i32 {
            self.joined_count
        } else {
            0
        }
    }

    /// How many events a gap event says were missed (0 for any other event).
    pub fn missed(&self) -> u64 {
        if self.is_gap() && self.gap_to >= self.gap_from {
            self.gap_to - self.gap_from + 1
        } else {
            0
        }
    }
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// Reads the fields of one encoded `ChatMessage` the bench needs; `None` when the bytes are not a
/// well-formed protobuf message (never panics, whatever the bytes).
pub fn scan(mut buf: &[u8]) -> Option<Event<'_>> {
    let mut ev = Event::default();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            VARINT => {
                let v = varint(&mut buf)?;
                match field {
                    5 => ev.seq = v,
                    // Enums are int32 on the wire; a negative value arrives sign-extended.
                    6 => ev.kind = v as i32,
                    8 => ev.gap_from = v,
                    9 => ev.gap_to = v,
                    15 => ev.joined_count = v,
                    _ => {}
                }
            }
            LEN => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let bytes = buf.get(..len)?;
                buf = &buf[len..];
                if field == 3 {
                    ev.text = bytes;
                }
            }
            FIXED64 => buf = buf.get(8..)?,
            FIXED32 => buf = buf.get(4..)?,
            // Groups (3, 4) are not used by proto3; anything else is malformed.
            _ => return None,
        }
    }
    Some(ev)
}

/// One base-128 varint; `None` if truncated or longer than 10 bytes.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// What a bench post's text says about itself: `{sent_ns}/{sender}/` then padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the post was sent, in nanoseconds since the bench's own time base.
    pub sent_ns: u64,
    /// The bench's number for the sender (unique across rooms).
    pub sender: u32,
}

/// Byte the text is padded with.
const PAD: char = 'x';

/// The text of a bench post: the stamp, then `x` up to `size` bytes in all (a text is never
/// shorter than its stamp, about 20 bytes).
pub fn stamp_text(stamp: Stamp, size: usize) -> String {
    let mut text = format!("{}/{}/", stamp.sent_ns, stamp.sender);
    let pad = size.saturating_sub(text.len());
    text.extend(std::iter::repeat_n(PAD, pad));
    text
}

/// Reads the stamp back from a text; `None` for text the bench did not write.
pub fn read_stamp(text: &[u8]) -> Option<Stamp> {
    let (sent_ns, rest) = decimal(text)?;
    let (sender, _) = decimal(rest)?;
    Some(Stamp {
        sent_ns,
        sender: u32::try_from(sender).ok()?,
    })
}

/// A decimal number followed by `/`; returns it and what follows the `/`.
fn decimal(text: &[u8]) -> Option<(u64, &[u8])> {
    let end = text.iter().position(|&b| b == b'/')?;
    let digits = &text[..end];
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, &text[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::chat::v1::ChatMessage;
    use prost::Message;

    #[test]
    fn scan_reads_what_prost_wrote() {
        let msg = ChatMessage {
            room_id: "room".into(),
            sender_id: "alice".into(),
            text: "hello".into(),
            sent_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            seq: 300,
            kind: EventKind::Gap as i32,
            gap_from: 7,
            gap_to: 9,
            resume_after_seq: Some(1),
            ..Default::default()
        };
        let bytes = msg.encode_to_vec();
        let ev = scan(&bytes).expect("scan");
        assert_eq!(ev.seq, 300);
        assert!(ev.is_gap());
        assert_eq!((ev.gap_from, ev.gap_to, ev.missed()), (7, 9, 3));
        assert_eq!(ev.text, b"hello");
    }

    #[test]
    fn an_empty_message_is_a_message_event_with_seq_zero() {
        let ev = scan(&[]).expect("scan");
        assert!(ev.is_message());
        assert_eq!(ev.seq, 0);
    }

    #[test]
    fn truncated_or_malformed_bytes_are_refused_without_panic() {
        for msg in [
            ChatMessage {
                text: "some text".into(),
                ..Default::default()
            },
            ChatMessage {
                seq: u64::MAX,
                ..Default::default()
            },
        ] {
            let bytes = msg.encode_to_vec();
            for cut in 1..bytes.len() {
                // One field: every strict prefix ends inside it.
                assert_eq!(scan(&bytes[..cut]), None, "{msg:?} cut at {cut}");
            }
        }
        assert_eq!(scan(&[0x0b]), None, "group wire type");
        assert_eq!(scan(&[0x28; 11]), None, "overlong varint");
    }

    #[test]
    fn stamps_survive_the_text_and_pad_to_size() {
        let stamp = Stamp {
            sent_ns: 123_456_789,
            sender: 42,
        };
        let text = stamp_text(stamp, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(read_stamp(text.as_bytes()), Some(stamp));
        // Smaller than the stamp: the stamp is kept whole.
        assert_eq!(read_stamp(stamp_text(stamp, 3).as_bytes()), Some(stamp));
    }

    #[test]
    fn foreign_text_has_no_stamp() {
        for text in [
            "",
            "hello",
            "12/",
            "/3/",
            "1x/2/",
            "99999999999999999999999/1/",
        ] {
            assert_eq!(read_stamp(text.as_bytes()), None, "{text:?}");
        }
    }
}
