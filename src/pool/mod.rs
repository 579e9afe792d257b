//! Server connection pools: one per (database, backend role). A checkout returns a
//! [`PoolGuard`]; giving it back is an explicit `release`, and a guard dropped without one is
//! discarded, so a connection in an unknown state can never return to the pool by accident.
//!
//! Hand-written rather than deadpool/bb8/mobc because the pool must hand connections to waiters
//! strictly in arrival order, let the session decide at each ReadyForQuery whether the connection
//! is clean, and carry per-connection session state; those crates manage objects generically and
//! recycle them with their own async checks. Checkout and release are O(1) under one short
//! `std::sync::Mutex` that is never held across an `.await`.

pub mod connection;
pub mod stream;

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::{BackendLogin, Database, PoolSettings};
use crate::session::state::{ServerReport, SessionParams};
use crate::tls::backend::BackendTls;
pub use connection::{BackendKey, ServerConn, ServerError};

/// A server connection as the pool hands it around: boxed once when opened, so a checkout, a
/// hand-over to a waiter and a release move a pointer, not the ~270-byte connection (they
/// moved it about nine times per checkout: ~2.7% of pgward's instructions in a select-only
/// run, callgrind).
type Conn = Box<ServerConn>;

/// The startup parameters ([`crate::session::state::BASE_PARAMS`]) a client shares with the
/// server connections it may be given: those opened with exactly these, or with none. A
/// connection opened with a client's parameters is given to no other client, because `RESET`
/// there would bring back that client's values (see [`crate::session::state::ServerBase`]).
#[derive(Debug, Clone, Default)]
pub struct ClientBase {
    pub params: Arc<SessionParams>,
    /// The server has accepted these values (at this client's login or an earlier one): a
    /// connection opened for this client is opened with them. Until then, without: a value
    /// the server refuses must fail the client's login, not the opening of a pool connection.
    pub accepted: bool,
}

impl ClientBase {
    /// Whether a connection opened with `base` may be given to this client.
    fn accepts(&self, conn: &ServerConn) -> bool {
        let base = &conn.base.opened_with;
        base.startup.is_empty() || Arc::ptr_eq(base, &self.params) || **base == *self.params
    }

    /// What a connection opened for this client is opened with.
    fn open_with(&self) -> Arc<SessionParams> {
        if self.accepted {
            Arc::clone(&self.params)
        } else {
            Arc::default()
        }
    }
}

/// Which pool a client uses: clients that map to the same backend role on the same database share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub backend_user: String,
    /// Connections log in with default_transaction_read_only = on (read-only policies).
    pub read_only: bool,
}

#[derive(Debug, Error)]
pub enum CheckoutError {
    #[error("no server connection within {0:?}")]
    Timeout(Duration),
    #[error("cannot open a server connection: {0}")]
    Connect(#[from] ServerError),
    #[error("pool is closed")]
    Closed,
}

/// Counts for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub total: usize,
    pub waiting: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Idle connections; the most recently used is last (LIFO keeps a warm working set and lets
    /// the rest age out). Each with its id beside it, so that a checkout finds a client's
    /// previous connection without reading every boxed connection.
    idle: Vec<(u64, Conn)>,
    /// Idle + checked out + being opened.
    total: usize,
    /// Clients waiting, in arrival order.
    waiters: VecDeque<oneshot::Sender<Conn>>,
    /// Client startup parameters the server accepted (at a login), the latest last: a
    /// connection opened for a client that logs in with one of them is opened with it.
    accepted_bases: VecDeque<Arc<SessionParams>>,
    /// What recent logins were told about the server, by their startup parameters, the latest
    /// last (see [`Pool::login_report`]).
    login_reports: VecDeque<LoginReport>,
}

/// The server's parameters (ParameterStatus) as a login with `params` reported them to its
/// client, once the server had accepted those parameters, and when.
#[derive(Debug)]
struct LoginReport {
    params: Arc<SessionParams>,
    reported: Arc<ServerReport>,
    at: Instant,
}

/// How long a login's report stands in for taking a server connection at a login with the
/// same parameters. Past it, a login checks out a connection again, and so learns of server
/// settings that changed since; until then it is told the values as they were, like a client
/// that logged in just before the change.
const LOGIN_REPORT_TTL: Duration = Duration::from_secs(30);

/// How many accepted client startup parameter sets a pool remembers (see
/// `PoolState::accepted_bases`), and how many logins' reports (`PoolState::login_reports`); a
/// pool rarely serves more than a few kinds of client.
const ACCEPTED_BASES: usize = 16;

pub struct Pool {
    pub key: PoolKey,
    pub database: Arc<Database>,
    login: BackendLogin,
    tls: Option<Arc<BackendTls>>,
    settings: PoolSettings,
    state: Mutex<PoolState>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Connections being opened (counted in `total`), for the `connecting` state.
    opening: AtomicUsize,
    /// Checked-out connections being reset before they return (`DISCARD ALL` at release), for
    /// the `testing` state.
    testing: AtomicUsize,
    /// This pool's metric handles, labels resolved once.
    pub metrics: crate::metrics::PoolMetrics,
    /// Totals for the admin console's SHOW STATS.
    pub counters: PoolCounters,
}

/// Running totals of one pool (relaxed atomics).
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    pub query_time_us: AtomicU64,
    pub checkouts: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub checkout_timeouts: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("key", &self.key).finish()
    }
}

