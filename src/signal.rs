//! The process signals that end the programs from outside (and SIGHUP, which asks the server to
//! reload its certificate). Lives outside the gRPC layer, which
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

/// SIGHUPs as they arrive: the server reloads its TLS certificate on each.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

/// Starts listening for SIGHUP (from now on, a SIGHUP no longer ends the process).
pub fn hangups() -> Hangups {
    Hangups {
        #[cfg(unix)]
        signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
    }
}

impl Hangups {
    /// Waits for the next SIGHUP; `false` when none can come (no signal support).
    pub async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            return signal.recv().await.is_some();
        }
        false
    }
}
