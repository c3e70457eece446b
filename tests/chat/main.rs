//! chat.v1.ChatService: rooms, posts, presence and validation; lossless delivery (sequence numbers,
//! history, resume, slow members); the post rate held by flow control; backpressure under a
//! flood; room epochs; identities; leave reasons; shutdown that drains; the README's grpcurl
//! session; presence batched in large rooms; the opt-in delivery window.

#[path = "../support/mod.rs"]
mod support;

mod backpressure;
mod chat;
mod delivery_window;
mod epochs;
mod grpcurl_session;
mod identity;
mod leave_reasons;
mod lossless;
mod post_rate;
mod presence;
mod shutdown;
