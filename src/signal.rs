//! The process signals that end the programs from outside (and SIGHUP, which asks the server to
//! reload its certificate). Lives outside the gRPC layer, which
//! only knows a [`ShutdownSignal`](crate::grpc::ShutdownSignal) value: who fires it is the
//! program's business.

/// Resolves on SIGINT or SIGTERM: what ends the server (and the chat client) from outside.
pub async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
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
