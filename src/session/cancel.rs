//! Cancel keys: pgward gives every client its own random BackendKeyData and keeps, for each key,
//! the server connection that client is using right now. A CancelRequest with that key is
//! forwarded to that server only; a wrong key does nothing.
//!
//! A cancel is "in flight" from the moment the registry hands out the server's key until the
//! server has received it. The session waits for in-flight cancels before it gives a server
//! connection back to the pool, so a late cancel can never hit the next client's query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::pool::BackendKey;
use crate::protocol::startup::CancelKey;

#[derive(Debug, Default)]
struct SlotState {
    server: Option<BackendKey>,
    in_flight: usize,
}

/// One client's entry: the server it is using (if any) and cancels under way.
#[derive(Debug, Default)]
pub struct CancelSlot {
    state: Mutex<SlotState>,
    done: Notify,
}

impl CancelSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client now runs on this server.
    pub fn attach(&self, server: BackendKey) {
        self.lock().server = Some(server);
    }

    /// The client is giving its server up. Returns once no cancel aimed at that server is still
    /// on its way (bounded by `wait`), so the server can be handed to someone else safely.
    /// Returns false if a cancel was still in flight at the deadline: the caller must then not
    /// reuse the connection.
    pub async fn detach(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.done.notified();
            {
                let mut s = self.lock();
                if s.in_flight == 0 {
                    s.server = None;
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.lock().server = None;
                return false;
            }
        }
    }

    fn begin_cancel(&self) -> Option<BackendKey> {
        let mut s = self.lock();
        let target = s.server.clone()?;
        s.in_flight += 1;
        Some(target)
    }

    fn end_cancel(&self) {
        let mut s = self.lock();
        s.in_flight -= 1;
        drop(s);
        self.done.notify_waiters();
    }
}

/// All live clients' cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// Removes the key when the client's session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: CancelKey,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = self
            .registry
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slots.remove(&self.key.pid);
    }
}

impl CancelRegistry {
    /// Issues a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> Registration {
        let slot = Arc::new(CancelSlot::default());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let key = loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !slots.contains_key(&pid) {
                break CancelKey {
                    pid,
                    secret: rand::random(),
                };
            }
        };
        slots.insert(key.pid, (key.secret, Arc::clone(&slot)));
        Registration {
            registry: Arc::clone(self),
            key,
            slot,
        }
    }

    /// Forwards a client's CancelRequest to the server it is using, if the key is right.
    pub async fn cancel(&self, key: CancelKey, timeout: Duration) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(&key.pid) {
                // The secret is compared in constant time: it is the only thing that stops a
                // stranger from cancelling someone else's queries.
                Some((secret, slot))
                    if bool::from(secret.to_be_bytes().ct_eq(&key.secret.to_be_bytes())) =>
                {
                    Arc::clone(slot)
                }
                _ => {
                    tracing::info!(pid = key.pid, "cancel request with an unknown key ignored");
                    return;
                }
            }
        };
        let Some(server) = slot.begin_cancel() else {
            tracing::debug!(
                pid = key.pid,
                "cancel request for a client with no query running"
            );
            return;
        };
        if let Err(e) = crate::pool::connection::send_cancel(server, timeout).await {
            tracing::warn!(error = %e, "forwarding a cancel request to the server failed");
        }
        slot.end_cancel();
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_unique_and_removed_on_drop() {
        let r = Arc::new(CancelRegistry::default());
        let a = r.register();
        let b = r.register();
        assert_ne!(a.key.pid, b.key.pid);
        assert_eq!(r.len(), 2);
        drop(a);
        assert_eq!(r.len(), 1);
    }

    #[tokio::test]
    async fn detach_waits_for_in_flight_cancel() {
        let slot = Arc::new(CancelSlot::default());
        slot.attach(BackendKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 1,
            secret: 2,
            tls: None,
        });
        assert!(slot.begin_cancel().is_some());
        assert!(
            !slot.detach(Duration::from_millis(20)).await,
            "cancel still in flight"
        );
        slot.attach(BackendKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 1,
            secret: 2,
            tls: None,
        });
        let s2 = Arc::clone(&slot);
        let waiter = tokio::spawn(async move { s2.detach(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        slot.end_cancel();
        assert!(waiter.await.unwrap());
        assert!(slot.begin_cancel().is_none(), "detached: nothing to cancel");
    }
}
