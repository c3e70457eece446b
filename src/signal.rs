//! The process signals that end the programs from outside. Lives outside the gRPC layer, which
//! only knows a [`ShutdownSignal`](crate::grpc::ShutdownSignal) value: who fires it is the
//! program's business.

use std::future::Future;

/// Resolves on SIGINT or SIGTERM: what ends the server (and the chat client) from outside.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that comes between the two (say, right after the server said it listens) is not the
/// default action that kills the process. Call it inside a Tokio runtime.
pub fn interrupted() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait(int) => {},
                () = wait(term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
