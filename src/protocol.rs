//! The facts of `chat.v1` that the server and the client both rely on: method paths, metadata
//! names and default limits. Both sides import this module; neither imports the other.

/// The fully-qualified chat service name.
pub const CHAT_SERVICE: &str = "chat.v1.ChatService";
/// Path of the bidirectional `Chat` call: one call per member.
pub const CHAT_PATH: &str = "/chat.v1.ChatService/Chat";
/// Path of the unary `Members` call.
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
