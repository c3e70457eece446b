//! Protobuf types generated from `proto/` by `build.rs`, and the descriptor set they came from.

// Comments copied from the .proto files hold `<package>.<service>` and the like.
#![allow(missing_docs, unreachable_pub, clippy::all, rustdoc::invalid_html_tags)]

/// The encoded `FileDescriptorSet` of every proto file the crate serves, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// `chat.v1`.
pub mod chat {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/chat.v1.rs"));
    }
}

/// `h2chat.*`: the log watcher and the echo service.
pub mod h2chat {
    pub mod logs {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/h2chat.logs.v1.rs"));
        }
    }
    pub mod echo {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/h2chat.echo.v1.rs"));
        }
    }
}

/// `grpc.*`: reflection, health and the interop test service.
pub mod grpc {
    pub mod reflection {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
        }
        pub mod v1alpha {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1alpha.rs"));
        }
    }
    pub mod health {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
    pub mod testing {
        include!(concat!(env!("OUT_DIR"), "/grpc.testing.rs"));
    }
}
