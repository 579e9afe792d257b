//! The relay loop of one client session: frames from the client go to its server connection,
//! frames from the server go back, and the loop decides — from ReadyForQuery, never from
//! guesses — when a transaction-mode server connection can go back to the pool.
//!
//! Bytes are forwarded as they arrived (no re-encoding). Only the messages a decision needs are
//! decoded; large rows and COPY data stream through without being buffered whole.
//!
//! What can go wrong, and what the loop does:
//! - the client vanishes mid-query or mid-transaction: cancel the query, wait for the server,
//!   roll back, reset, and only then return the connection — or close it;
//! - something that cannot be shared between clients (LISTEN, SQL PREPARE, temp tables, …) in
//!   transaction mode: refused with an error; the session stays usable;
//! - a session-level `SET` in transaction mode: recorded as the client's own state and replayed
//!   on whichever server the client gets next; never seen by another client.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::app::App;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::policy::shape;
use crate::policy::{Denial, Mode, Policy, Verdict, Via};
use crate::pool::{CheckoutError, ClientBase, Pool, PoolGuard, ServerError};
use crate::protocol::frame::{self, Chunk, FrameError, FrameScanner};
use crate::protocol::messages::{self as msg, TxStatus};
use crate::session::cancel::Registration;
use crate::session::executed::{Described, Executions};
use crate::session::io::send_all;
use crate::session::prepared::{
    ClientStatements, MAX_CLIENT_STATEMENTS, Replies, ReplyAction, StatementDef, Synthetic,
};
use crate::session::registry::{ClientState, SessionInfo};
use crate::session::state::SessionParams;
use crate::session::statement::{self, PlainShapes, SessionEffect};

/// How long a session waits for a cancel it forwarded to land before giving up the server.
const CANCEL_SETTLE: Duration = Duration::from_secs(5);
/// How long cleanup after a vanished client may take before the server connection is closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client stays idle (no server, nothing buffered) before its buffers are freed.
const SHED_BUFFERS_AFTER: Duration = Duration::from_secs(1);
/// Server messages we decode are small; anything we only forward is bounded by the protocol.
const MAX_INSPECTED_SERVER_MESSAGE: usize = 64 * 1024 * 1024;
/// Transaction mode: portals one client may have open at once (PostgreSQL has no limit; a
/// pooler must bound what it keeps per client). Portals end with their transaction.
pub const MAX_CLIENT_PORTALS: usize = 10_000;

fn inspect_client(tag: u8) -> bool {
    // Everything but COPY data: those stream through.
    !matches!(tag, b'd')
}

fn inspect_server(tag: u8) -> bool {
    // Everything that completes an answer to a client message (see `prepared::Replies`), and
    // what changes the session's state. Rows and COPY data stream through.
    matches!(
        tag,
        b'Z' | b'C' | b'E' | b'I' | b's' | b'G' | b'W' | b'1' | b'2' | b'3' | b'T' | b'n' | b'S'
    )
}

/// Why the session ended (for the log).
#[derive(Debug)]
pub enum SessionEnd {
    ClientClosed,
    ClientError(ClientError),
    Io(std::io::Error),
}

/// A statement sent to the server whose outcome changes the client's tracked session state.
#[derive(Debug)]
enum Expect {
    /// A statement and its session effect (if any); `true` if it runs inside the implicit
    /// transaction of a multi-statement Query.
    Statement(Option<(SessionEffect, String)>, bool),
    SyncPoint,
}

/// A statement certain to fail with an error naming this marker: injected to make the server
/// abort a transaction in which pgward refused a statement.
const REFUSAL_MARKER: &str = "pgward_refused_statement";
const REFUSAL_MARKER_QUERY: &str = "SELECT pgward_refused_statement";

fn put_failing_parse(out: &mut BytesMut) {
    use bytes::BufMut;
    let name = b"pgward_refused\0";
    let query = REFUSAL_MARKER_QUERY.as_bytes();
    out.put_u8(b'P');
    out.put_i32((4 + name.len() + query.len() + 1 + 2) as i32);
    out.put_slice(name);
    out.put_slice(query);
    out.put_u8(0);
    out.put_i16(0);
}

/// One step of writing to a server while reading from it.
enum ServerIo {
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
}

/// What a pending ReadyForQuery answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
    /// A simple Query or FunctionCall.
    Query,
    /// An extended-protocol Sync.
    Sync,
}

enum Step {
    /// Frame consumed.
    Next,
    /// Leave this frame in the buffer until the server has answered what is outstanding.
    Pause,
    /// End the session.
    Close(Option<ClientError>),
}

pub struct Relay<S> {
    app: Arc<App>,
    client: S,
    cbuf: BytesMut,
    cscan: FrameScanner,
    out: BytesMut,
    pool: Arc<Pool>,
    mode: PoolMode,
    server: Option<PoolGuard>,
    sscan: FrameScanner,
    /// Shapes of the client's statements known to have no session effect (a lexer skipped).
    plain_shapes: PlainShapes,
    params: Arc<SessionParams>,
    cancel: Registration,
    max_message: usize,

    /// Query, Sync and FunctionCall messages forwarded and not yet answered by ReadyForQuery.
    pending_syncs: usize,
    /// What each of them was, oldest first.
    pending_kinds: VecDeque<SyncKind>,
    /// The client has ended its COPY FROM STDIN (CopyDone/CopyFail); Syncs count again.
    client_copy_done: bool,
    /// Extended-protocol messages forwarded since the last Sync.
    extended_open: bool,
    /// ReadyForQuery messages we caused ourselves and must not pass on.
    swallow_ready: usize,
    /// The server's last reported transaction status.
    tx_status: TxStatus,
    copy_in: bool,
    /// Whether the CopyData message now streaming from the client goes to the server.
    forwarding_copy_data: bool,
    /// After a refused extended-protocol message: discard until Sync, as PostgreSQL does.
    skip_until_sync: bool,
    /// A failing statement was injected to abort the transaction around a refusal.
    abort_injected: bool,
    /// Its error (recognised by [`REFUSAL_MARKER`]) is still to come and must not be relayed.
    swallow_marker_error: bool,
    /// The client's own pipeline failed before the injected statement ran.
    abort_saw_client_error: bool,

    // Transaction mode only: tracking of session state.
    expects: VecDeque<Expect>,
    /// Session changes made inside a transaction block: kept if it commits.
    in_block: bool,
    block_effects: Vec<(SessionEffect, String)>,
    /// Session changes of the multi-statement Query now running, kept if it succeeds.
    segment_effects: Vec<(SessionEffect, String)>,
    /// The unnamed statement parsed on the current server, and its effect.
    unnamed_statement: Option<Option<(SessionEffect, String)>>,
    /// The portals bound during this turn on the server: what executing each does to session
    /// state, and the segment it was bound in. At most [`MAX_CLIENT_PORTALS`].
    portals: std::collections::HashMap<String, (Option<(SessionEffect, String)>, u64)>,
    /// The session ends here (its client certificate expires).
    deadline: Option<tokio::time::Instant>,
    /// Set when handling server bytes failed part-way: the connection is closed, not reused.
    server_state_unknown: bool,
    /// ReadyForQuery messages of pgward's own preparation queries still to come; everything
    /// the server sends until then is dropped.
    discard_until_ready: usize,
    /// CommandComplete messages still owed by the hand-over reset pgward sent ahead of the
    /// client's messages (see [`Reset::statements`]). Until they are in, an error means the
    /// reset failed: the connection still carries another client's state.
    reset_owed: usize,
    /// A Sync of the client's went out behind an unconfirmed reset. The server stops skipping
    /// at a Sync, so the client's next message waits for the reset's answers.
    sync_behind_reset: bool,

    // Transaction mode only: named prepared statements (see `prepared`).
    /// This client's named statements.
    statements: ClientStatements,
    /// The answers owed to the client, pgward's own swallowed or synthesized among them.
    replies: Replies,
    /// Segments (Syncs and Queries) sent: a Parse not yet answered serves only its own segment.
    segment: u64,
    /// Named statements kept per server connection; 0 refuses them.
    max_prepared: usize,
    /// Bytes of named statements (text, parameter types, names) this client may hold.
    max_statement_bytes: usize,
    /// Bytes for the server, assembled when client frames had to be rewritten.
    sout: BytesMut,
    /// Bytes for the client, assembled when server messages were swallowed or answers made up.
    cout: BytesMut,

    /// The statement policy of this client's user; `None` when it has none (or it is off).
    policy: Option<Arc<Policy>>,
    /// Who the client is, for learned statements.
    user: String,
    /// This session's entry in the registry of live sessions.
    info: Option<Arc<SessionInfo>>,
    /// Counts this client in the client-connection metric by state.
    gauge: Option<crate::metrics::ClientGauge>,
    /// Who this session is, for its audit events.
    audit: Option<AuditContext>,
    /// This policy's metric handles (labels resolved once per session).
    policy_metrics: Option<crate::metrics::PolicyMetrics>,
    /// Since when the server owes answers (for the query-duration histogram).
    busy_since: Option<std::time::Instant>,
    /// `statement.executed` events are wanted for some statements.
    audit_statements: bool,
    /// Statements sent and not yet answered, for `statement.executed`.
    executions: Executions,
    /// What the unnamed statement and the portals are, for `statement.executed`.
    unnamed_described: Option<Arc<Described>>,
    portal_described: Vec<(String, Arc<Described>)>,
    /// Session mode: named statements pass through unmapped; what they are, by name.
    named_described: std::collections::HashMap<String, Arc<Described>>,
    /// The configuration generation this session's pool and policy come from.
    generation: u64,
    /// Named statements a reloaded policy denies: using one is refused with this error until
    /// the client closes the name or prepares it again.
    revoked: std::collections::HashMap<String, ClientError>,
    /// Transaction mode: the pool a reload routes this session to, used from the next checkout.
    next_pool: Option<Arc<Pool>>,
    /// The id of the server connection this client used last: asked for first at the next
    /// checkout, since it needs no reset when nobody used it in between.
    last_server: Option<u64>,
    /// The startup parameters server connections may have been opened with for this client
    /// (accepted by the server at its login).
    base: ClientBase,
}

