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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_service_and_method() {
        assert_eq!(CHAT_PATH, format!("/{CHAT_SERVICE}/{CHAT_METHOD}"));
        assert_eq!(MEMBERS_PATH, format!("/{CHAT_SERVICE}/{MEMBERS_METHOD}"));
    }
}
