//! Live client sessions, for the admin console, metrics and audit: who is connected, from where,
//! as whom, and what each is doing. Each session owns an [`Arc<SessionInfo>`] and updates it
//! with relaxed atomics (no lock on the hot path); the registry's map is locked only when a
//! session starts or ends and when someone lists the sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a client is doing, as the admin console and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Between transactions, holding no server connection.
    Idle = 0,
    /// Holding a server connection.
    Active = 1,
    /// Waiting for a server connection.
    Waiting = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }
}

/// One live session.
#[derive(Debug)]
pub struct SessionInfo {
    /// Session id: unique in this process, the `sid` of audit events.
    pub sid: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    /// The pool's backend role.
    pub backend_user: String,
    pub tls: bool,
    /// The verified client certificate's identity, if any (URI/DNS SAN or CN).
    pub cert_identity: Option<String>,
    pub started: SystemTime,
    state: AtomicU8,
    /// The server connection it holds (its pool-local id), 0 for none.
    server: AtomicU64,
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    pub bytes_from_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
}

impl SessionInfo {
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn server(&self) -> Option<u64> {
        match self.server.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn set_server(&self, id: Option<u64>) {
        self.server.store(id.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a session is, when it registers.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    pub backend_user: String,
    pub tls: bool,
    pub cert_identity: Option<String>,
}

/// All live sessions.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    next_sid: AtomicU64,
    sessions: Mutex<HashMap<u64, Arc<SessionInfo>>>,
}

/// A session's registration; the session leaves the registry when this is dropped.
#[derive(Debug)]
pub struct Registered {
    pub info: Arc<SessionInfo>,
    registry: Arc<SessionRegistry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.info.sid);
    }
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SessionInfo>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh session id (also for connections that never become sessions, so audit events
    /// of one connection share an id).
    pub fn next_sid(&self) -> u64 {
        self.next_sid.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn register(self: &Arc<Self>, sid: u64, s: NewSession) -> Registered {
        let info = Arc::new(SessionInfo {
            sid,
            peer: s.peer,
            user: s.user,
            database: s.database,
            backend_user: s.backend_user,
            tls: s.tls,
            cert_identity: s.cert_identity,
            started: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            server: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
        });
        self.lock().insert(sid, Arc::clone(&info));
        Registered {
            info,
            registry: Arc::clone(self),
        }
    }

    /// The live sessions, ordered by id.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|s| s.sid);
        v
    }

    /// Sessions by state: (idle, active, waiting).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for s in self.lock().values() {
            match s.state() {
                ClientState::Idle => c.0 += 1,
                ClientState::Active => c.1 += 1,
                ClientState::Waiting => c.2 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_session() -> NewSession {
        NewSession {
            peer: "127.0.0.1:5000".parse().expect("addr"),
            user: "app".into(),
            database: "appdb".into(),
            backend_user: "app_rw".into(),
            tls: false,
            cert_identity: None,
        }
    }

    #[test]
    fn sessions_leave_the_registry_when_dropped() {
        let reg = Arc::new(SessionRegistry::default());
        let a = reg.register(reg.next_sid(), new_session());
        let b = reg.register(reg.next_sid(), new_session());
        b.info.set_state(ClientState::Active);
        assert_eq!(reg.counts(), (1, 1, 0));
        assert_eq!(reg.list().len(), 2);
        drop(a);
        assert_eq!(reg.list().len(), 1);
        assert_eq!(reg.list()[0].state(), ClientState::Active);
    }
}