/// What audit events of one session carry.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub sid: u64,
    pub peer: std::net::SocketAddr,
    pub identity: Arc<crate::audit::event::Identity>,
    pub database: Arc<str>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: Arc<App>,
        client: S,
        cbuf: BytesMut,
        pool: Arc<Pool>,
        server: Option<PoolGuard>,
        params: Arc<SessionParams>,
        cancel: Registration,
    ) -> Self {
        let mode = pool.settings().mode;
        let max_prepared = pool.database.max_prepared_statements;
        let max_statement_bytes = pool.database.max_client_statement_bytes;
        // Accepted when a login had the server accept these values (this client's, or a
        // recent one with the same): the pool's own copy, so checkouts compare pointers.
        let base = pool.client_base(&params);
        let max_message = app.config().server.max_message_bytes;
        Relay {
            app,
            client,
            cbuf,
            cscan: FrameScanner::new(),
            out: BytesMut::with_capacity(256),
            pool,
            mode,
            server,
            sscan: FrameScanner::new(),
            plain_shapes: PlainShapes::default(),
            cancel,
            max_message,
            pending_syncs: 0,
            pending_kinds: VecDeque::new(),
            client_copy_done: false,
            extended_open: false,
            swallow_ready: 0,
            tx_status: TxStatus::Idle,
            copy_in: false,
            forwarding_copy_data: false,
            skip_until_sync: false,
            abort_injected: false,
            swallow_marker_error: false,
            abort_saw_client_error: false,
            expects: VecDeque::new(),
            in_block: false,
            block_effects: Vec::new(),
            segment_effects: Vec::new(),
            unnamed_statement: None,
            portals: std::collections::HashMap::new(),
            deadline: None,
            server_state_unknown: false,
            discard_until_ready: 0,
            reset_owed: 0,
            sync_behind_reset: false,
            statements: ClientStatements::default(),
            replies: Replies::default(),
            segment: 0,
            max_prepared,
            max_statement_bytes,
            sout: BytesMut::new(),
            cout: BytesMut::new(),
            policy: None,
            user: String::new(),
            info: None,
            gauge: None,
            audit: None,
            policy_metrics: None,
            busy_since: None,
            audit_statements: false,
            executions: Executions::default(),
            unnamed_described: None,
            portal_described: Vec::new(),
            named_described: std::collections::HashMap::new(),
            generation: 0,
            revoked: std::collections::HashMap::new(),
            next_pool: None,
            last_server: None,
            base,
            params,
        }
    }

    /// The server connection the login used (transaction mode: back in the pool already).
    pub fn after_login_on(mut self, server: Option<u64>) -> Self {
        self.last_server = server;
        self
    }

    /// The configuration generation the session's pool and policy were chosen from.
    pub fn routed_at(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Reports this session's state and counters in `info` (admin console, metrics).
    pub fn with_info(
        mut self,
        info: Arc<SessionInfo>,
        gauge: crate::metrics::ClientGauge,
        audit: AuditContext,
    ) -> Self {
        self.info = Some(info);
        self.gauge = Some(gauge);
        self.audit = Some(audit);
        self.audit_statements = self.app.audit.wants_statement(true);
        self.set_state(if self.server.is_some() {
            ClientState::Active
        } else {
            ClientState::Idle
        });
        self
    }

    /// Applies `policy` (if active) to every statement of the session of `user`.
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>, user: &str) -> Self {
        self.policy = policy.filter(|p| p.active());
        self.policy_metrics = self
            .policy
            .as_ref()
            .map(|p| self.app.metrics.policy(&p.name));
        self.user = user.to_owned();
        self
    }

    /// Ends the session at `at` (e.g. when the client certificate expires).
    pub fn with_deadline(mut self, at: Option<std::time::SystemTime>) -> Self {
        self.deadline = at.map(|t| {
            let left = t
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        self
    }

    fn tracking(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    /// True while the server connection is between transactions with nothing in flight.
    fn server_idle(&self) -> bool {
        // Nothing half-sent in either direction: a partial client message would make the
        // server read the next client's bytes as its continuation.
        !self.cscan.mid_message()
            && self.discard_until_ready == 0
            && self.reset_owed == 0
            && self.pending_syncs == 0
            && !self.extended_open
            && self.swallow_ready == 0
            && self.replies.is_empty()
            && self.tx_status == TxStatus::Idle
            && !self.copy_in
            && !self.sscan.mid_message()
            && self.server.as_ref().is_some_and(|s| s.buf.is_empty())
    }

    /// Runs the session until the client leaves or an error ends it. The relay lives in a box
    /// of its own: an `async fn` taking a large `self` by value keeps it twice in its future
    /// (the argument and the local), and every session's task carries that future.
    pub async fn run(self: Box<Self>) -> SessionEnd {
        let mut relay = self;
        let end = relay.run_loop().await;
        relay.finish(&end).await;
        end
    }

    async fn run_loop(&mut self) -> SessionEnd {
        let shutdown = self.app.shutdown.clone();
        // One registration for the whole session: creating `cancelled()` anew each turn of the
        // loop would lock the token's waiter list twice per message.
        let mut shutdown_signal = std::pin::pin!(shutdown.cancelled_owned());
        let mut shutdown_seen = false;
        let (client_idle, idle_in_tx) = {
            let c = self.app.config();
            (
                c.server.client_idle_timeout,
                c.server.idle_in_transaction_timeout,
            )
        };
        let mut paused = false;
        loop {
            // Before anything the client sent is acted on: a reload applies from the next
            // transaction (transaction mode) or the next idle point (session mode).
            if !paused
                && self.generation != self.app.generation()
                && (self.server.is_none() || self.server_idle())
                && let Err(e) = self.adopt_reload()
            {
                return SessionEnd::ClientError(e);
            }
            if !paused || self.pending_syncs == 0 {
                match self.process_client().await {
                    Ok(p) => paused = p,
                    Err(end) => return end,
                }
            }
            if self.mode == PoolMode::Transaction && self.server.is_some() && self.server_idle() {
                self.release_server().await;
            }
            let idle_outside_tx = self.server.is_none() || self.server_idle();
            if shutdown_seen && idle_outside_tx {
                return SessionEnd::ClientError(ClientError::ShuttingDown);
            }

            let waiting_on_client = self.pending_syncs == 0 && !self.extended_open;
            let timer = if idle_outside_tx {
                client_idle
            } else if waiting_on_client {
                idle_in_tx
            } else {
                None
            };
            let sleep = async {
                match timer {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let deadline = self.deadline;
            let expired = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let read_client = !paused;
            // Room for a good read, except for a client whose buffers were shed while idle: its
            // next read takes what it needs and the loop grows the buffer after it.
            if self.cbuf.capacity() > 0 {
                frame::make_room(&mut self.cbuf);
            }
            if let Some(server) = self.server.as_mut() {
                frame::make_room(&mut server.buf);
            }
            match self.server.as_mut() {
                None => {
                    let mut sleep = std::pin::pin!(sleep);
                    let mut expired = std::pin::pin!(expired);
                    // An idle client gives its buffers back after a while: 10,000 idle clients
                    // should not hold 10,000 read buffers (see `shed_buffers`).
                    let sheddable = read_client && self.holds_buffers();
                    let mut shed = std::pin::pin!(async {
                        if sheddable {
                            tokio::time::sleep(SHED_BUFFERS_AFTER).await
                        } else {
                            std::future::pending().await
                        }
                    });
                    let mut shed_done = false;
                    loop {
                        tokio::select! {
                            r = self.client.read_buf(&mut self.cbuf), if read_client => match r {
                                Ok(0) => return SessionEnd::ClientClosed,
                                Ok(n) => {
                                    self.count_from_client(n);
                                    break;
                                }
                                Err(e) => return SessionEnd::Io(e),
                            },
                            _ = &mut sleep => return SessionEnd::ClientError(ClientError::ClientIdleTimeout),
                            _ = &mut expired => return SessionEnd::ClientError(ClientError::CertificateExpired),
                            _ = &mut shutdown_signal, if !shutdown_seen => {
                                shutdown_seen = true;
                                break;
                            }
                            _ = &mut shed, if !shed_done => {
                                shed_done = true;
                                self.shed_buffers();
                            }
                        }
                    }
                }
                Some(guard) => {
                    let server: &mut crate::pool::ServerConn = guard;
                    tokio::select! {
                        r = self.client.read_buf(&mut self.cbuf), if read_client => match r {
                            Ok(0) => return SessionEnd::ClientClosed,
                            Ok(n) => self.count_from_client(n),
                            Err(e) => return SessionEnd::Io(e),
                        },
                        r = server.stream.read_buf(&mut server.buf) => match r {
                            Ok(0) | Err(_) => {
                                return SessionEnd::ClientError(ClientError::ServerConnectionLost);
                            }
                            Ok(_) => {
                                if let Err(end) = self.process_server().await {
                                    return end;
                                }
                            }
                        },
                        _ = sleep => {
                            return SessionEnd::ClientError(if idle_outside_tx {
                                ClientError::ClientIdleTimeout
                            } else {
                                ClientError::IdleInTransactionTimeout
                            });
                        }
                        _ = expired => return SessionEnd::ClientError(ClientError::CertificateExpired),
                        _ = &mut shutdown_signal, if !shutdown_seen => shutdown_seen = true,
                    }
                }
            }
        }
    }

    /// Whether an idle session still holds buffer memory it could give back.
    fn holds_buffers(&self) -> bool {
        self.cbuf.is_empty()
            && self.cbuf.capacity() > 0
            && self.out.is_empty()
            && self.sout.is_empty()
            && self.cout.is_empty()
    }

    /// Frees the (empty) client read buffer and the staging buffers of an idle session. The
    /// next read allocates again; what is only a few bytes per idle client adds up to most of a
    /// pooler's memory with thousands of them.
    fn shed_buffers(&mut self) {
        self.cbuf = BytesMut::new();
        self.out = BytesMut::new();
        self.sout = BytesMut::new();
        self.cout = BytesMut::new();
        self.plain_shapes.clear();
    }

    fn count_from_client(&self, n: usize) {
        if let Some(i) = &self.info {
            SessionInfo::add(&i.bytes_from_client, n as u64);
        }
    }

    fn count_to_client(&self, n: usize) {
        if let Some(i) = &self.info {
            SessionInfo::add(&i.bytes_to_client, n as u64);
        }
    }

    fn set_state(&mut self, s: ClientState) {
        if let Some(i) = &self.info {
            i.set_state(s);
        }
        if let Some(g) = &mut self.gauge {
            g.set_state(match s {
                ClientState::Idle => crate::metrics::ClientState::Idle,
                ClientState::Active => crate::metrics::ClientState::Active,
                ClientState::Waiting => crate::metrics::ClientState::Waiting,
            });
        }
    }

    // ------------------------------------------------------------------ client → server

    /// Handles every complete client frame in the buffer. Returns true if it paused on a frame
    /// that must wait for the server's outstanding answers.
    async fn process_client(&mut self) -> Result<bool, SessionEnd> {
        let mut pos = 0;
        let mut fwd = 0;
        let mut paused = false;
        loop {
            let chunk = match self
                .cscan
                .next(&self.cbuf[pos..], inspect_client, self.max_message)
            {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    self.forward_client(fwd, pos).await?;
                    self.cbuf.advance(pos);
                    return Err(protocol_violation(e));
                }
            };
            match chunk {
                Chunk::Passthrough {
                    len, message_start, ..
                } => {
                    // CopyData goes to the server only while it is in COPY FROM STDIN.
                    // PostgreSQL ignores it otherwise, and a CopyData the server would wait
                    // to complete could swallow the next client's messages: outside COPY it
                    // is dropped here. The decision is per message, kept for its continuation.
                    if message_start {
                        self.forwarding_copy_data =
                            self.server.is_some() && self.copy_in && !self.skip_until_sync;
                    }
                    if !self.forwarding_copy_data {
                        self.forward_client(fwd, pos).await?;
                        fwd = pos + len;
                    }
                    pos += len;
                }
                Chunk::Whole(frame) => {
                    let (tag, len) = (frame.tag, frame.len);
                    let step = self.client_frame(tag, pos, len, &mut fwd).await?;
                    match step {
                        (Step::Next, forwarded) => {
                            if !forwarded {
                                // Flush what came before it, skip this frame.
                                self.forward_client(fwd, pos).await?;
                                fwd = pos + len;
                            }
                            pos += len;
                        }
                        (Step::Pause, _) => {
                            paused = true;
                            break;
                        }
                        (Step::Close(err), _) => {
                            self.forward_client(fwd, pos).await?;
                            self.cbuf.advance(pos);
                            return Err(match err {
                                Some(e) => SessionEnd::ClientError(e),
                                None => SessionEnd::ClientClosed,
                            });
                        }
                    }
                }
            }
        }
        self.forward_client(fwd, pos).await?;
        self.cbuf.advance(pos);
        Ok(paused)
    }

    /// Writes `cbuf[from..to]` to the server. While the server does not take more, what it
    /// sends is read and relayed: a server blocked writing results stops reading, so a relay
    /// that only waited on its write would deadlock a long pipeline.
    ///
    /// Frames rewritten on the way (named statements) are assembled in `sout`: then the range
    /// joins them there and everything goes out in one write.
    async fn forward_client(&mut self, from: usize, to: usize) -> Result<(), SessionEnd> {
        if !self.sout.is_empty() {
            if from < to {
                self.sout.extend_from_slice(&self.cbuf[from..to]);
            }
            let end = self.sout.len();
            let r = self.write_server(true, 0, end).await;
            self.sout.clear();
            return r;
        }
        if from >= to {
            return Ok(());
        }
        self.write_server(false, from, to).await
    }

    /// Writes `sout[from..to]` (`staged`) or `cbuf[from..to]` to the server; see
    /// [`Relay::forward_client`].
    async fn write_server(
        &mut self,
        staged: bool,
        from: usize,
        to: usize,
    ) -> Result<(), SessionEnd> {
        let lost = || SessionEnd::ClientError(ClientError::ServerConnectionLost);
        let mut written = from;
        loop {
            let Some(conn) = self.server.as_deref_mut() else {
                return Ok(());
            };
            frame::make_room(&mut conn.buf);
            let pending = if staged {
                &self.sout[written..to]
            } else {
                &self.cbuf[written..to]
            };
            let step = std::future::poll_fn(|cx| {
                let wrote = if pending.is_empty() {
                    // Everything handed over: make TLS push out its last records.
                    Pin::new(&mut conn.stream).poll_flush(cx).map_ok(|()| 0)
                } else {
                    Pin::new(&mut conn.stream).poll_write(cx, pending)
                };
                if let Poll::Ready(r) = wrote {
                    return Poll::Ready(ServerIo::Wrote(r));
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                    Poll::Ready(r) => Poll::Ready(ServerIo::Read(r)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match step {
                ServerIo::Wrote(Ok(0)) if written == to => return Ok(()),
                ServerIo::Wrote(Ok(0)) | ServerIo::Wrote(Err(_)) => return Err(lost()),
                ServerIo::Wrote(Ok(n)) => written += n,
                ServerIo::Read(Ok(0)) | ServerIo::Read(Err(_)) => return Err(lost()),
                ServerIo::Read(Ok(_)) => self.process_server().await?,
            }
        }
    }

    /// Decides about one whole client frame at `cbuf[pos..pos+len]`. Returns the step and
    /// whether the frame is forwarded (left in the forward range).
    async fn client_frame(
        &mut self,
        tag: u8,
        pos: usize,
        len: usize,
        fwd: &mut usize,
    ) -> Result<(Step, bool), SessionEnd> {
        if self.sync_behind_reset && self.reset_owed > 0 && tag != b'X' {
            // Had the reset failed, the server would skip the client's messages only up to
            // its Sync: what follows waits until the reset is confirmed (resumed when that
            // Sync is answered, after the reset's own answers).
            return Ok((Step::Pause, false));
        }
        if (self.skip_until_sync || self.replies.skipping_until_sync())
            && tag != b'S'
            && tag != b'X'
        {
            // Skipped until Sync, as PostgreSQL does after an error: after pgward's refusal
            // (`skip_until_sync`), or after the server's error with no Sync queued behind it
            // (the server skips them; forwarding them would make pgward answer or change
            // statements the server never sees).
            return Ok((Step::Next, false));
        }
        if matches!(tag, b'c' | b'f') && !(self.copy_in && self.server.is_some()) {
            // CopyDone/CopyFail outside COPY: PostgreSQL ignores them; so do we.
            return Ok((Step::Next, false));
        }
        if self.copy_in && !matches!(tag, b'c' | b'f' | b'H' | b'S' | b'X') {
            // Anything else during COPY FROM STDIN is a client bug; PostgreSQL would fail the
            // COPY. Ending the session lets cleanup abort the COPY cleanly.
            return Ok((
                Step::Close(Some(ClientError::ProtocolViolation {
                    reason: format!("unexpected message type {tag} during COPY FROM STDIN"),
                })),
                false,
            ));
        }
        let body_range = pos + 5..pos + len;
        match tag {
            b'X' => return Ok((Step::Close(None), false)),
            b'S' if self.skip_until_sync => {
                if self.pending_syncs > 0 {
                    return Ok((Step::Pause, false));
                }
                self.skip_until_sync = false;
                self.out.clear();
                let status = self.client_status();
                msg::put_ready(&mut self.out, status);
                self.write_out().await?;
                return Ok((Step::Next, false));
            }
            b'Q' | b'P' | b'B' | b'D' | b'C' | b'E' | b'S' | b'H' | b'F' | b'c' | b'f' => {}
            b'p' => {
                return Ok((
                    Step::Close(Some(ClientError::ProtocolViolation {
                        reason: "unexpected password message".into(),
                    })),
                    false,
                ));
            }
            other => {
                return Ok((
                    Step::Close(Some(ClientError::ProtocolViolation {
                        reason: format!("invalid frontend message type {other}"),
                    })),
                    false,
                ));
            }
        }

        if self.tracking()
            && self.pending_syncs > 0
            && self.replies.any_unsettled()
            && named_statement_target(tag, &self.cbuf[body_range.clone()])
                .is_some_and(|name| self.replies.unsettled_before(name))
        {
            // The name was changed in an earlier segment whose answers are not all in: whether
            // that change happened decides what PostgreSQL does with this message, and a change
            // made now must not be undone by that one's error. Wait for them (no cost unless a
            // client pipelines a name's use behind its own unanswered Parse or Close).
            return Ok((Step::Pause, false));
        }

        // The statement policy first: a denied statement never reaches a server.
        if self.policy.is_some() {
            let (refusal, event) = self.policy_check(tag, &body_range)?;
            if let Some(err) = refusal {
                self.forward_client(*fwd, pos).await?;
                *fwd = pos;
                let step = self.refuse(tag, err.clone()).await?;
                // A paused refusal is judged again when it resumes: record it only once,
                // when the client is actually told.
                if !matches!(step.0, Step::Pause) {
                    if let Some(m) = &self.policy_metrics {
                        m.denied();
                    }
                    tracing::warn!(reason = %err.message(), "statement denied");
                    if let Some(ev) = event {
                        self.app.audit.emit(ev).await;
                    }
                }
                return Ok(step);
            }
            if let Some(ev) = event {
                self.app.audit.emit(ev).await;
            }
        }

        if tag == b'B' {
            self.forget_dead_portals();
        }

        // Decide before taking a server: a refusal needs none.
        let decision = if self.tracking() {
            self.decide_transaction_mode(tag, &body_range)?
        } else {
            Decision::Forward(None)
        };
        let track = match decision {
            Decision::Refuse(err) => {
                // Flush what precedes it first, then answer in order.
                self.forward_client(*fwd, pos).await?;
                *fwd = pos;
                return self.refuse(tag, err).await;
            }
            Decision::Local(local) => return self.answer_locally(tag, local).await,
            Decision::Wait => return Ok((Step::Pause, false)),
            Decision::Forward(track) => track.unwrap_or(Tracked::Nothing),
        };

        if let Tracked::NamedParse { name, def } = &track
            && self.server.is_none()
            && def.validated()
        {
            // A statement some server has accepted: no server needed to accept it again
            // (see `StatementDef::validated`). Nothing is owed without a server, so the
            // answer goes out now.
            let undo = self.statements.insert(name, Arc::clone(def));
            self.replies
                .push_synthetic(Synthetic::ParseComplete, Some(undo));
            self.write_due_synthetic().await?;
            return Ok((Step::Next, false));
        }

        if tag == b'S' && self.server.is_none() && self.tracking() {
            // Nothing is open without a server (a client's Close of a statement needs none):
            // answer the Sync as the server would, without taking a connection for it.
            self.out.clear();
            msg::put_ready(&mut self.out, TxStatus::Idle);
            self.write_out().await?;
            return Ok((Step::Next, false));
        }

        if self.server.is_none() {
            // Nothing before this frame in the batch was forwarded (no server), so the
            // forward range is empty and taking a server now keeps the order.
            if let Err(e) = self.acquire_server().await {
                return match e {
                    Acquire::Refuse(err) => self.refuse(tag, err).await,
                    Acquire::Fatal(err) => Ok((Step::Close(Some(err)), false)),
                };
            }
        }
        if self.audit_statements {
            self.track_execution(tag, pos + 5..pos + len, &track);
        }
        match track {
            Tracked::NamedParse { name, def } => {
                self.stage_preceding(fwd, pos);
                *fwd = pos + len;
                self.extended_open = true;
                self.forward_named_parse(name, def).await?;
            }
            Tracked::NamedBind { portal, def } => {
                self.stage_preceding(fwd, pos);
                *fwd = pos + len;
                self.extended_open = true;
                self.ensure_prepared(&def);
                // Bind body: portal NUL, statement NUL, the rest (never decoded here).
                let body = &self.cbuf[pos + 5..pos + len];
                let portal_end = portal.len() + 1;
                let stmt_end = body[portal_end..]
                    .iter()
                    .position(|&b| b == 0)
                    .map(|i| portal_end + i + 1)
                    .unwrap_or(body.len());
                def.put_renamed(&mut self.sout, b'B', &body[..portal_end], &body[stmt_end..]);
                self.replies.push_renamed();
                self.portals
                    .insert(portal, (def.effect.clone(), self.segment));
            }
            Tracked::NamedDescribe(def) => {
                self.stage_preceding(fwd, pos);
                *fwd = pos + len;
                self.extended_open = true;
                self.ensure_prepared(&def);
                def.put_renamed(&mut self.sout, b'D', b"S", b"");
                self.replies.push_renamed();
            }
            track => self.note_forwarded(tag, track),
        }
        Ok((Step::Next, true))
    }

    /// Notes what a forwarded frame means for `statement.executed`: a Query or an Execute
    /// starts a statement, a Sync closes a pipeline; Parse and Bind say which statement a
    /// portal runs.
    fn track_execution(&mut self, tag: u8, body: std::ops::Range<usize>, track: &Tracked) {
        use crate::audit::codes::{Protocol, StatementKind};
        let body = &self.cbuf[body];
        let wanted = |d: &Described| {
            self.app
                .audit
                .wants_statement(d.kind == StatementKind::Write)
        };
        match tag {
            b'Q' => {
                if let Ok(sql) = msg::decode_query_bytes(body) {
                    let d = self.app.descriptions.describe(sql);
                    let w = wanted(&d);
                    self.executions.sent(d, Protocol::Simple, w);
                }
            }
            b'P' => {
                if let Ok((name, sql)) = msg::decode_parse_raw(body) {
                    let d = self.app.descriptions.describe(sql);
                    if name.is_empty() {
                        self.unnamed_described = Some(d);
                    } else if !matches!(track, Tracked::NamedParse { .. })
                        && self.named_described.len() < MAX_CLIENT_STATEMENTS
                    {
                        self.named_described
                            .insert(String::from_utf8_lossy(name).into_owned(), d);
                    }
                }
            }
            b'B' => {
                let described = match track {
                    Tracked::NamedBind { def, .. } => {
                        Some(self.app.descriptions.describe(def.query()))
                    }
                    _ => match msg::decode_bind_names(body) {
                        Ok((_, "")) => self.unnamed_described.clone(),
                        Ok((_, name)) => self.named_described.get(name).cloned(),
                        Err(_) => None,
                    },
                };
                if let (Ok((portal, _)), Some(d)) = (msg::decode_bind_names(body), described) {
                    self.portal_described.retain(|(p, _)| p != portal);
                    self.portal_described.push((portal.to_owned(), d));
                }
            }
            b'E' => {
                // Every Execute is tracked, described or not, so answers pair up in order.
                let d = msg::decode_execute(body)
                    .ok()
                    .and_then(|portal| {
                        self.portal_described
                            .iter()
                            .find(|(p, _)| p == portal)
                            .map(|(_, d)| Arc::clone(d))
                    })
                    .unwrap_or_else(|| self.app.descriptions.describe(b""));
                let w = wanted(&d);
                self.executions.sent(d, Protocol::Extended, w);
            }
            b'S' if !self.copy_in || self.client_copy_done => self.executions.sent_sync(),
            _ => {}
        }
    }

    /// Before a Bind: with nothing in flight and no transaction block open, every portal bound
    /// before is gone (PostgreSQL drops portals when their transaction ends), and so is what
    /// pgward noted about them. In session mode nothing else bounds `portal_described`: past
    /// [`MAX_CLIENT_PORTALS`] the oldest half goes (only what `statement.executed` would say
    /// about those portals is lost). In transaction mode, see the limit in
    /// `decide_transaction_mode`.
    fn forget_dead_portals(&mut self) {
        if self.pending_syncs == 0 && !self.extended_open && self.tx_status == TxStatus::Idle {
            self.portals.clear();
            self.portal_described.clear();
        } else if !self.tracking() && self.portal_described.len() >= MAX_CLIENT_PORTALS {
            let excess = self.portal_described.len() - MAX_CLIENT_PORTALS / 2;
            self.portal_described.drain(..excess);
        }
    }

    /// Moves the client bytes before the frame at `pos` into `sout`, in front of what pgward
    /// writes there next.
    fn stage_preceding(&mut self, fwd: &mut usize, pos: usize) {
        if *fwd < pos {
            self.sout.extend_from_slice(&self.cbuf[*fwd..pos]);
        }
        *fwd = pos;
    }

    /// A client's Parse of a named statement: answered from the server's own copy if it has
    /// one, else sent under the statement's server name.
    async fn forward_named_parse(
        &mut self,
        name: String,
        def: Arc<StatementDef>,
    ) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        // Answered here only when PostgreSQL's answer is sure to be ParseComplete: the client is
        // not in a failed transaction block (there PostgreSQL refuses a Parse with 25P02, except
        // for COMMIT, ROLLBACK and the like), and no earlier segment is unanswered (it could
        // leave the block failed). Otherwise the server answers: Close and Parse again.
        let status_known = self.pending_syncs == 0 && self.tx_status != TxStatus::Failed;
        if status_known && server.prepared.usable(def.id, self.segment) {
            let undo = self.statements.insert(&name, def);
            self.replies
                .push_synthetic(Synthetic::ParseComplete, Some(undo));
            return self.write_due_synthetic().await;
        }
        // Close first: a no-op unless pgward's table and the server disagree (see `prepared`).
        def.put_close_and_parse(&mut self.sout);
        self.replies.push_swallow();
        let generation = server.prepared.insert_pending(&def, self.segment);
        let undo = self.statements.insert(&name, Arc::clone(&def));
        self.replies.push_parse(&def, generation, false, Some(undo));
        self.evict_prepared();
        Ok(())
    }

    /// Makes sure the server has `def` before a Bind or Describe that needs it: pgward's own
    /// Parse, whose answer the client never sees.
    fn ensure_prepared(&mut self, def: &Arc<StatementDef>) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if server.prepared.usable(def.id, self.segment) {
            return;
        }
        def.put_close_and_parse(&mut self.sout);
        self.replies.push_swallow();
        let generation = server.prepared.insert_pending(def, self.segment);
        self.replies.push_parse(def, generation, true, None);
        self.evict_prepared();
    }

    /// Closes least recently used statements on the server beyond the pool's limit.
    fn evict_prepared(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        while let Some(old) = server.prepared.evict_over(self.max_prepared) {
            old.put_close(&mut self.sout);
            self.replies.push_evict(old);
        }
    }

    /// Writes the synthetic answers that are due (nothing owed before them).
    async fn write_due_synthetic(&mut self) -> Result<(), SessionEnd> {
        if !self.replies.synthetic_due() {
            return Ok(());
        }
        self.out.clear();
        self.replies.drain_synthetic(&mut self.out);
        self.write_out().await
    }

    /// Requests pgward answers itself: a client's Close of a named statement, `DEALLOCATE`.
    async fn answer_locally(&mut self, tag: u8, local: Local) -> Result<(Step, bool), SessionEnd> {
        match local {
            Local::CloseStatement(name) => {
                // PostgreSQL: closing a statement that does not exist is not an error. The
                // server keeps its copy for other clients (the LRU bounds them).
                let undo = self.statements.remove(&name);
                self.revoked.remove(&name);
                self.replies
                    .push_synthetic(Synthetic::CloseComplete, Some(undo));
                self.write_due_synthetic().await?;
                Ok((Step::Next, false))
            }
            Local::Deallocate(which) => {
                // A simple Query: answered in order once the server owes nothing.
                if self.pending_syncs > 0 || !self.replies.is_empty() {
                    if self.pending_syncs == 0
                        && let Some(server) = self.server.as_mut()
                    {
                        // Answers held back by the server until a Flush or Sync: ask for
                        // them, or this pause would never end.
                        send_all(&mut server.stream, &[b'H', 0, 0, 0, 4])
                            .await
                            .map_err(|_| {
                                SessionEnd::ClientError(ClientError::ServerConnectionLost)
                            })?;
                    }
                    return Ok((Step::Pause, false));
                }
                let status = self.client_status();
                self.out.clear();
                let result = if status == TxStatus::Failed {
                    Err(ClientError::InFailedTransaction)
                } else {
                    match which {
                        None => {
                            self.statements.clear();
                            Ok("DEALLOCATE ALL")
                        }
                        Some(name) if self.statements.get(&name).is_some() => {
                            self.statements.remove(&name);
                            Ok("DEALLOCATE")
                        }
                        Some(name) => Err(ClientError::UnknownPreparedStatement { name }),
                    }
                };
                match result {
                    Ok(done) => msg::put_command_complete(&mut self.out, done),
                    Err(e) => e.write_to(&mut self.out),
                }
                debug_assert_eq!(tag, b'Q');
                msg::put_ready(&mut self.out, status);
                self.write_out().await?;
                Ok((Step::Next, false))
            }
        }
    }

    /// The policy's answer for a Query, Parse or FunctionCall, with its mode applied: the error
    /// to refuse it with, if any. Bind/Execute need no check: a named statement was checked
    /// when it was parsed, so an execution costs nothing here.
    #[allow(clippy::type_complexity)]
    fn policy_check(
        &self,
        tag: u8,
        body: &std::ops::Range<usize>,
    ) -> Result<(Option<ClientError>, Option<crate::audit::event::Event>), SessionEnd> {
        let Some(policy) = &self.policy else {
            return Ok((None, None));
        };
        let body = &self.cbuf[body.clone()];
        let (verdict, sql, protocol) = match tag {
            b'Q' => {
                let sql = msg::decode_query_bytes(body).map_err(decode_violation)?;
                (
                    policy.judge(sql, Via::SimpleQuery),
                    sql,
                    crate::audit::codes::Protocol::Simple,
                )
            }
            b'P' => {
                let (_, sql) = msg::decode_parse_raw(body).map_err(decode_violation)?;
                (
                    policy.judge(sql, Via::Parse),
                    sql,
                    crate::audit::codes::Protocol::Extended,
                )
            }
            b'F' => {
                let Some(d) = policy.function_call_denial() else {
                    return Ok((None, None));
                };
                let fingerprint = crate::policy::normalize::Fingerprint(0);
                let event = self.denial_event(
                    policy,
                    &d,
                    fingerprint,
                    b"",
                    crate::audit::codes::Protocol::FunctionCall,
                );
                return Ok((self.apply_mode(policy, None, d), event));
            }
            _ => return Ok((None, None)),
        };
        let Verdict { analysis, denial } = verdict;
        let metrics = self.policy_metrics.as_ref();
        if policy.mode == Mode::Learn {
            if policy.learn(&self.user, &self.pool.database.name, &analysis) {
                metrics.inspect(|m| m.learned());
                let event = self.event(crate::audit::event::EventFields::StatementLearned {
                    policy: Arc::from(policy.name.as_str()),
                    fingerprint: analysis.fingerprint,
                    text: audit_text(sql),
                });
                return Ok((None, event));
            }
            return Ok((None, None));
        }
        match denial {
            None => {
                metrics.inspect(|m| m.allowed());
                Ok((None, None))
            }
            Some(d) => {
                let event = self.denial_event(policy, &d, analysis.fingerprint, sql, protocol);
                Ok((self.apply_mode(policy, Some(&analysis), d), event))
            }
        }
    }

    /// An audit event of this session, if it is audited.
    fn event(
        &self,
        fields: crate::audit::event::EventFields,
    ) -> Option<crate::audit::event::Event> {
        let ctx = self.audit.as_ref()?;
        if !self.app.audit.enabled() {
            return None;
        }
        Some(
            crate::audit::event::Event::new(fields)
                .sid(ctx.sid)
                .client(ctx.peer)
                .identity(Arc::clone(&ctx.identity))
                .database(Arc::clone(&ctx.database)),
        )
    }

    fn denial_event(
        &self,
        policy: &Policy,
        d: &Denial,
        fingerprint: crate::policy::normalize::Fingerprint,
        sql: &[u8],
        protocol: crate::audit::codes::Protocol,
    ) -> Option<crate::audit::event::Event> {
        self.event(crate::audit::event::EventFields::StatementDenied(
            crate::audit::event::StatementDenied {
                policy: Arc::from(policy.name.as_str()),
                mode: policy.mode,
                reason: d.into(),
                fingerprint,
                text: audit_text(sql),
                protocol,
            },
        ))
    }

    /// At an idle point after a configuration reload: adopts the new routing. A session whose
    /// user, database access or pool mode went away ends; a transaction-mode session takes its
    /// pool from the new routing at its next checkout and re-judges its named statements under
    /// a changed policy (those now denied are refused when used); a session-mode session, whose
    /// named statements pgward cannot see, ends when its policy changed and otherwise keeps its
    /// connection (a retired pool closes it at logout).
    fn adopt_reload(&mut self) -> Result<(), ClientError> {
        let routing = self.app.routing();
        self.generation = routing.generation;
        let user = routing
            .config
            .users
            .get(&self.user)
            .ok_or(ClientError::ReloadedAway { what: "its user" })?;
        let pool = routing.route(user, &self.pool.database.name).map_err(|_| {
            ClientError::ReloadedAway {
                what: "its access to the database",
            }
        })?;
        let policy = user.policy.clone().filter(|p| p.active());
        let policy_changed = match (&self.policy, &policy) {
            (None, None) => false,
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            _ => true,
        };
        if pool.settings().mode != self.mode {
            return Err(ClientError::ReloadedAway {
                what: "its pool mode",
            });
        }
        if self.mode == PoolMode::Session {
            if policy_changed {
                return Err(ClientError::ReloadedAway {
                    what: "its statement policy",
                });
            }
            return Ok(());
        }
        // Taken at the next checkout: the connection held now (idle) goes back to its own pool.
        self.next_pool = (!Arc::ptr_eq(&pool, &self.pool)).then_some(pool);
        if policy_changed {
            tracing::info!(
                policy = policy.as_ref().map_or("none", |p| p.name.as_str()),
                "session adopts a reloaded statement policy"
            );
            self.policy_metrics = policy.as_ref().map(|p| self.app.metrics.policy(&p.name));
            self.policy = policy;
            self.rejudge_named_statements();
        }
        Ok(())
    }

    /// Checks the client's named statements against the (new) policy: in enforce mode a name
    /// whose statement is now denied is taken away, and using it is refused with the denial.
    fn rejudge_named_statements(&mut self) {
        self.revoked.clear();
        let Some(policy) = self.policy.clone() else {
            return;
        };
        if policy.mode != Mode::Enforce {
            return;
        }
        let denied: Vec<(String, ClientError)> = self
            .statements
            .iter()
            .filter_map(|(name, def)| {
                let Verdict { analysis, denial } = policy.judge(def.query(), Via::Parse);
                let err = self.apply_mode(&policy, Some(&analysis), denial?)?;
                Some((name.to_owned(), err))
            })
            .collect();
        for (name, err) in denied {
            self.statements.remove(&name);
            self.revoked.insert(name, err);
        }
    }

    /// Enforce refuses; audit and learn only report.
    fn apply_mode(
        &self,
        policy: &Policy,
        analysis: Option<&crate::policy::Analysis>,
        denial: Denial,
    ) -> Option<ClientError> {
        let fingerprint = analysis
            .map(|a| a.fingerprint.to_string())
            .unwrap_or_else(|| "-".to_string());
        match policy.mode {
            // Counted and logged by the caller once the refusal is written.
            Mode::Enforce => Some(ClientError::PolicyDenied {
                policy: policy.name.clone(),
                fingerprint,
                reason: denial.to_string(),
            }),
            Mode::Audit => {
                if let Some(m) = &self.policy_metrics {
                    m.would_deny();
                }
                tracing::warn!(
                    policy = %policy.name,
                    fingerprint = %fingerprint,
                    reason = %denial,
                    "statement would be denied (audit mode)"
                );
                None
            }
            Mode::Learn | Mode::Off => None,
        }
    }

    /// The transaction-mode rules: what cannot be shared is refused; session changes are noted.
    fn decide_transaction_mode(
        &mut self,
        tag: u8,
        body: &std::ops::Range<usize>,
    ) -> Result<Decision, SessionEnd> {
        let body = &self.cbuf[body.clone()];
        let d = match tag {
            b'Q' => {
                let sql = msg::decode_query_bytes(body).map_err(decode_violation)?;
                let stmts = classify_bytes_cached(sql, &mut self.plain_shapes);
                if let Some(what) = unshareable(&stmts) {
                    return Ok(Decision::Refuse(ClientError::NotInTransactionMode { what }));
                }
                let deallocate = stmts.iter().flatten().find_map(|(e, _)| match e {
                    SessionEffect::Deallocate(which) => Some(which.clone()),
                    _ => None,
                });
                if let Some(which) = deallocate {
                    if stmts.len() > 1 {
                        return Ok(Decision::Refuse(ClientError::NotInTransactionMode {
                            what: "DEALLOCATE together with other statements in one query",
                        }));
                    }
                    return Ok(Decision::Local(Local::Deallocate(which)));
                }
                // Several statements in one Query run as one implicit transaction: their
                // session changes count only if the whole string succeeds.
                let implicit_block = stmts.len() > 1;
                let list = stmts
                    .into_iter()
                    .map(|e| Expect::Statement(e, implicit_block))
                    .collect::<Vec<_>>();
                Decision::Forward(Some(Tracked::Query(list)))
            }
            b'P' => {
                let (name, query) = msg::decode_parse_raw(body).map_err(decode_violation)?;
                if !name.is_empty() {
                    return self.decide_named_parse(body, name, query);
                }
                let stmts = classify_bytes_cached(query, &mut self.plain_shapes);
                if let Some(what) = unshareable(&stmts) {
                    return Ok(Decision::Refuse(ClientError::NotInTransactionMode { what }));
                }
                if stmts
                    .iter()
                    .flatten()
                    .any(|(e, _)| matches!(e, SessionEffect::Deallocate(Some(_))))
                {
                    return Ok(Decision::Refuse(deallocate_one_extended()));
                }
                Decision::Forward(Some(Tracked::Parse(stmts.into_iter().flatten().next())))
            }
            b'F' => {
                // A raw function call by OID escapes every statement check (set_config by OID
                // would carry a setting to the next client).
                return Ok(Decision::Refuse(ClientError::NotInTransactionMode {
                    what: "the FunctionCall protocol message",
                }));
            }
            b'B' => {
                let (portal, stmt) = msg::decode_bind_names(body).map_err(decode_violation)?;
                if !self.portals.contains_key(portal) && self.portals.len() >= MAX_CLIENT_PORTALS {
                    // Full: forget the portals that ended with their transaction. Which did is
                    // known only once every earlier segment is answered.
                    if self.pending_syncs > 0 {
                        return Ok(Decision::Wait);
                    }
                    if self.tx_status == TxStatus::Idle {
                        // No block open: only this segment's portals are still there.
                        let segment = self.segment;
                        self.portals.retain(|_, (_, s)| *s == segment);
                        let portals = &self.portals;
                        self.portal_described
                            .retain(|(p, _)| portals.contains_key(p.as_str()));
                    }
                    if self.portals.len() >= MAX_CLIENT_PORTALS {
                        return Ok(Decision::Refuse(ClientError::TooManyPortals {
                            limit: MAX_CLIENT_PORTALS,
                        }));
                    }
                }
                if !stmt.is_empty() {
                    return Ok(match self.named_statement(stmt) {
                        Ok(def) => Decision::Forward(Some(Tracked::NamedBind {
                            portal: portal.to_owned(),
                            def,
                        })),
                        Err(e) => Decision::Refuse(e),
                    });
                }
                // The unnamed statement on this server may be another client's: only the one
                // this client parsed during its current turn on the server may be bound.
                match &self.unnamed_statement {
                    Some(effect) if self.server.is_some() => {
                        Decision::Forward(Some(Tracked::Bind(portal.to_owned(), effect.clone())))
                    }
                    _ => return Ok(Decision::Refuse(unnamed_missing())),
                }
            }
            b'D' | b'C' => {
                let what = if tag == b'D' { "Describe" } else { "Close" };
                let (kind, name) = msg::decode_target(body, what).map_err(decode_violation)?;
                if tag == b'C' && kind == b'P' {
                    // The portal ends (or never was: then PostgreSQL does not mind either).
                    self.portals.remove(name);
                    self.portal_described.retain(|(p, _)| p != name);
                }
                if kind == b'S' && !name.is_empty() {
                    if tag == b'C' {
                        return Ok(Decision::Local(Local::CloseStatement(name.to_owned())));
                    }
                    return Ok(match self.named_statement(name) {
                        Ok(def) => Decision::Forward(Some(Tracked::NamedDescribe(def))),
                        Err(e) => Decision::Refuse(e),
                    });
                }
                if tag == b'D'
                    && kind == b'S'
                    && (self.unnamed_statement.is_none() || self.server.is_none())
                {
                    return Ok(Decision::Refuse(unnamed_missing()));
                }
                Decision::Forward(None)
            }
            b'E' => {
                let portal = msg::decode_execute(body).map_err(decode_violation)?;
                let effect = self.portals.get(portal).and_then(|(e, _)| e.clone());
                Decision::Forward(Some(Tracked::Execute(effect)))
            }
            _ => Decision::Forward(None),
        };
        Ok(d)
    }

    /// A client's Parse of a named statement: refused if the name is taken (as PostgreSQL
    /// does) or the statement cannot be shared; else interned for its server-side name.
    fn decide_named_parse(
        &self,
        body: &[u8],
        name: &[u8],
        query: &[u8],
    ) -> Result<Decision, SessionEnd> {
        if self.max_prepared == 0 {
            return Ok(Decision::Refuse(ClientError::NotInTransactionMode {
                what: "a named prepared statement (max_prepared_statements = 0)",
            }));
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(SessionEnd::ClientError(ClientError::ProtocolViolation {
                reason: "statement name is not valid UTF-8".into(),
            }));
        };
        if self.statements.get(name).is_some() {
            return Ok(Decision::Refuse(ClientError::DuplicatePreparedStatement {
                name: name.to_owned(),
            }));
        }
        if self.statements.len() >= MAX_CLIENT_STATEMENTS {
            return Ok(Decision::Refuse(ClientError::TooManyPreparedStatements {
                limit: MAX_CLIENT_STATEMENTS,
            }));
        }
        // The Parse body after the name: text, parameter types — the statement's identity.
        let tail = &body[name.len() + 1..];
        // Checked before the statement is interned: what a client holds is bounded in bytes
        // too, not only in count (a statement may be as large as a message).
        if self.statements.bytes() + ClientStatements::cost(name, tail.len())
            > self.max_statement_bytes
        {
            return Ok(Decision::Refuse(ClientError::PreparedStatementsTooLarge {
                limit: self.max_statement_bytes,
            }));
        }
        let def = self.app.statements.intern(tail, || {
            let stmts = classify_bytes(query);
            let refused = stmts
                .iter()
                .flatten()
                .find(|(e, _)| matches!(e, SessionEffect::Unshareable(_)))
                .cloned();
            refused.or_else(|| stmts.into_iter().flatten().next())
        });
        match &def.effect {
            Some((SessionEffect::Unshareable(what), _)) => {
                return Ok(Decision::Refuse(ClientError::NotInTransactionMode { what }));
            }
            Some((SessionEffect::Deallocate(Some(_)), _)) => {
                return Ok(Decision::Refuse(deallocate_one_extended()));
            }
            _ => {}
        }
        Ok(Decision::Forward(Some(Tracked::NamedParse {
            name: name.to_owned(),
            def,
        })))
    }

    /// The client's statement `name`, or PostgreSQL's error for a missing one.
    fn named_statement(&self, name: &str) -> Result<Arc<StatementDef>, ClientError> {
        if self.max_prepared == 0 {
            return Err(ClientError::NotInTransactionMode {
                what: "a named prepared statement (max_prepared_statements = 0)",
            });
        }
        match (self.statements.get(name), self.revoked.get(name)) {
            (Some(def), _) => Ok(Arc::clone(def)),
            (None, Some(denied)) => Err(denied.clone()),
            (None, None) => Err(ClientError::UnknownPreparedStatement {
                name: name.to_owned(),
            }),
        }
    }

    /// Bookkeeping for a frame that goes to the server.
    fn note_forwarded(&mut self, tag: u8, track: Tracked) {
        match tag {
            b'Q' => {
                if let Some(i) = &self.info {
                    SessionInfo::add(&i.queries, 1);
                }
                if self.pending_syncs == 0 {
                    self.busy_since = Some(std::time::Instant::now());
                }
                self.pending_syncs += 1;
                self.pending_kinds.push_back(SyncKind::Query);
                if self.tracking() {
                    self.replies.push_query();
                    self.segment += 1;
                    // A simple query destroys the unnamed statement.
                    self.unnamed_statement = None;
                    if let Tracked::Query(list) = track {
                        if list.is_empty() {
                            self.expects.push_back(Expect::Statement(None, false));
                        }
                        self.expects.extend(list);
                    }
                    self.expects.push_back(Expect::SyncPoint);
                }
            }
            b'S' if self.copy_in && !self.client_copy_done => {
                // PostgreSQL ignores Sync during COPY FROM STDIN: no ReadyForQuery will come.
            }
            b'S' => {
                if self.pending_syncs == 0 {
                    self.busy_since = Some(std::time::Instant::now());
                }
                if self.reset_owed > 0 {
                    self.sync_behind_reset = true;
                }
                self.pending_syncs += 1;
                self.pending_kinds.push_back(SyncKind::Sync);
                self.extended_open = false;
                if self.tracking() {
                    self.expects.push_back(Expect::SyncPoint);
                    self.replies.push_sync();
                    self.segment += 1;
                }
            }
            b'c' | b'f' => self.client_copy_done = true,
            b'F' => {
                self.pending_syncs += 1;
                self.pending_kinds.push_back(SyncKind::Query);
                if self.tracking() {
                    self.expects.push_back(Expect::SyncPoint);
                    self.replies.push_query();
                    self.segment += 1;
                }
            }
            b'P' | b'B' | b'D' | b'C' | b'E' | b'H' => {
                if tag == b'E'
                    && let Some(i) = &self.info
                {
                    SessionInfo::add(&i.queries, 1);
                }
                if tag != b'H' {
                    self.extended_open = true;
                    if self.tracking() {
                        self.replies.push_pass();
                    }
                }
                match track {
                    Tracked::Parse(effect) => self.unnamed_statement = Some(effect),
                    Tracked::Bind(portal, effect) => {
                        self.portals.insert(portal, (effect, self.segment));
                    }
                    Tracked::Execute(effect) => {
                        if let Some((SessionEffect::Deallocate(None), _)) = &effect {
                            // A prepared `DEALLOCATE ALL`: the server drops every statement
                            // (pgward forgets the connection's when the server confirms); the
                            // client's own names go now, so its next Parse may reuse them.
                            self.statements.clear();
                        }
                        self.expects.push_back(Expect::Statement(effect, false))
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The client's transaction status as it should see it now.
    fn client_status(&self) -> TxStatus {
        if self.server.is_some() {
            self.tx_status
        } else {
            TxStatus::Idle
        }
    }

    /// Answers a refused frame with an error, in order with what the server still owes.
    async fn refuse(&mut self, tag: u8, err: ClientError) -> Result<(Step, bool), SessionEnd> {
        // Inside a transaction — an open extended-protocol pipeline or an explicit block — the
        // refusal must act on the server as a PostgreSQL error would: the pipeline's earlier
        // statements are not committed, an explicit block becomes failed. A statement that is
        // certain to fail is injected for that; its error and ReadyForQuery are not relayed.
        // Only once every earlier answer is in: the injected statement's error and
        // ReadyForQuery must be the next ones after the client's current segment.
        if !self.abort_injected && self.pending_syncs > 0 {
            return Ok((Step::Pause, false));
        }
        let pipeline = self.extended_open;
        let in_block = self.tx_status == TxStatus::InTransaction;
        if !self.abort_injected
            && (pipeline || in_block)
            && let Some(server) = self.server.as_mut()
        {
            let mut out = BytesMut::new();
            if pipeline {
                put_failing_parse(&mut out);
                out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
                self.pending_kinds.push_back(SyncKind::Sync);
                if self.mode == PoolMode::Transaction {
                    self.replies.push_pass();
                    self.replies.push_sync();
                }
            } else {
                msg::put_query(&mut out, REFUSAL_MARKER_QUERY);
                self.pending_kinds.push_back(SyncKind::Query);
                if self.mode == PoolMode::Transaction {
                    self.replies.push_query();
                }
            }
            self.segment += 1;
            send_all(&mut server.stream, &out)
                .await
                .map_err(|_| SessionEnd::ClientError(ClientError::ServerConnectionLost))?;
            self.pending_syncs += 1;
            self.swallow_ready += 1;
            self.swallow_marker_error = true;
            self.abort_injected = true;
            self.extended_open = false;
            if pipeline {
                // The unnamed statement is gone with the failed pipeline.
                self.unnamed_statement = None;
            }
            if self.tracking() {
                self.expects.push_back(Expect::SyncPoint);
            }
            return Ok((Step::Pause, false));
        }
        if self.pending_syncs > 0 {
            return Ok((Step::Pause, false));
        }
        self.abort_injected = false;
        // If the pipeline had already failed on the server, PostgreSQL would skip this message
        // silently: so do we.
        let already_failed = std::mem::take(&mut self.abort_saw_client_error);
        tracing::info!(sqlstate = err.sqlstate(), reason = %err.message(), "statement refused");
        let status = self.client_status();
        self.out.clear();
        if !already_failed {
            err.write_to(&mut self.out);
        }
        if matches!(tag, b'Q' | b'F' | b'S') {
            msg::put_ready(&mut self.out, status);
        } else {
            self.skip_until_sync = true;
        }
        self.write_out().await?;
        Ok((Step::Next, false))
    }

    async fn write_out(&mut self) -> Result<(), SessionEnd> {
        self.count_to_client(self.out.len());
        send_all(&mut self.client, &self.out)
            .await
            .map_err(SessionEnd::Io)?;
        self.out.clear();
        Ok(())
    }

    // ------------------------------------------------------------------ server → client

    async fn process_server(&mut self) -> Result<(), SessionEnd> {
        let r = self.process_server_inner().await;
        if r.is_err() {
            // Bookkeeping may already count messages whose bytes were not consumed: the
            // server's state can no longer be reasoned about.
            self.server_state_unknown = true;
        }
        r
    }

    async fn process_server_inner(&mut self) -> Result<(), SessionEnd> {
        let Some(guard) = self.server.as_mut() else {
            return Ok(());
        };
        let server: &mut crate::pool::ServerConn = guard;
        let tracking = self.mode == PoolMode::Transaction;
        let mut executed = Vec::new();
        // What goes to the client is `server.buf[fwd..pos]`; once a message has been dropped
        // or an answer made up, the bytes gather in `cout` instead, for one write.
        let mut pos = 0;
        let mut fwd = 0;
        loop {
            let chunk = match self.sscan.next(
                &server.buf[pos..],
                inspect_server,
                MAX_INSPECTED_SERVER_MESSAGE,
            ) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "malformed message from server");
                    return Err(SessionEnd::ClientError(ClientError::ServerConnectionLost));
                }
            };
            if self.reset_owed > 0 || self.discard_until_ready > 0 {
                // Answers to pgward's own messages ahead of the client's (the hand-over reset,
                // then the client's settings): never the client's.
                let len = match chunk {
                    Chunk::Passthrough { len, .. } => len,
                    Chunk::Whole(f) => {
                        let body = &server.buf[pos + 5..pos + f.len];
                        match f.tag {
                            b'C' if self.reset_owed > 0 => self.reset_owed -= 1,
                            b'E' if self.reset_owed > 0 => {
                                // The server now skips everything the client sent behind the
                                // reset, up to a Sync, and nothing after that Sync was sent
                                // (see `sync_behind_reset`): close the connection before
                                // anything else reaches it.
                                let e = msg::decode_error(body).unwrap_or_default();
                                tracing::error!(
                                    code = e.code,
                                    message = e.message,
                                    "the hand-over reset failed; the connection is closed and the client's session ends"
                                );
                                self.server_state_unknown = true;
                                return Err(SessionEnd::ClientError(
                                    ClientError::ServerResetFailed,
                                ));
                            }
                            _ if self.reset_owed > 0 => {}
                            b'Z' => self.discard_until_ready -= 1,
                            b'E' => {
                                let e = msg::decode_error(body).unwrap_or_default();
                                tracing::warn!(
                                    code = e.code,
                                    message = e.message,
                                    "re-applying a client's session settings failed; the connection will be reset after use"
                                );
                                server.dirty = true;
                            }
                            _ => {}
                        }
                        f.len
                    }
                };
                self.cout.extend_from_slice(&server.buf[fwd..pos]);
                pos += len;
                fwd = pos;
                continue;
            }
            let len = match chunk {
                Chunk::Passthrough { len, .. } => len,
                Chunk::Whole(f) => {
                    let body = &server.buf[pos + 5..pos + f.len];
                    let mut swallow = on_server_message(
                        f.tag,
                        body,
                        &mut ServerView {
                            pending_syncs: &mut self.pending_syncs,
                            pending_kinds: &mut self.pending_kinds,
                            swallow_marker_error: &mut self.swallow_marker_error,
                            abort_saw_client_error: &mut self.abort_saw_client_error,
                            client_copy_done: &mut self.client_copy_done,
                            swallow_ready: &mut self.swallow_ready,
                            tx_status: &mut self.tx_status,
                            copy_in: &mut self.copy_in,
                            tracking,
                            expects: &mut self.expects,
                            in_block: &mut self.in_block,
                            block_effects: &mut self.block_effects,
                            segment_effects: &mut self.segment_effects,
                            params: &mut self.params,
                            dirty: &mut server.dirty,
                        },
                    )?;
                    if self.audit_statements
                        && let Some(done) = self.executions.on_server(f.tag, body)
                    {
                        executed.push(done);
                    }
                    if f.tag == b'S'
                        && self.policy.is_some()
                        && let Ok((name, value)) = msg::decode_parameter_status(body)
                        && policy_unenforceable(name, value)
                    {
                        // Changed some way no statement check saw (a function, a role
                        // setting): fail closed. The connection's state is not trusted either.
                        tracing::error!(
                            setting = name,
                            "the server's reading of SQL changed under a statement policy; ending the session"
                        );
                        self.server_state_unknown = true;
                        return Err(SessionEnd::ClientError(ClientError::PolicyUnenforceable {
                            setting: name.to_owned(),
                        }));
                    }
                    if tracking {
                        // A renamed Bind or Describe answered with 26000: the statement is gone
                        // from the server though pgward's table has it (a function ran
                        // DEALLOCATE). The table cannot be trusted: forget it, so everything is
                        // prepared again on next use (Close first), and reset the connection
                        // before anyone else gets it.
                        let vanished = f.tag == b'E'
                            && self.replies.renamed_due()
                            && msg::decode_error(body).is_ok_and(|e| e.code == "26000");
                        let action = self.replies.on_server(
                            f.tag,
                            &mut server.prepared,
                            &mut self.statements,
                        );
                        swallow |= action == ReplyAction::Swallow;
                        if vanished {
                            tracing::warn!(
                                "a prepared statement vanished from the server connection behind pgward's back (DEALLOCATE in a function?); its statements will be prepared again and it will be reset after use"
                            );
                            server.prepared.clear();
                            server.dirty = true;
                        }
                        for _ in 0..self.replies.take_skipped_queries() {
                            // A Query behind a pipeline that failed before its Sync: the
                            // server ignored it, no ReadyForQuery comes for it.
                            self.pending_syncs = self.pending_syncs.saturating_sub(1);
                            if let Some(i) = self
                                .pending_kinds
                                .iter()
                                .position(|k| *k == SyncKind::Query)
                            {
                                self.pending_kinds.remove(i);
                            }
                            while let Some(e) = self.expects.pop_front() {
                                if matches!(e, Expect::SyncPoint) {
                                    break;
                                }
                            }
                        }
                        match f.tag {
                            b'G' => self.replies.on_copy_in(),
                            // The server dropped every prepared statement (a client's DISCARD
                            // ALL): so do pgward's tables, as PostgreSQL would for the client.
                            b'C' if body.starts_with(b"DISCARD ALL") => {
                                server.prepared.clear();
                                self.statements.clear();
                            }
                            // A prepared DEALLOCATE ALL, or one pgward did not see coming (in
                            // a function): which statements the server still has is unknown,
                            // so pgward prepares again what it needs (Close, then Parse).
                            b'C' if body.starts_with(b"DEALLOCATE") => server.prepared.clear(),
                            _ => {}
                        }
                    }
                    if swallow {
                        self.cout.extend_from_slice(&server.buf[fwd..pos]);
                        fwd = pos + f.len;
                    } else if f.tag == b'Z' {
                        if self.pending_syncs == 0
                            && let Some(t) = self.busy_since.take()
                        {
                            let took = t.elapsed();
                            self.pool.metrics.query(took);
                            let c = &self.pool.counters;
                            c.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            c.query_time_us.fetch_add(
                                took.as_micros() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                        }
                        if self.tx_status == TxStatus::Idle {
                            // A ReadyForQuery outside a transaction block ends a transaction
                            // (an explicit one, or a statement's own).
                            self.pool.metrics.transaction();
                            self.pool
                                .counters
                                .transactions
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if let Some(i) = &self.info {
                                SessionInfo::add(&i.transactions, 1);
                            }
                        }
                    }
                    if tracking && self.replies.synthetic_due() {
                        let end = pos + f.len;
                        self.cout.extend_from_slice(&server.buf[fwd.min(end)..end]);
                        fwd = end;
                        self.replies.drain_synthetic(&mut self.cout);
                    }
                    f.len
                }
            };
            pos += len;
        }
        if self.cout.is_empty() {
            if fwd < pos {
                if let Some(i) = &self.info {
                    SessionInfo::add(&i.bytes_to_client, (pos - fwd) as u64);
                }
                self.client
                    .write_all(&server.buf[fwd..pos])
                    .await
                    .map_err(SessionEnd::Io)?;
            }
        } else {
            self.cout.extend_from_slice(&server.buf[fwd..pos]);
            if let Some(i) = &self.info {
                SessionInfo::add(&i.bytes_to_client, self.cout.len() as u64);
            }
            let r = self.client.write_all(&self.cout).await;
            self.cout.clear();
            r.map_err(SessionEnd::Io)?;
        }
        // One flush per read from the server, after everything it brought.
        self.client.flush().await.map_err(SessionEnd::Io)?;
        server.buf.advance(pos);
        for done in executed {
            if let Some(ev) = self.event(crate::audit::event::EventFields::StatementExecuted(done))
            {
                self.app.audit.emit(ev).await;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ server lifecycle

    /// Takes connections from `pool` from now on (a reload's routing). Whether the server
    /// accepted the client's startup parameters is the new pool's to say: it may be another
    /// server, and a connection opened with values it refuses would fail to open.
    fn switch_pool(&mut self, pool: Arc<Pool>) {
        self.max_prepared = pool.database.max_prepared_statements;
        self.max_statement_bytes = pool.database.max_client_statement_bytes;
        self.base = pool.client_base(&self.params);
        self.pool = pool;
    }

    async fn acquire_server(&mut self) -> Result<(), Acquire> {
        self.set_state(ClientState::Waiting);
        if let Some(pool) = self.next_pool.take() {
            self.switch_pool(pool);
        }
        let mut checked_out = self
            .pool
            .checkout_preferring(self.last_server, &self.base)
            .await;
        if matches!(checked_out, Err(CheckoutError::Closed))
            && !self.app.shutdown.is_cancelled()
            && self.generation != self.app.generation()
        {
            // A reload retired the pool since the last idle point: take the new routing's.
            self.adopt_reload().map_err(Acquire::Fatal)?;
            if let Some(pool) = self.next_pool.take() {
                self.switch_pool(pool);
            }
            checked_out = self
                .pool
                .checkout_preferring(self.last_server, &self.base)
                .await;
        }
        self.set_state(if checked_out.is_ok() {
            ClientState::Active
        } else {
            ClientState::Idle
        });
        if let Err(CheckoutError::Timeout(waited)) = &checked_out
            && let Some(ev) = self.event(crate::audit::event::EventFields::PoolCheckoutTimeout {
                backend_role: Arc::from(self.pool.key.backend_user.as_str()),
                waited: *waited,
                pool_size: self.pool.settings().size as u32,
            })
        {
            // Boxed: a rare path should not grow every session's future.
            Box::pin(self.app.audit.emit(ev)).await;
        }
        let mut guard = checked_out.map_err(|e| checkout_error(&self.pool, e))?;
        if let Some(i) = &self.info {
            i.set_server(Some(guard.id));
        }
        // The preparation is pipelined in front of the client's messages: no extra round
        // trip; its answers are dropped (see `process_server_inner`).
        // No client used a fresh connection; the same client (session ids are never reused in
        // a process) with nobody in between finds only its own state. Without an id, always a
        // hand-over.
        let sid = self.info.as_ref().map(|i| i.sid);
        let handover = guard.last_client.is_some_and(|last| sid != Some(last));
        let reset = handover && self.pool.database.reset_on_handover;
        let prep = Preparation::of(&guard, &self.params, reset);
        if prep.reset.is_some() || prep.settings.is_some() {
            // Staged in front of whatever this batch sends: one write (one syscall) carries
            // the preparation and the client's first messages.
            let mut out = BytesMut::with_capacity(128 + self.sout.len());
            if let Some(r) = prep.reset {
                let prepared = guard.prepared.resets_prepared & r.bit() != 0;
                if r == Reset::DiscardAll {
                    guard.prepared.clear();
                } else {
                    // Should the Parse fail, the reset fails and the connection is closed.
                    guard.prepared.resets_prepared |= r.bit();
                }
                // Fail closed: if the reset fails, the server skips the client's messages
                // behind it (no Sync in between), and the session ends before anything else
                // is sent (see `reset_owed`).
                out.extend_from_slice(r.messages(prepared));
                self.reset_owed = r.statements().len();
                self.sync_behind_reset = false;
            }
            if let Some(settings) = &prep.settings {
                msg::put_query(&mut out, settings);
                self.discard_until_ready = 1;
            }
            out.extend_from_slice(&self.sout);
            self.sout = out;
            guard.dirty = false;
        }
        // Now (or as soon as the server has read what is staged) what this client asked for.
        guard.applied = Some(Arc::clone(&self.params));
        match sid {
            Some(_) => guard.last_client = sid,
            // Whose state it then carries could not be told: cleaned at release, then as fresh.
            None => guard.dirty = true,
        }
        self.last_server = Some(guard.id);
        self.cancel.slot.attach(guard.key.clone());
        self.server = Some(guard);
        self.tx_status = TxStatus::Idle;
        Ok(())
    }

    /// Gives a clean server back: waits out in-flight cancels, resets untracked state.
    async fn release_server(&mut self) {
        let Some(mut guard) = self.server.take() else {
            return;
        };
        self.set_state(ClientState::Idle);
        if let Some(i) = &self.info {
            i.set_server(None);
        }
        self.unnamed_statement = None;
        self.portals.clear();
        self.replies.clear();
        // Nothing is owed at release, so an unconfirmed entry is one the server skipped.
        guard.prepared.forget_unconfirmed();
        self.executions.clear();
        self.unnamed_described = None;
        self.portal_described.clear();
        self.sscan = FrameScanner::new();
        if !self.cancel.slot.detach(CANCEL_SETTLE).await {
            guard.discard();
            return;
        }
        if !self.block_effects.is_empty() || !self.segment_effects.is_empty() || self.in_block {
            self.block_effects.clear();
            self.segment_effects.clear();
            self.in_block = false;
            guard.dirty = true;
        }
        if self.mode == PoolMode::Session {
            guard.dirty = true;
        }
        if guard.dirty {
            guard.prepared.clear();
            let pool = Arc::clone(guard.pool());
            let _testing = pool.testing();
            match tokio::time::timeout(CLEANUP_TIMEOUT, guard.run_queries(&["DISCARD ALL"])).await {
                Ok(Ok(TxStatus::Idle)) => {
                    guard.dirty = false;
                    guard.applied = Some(Arc::clone(&guard.base.opened_with));
                    // As clean as a fresh connection: the next client owes no reset.
                    guard.last_client = None;
                }
                _ => {
                    guard.discard();
                    return;
                }
            }
        } else {
            guard.applied = Some(Arc::clone(&self.params));
        }
        guard.release();
    }

    /// After the client has gone or the session ended: bring the server back to a known, idle
    /// state — cancel what runs, abort COPY, finish the pipeline, roll back — then release it.
    async fn finish(&mut self, end: &SessionEnd) {
        if let SessionEnd::ClientError(e) = end {
            self.out.clear();
            e.write_to(&mut self.out);
            let _ = send_all(&mut self.client, &self.out).await;
            let _ = self.client.shutdown().await;
        }
        if self.server_state_unknown
            // Whether the reset ran is unknown; if it failed, the server is skipping.
            || self.reset_owed > 0
            || matches!(
                end,
                SessionEnd::ClientError(ClientError::ServerConnectionLost)
            )
        {
            if let Some(g) = self.server.take() {
                g.discard();
            }
            return;
        }
        if self.server.is_none() {
            return;
        }
        let cleaned = tokio::time::timeout(CLEANUP_TIMEOUT, self.settle_server()).await;
        match cleaned {
            Ok(Ok(())) => self.release_server().await,
            _ => {
                tracing::info!(
                    "server connection closed: its state after the client left is unknown"
                );
                if let Some(g) = self.server.take() {
                    g.discard();
                }
            }
        }
    }

    async fn settle_server(&mut self) -> Result<(), ServerError> {
        let Some(guard) = self.server.as_mut() else {
            return Ok(());
        };
        let server: &mut crate::pool::ServerConn = guard;
        let running = self.pending_syncs > 0;
        let mut out = BytesMut::new();
        if self.copy_in {
            msg::put_copy_fail(&mut out, "client connection lost");
        }
        if self.extended_open {
            out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
            self.pending_syncs += 1;
            self.pending_kinds.push_back(SyncKind::Sync);
        }
        if !out.is_empty() {
            send_all(&mut server.stream, &out).await?;
        }
        if running && !self.copy_in {
            // The query may run for a long time, holding locks: stop it.
            if let Err(e) =
                crate::pool::connection::send_cancel(server.key.clone(), CANCEL_SETTLE).await
            {
                tracing::warn!(error = %e, "cancel for an abandoned query failed");
            }
        }
        // Skip the rest of a message that was streaming when the client left.
        let mut rest = self.sscan.remaining();
        while rest > 0 {
            frame::make_room(&mut server.buf);
            if server.buf.is_empty() && server.stream.read_buf(&mut server.buf).await? == 0 {
                return Err(ServerError::Closed);
            }
            let n = rest.min(server.buf.len());
            server.buf.advance(n);
            rest -= n;
        }
        self.sscan = FrameScanner::new();
        if self.pending_syncs + self.discard_until_ready > 0 {
            match server
                .wait_ready(self.pending_syncs + self.discard_until_ready)
                .await
            {
                Ok(s) => self.tx_status = s,
                Err(ServerError::Query { .. }) => self.tx_status = TxStatus::Failed,
                Err(e) => return Err(e),
            }
            self.pending_syncs = 0;
            self.pending_kinds.clear();
            self.swallow_ready = 0;
            self.discard_until_ready = 0;
        }
        // Which of the Parses in flight succeeded is unknown now: forget them (safe: pgward
        // closes a name before preparing it again).
        server.prepared.forget_unconfirmed();
        self.replies.clear();
        self.copy_in = false;
        self.extended_open = false;
        if self.tx_status != TxStatus::Idle {
            let s = server.run_queries(&["ROLLBACK"]).await?;
            self.tx_status = s;
            if s != TxStatus::Idle {
                return Err(ServerError::Protocol(
                    "still in a transaction after ROLLBACK".into(),
                ));
            }
        }
        // In transaction mode SETs made mid-session are on this server but the client is gone.
        server.dirty = true;
        Ok(())
    }
}

/// Prepares a server for a client and waits for the answers (at login): resets what another
/// client left, applies this client's session state when the server carries different state.
pub async fn prepare_server(
    server: &mut PoolGuard,
    params: &Arc<SessionParams>,
    reset: bool,
) -> Result<(), ServerError> {
    let prep = Preparation::of(server, params, reset);
    if prep.reset == Some(Reset::DiscardAll) {
        server.prepared.clear();
    }
    let mut queries = Vec::new();
    if let Some(r) = prep.reset {
        queries.push(r.query());
    }
    if let Some(s) = &prep.settings {
        queries.push(s.as_str());
    }
    if queries.is_empty() {
        return Ok(());
    }
    // Until it succeeds, the state is unknown.
    server.dirty = true;
    let status = server.run_queries(&queries).await.map_err(|e| match e {
        ServerError::Query {
            code,
            message,
            index: 0,
        } if prep.reset.is_some() => ServerError::ResetFailed { code, message },
        other => other,
    })?;
    if status != TxStatus::Idle {
        return Err(ServerError::Protocol(
            "server in a transaction after reset".into(),
        ));
    }
    server.dirty = false;
    server.applied = Some(Arc::clone(params));
    Ok(())
}

/// What removes another client's state from a server connection before a client uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    /// Everything: settings, role, prepared statements, temporary tables, session advisory
    /// locks, LISTENs, WITH HOLD cursors. One statement.
    DiscardAll,
    /// Settings and role; pgward's prepared statements on the connection survive.
    SettingsAndRole,
    /// The settings another client SET (no hand-over reset asked for: the role and what
    /// functions did are not reset).
    Settings,
}

impl Reset {
    /// As one Query, when pgward waits for its answer before anything else is sent.
    fn query(self) -> &'static str {
        match self {
            Reset::DiscardAll => "DISCARD ALL",
            Reset::SettingsAndRole => "RESET ALL;\nRESET ROLE",
            Reset::Settings => "RESET ALL",
        }
    }

    /// As Parse/Bind/Execute messages without a Sync, sent ahead of the client's messages in
    /// the same write (see [`Relay::acquire_server`]): should one fail, the server skips
    /// everything behind it up to the next Sync. Each ends in its own commit, so nothing the
    /// client sends after can roll it back: DISCARD ALL commits at once; the RESETs run in a
    /// block of their own (in an implicit one they would join the client's first transaction,
    /// and its ROLLBACK would undo them).
    fn statements(self) -> &'static [&'static str] {
        match self {
            Reset::DiscardAll => &["DISCARD ALL"],
            Reset::SettingsAndRole => &["BEGIN", "RESET ALL", "RESET ROLE", "COMMIT"],
            Reset::Settings => &["BEGIN", "RESET ALL", "COMMIT"],
        }
    }

    /// [`Reset::statements`] encoded, once per process: they go out at nearly every hand-over.
    /// The RESETs are named statements of their own (`pgward_reset<kind>_<i>`), prepared at
    /// their first use on a connection (`prepared` false) and only bound after; DISCARD ALL
    /// would drop its own statement, so it is parsed each time.
    fn messages(self, prepared: bool) -> &'static [u8] {
        static ENCODED: [std::sync::OnceLock<Vec<u8>>; 6] =
            [const { std::sync::OnceLock::new() }; 6];
        ENCODED[self as usize * 2 + usize::from(prepared)].get_or_init(|| {
            let mut out = BytesMut::new();
            for (i, q) in self.statements().iter().enumerate() {
                if self == Reset::DiscardAll {
                    msg::put_unnamed_execute(&mut out, q);
                } else {
                    let name = format!("pgward_reset{}_{i}", self as usize);
                    msg::put_named_execute(&mut out, &name, (!prepared).then_some(q));
                }
            }
            out.to_vec()
        })
    }

    /// This kind's bit in [`ServerStatements::resets_prepared`].
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What makes a server connection carry exactly one client's session state.
#[derive(Debug)]
struct Preparation {
    reset: Option<Reset>,
    /// This client's startup parameters and SETs, as one Query.
    settings: Option<String>,
}

impl Preparation {
    /// `DISCARD ALL` when the server may carry state pgward cannot describe (`dirty`), and as
    /// the hand-over reset (`reset`) of a server that holds none of pgward's prepared
    /// statements; the two RESETs for one that holds some, so its statements survive. Settings
    /// changed inside functions are invisible to pgward, so only a reset guarantees another
    /// client's settings are gone. Without one, `RESET ALL` when the server carries more than
    /// what it was opened with. A reset brings it back to that (see
    /// [`crate::session::state::ServerBase`]); then the SETs that take it from there to this
    /// client's startup parameters and SETs: none for a client with the startup parameters the
    /// connection was opened with.
    ///
    /// As a reset, DISCARD ALL is one statement where `RESET ALL; RESET ROLE` is two (RESET
    /// ALL leaves the role alone), and each statement costs the server about as much as a
    /// pgbench select-only query (~15 us of backend CPU here).
    fn of(server: &PoolGuard, params: &SessionParams, reset: bool) -> Preparation {
        let same = server
            .applied
            .as_ref()
            .is_some_and(|a| std::ptr::eq(&**a, params) || **a == *params);
        let reset = if server.dirty || (reset && server.prepared.is_empty()) {
            Some(Reset::DiscardAll)
        } else if reset {
            Some(Reset::SettingsAndRole)
        } else if same {
            return Preparation {
                reset: None,
                settings: None,
            };
        } else if !server.applied.as_ref().is_some_and(|a| {
            // What the server was opened with is what a reset brings it back to.
            Arc::ptr_eq(a, &server.base.opened_with) || **a == *server.base.opened_with
        }) {
            Some(Reset::Settings)
        } else {
            None
        };
        // The settings are a Query of their own: in one string with the reset, a failing SET
        // would roll the reset back with it (a multi-statement Query is one transaction), and
        // DISCARD ALL refuses to run inside one.
        let mut combined = String::new();
        for q in params.statements_over(&server.base) {
            combined.push_str(&q);
            // A newline first: a client's SET may end in a `--` comment.
            combined.push_str("\n;\n");
        }
        Preparation {
            reset,
            settings: (!combined.is_empty()).then_some(combined),
        }
    }
}

enum Decision {
    Forward(Option<Tracked>),
    Refuse(ClientError),
    /// Decided only once every earlier segment is answered: the frame waits.
    Wait,
    /// pgward answers it itself; nothing goes to the server.
    Local(Local),
}

enum Local {
    /// Close of a named statement: the client's name goes, the server keeps its copy.
    CloseStatement(String),
    /// `DEALLOCATE name` (or `ALL` for `None`) as a simple Query.
    Deallocate(Option<String>),
}

enum Tracked {
    Nothing,
    Query(Vec<Expect>),
    Parse(Option<(SessionEffect, String)>),
    Bind(String, Option<(SessionEffect, String)>),
    Execute(Option<(SessionEffect, String)>),
    NamedParse {
        name: String,
        def: Arc<StatementDef>,
    },
    NamedBind {
        portal: String,
        def: Arc<StatementDef>,
    },
    NamedDescribe(Arc<StatementDef>),
}

enum Acquire {
    /// The request fails; the session goes on.
    Refuse(ClientError),
    Fatal(ClientError),
}

fn checkout_error(pool: &Pool, e: CheckoutError) -> Acquire {
    let database = pool.database.name.clone();
    match e {
        CheckoutError::Timeout(d) => {
            tracing::warn!(pool = ?pool.key, "checkout timed out");
            Acquire::Refuse(ClientError::CheckoutTimeout {
                database,
                waited_ms: d.as_millis() as u64,
            })
        }
        CheckoutError::Connect(e) => {
            tracing::warn!(pool = ?pool.key, error = %e, "no server connection");
            Acquire::Fatal(ClientError::ServerUnavailable { database })
        }
        CheckoutError::Closed => Acquire::Fatal(ClientError::ShuttingDown),
    }
}

/// `DEALLOCATE name` as a prepared statement: the name is the client's, which pgward maps and
/// the server does not know; answering it in turn at Execute is not worth the machinery when
/// Close and a simple-query DEALLOCATE do the same.
fn deallocate_one_extended() -> ClientError {
    ClientError::NotInTransactionMode {
        what: "DEALLOCATE of one statement as a prepared statement (use Close, or DEALLOCATE as a simple query)",
    }
}

/// The client's statement name a Parse, Bind, Describe or Close names, if it names one.
fn named_statement_target(tag: u8, body: &[u8]) -> Option<&str> {
    let name = match tag {
        b'P' => std::str::from_utf8(msg::decode_parse_raw(body).ok()?.0).ok()?,
        b'B' => msg::decode_bind_names(body).ok()?.1,
        b'D' | b'C' => match msg::decode_target(body, "Describe").ok()? {
            (b'S', name) => name,
            _ => return None,
        },
        _ => return None,
    };
    (!name.is_empty()).then_some(name)
}

fn unnamed_missing() -> ClientError {
    ClientError::UnnamedStatementMissing
}

fn protocol_violation(e: FrameError) -> SessionEnd {
    tracing::warn!(error = %e, "client protocol violation");
    SessionEnd::ClientError(ClientError::ProtocolViolation {
        reason: e.to_string(),
    })
}

fn decode_violation(e: msg::DecodeError) -> SessionEnd {
    tracing::warn!(error = %e, "client sent a malformed message");
    SessionEnd::ClientError(ClientError::ProtocolViolation {
        reason: e.to_string(),
    })
}

/// The parts of the session a server message updates.
struct ServerView<'a> {
    pending_syncs: &'a mut usize,
    pending_kinds: &'a mut VecDeque<SyncKind>,
    swallow_marker_error: &'a mut bool,
    abort_saw_client_error: &'a mut bool,
    client_copy_done: &'a mut bool,
    swallow_ready: &'a mut usize,
    tx_status: &'a mut TxStatus,
    copy_in: &'a mut bool,
    tracking: bool,
    expects: &'a mut VecDeque<Expect>,
    in_block: &'a mut bool,
    block_effects: &'a mut Vec<(SessionEffect, String)>,
    segment_effects: &'a mut Vec<(SessionEffect, String)>,
    params: &'a mut Arc<SessionParams>,
    dirty: &'a mut bool,
}

/// Updates session state from one whole server message. Returns true if the message must not
/// reach the client (a ReadyForQuery pgward caused).
fn on_server_message(tag: u8, body: &[u8], v: &mut ServerView<'_>) -> Result<bool, SessionEnd> {
    let bad = |e: msg::DecodeError| {
        tracing::error!(error = %e, "malformed message from server");
        SessionEnd::ClientError(ClientError::ServerConnectionLost)
    };
    match tag {
        b'Z' => {
            let status = msg::decode_ready(body).map_err(bad)?;
            *v.tx_status = status;
            *v.pending_syncs = v.pending_syncs.saturating_sub(1);
            v.pending_kinds.pop_front();
            *v.copy_in = false;
            if v.tracking {
                while let Some(e) = v.expects.pop_front() {
                    if matches!(e, Expect::SyncPoint) {
                        break;
                    }
                }
                // A multi-statement Query that ended outside a transaction committed; one that
                // left a block open hands its changes to that block.
                if status == TxStatus::Idle {
                    for (e, text) in std::mem::take(v.segment_effects) {
                        apply_effect(v.params, v.dirty, e, &text);
                    }
                } else {
                    v.block_effects.append(v.segment_effects);
                }
                match status {
                    TxStatus::Idle => {
                        if *v.in_block || !v.block_effects.is_empty() {
                            // The block ended in a way we did not see: the server's state is
                            // uncertain, so it gets reset before anyone else uses it.
                            *v.dirty = true;
                            v.block_effects.clear();
                        }
                        *v.in_block = false;
                    }
                    TxStatus::InTransaction | TxStatus::Failed => *v.in_block = true,
                }
            }
            if *v.swallow_ready > 0 {
                *v.swallow_ready -= 1;
                // The injected statement has been dealt with, by error or by being skipped.
                *v.swallow_marker_error = false;
                return Ok(true);
            }
        }
        b'C' => {
            *v.copy_in = false;
            if v.tracking {
                let tag_text = msg::decode_command_complete(body).map_err(bad)?;
                let (done, implicit_block) = match v.expects.front() {
                    Some(Expect::Statement(..)) => match v.expects.pop_front() {
                        Some(Expect::Statement(e, b)) => (e, b),
                        _ => (None, false),
                    },
                    _ => (None, false),
                };
                // The server says a session setting changed where the lexer saw none (a
                // statement it misread): the state is unknown, so the server gets reset.
                let session_tag =
                    matches!(tag_text, "SET" | "RESET") || tag_text.starts_with("DISCARD");
                if session_tag && done.is_none() {
                    *v.dirty = true;
                }
                match tag_text {
                    "BEGIN" | "START TRANSACTION" => *v.in_block = true,
                    "COMMIT" => {
                        for (e, text) in v.block_effects.drain(..) {
                            apply_effect(v.params, v.dirty, e, &text);
                        }
                        *v.in_block = false;
                    }
                    "ROLLBACK" => {
                        // Also the tag of ROLLBACK TO SAVEPOINT: the block may go on, and what
                        // it keeps is unknowable here, so the server will be reset.
                        if !v.block_effects.is_empty() {
                            *v.dirty = true;
                        }
                        v.block_effects.clear();
                        *v.in_block = false;
                    }
                    _ => {}
                }
                if let Some((e, text)) = done {
                    if *v.in_block {
                        v.block_effects.push((e, text));
                    } else if implicit_block {
                        v.segment_effects.push((e, text));
                    } else {
                        apply_effect(v.params, v.dirty, e, &text);
                    }
                }
            }
        }
        b'E' => {
            *v.copy_in = false;
            if v.tracking {
                // The failing statement and the rest up to the sync point never ran, and an
                // implicit transaction around them is rolled back.
                while let Some(Expect::Statement(..)) = v.expects.front() {
                    v.expects.pop_front();
                }
                v.segment_effects.clear();
            }
            if *v.swallow_marker_error {
                // The first error after the injection decides: the client's own statements
                // come before the injected one, and after an error the server skips the rest.
                *v.swallow_marker_error = false;
                let e = msg::decode_error(body).map_err(bad)?;
                if e.code == "42703" && e.message.contains(REFUSAL_MARKER) {
                    return Ok(true);
                }
                *v.abort_saw_client_error = true;
            }
        }
        b'I' | b's' if v.tracking && matches!(v.expects.front(), Some(Expect::Statement(..))) => {
            v.expects.pop_front();
        }
        b'G' => {
            *v.copy_in = true;
            *v.client_copy_done = false;
            // COPY started by an extended-protocol Execute: the Syncs already sent behind it
            // reach the server while it is in COPY mode, which ignores them.
            if v.pending_kinds.front() == Some(&SyncKind::Sync) {
                let ignored = v.pending_kinds.len();
                v.pending_kinds.clear();
                *v.pending_syncs -= ignored.min(*v.pending_syncs);
                if v.tracking {
                    for _ in 0..ignored {
                        if let Some(i) = v
                            .expects
                            .iter()
                            .rposition(|e| matches!(e, Expect::SyncPoint))
                        {
                            v.expects.remove(i);
                        }
                    }
                }
            }
        }
        b'W' => {
            tracing::error!("server started COPY BOTH (replication), which pgward does not relay");
            return Err(SessionEnd::ClientError(ClientError::ServerConnectionLost));
        }
        _ => {}
    }
    Ok(false)
}

/// Statement text for an audit event: normalized with every literal replaced (never the
/// client's values); none when it cannot be normalized.
fn audit_text(sql: &[u8]) -> Option<crate::audit::event::NormalizedSql> {
    let text = std::str::from_utf8(sql).ok()?;
    crate::audit::event::NormalizedSql::from_sql(text).ok()
}

/// Settings under which PostgreSQL reads SQL text differently from the statement policy.
fn policy_unenforceable(name: &str, value: &str) -> bool {
    match name {
        "client_encoding" => !value.eq_ignore_ascii_case("UTF8"),
        "standard_conforming_strings" => value != "on",
        _ => false,
    }
}

/// Classifies statement text given as bytes. Text that is not UTF-8 (a client using another
/// client_encoding) is classified by its ASCII keywords; its session changes cannot be replayed
/// byte for byte, so they count as untracked (the server is reset after use).
fn classify_bytes(sql: &[u8]) -> Vec<Option<(SessionEffect, String)>> {
    let (text, exact) = match std::str::from_utf8(sql) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), true),
        Err(_) => (String::from_utf8_lossy(sql), false),
    };
    statement::classify(&text)
        .into_iter()
        .map(|s| match s.effect {
            SessionEffect::None => None,
            SessionEffect::Set { .. } | SessionEffect::Reset { .. } if !exact => {
                Some((SessionEffect::Untracked, String::new()))
            }
            e => Some((e, s.text.to_owned())),
        })
        .collect()
}

/// [`classify_bytes`], skipping the lexer for a text whose shape the session has seen without
/// any session effect (see [`PlainShapes`]).
fn classify_bytes_cached(
    sql: &[u8],
    plain: &mut PlainShapes,
) -> Vec<Option<(SessionEffect, String)>> {
    let seen = shape::with_shape(sql, shape::ANY_DIGITS, |key| {
        let key = key?;
        Some(plain.statements(key).ok_or_else(|| Box::<[u8]>::from(key)))
    });
    let key = match seen {
        Some(Ok(statements)) => return vec![None; statements],
        Some(Err(key)) => Some(key),
        None => None,
    };
    let stmts = classify_bytes(sql);
    if let Some(key) = key
        && stmts.iter().all(Option::is_none)
    {
        plain.remember(key, stmts.len());
    }
    stmts
}

fn unshareable(stmts: &[Option<(SessionEffect, String)>]) -> Option<&'static str> {
    stmts.iter().flatten().find_map(|(e, _)| match e {
        SessionEffect::Unshareable(w) => Some(*w),
        _ => None,
    })
}

fn apply_effect(params: &mut Arc<SessionParams>, dirty: &mut bool, e: SessionEffect, text: &str) {
    let p = Arc::make_mut(params);
    match e {
        SessionEffect::Set { name } => p.record_set(&name, text),
        SessionEffect::Reset { name } => p.record_reset(&name),
        SessionEffect::ResetAll => p.record_reset_all(),
        SessionEffect::Untracked => *dirty = true,
        SessionEffect::None
        | SessionEffect::TransactionScoped
        | SessionEffect::Unshareable(_)
        | SessionEffect::Deallocate(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text found by its shape is classified exactly as the lexer would classify it. Each
    /// template is classified with several literals through one session's shapes, so all but
    /// the first are shape hits where the template has no effect, and compared with a fresh
    /// classification.
    #[test]
    fn a_plain_shape_hit_classifies_like_the_lexer() {
        let templates = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
            "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {}",
            "SELECT {}; SELECT {}",
            "SELECT {}; SET work_mem = {}",
            "SET statement_timeout = {}",
            "SET LOCAL statement_timeout = {}",
            "SELECT pg_advisory_lock({})",
            "SELECT set_config(x, y, {} = {})",
            "DEALLOCATE p{}",
            "BEGIN; SELECT {}; COMMIT",
            "SELECT x[{}:{}]::int8 FROM t LIMIT {}",
            "DISCARD ALL",
            "CREATE TEMP TABLE t{} (a int)",
            "LISTEN c{}",
            "DO {}",
            "SELECT {}e-{}",
            "",
        ];
        let values = ["1", "0", "42", "123456789012345678901234567890"];
        let mut plain = PlainShapes::default();
        for template in templates {
            for value in values {
                let sql = template.replace("{}", value);
                let cached = classify_bytes_cached(sql.as_bytes(), &mut plain);
                let fresh = classify_bytes(sql.as_bytes());
                assert_eq!(cached, fresh, "{sql}");
            }
        }
        // The cache is used: a plain template's second literal is a hit.
        let mut plain = PlainShapes::default();
        let _ = classify_bytes_cached(b"SELECT 1 FROM t WHERE a = 7", &mut plain);
        let mut key = Vec::new();
        assert!(shape::shape(
            b"SELECT 2 FROM t WHERE a = 9",
            shape::ANY_DIGITS,
            &mut key
        ));
        assert_eq!(plain.statements(&key), Some(1));
        // A statement with an effect is never kept.
        let _ = classify_bytes_cached(b"SET work_mem = 64", &mut plain);
        assert!(shape::shape(
            b"SET work_mem = 65",
            shape::ANY_DIGITS,
            &mut key
        ));
        assert_eq!(plain.statements(&key), None);
    }
}