impl Pool {
    pub fn new(
        key: PoolKey,
        database: Arc<Database>,
        login: BackendLogin,
        tls: Option<Arc<BackendTls>>,
        metrics: crate::metrics::PoolMetrics,
    ) -> Arc<Pool> {
        let settings = database.pool.clone();
        Arc::new(Pool {
            key,
            database,
            login,
            tls,
            settings,
            state: Mutex::new(PoolState::default()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            opening: AtomicUsize::new(0),
            testing: AtomicUsize::new(0),
            metrics,
            counters: PoolCounters::default(),
        })
    }

    /// How this pool's connections log in.
    pub fn login(&self) -> &BackendLogin {
        &self.login
    }

    /// Whether the pool was closed (shutdown, or retired by a configuration reload).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding this lock cannot leave the counts half-updated (each critical
        // section is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of the idle connections (admin console).
    pub fn idle_ids(&self) -> Vec<u64> {
        self.lock().idle.iter().map(|(id, _)| *id).collect()
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.lock();
        PoolStats {
            idle: s.idle.len(),
            total: s.total,
            waiting: s.waiters.iter().filter(|w| !w.is_closed()).count(),
        }
    }

    /// What a client logging in with `params` may be given (see [`ClientBase`]): it counts as
    /// accepted when the server accepted the same parameters for an earlier login.
    pub fn client_base(&self, params: &SessionParams) -> ClientBase {
        let params = params.base();
        let s = self.lock();
        match s.accepted_bases.iter().find(|b| ***b == params) {
            Some(b) => ClientBase {
                params: Arc::clone(b),
                accepted: true,
            },
            None => ClientBase {
                params: Arc::new(params),
                accepted: false,
            },
        }
    }

    /// The server accepted these client startup parameters (a login applied them).
    pub fn accept_base(&self, base: &ClientBase) {
        if base.accepted || base.params.startup.is_empty() {
            return;
        }
        let mut s = self.lock();
        if !s.accepted_bases.iter().any(|b| **b == *base.params) {
            if s.accepted_bases.len() == ACCEPTED_BASES {
                s.accepted_bases.pop_front();
            }
            s.accepted_bases.push_back(Arc::clone(&base.params));
        }
    }

    /// What to tell a client logging in with `params` about the server without taking a
    /// server connection: what a login with the same parameters was told (see
    /// [`Pool::record_login`]) less than [`LOGIN_REPORT_TTL`] ago, while the pool has a
    /// connection open (so the server is reachable and takes these parameters). `None` when a
    /// login must check out a connection to learn it.
    ///
    /// PgBouncer answers every login from its pool's cached server parameters; pgward does so
    /// only for parameters the server accepted at a login, and with the exact values the server
    /// reported for them (its spelling of `DateStyle` or `client_encoding`, not the client's).
    pub fn login_report(&self, params: &SessionParams) -> Option<Arc<ServerReport>> {
        let s = self.lock();
        if s.total <= self.opening.load(Ordering::Relaxed) {
            return None;
        }
        s.login_reports
            .iter()
            .rev()
            .find(|r| *r.params == *params)
            .filter(|r| r.at.elapsed() < LOGIN_REPORT_TTL)
            .map(|r| Arc::clone(&r.reported))
    }

    /// A login with `params` checked out a connection, the server accepted the parameters, and
    /// the client was told `reported`.
    pub fn record_login(&self, params: &Arc<SessionParams>, reported: &Arc<ServerReport>) {
        let mut s = self.lock();
        s.login_reports.retain(|r| *r.params != **params);
        if s.login_reports.len() == ACCEPTED_BASES {
            s.login_reports.pop_front();
        }
        s.login_reports.push_back(LoginReport {
            params: Arc::clone(params),
            reported: Arc::clone(reported),
            at: Instant::now(),
        });
    }

    /// Waits for a connection: an idle one, a new one if the pool has room, or the next one
    /// released, in arrival order. Gives up after the pool's checkout timeout.
    /// The connection is one opened without client startup parameters.
    pub async fn checkout(self: &Arc<Self>) -> Result<PoolGuard, CheckoutError> {
        self.checkout_preferring(None, &ClientBase::default()).await
    }

    /// [`Pool::checkout`] for a client with startup parameters `client` (a connection opened
    /// with other parameters is never given to it), taking the idle connection with id
    /// `prefer` when there is one (a client's previous connection: it carries only that
    /// client's state, so no reset is owed), else the most recently used. Only when nobody
    /// waits: the preference never jumps the queue.
    pub async fn checkout_preferring(
        self: &Arc<Self>,
        prefer: Option<u64>,
        client: &ClientBase,
    ) -> Result<PoolGuard, CheckoutError> {
        let started = Instant::now();
        let r = self.checkout_inner(prefer, client).await;
        match &r {
            Ok(_) => {
                let waited = started.elapsed();
                self.metrics.checkout_wait(waited);
                self.counters.checkouts.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .wait_time_us
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            }
            Err(CheckoutError::Timeout(_)) => {
                self.metrics.checkout_timeout();
                self.counters
                    .checkout_timeouts
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        r
    }

    async fn checkout_inner(
        self: &Arc<Self>,
        prefer: Option<u64>,
        client: &ClientBase,
    ) -> Result<PoolGuard, CheckoutError> {
        let timeout = self.settings.checkout_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(CheckoutError::Closed);
            }
            enum Next {
                Ready(Conn),
                /// In a slot reserved in `total`, with these startup parameters.
                Open(Arc<SessionParams>),
                Wait(oneshot::Receiver<Conn>),
            }
            let mut stale = Vec::new();
            let next = {
                let mut s = self.lock();
                // Newcomers queue behind existing waiters: first come, first served.
                while s.waiters.front().is_some_and(|w| w.is_closed()) {
                    s.waiters.pop_front();
                }
                let mut found = None;
                if s.waiters.is_empty() {
                    let now = Instant::now();
                    // From the top: an unsaturated pool keeps a client's connection near it.
                    let mut preferred = prefer
                        .and_then(|p| s.idle.iter().rposition(|(id, _)| *id == p))
                        .map(|i| s.idle.remove(i));
                    while let Some((id, c)) = preferred.take().or_else(|| {
                        // The most recently used this client may be given (nearly always the
                        // top one: few pools mix clients of different startup parameters).
                        let i = s.idle.iter().rposition(|(_, c)| client.accepts(c))?;
                        Some(s.idle.remove(i))
                    }) {
                        if c.expired(now) || c.is_broken() {
                            s.total -= 1;
                            stale.push(c);
                        } else if client.accepts(&c) {
                            found = Some(c);
                            break;
                        } else {
                            s.idle.push((id, c));
                        }
                    }
                }
                match found {
                    Some(c) => Next::Ready(c),
                    None if s.total < self.settings.size => {
                        s.total += 1;
                        Next::Open(client.open_with())
                    }
                    // Full, and nobody waits, yet connections are idle: all opened with other
                    // clients' parameters. The oldest makes room for one that anyone may be
                    // given (so that a pool serving mixed clients ends up with those).
                    None if s.waiters.is_empty() && !s.idle.is_empty() => {
                        let (_, c) = s.idle.remove(0);
                        stale.push(c);
                        self.metrics.connection_replaced();
                        Next::Open(Arc::default())
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        s.waiters.push_back(tx);
                        Next::Wait(rx)
                    }
                }
            };
            stale.into_iter().for_each(|c| c.close());
            match next {
                Next::Ready(conn) => return Ok(self.guard(conn)),
                Next::Open(base) => return self.open_reserved(base, deadline).await,
                Next::Wait(rx) => {
                    // A connection handed over just as the wait ends (or as this future is
                    // dropped) must not vanish with the channel: the ticket returns it.
                    let mut ticket = WaitTicket {
                        pool: self,
                        rx: Some(rx),
                    };
                    let waited = match ticket.rx.as_mut() {
                        Some(rx) => tokio::time::timeout_at(deadline, rx).await,
                        None => return Err(CheckoutError::Closed),
                    };
                    if waited.is_ok() {
                        // Received (or closed): nothing left in the channel.
                        ticket.rx = None;
                    }
                    drop(ticket);
                    match waited {
                        Ok(Ok(conn)) => {
                            // Handed over directly by a release; it may have died since.
                            if conn.is_broken() {
                                self.discard(conn);
                                continue;
                            }
                            if !client.accepts(&conn) {
                                // Opened with another client's parameters: in its slot, one
                                // that anyone may be given.
                                conn.close();
                                self.metrics.connection_replaced();
                                return self.open_reserved(Arc::default(), deadline).await;
                            }
                            return Ok(self.guard(conn));
                        }
                        // Sender dropped: the pool is closing.
                        Ok(Err(_)) => return Err(CheckoutError::Closed),
                        Err(_) => {
                            return Err(CheckoutError::Timeout(timeout));
                        }
                    }
                }
            }
        }
    }

    /// Opens a connection in a slot already counted in `total`.
    async fn open_reserved(
        self: &Arc<Self>,
        base: Arc<SessionParams>,
        deadline: tokio::time::Instant,
    ) -> Result<PoolGuard, CheckoutError> {
        // If this future is dropped mid-open (the client's startup timed out), the
        // reservation gives the slot back.
        let reservation = Reservation { pool: self };
        // Boxed: connecting (TCP, TLS, authentication) is a large future that a checkout
        // rarely needs; inline, every waiting session would reserve room for it.
        let opened = tokio::time::timeout_at(deadline, Box::pin(self.open(base))).await;
        match opened {
            Ok(Ok(conn)) => {
                std::mem::forget(reservation);
                Ok(self.guard(conn))
            }
            Ok(Err(e)) => Err(CheckoutError::Connect(e)),
            Err(_) => Err(CheckoutError::Timeout(self.settings.checkout_timeout)),
        }
    }

    fn guard(self: &Arc<Self>, mut conn: Conn) -> PoolGuard {
        conn.last_used = Instant::now();
        PoolGuard {
            pool: Arc::clone(self),
            conn: Some(conn),
        }
    }

    /// Opens a connection with the startup parameters `base` (empty for one any client may be
    /// given).
    async fn open(&self, base: Arc<SessionParams>) -> Result<Conn, ServerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _connecting = StateCount::enter(&self.opening);
        let conn = ServerConn::connect(
            id,
            base,
            &self.database.target,
            &self.login,
            self.tls.as_ref(),
            self.database.allow_cleartext_password,
            self.settings.connect_timeout,
            self.settings.server_lifetime,
        )
        .await;
        match &conn {
            Ok(c) => {
                tracing::debug!(pool = ?self.key, server = c.id, "opened server connection");
            }
            Err(e) => {
                tracing::warn!(pool = ?self.key, error = %e, "opening a server connection failed")
            }
        }
        conn.map(Box::new)
    }

