//! `grpc.health.v1.Health`: Check, Watch and List (grpc/grpc `doc/health-checking.md`).
//!
//! Statuses live in a [`HealthHandle`], one `tokio::sync::watch` channel per service name, so a
//! watcher that reads slowly costs one slot whatever the number of changes: it sees the latest
//! status, never a queue of old ones. `""` stands for the whole server.
//!
//! On graceful shutdown every service turns NOT_SERVING and stays so: the handle reads the
//! server's [`ShutdownSignal`] on every access. Each Watch handler also waits on the signal
//! itself, so that it sends NOT_SERVING before the server ends its call with UNAVAILABLE (the
//! call driver polls the handler before acting on the signal).

use std::collections::{BTreeMap, HashMap};
use std::future::pending;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::grpc::status::{quote, MAX_QUOTED_BYTES};
use crate::grpc::{BoxFuture, Call, CallResult, Server, Service, ShutdownSignal, Status};
use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::pb::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};

/// The service's fully-qualified name.
pub const SERVICE_NAME: &str = "grpc.health.v1.Health";

/// The name that stands for the whole server.
pub const WHOLE_SERVER: &str = "";

/// Longest service name Watch accepts (INVALID_ARGUMENT beyond): a watched name is kept for the
/// life of the call, so it must not be a message-sized string.
pub const MAX_SERVICE_NAME_BYTES: usize = 1024;

/// Adds the health service to `server`, with every service already added (and the server as a
/// whole, `""`) registered as SERVING; call it after the other services are added. Returns the
/// handle through which other code changes statuses.
pub fn install(server: &mut Server) -> HealthHandle {
    let handle = HealthHandle::with_shutdown(server.shutdown_signal());
    for name in server.service_names() {
        handle.set_status(name, ServingStatus::Serving);
    }
    handle.set_status(SERVICE_NAME, ServingStatus::Serving);
    handle.set_status(WHOLE_SERVER, ServingStatus::Serving);
    let service = HealthService::new(handle.clone());
    server.add_service(Arc::new(service));
    handle
}

/// The serving status of every registered service. Cheap to clone; every clone shares the same
/// statuses.
#[derive(Clone, Debug, Default)]
pub struct HealthHandle {
    inner: Arc<Mutex<Registry>>,
    /// When it fires, every service turns NOT_SERVING for good.
    shutdown: Option<ShutdownSignal>,
}

#[derive(Debug, Default)]
struct Registry {
    /// One channel per name. A name only watched, never registered, holds SERVICE_UNKNOWN and is
    /// removed when its last watcher leaves.
    services: HashMap<String, watch::Sender<ServingStatus>>,
    /// Set by [`HealthHandle::shutdown`]; statuses no longer change afterwards.
    shut_down: bool,
}

impl HealthHandle {
    /// A handle with no service registered, that changes only when told.
    pub fn new() -> HealthHandle {
        HealthHandle::default()
    }

    /// A handle with no service registered whose services all turn NOT_SERVING, for good, once
    /// `shutdown` fires.
    pub fn with_shutdown(shutdown: ShutdownSignal) -> HealthHandle {
        HealthHandle {
            shutdown: Some(shutdown),
            ..HealthHandle::default()
        }
    }

