//! The facts of `chat.v1` that the server and the client both rely on: method paths, metadata
//! names and default limits. Both sides import this module; neither imports the other.

/// The fully-qualified chat service name.
pub const CHAT_SERVICE: &str = "chat.v1.ChatService";
/// The bidirectional `Chat` method: one call per member.
pub const CHAT_METHOD: &str = "Chat";
/// The unary `Members` method.
pub const MEMBERS_METHOD: &str = "Members";
/// Path of `Chat`.
pub const CHAT_PATH: &str = "/chat.v1.ChatService/Chat";
/// Path of `Members`.
pub const MEMBERS_PATH: &str = "/chat.v1.ChatService/Members";

/// The response header of a joined `Chat` call holding the sequence number of the member's join
/// event (decimal). A client tells its own posts from earlier ones under the same name with it: its
/// own are the messages from its name numbered above it.
pub const JOINED_SEQ_METADATA: &str = "chat-joined-seq";

/// Default longest room or sender id, in bytes.
pub const DEFAULT_MAX_ID_BYTES: usize = 64;
/// Default longest text, in bytes.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 4096;

/// The response header of a joined `Chat` call holding the room's epoch: the name of the
/// incarnation of the room that `chat-joined-seq` and every later event are numbered in. A client
/// resuming sends it back as `resume_epoch` beside `resume_after_seq`. Opaque ASCII.
pub const EPOCH_METADATA: &str = "chat-epoch";

/// The response header of a joined `Chat` call holding the longest text the server accepts, in
/// bytes (decimal). A client refuses longer lines itself instead of having its call ended.
pub const MAX_TEXT_BYTES_METADATA: &str = "chat-max-text-bytes";

/// Why a character may not appear in a room id or member name, if it may not: it is invisible or
/// changes how text around it is shown. The server refuses ids with one; the terminal client
/// shows any that reach it (in texts) escaped. `None` for every other character.
pub fn hidden_char(c: char) -> Option<&'static str> {
    let cp = c as u32;
    let what = match cp {
        0x2028 | 0x2029 => "a line or paragraph separator",
        0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069 => "a bidirectional control",
        0x200B..=0x200D | 0x2060 | 0xFEFF => "a zero-width character",
        0x115F | 0x1160 | 0x3164 | 0xFFA0 | 0x034F => "an invisible filler",
        0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD => "a private-use character",
        _ if c.is_control() => "a control character",
        _ if is_format(cp) => "an invisible format character",
        _ => return None,
    };
    Some(what)
}

/// General category Cf (format characters), Unicode 15.1.
fn is_format(cp: u32) -> bool {
    matches!(
        cp,
        0x00AD
            | 0x0600..=0x0605
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_service_and_method() {
        assert_eq!(CHAT_PATH, format!("/{CHAT_SERVICE}/{CHAT_METHOD}"));
        assert_eq!(MEMBERS_PATH, format!("/{CHAT_SERVICE}/{MEMBERS_METHOD}"));
    }
}