    /// A connection slot was given up (failed open, discard): if clients are waiting, open a
    /// replacement for them in the background.
    fn forget_one(self: &Arc<Self>) {
        let need_open = {
            let mut s = self.lock();
            s.total -= 1;
            let waiting = s.waiters.iter().any(|w| !w.is_closed());
            if waiting && s.total < self.settings.size && !self.closed.load(Ordering::Acquire) {
                s.total += 1;
                true
            } else {
                false
            }
        };
        if need_open {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                match pool.open(Arc::default()).await {
                    Ok(conn) => pool.checkin(conn),
                    Err(_) => {
                        // Don't retry in a tight loop: the waiters' own timeouts end their wait.
                        let mut s = pool.lock();
                        s.total -= 1;
                    }
                }
            });
        }
    }

    /// Returns a clean connection: to the first live waiter, else to the idle list.
    fn checkin(self: &Arc<Self>, mut conn: Conn) {
        let now = Instant::now();
        if self.closed.load(Ordering::Acquire) || conn.expired(now) {
            self.discard(conn);
            return;
        }
        conn.last_used = now;
        let mut s = self.lock();
        while let Some(w) = s.waiters.pop_front() {
            match w.send(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        s.idle.push((conn.id, conn));
    }

    fn discard(self: &Arc<Self>, conn: Conn) {
        conn.close();
        self.forget_one();
    }

    /// Counts a checked-out connection as being reset (the `testing` state) while the returned
    /// value lives.
    pub fn testing(&self) -> StateCount<'_> {
        StateCount::enter(&self.testing)
    }

    /// Server connections by state: (active, idle, testing, connecting).
    pub fn states(&self) -> (usize, usize, usize, usize) {
        let st = self.stats();
        let testing = self.testing.load(Ordering::Relaxed);
        let connecting = self.opening.load(Ordering::Relaxed);
        let active = st
            .total
            .saturating_sub(st.idle)
            .saturating_sub(testing)
            .saturating_sub(connecting);
        (active, st.idle, testing, connecting)
    }

    /// Closes idle connections past the idle timeout or lifetime, and opens connections up to
    /// `min_idle`. Run periodically by [`Pool::maintain`].
    pub async fn maintain_once(self: &Arc<Self>) {
        let now = Instant::now();
        let (stale, to_open) = {
            let mut s = self.lock();
            let min_idle = self.settings.min_idle;
            let idle_timeout = self.settings.server_idle_timeout;
            let mut keep = Vec::with_capacity(s.idle.len());
            let mut stale = Vec::new();
            // Oldest-used first, so the survivors are the warm ones.
            let idle = std::mem::take(&mut s.idle);
            let mut remaining = idle.len();
            for (id, c) in idle {
                let idle_too_long = idle_timeout
                    .is_some_and(|t| now.duration_since(c.last_used) >= t && remaining > min_idle);
                if c.expired(now) || idle_too_long || c.is_broken() {
                    stale.push(c);
                    remaining -= 1;
                } else {
                    keep.push((id, c));
                }
            }
            s.idle = keep;
            s.total -= stale.len();
            let want = min_idle
                .saturating_sub(s.idle.len())
                .min(self.settings.size.saturating_sub(s.total));
            s.total += want;
            (stale, want)
        };
        stale.into_iter().for_each(|c| c.close());
        for _ in 0..to_open {
            match self.open(Arc::default()).await {
                Ok(c) => self.checkin(c),
                Err(_) => {
                    let mut s = self.lock();
                    s.total -= 1;
                }
            }
        }
    }

    /// Housekeeping loop; ends when the pool is closed.
    pub async fn maintain(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed.load(Ordering::Acquire) {
            tick.tick().await;
            self.maintain_once().await;
            let (active, idle, testing, connecting) = self.states();
            self.metrics.set_server_connections(
                active,
                idle,
                testing,
                connecting,
                self.settings.size,
            );
        }
    }

    /// Stops handing out connections and closes the idle ones; waiters are told the pool closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = {
            let mut s = self.lock();
            s.waiters.clear();
            let idle = std::mem::take(&mut s.idle);
            s.total -= idle.len();
            idle
        };
        idle.into_iter().for_each(|(_, c)| c.close());
    }
}

