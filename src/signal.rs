//! The process signals that end the programs from outside. Lives outside the gRPC layer, which
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
