//! h2chat: a gRPC server written directly on the `h2` crate, with real-time chat rooms.