/// One connection counted in a state counter while this lives.
pub struct StateCount<'a>(&'a AtomicUsize);

impl<'a> StateCount<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        StateCount(counter)
    }
}

impl Drop for StateCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot counted in `total` for a connection being opened; dropped unused, it is given back.
struct Reservation<'a> {
    pool: &'a Arc<Pool>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.forget_one();
    }
}

/// A place in the waiters' queue. Dropped while a connection may be in the channel (timeout,
/// cancelled checkout), it closes the channel and checks such a connection back in.
struct WaitTicket<'a> {
    pool: &'a Arc<Pool>,
    rx: Option<oneshot::Receiver<Conn>>,
}

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(conn) = rx.try_recv() {
                self.pool.checkin(conn);
            }
        }
    }
}

/// A checked-out server connection. `release()` returns it to the pool; dropping it without
/// release closes it, because only the session knows whether it is clean.
pub struct PoolGuard {
    pool: Arc<Pool>,
    conn: Option<Conn>,
}

impl PoolGuard {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns a connection the caller knows is clean: idle (ReadyForQuery 'I'), nothing in
    /// flight, nothing buffered.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.buf.is_empty() {
                self.pool.checkin(conn);
            } else {
                self.pool.discard(conn);
            }
        }
    }

    /// Closes the connection and frees its slot.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.discard(conn);
        }
    }
}

impl std::fmt::Debug for PoolGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolGuard")
            .field("pool", &self.pool.key)
            .field("server", &self.conn.as_ref().map(|c| c.id))
            .finish()
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.discard(conn);
        }
    }
}

impl Deref for PoolGuard {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `conn` is Some until release/discard consume the guard.
        self.conn.as_deref().expect("PoolGuard used after release")
    }
}

impl DerefMut for PoolGuard {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_deref_mut()
            .expect("PoolGuard used after release")
    }
}
