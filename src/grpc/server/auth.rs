//! Call authentication: a hook the server runs on every call before its handler, and the
//! principal it hands the handler.
//!
//! The server knows no credential format. An [`Authenticator`] looks at the call's service,
//! method, metadata and the connection's client-certificate identity and says: run the call as
//! this [`Principal`], run it anonymously, or refuse it with a status (UNAUTHENTICATED for a
//! missing or bad credential, PERMISSION_DENIED for a good one without the right). A refusal is a
//! Trailers-Only response: no request message is read and no handler runs.
//!
//! A principal may expire ([`Principal::expires_at`]): the server then ends the call, however long
//! it has run, with UNAUTHENTICATED and the principal's expiry message.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::grpc::metadata::Metadata;
use crate::grpc::status::Status;

/// Who a call runs as, as an [`Authenticator`] established it.
pub struct Principal {
    /// The caller's name (e.g. a token's subject, or a certificate's identity).
    pub name: String,
    /// When the credential stops being valid; the server ends the call then.
    pub expires_at: Option<Instant>,
    /// The `grpc-message` of a call ended at `expires_at`.
    pub expiry_message: &'static str,
    /// Facts a service may want beyond the name (e.g. a token's claims), for it to downcast.
    attributes: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// A principal with this name that does not expire.
    pub fn new(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            expires_at: None,
            expiry_message: "credentials expired",
            attributes: None,
        }
    }

    /// Expires at `at`; calls still running then end UNAUTHENTICATED with `message`.
    pub fn expiring(mut self, at: Instant, message: &'static str) -> Principal {
        self.expires_at = Some(at);
        self.expiry_message = message;
        self
    }

    /// Carries `attributes` for services to read with [`attributes`](Principal::attributes).
    pub fn with_attributes<T: Any + Send + Sync>(mut self, attributes: T) -> Principal {
        self.attributes = Some(Arc::new(attributes));
        self
    }

    /// The attributes, if they are a `T`.
    pub fn attributes<T: Any>(&self) -> Option<&T> {
        self.attributes.as_deref()?.downcast_ref::<T>()
    }
}

/// What an [`Authenticator`] is shown of a call.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    /// The service part of the `:path` (`package.Service`).
    pub service: &'a str,
    /// The method part of the `:path`.
    pub method: &'a str,
    /// The request's metadata (the `authorization` header among it).
    pub metadata: &'a Metadata,
    /// The identity of the client's verified TLS certificate, if it presented one.
    pub peer_identity: Option<&'a str>,
}

/// Decides, before any handler runs, whether and as whom a call runs. See the module docs.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(Some)`: run as that principal; `Ok(None)`: run anonymously; `Err`: refuse with that
    /// status. Runs on the connection's task: it must not block.
    fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Option<Arc<Principal>>, Status>;
}
