//! chat.v1.ChatService: rooms, posts, presence and validation; lossless delivery (sequence numbers,
//! history, resume, slow members); the README's grpcurl session.

#[path = "../support/mod.rs"]
mod support;

mod chat;
mod grpcurl_session;
mod lossless;