    /// The registry, brought up to date with the shutdown signal.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Never held across an await, and every update leaves the map consistent.
        let mut registry = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fired = self.shutdown.as_ref().is_some_and(|s| s.is_shutting_down());
        if fired && !registry.shut_down {
            registry.shut_down_all();
        }
        registry
    }

    /// Registers `service` (if new) with `status` and tells its watchers. Ignored after
    /// [`shutdown`](HealthHandle::shutdown), so that nothing turns a stopping server back to
    /// SERVING. SERVICE_UNKNOWN is not a status to set and is ignored too.
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        if status == ServingStatus::ServiceUnknown {
            return;
        }
        let mut registry = self.lock();
        if registry.shut_down {
            return;
        }
        match registry.services.get(service) {
            Some(tx) => {
                tx.send_replace(status);
            }
            None => {
                let (tx, _) = watch::channel(status);
                registry.services.insert(service.to_owned(), tx);
            }
        }
    }

    /// The status of a registered service; `None` for a name never registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let registry = self.lock();
        let status = *registry.services.get(service)?.borrow();
        (status != ServingStatus::ServiceUnknown).then_some(status)
    }

    /// Every registered service with its status, sorted by name.
    pub fn statuses(&self) -> BTreeMap<String, ServingStatus> {
        self.lock()
            .services
            .iter()
            .map(|(name, tx)| (name.clone(), *tx.borrow()))
            .filter(|(_, status)| *status != ServingStatus::ServiceUnknown)
            .collect()
    }

    /// Turns every registered service NOT_SERVING for good (graceful shutdown). Idempotent.
    pub fn shutdown(&self) {
        self.lock().shut_down_all();
    }

    /// Resolves when the shutdown signal fires; never without one.
    async fn shutdown_fired(&self) {
        match &self.shutdown {
            Some(signal) => signal.wait().await,
            None => pending().await,
        }
    }

    /// A receiver of `service`'s status; for a name never registered it reads SERVICE_UNKNOWN
    /// until the name is registered.
    fn subscribe(&self, service: &str) -> Subscription {
        let mut registry = self.lock();
        let rx = match registry.services.get(service) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(ServingStatus::ServiceUnknown);
                registry.services.insert(service.to_owned(), tx);
                rx
            }
        };
        Subscription {
            handle: self.clone(),
            service: service.to_owned(),
            rx,
        }
    }
}

impl Registry {
    /// Every registered status to NOT_SERVING (names only watched stay SERVICE_UNKNOWN), and no
    /// change after this.
    fn shut_down_all(&mut self) {
        self.shut_down = true;
        for tx in self.services.values() {
            tx.send_if_modified(|status| {
                let registered = *status != ServingStatus::ServiceUnknown;
                if registered && *status != ServingStatus::NotServing {
                    *status = ServingStatus::NotServing;
                    return true;
                }
                false
            });
        }
    }
}

/// One watcher's receiver. Dropping it (the Watch handler returned or was stopped) forgets a
/// name nobody registered once its last watcher is gone, so that watching made-up names does not
/// grow the registry.
struct Subscription {
    handle: HealthHandle,
    service: String,
    rx: watch::Receiver<ServingStatus>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut registry = self.handle.lock();
        // `self.rx` is still alive here, so "only us" is a count of one.
        let unused = registry.services.get(&self.service).is_some_and(|tx| {
            tx.receiver_count() <= 1 && *tx.borrow() == ServingStatus::ServiceUnknown
        });
        if unused {
            registry.services.remove(&self.service);
        }
    }
}

/// The `grpc.health.v1.Health` service over a [`HealthHandle`].
#[derive(Clone, Debug)]
pub struct HealthService {
    handle: HealthHandle,
}

impl HealthService {
    /// A service answering from `handle` (give it one made
    /// [`with_shutdown`](HealthHandle::with_shutdown) for NOT_SERVING on shutdown).
    pub fn new(handle: HealthHandle) -> HealthService {
        HealthService { handle }
    }

    /// Check: the status of a registered service; NOT_FOUND for any other name.
    async fn check(&self, call: &Call) -> CallResult {
        let req: HealthCheckRequest = call.recv_one().await?;
        let status = self.handle.status(&req.service).ok_or_else(|| {
            Status::not_found(format!(
                "unknown service {}",
                quote(&req.service, MAX_QUOTED_BYTES)
            ))
        })?;
        call.send(&response(status)).await
    }

