//! What the server listens on: TCP listeners, each plaintext or TLS, accepted from as one.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use tokio::net::{TcpListener, TcpStream};

use crate::grpc::server::tls::TlsAcceptor;

/// One address the server accepts connections on, and how it speaks on them.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
}

impl Listener {
    /// HTTP/2 in the clear (prior knowledge, as gRPC clients speak it without TLS).
    pub fn plaintext(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }

    /// HTTP/2 over TLS with `tls`'s configuration at the time each connection arrives.
    pub fn tls(tcp: TcpListener, tls: Arc<TlsAcceptor>) -> Listener {
        Listener {
            tcp,
            tls: Some(tls),
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// An accepted TCP connection and the TLS it must speak, if any.
pub(in crate::grpc) struct Incoming {
    pub(in crate::grpc) socket: TcpStream,
    pub(in crate::grpc) peer: SocketAddr,
    pub(in crate::grpc) tls: Option<Arc<TlsAcceptor>>,
}

/// The next connection on any of `listeners`; the first listener with one ready wins, and the
/// next call starts looking after it, so that no listener starves the others.
pub(in crate::grpc) async fn accept_any(
    listeners: &[Listener],
    start: &mut usize,
) -> io::Result<Incoming> {
    poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (*start + k) % n;
            let Some(listener) = listeners.get(i) else {
                continue;
            };
            if let Poll::Ready(accepted) = listener.tcp.poll_accept(cx) {
                *start = (i + 1) % n;
                return Poll::Ready(accepted.map(|(socket, peer)| Incoming {
                    socket,
                    peer,
                    tls: listener.tls.clone(),
                }));
            }
        }
        Poll::Pending
    })
    .await
}
