//! chat.v1.ChatService: rooms, posts, presence and validation; lossless delivery (sequence numbers,
//! history, resume, slow members); the post rate held by flow control; room epochs; identities;
//! leave reasons; shutdown that drains; the README's grpcurl session; presence batched in
//! large rooms.

#[path = "../support/mod.rs"]
mod support;

mod chat;
mod epochs;
mod grpcurl_session;
mod identity;
mod leave_reasons;
mod lossless;
mod post_rate;
mod presence;
mod shutdown;