    /// List: every registered service and its status.
    async fn list(&self, call: &Call) -> CallResult {
        call.recv_one::<HealthListRequest>().await?;
        let statuses = self
            .handle
            .statuses()
            .into_iter()
            .map(|(name, status)| (name, response(status)))
            .collect();
        call.send(&HealthListResponse { statuses }).await
    }

    /// Watch: the current status at once, then the latest one after each change. A name never
    /// registered reads SERVICE_UNKNOWN and the call stays open. On shutdown: NOT_SERVING, then
    /// the call ends UNAVAILABLE.
    async fn watch(&self, call: &Call) -> CallResult {
        let req: HealthCheckRequest = call.recv_one().await?;
        if req.service.len() > MAX_SERVICE_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "service name longer than {MAX_SERVICE_NAME_BYTES} bytes"
            )));
        }
        let mut subscription = self.handle.subscribe(&req.service);
        self.watch_loop(call, &mut subscription.rx).await
    }

    async fn watch_loop(&self, call: &Call, rx: &mut watch::Receiver<ServingStatus>) -> CallResult {
        let mut sent = None;
        loop {
            let status = *rx.borrow_and_update();
            if sent != Some(status) {
                call.send(&response(status)).await?;
                sent = Some(status);
            }
            tokio::select! {
                // The signal first: once shutdown begins, no status but NOT_SERVING goes out.
                biased;
                () = self.handle.shutdown_fired() => {
                    self.handle.shutdown();
                    let status = *rx.borrow_and_update();
                    if sent != Some(status) {
                        call.send(&response(status)).await?;
                    }
                    return Err(Status::unavailable("server shutting down"));
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The registry dropped the name: not expected while a watcher holds it.
                        return Err(Status::unavailable("health status no longer tracked"));
                    }
                }
            }
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

impl Service for HealthService {
    fn name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn call<'a>(&'a self, method: &'a str, call: &'a Call) -> Option<BoxFuture<'a, CallResult>> {
        Some(match method {
            "Check" => Box::pin(self.check(call)),
            "List" => Box::pin(self.list(call)),
            "Watch" => Box::pin(self.watch(call)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_signal_turns_every_service_not_serving() {
        let (trigger, signal) = ShutdownSignal::new();
        let h = HealthHandle::with_shutdown(signal);
        h.set_status("a", ServingStatus::Serving);
        trigger.fire();
        assert_eq!(h.status("a"), Some(ServingStatus::NotServing));
        h.set_status("a", ServingStatus::Serving);
        assert_eq!(h.status("a"), Some(ServingStatus::NotServing));
    }

    #[test]
    fn shutdown_turns_every_service_not_serving_for_good() {
        let h = HealthHandle::new();
        h.set_status("", ServingStatus::Serving);
        h.set_status("a", ServingStatus::Serving);
        h.shutdown();
        h.set_status("a", ServingStatus::Serving);
        assert_eq!(h.status("a"), Some(ServingStatus::NotServing));
        assert_eq!(h.status(""), Some(ServingStatus::NotServing));
    }

    #[test]
    fn watching_an_unknown_name_leaves_nothing_behind() {
        let h = HealthHandle::new();
        let first = h.subscribe("nope");
        let second = h.subscribe("nope");
        assert_eq!(*first.rx.borrow(), ServingStatus::ServiceUnknown);
        assert_eq!(h.status("nope"), None);
        assert!(h.statuses().is_empty());
        drop(first);
        assert_eq!(h.lock().services.len(), 1);
        drop(second);
        assert!(h.lock().services.is_empty());
    }

    #[test]
    fn a_watched_name_registered_later_is_seen() {
        let h = HealthHandle::new();
        let mut sub = h.subscribe("later");
        h.set_status("later", ServingStatus::Serving);
        assert!(sub.rx.has_changed().unwrap_or(false));
        assert_eq!(*sub.rx.borrow_and_update(), ServingStatus::Serving);
        drop(sub);
        assert_eq!(h.status("later"), Some(ServingStatus::Serving));
    }
}
