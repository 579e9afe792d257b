//! Named prepared statements in transaction mode, where a client's statements must work on
//! whichever server connection it holds next.
//!
//! Three tables and one queue:
//! - [`StatementRegistry`] (one per process) interns each distinct statement — its full text and
//!   parameter types, compared byte for byte, never by hash alone — and gives it a stable
//!   server-side name, `pgward_<id>`;
//! - [`ClientStatements`] (one per client) maps the client's own names to those statements, so
//!   two clients may use one name for different SQL;
//! - [`ServerStatements`] (one per server connection, travelling with it through the pool) says
//!   which statements that server has prepared, bounded by an LRU whose evictions are closed on
//!   the server;
//! - [`Replies`] follows every message sent to the server until its answer has come back, so that
//!   answers to what pgward sent on its own (a Parse before a Bind, a Close of an evicted
//!   statement) are swallowed, and answers pgward gives itself (ParseComplete for a statement
//!   the server already has, CloseComplete for a client's Close) go out in protocol order.
//!
//! Robustness over cleverness: every Parse pgward sends for a statement it does not know to be
//! on the server is preceded by a Close of the same name (a no-op when absent), so if pgward's
//! table and the server ever disagree, the worst case is one needless round of preparation,
//! never a "prepared statement already exists" error. [`StatementDef::put_close_and_parse`] is
//! the only way pgward writes a Parse, so this holds by construction. It is also what keeps a
//! statement someone else put under a `pgward_<n>` name (a function running
//! `EXECUTE 'PREPARE pgward_7 AS …'`) from being run in place of pgward's own on a connection
//! whose table lacks that name: pgward's Close drops the impostor first.
//!
//! The other way round, a statement that vanished behind pgward's back (a function running
//! `DEALLOCATE pgward_5` or `DEALLOCATE ALL`; pgward sees only the top-level command tags)
//! shows as `26000` answering pgward's renamed Bind or Describe ([`Replies::push_renamed`]):
//! the relay then forgets the connection's table, so everything is prepared again on next use,
//! and marks the connection for a reset. That client gets the one error; nobody after it does.
//! What pgward cannot see is a function replacing a statement the table does have
//! (`DEALLOCATE` then `PREPARE` of the same name): code that runs arbitrary dynamic SQL for one
//! client can act on the others sharing its backend role (see the README).
//!
//! Hand-written: no crate does this. The registry is a mutex-protected map touched once per
//! client Parse; per execution, a Bind costs one lookup in the client's map and one in the
//! server's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, BytesMut};

use crate::session::statement::SessionEffect;

/// How many named statements one client may hold (PostgreSQL has no limit; a pooler must).
pub const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// One distinct statement: text and parameter types as the client sent them.
#[derive(Debug)]
pub struct StatementDef {
    pub id: u64,
    /// The name it has on every server connection: `pgward_<id>`.
    pub server_name: Box<str>,
    /// The Parse body after the statement name: query text, NUL, parameter count and types.
    /// Shared with the registry's key: a statement's text is held once.
    parse_tail: Arc<[u8]>,
    /// What running it does to session state (for transaction-mode tracking).
    pub effect: Option<(SessionEffect, String)>,
    /// Some server has accepted it. A client's Parse of a validated statement is answered
    /// without taking a server connection: drivers that prepare synchronously (pgbench,
    /// libpq's PQprepare) would otherwise wait for a server while their other connections,
    /// held in transactions, wait for them. PostgreSQL re-checks it at Bind anyway.
    validated: AtomicBool,
}

impl StatementDef {
    pub fn validated(&self) -> bool {
        self.validated.load(Ordering::Relaxed)
    }

    /// The SQL text as sent (in the client's encoding).
    pub fn query(&self) -> &[u8] {
        let end = self
            .parse_tail
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.parse_tail.len());
        &self.parse_tail[..end]
    }

    /// Appends a Close of the server name, then a Parse of this statement under it: the Close
    /// makes the Parse safe whatever the server has under that name (see the module comment).
    /// Two answers follow, CloseComplete then ParseComplete (or an error).
    pub fn put_close_and_parse(&self, out: &mut BytesMut) {
        self.put_close(out);
        self.put_parse(out);
    }

    /// Appends a Parse of this statement under its server name (only ever after a Close).
    fn put_parse(&self, out: &mut BytesMut) {
        let len = 4 + self.server_name.len() + 1 + self.parse_tail.len();
        out.put_u8(b'P');
        out.put_i32(len as i32);
        out.put_slice(self.server_name.as_bytes());
        out.put_u8(0);
        out.put_slice(&self.parse_tail);
    }

    /// Appends a Close of this statement's server name.
    pub fn put_close(&self, out: &mut BytesMut) {
        out.put_u8(b'C');
        out.put_i32((4 + 1 + self.server_name.len() + 1) as i32);
        out.put_u8(b'S');
        out.put_slice(self.server_name.as_bytes());
        out.put_u8(0);
    }

    /// Appends `msg` (a Bind or Describe body starting at `prefix`'s end with the client's
    /// statement name) re-targeted at the server name: `tag`, `prefix`, server name, `rest`.
    pub fn put_renamed(&self, out: &mut BytesMut, tag: u8, prefix: &[u8], rest: &[u8]) {
        let len = 4 + prefix.len() + self.server_name.len() + 1 + rest.len();
        out.put_u8(tag);
        out.put_i32(len as i32);
        out.put_slice(prefix);
        out.put_slice(self.server_name.as_bytes());
        out.put_u8(0);
        out.put_slice(rest);
    }
}

/// Interns statements process-wide so equal statements share one server name.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    map: Mutex<RegistryMap>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct RegistryMap {
    /// Keyed by the full Parse tail: equal keys are equal statements, byte for byte.
    by_key: HashMap<Arc<[u8]>, Weak<StatementDef>>,
    /// When to sweep out statements nobody holds any more.
    sweep_at: usize,
}

impl StatementRegistry {
    /// The shared definition for `parse_tail` (the Parse body after its name); `effect` is
    /// computed only for a statement seen for the first time.
    pub fn intern(
        &self,
        parse_tail: &[u8],
        effect: impl FnOnce() -> Option<(SessionEffect, String)>,
    ) -> Arc<StatementDef> {
        // A poisoned lock only means another session panicked mid-insert; the map is still a
        // valid map.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(def) = map.by_key.get(parse_tail).and_then(Weak::upgrade) {
            return def;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let key: Arc<[u8]> = parse_tail.into();
        let def = Arc::new(StatementDef {
            id,
            server_name: format!("pgward_{id}").into_boxed_str(),
            parse_tail: Arc::clone(&key),
            effect: effect(),
            validated: AtomicBool::new(false),
        });
        map.by_key.insert(key, Arc::downgrade(&def));
        if map.by_key.len() >= map.sweep_at {
            map.by_key.retain(|_, w| w.strong_count() > 0);
            map.sweep_at = (map.by_key.len() * 2).max(1024);
        }
        def
    }

    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client's named statements.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<Box<str>, Arc<StatementDef>>,
    /// What they cost ([`ClientStatements::cost`] summed over the names).
    bytes: usize,
}

impl ClientStatements {
    /// What holding one name costs, in bytes: the name and the statement's Parse tail (text,
    /// parameter types). A statement shared by several names counts for each, as the client
    /// could make each a different one.
    pub fn cost(name: &str, parse_tail_len: usize) -> usize {
        name.len() + parse_tail_len
    }

    fn cost_of(name: &str, def: &StatementDef) -> usize {
        Self::cost(name, def.parse_tail.len())
    }

    /// What all the client's names cost.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, name: &str) -> Option<&Arc<StatementDef>> {
        self.map.get(name)
    }

    fn put(&mut self, name: &str, def: Arc<StatementDef>) -> Option<Arc<StatementDef>> {
        self.bytes += Self::cost_of(name, &def);
        let previous = self.map.insert(name.into(), def);
        if let Some(p) = &previous {
            self.bytes -= Self::cost_of(name, p);
        }
        previous
    }

    fn take(&mut self, name: &str) -> Option<Arc<StatementDef>> {
        let previous = self.map.remove(name);
        if let Some(p) = &previous {
            self.bytes -= Self::cost_of(name, p);
        }
        previous
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<StatementDef>)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }

    /// Sets `name` and returns how to undo it.
    pub fn insert(&mut self, name: &str, def: Arc<StatementDef>) -> Undo {
        let previous = self.put(name, Arc::clone(&def));
        Undo {
            name: name.into(),
            set: Some(def),
            previous,
        }
    }

    /// Removes `name` and returns how to undo it.
    pub fn remove(&mut self, name: &str) -> Undo {
        let previous = self.take(name);
        Undo {
            name: name.into(),
            set: None,
            previous,
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Takes back one change, newest first, unless the name has changed since: then the later
    /// change stands. (The relay makes a client's message that touches a name wait while an
    /// earlier segment's change to it is unsettled, see [`Replies::unsettled_before`], so the
    /// changes reverted after an error are always the newest ones of their names; this check
    /// keeps a later change safe even if that ever failed.)
    fn revert(&mut self, undo: Undo) {
        let unchanged = match (&undo.set, self.map.get(&undo.name)) {
            (Some(set), Some(now)) => Arc::ptr_eq(set, now),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            return;
        }
        match undo.previous {
            Some(def) => {
                self.put(&undo.name, def);
            }
            None => {
                self.take(&undo.name);
            }
        }
    }
}

/// How to take back one change to a client's statements if the server skips the message that
/// made it (after an error, PostgreSQL ignores everything until Sync).
#[derive(Debug)]
pub struct Undo {
    name: Box<str>,
    /// What the change left under the name (`None`: removed it).
    set: Option<Arc<StatementDef>>,
    previous: Option<Arc<StatementDef>>,
}

/// The statements one server connection has prepared, as far as pgward knows.
#[derive(Debug, Default)]
pub struct ServerStatements {
    entries: HashMap<u64, ServerStatement>,
    tick: u64,
    /// The hand-over resets (a bit per kind) whose statements pgward prepared here, so that
    /// the next one is only Bind/Execute: PostgreSQL then skips parsing them (about half of
    /// what the reset costs it).
    pub resets_prepared: u8,
}

#[derive(Debug)]
struct ServerStatement {
    def: Arc<StatementDef>,
    /// The server answered ParseComplete.
    confirmed: bool,
    /// Which client segment (Syncs and Queries sent) sent the Parse: a Parse still unanswered
    /// is usable only by later messages of the same segment, which an error would skip too.
    segment: u64,
    /// Identifies this insertion, so a late answer to an older Parse changes nothing.
    generation: u64,
    last_used: u64,
}

impl ServerStatements {
    /// True if a message of `segment` may use statement `id` on this server now.
    pub fn usable(&mut self, id: u64, segment: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&id) {
            Some(e) if e.confirmed || e.segment == segment => {
                e.last_used = tick;
                true
            }
            _ => false,
        }
    }

    /// Records a Parse of `def` just sent; returns its generation.
    pub fn insert_pending(&mut self, def: &Arc<StatementDef>, segment: u64) -> u64 {
        self.tick += 1;
        let generation = self.tick;
        self.entries.insert(
            def.id,
            ServerStatement {
                def: Arc::clone(def),
                confirmed: false,
                segment,
                generation,
                last_used: generation,
            },
        );
        generation
    }

    fn confirm(&mut self, id: u64, generation: u64) {
        if let Some(e) = self.entries.get_mut(&id)
            && e.generation == generation
        {
            e.confirmed = true;
        }
    }

    fn forget(&mut self, id: u64, generation: u64) {
        if self
            .entries
            .get(&id)
            .is_some_and(|e| e.generation == generation)
        {
            self.entries.remove(&id);
        }
    }

    /// The least recently used confirmed statement, removed, when more than `capacity` are
    /// held: the caller closes it on the server.
    pub fn evict_over(&mut self, capacity: usize) -> Option<Arc<StatementDef>> {
        if self.entries.len() <= capacity {
            return None;
        }
        let (&id, _) = self
            .entries
            .iter()
            .filter(|(_, e)| e.confirmed)
            .min_by_key(|(_, e)| e.last_used)?;
        self.entries.remove(&id).map(|e| e.def)
    }

    /// A statement the server still has after all (its eviction Close was skipped).
    fn restore(&mut self, def: Arc<StatementDef>) {
        self.tick += 1;
        let generation = self.tick;
        self.entries.entry(def.id).or_insert(ServerStatement {
            def,
            confirmed: true,
            segment: 0,
            generation,
            last_used: 0,
        });
    }

    /// The server forgot everything (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.resets_prepared = 0;
    }

    /// Drops entries whose Parse was never answered: after a disorderly end their fate is
    /// unknown (the Close-before-Parse rule makes forgetting them safe).
    pub fn forget_unconfirmed(&mut self) {
        self.entries.retain(|_, e| e.confirmed);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An answer pgward gives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synthetic {
    ParseComplete,
    CloseComplete,
}

impl Synthetic {
    fn tag(self) -> u8 {
        match self {
            Synthetic::ParseComplete => b'1',
            Synthetic::CloseComplete => b'3',
        }
    }
}

/// What an answer still owed by the server (or by pgward) is, oldest first.
#[derive(Debug)]
enum Reply {
    /// `n` extended-protocol messages whose answers go to the client untouched.
    Pass(u32),
    /// A simple Query (or FunctionCall): answered up to its ReadyForQuery.
    Query,
    /// An extended-protocol Sync: after an error, the server skips everything up to here.
    Sync,
    /// A Parse of a statement on this server.
    Parse {
        def: Arc<StatementDef>,
        generation: u64,
        /// pgward sent it on its own: its ParseComplete is not the client's.
        swallow: bool,
        /// The client's name for it, taken back if the Parse fails or is skipped.
        undo: Option<Undo>,
    },
    /// A message pgward sent on its own whose answer is not the client's.
    Swallow,
    /// A client's Bind or Describe of a named statement, sent under the server name: answered
    /// like `Pass(1)`, but a `26000` answering it means the statement vanished from the server.
    Renamed,
    /// pgward's Close of a statement evicted from the LRU: if the server skips it (an error
    /// earlier in the pipeline), the statement is still there and goes back in the table.
    Evict(Arc<StatementDef>),
    /// An answer pgward gives itself when its turn comes.
    Synthetic(Synthetic, Option<Undo>),
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyAction {
    Forward,
    Swallow,
}

/// The answers owed to the client, in order (see the module comment).
#[derive(Debug, Default)]
pub struct Replies {
    queue: VecDeque<Reply>,
    /// The server failed a message while no Sync was queued behind it (a pipeline sent with
    /// Flush): it now skips every message until the client's next Sync. The relay does the
    /// same with what the client sends meanwhile (nothing is forwarded, nothing answered by
    /// pgward, no name changes), as PostgreSQL would, until that Sync is pushed.
    skipping_until_sync: bool,
    /// Queries the server ignored while skipping after an error: no ReadyForQuery comes for
    /// them (see [`Replies::take_skipped_queries`]).
    skipped_queries: usize,
    /// Syncs and Queries queued so far: numbers the client's segments.
    segments: u64,
    /// Client names with changes whose outcome (answered, or skipped after an error) is not
    /// known yet: how many, and the segment of the oldest.
    unsettled: HashMap<Box<str>, (u32, u64)>,
}

impl Replies {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && !self.skipping_until_sync
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.skipping_until_sync = false;
        self.skipped_queries = 0;
        self.unsettled.clear();
    }

    /// True if `name` has a change from an earlier segment (before the last Sync or Query
    /// queued) whose outcome is not known yet. A client's message touching that name must wait
    /// for it: whether PostgreSQL finds the name depends on it, and a change made now could be
    /// undone by that earlier one's error.
    pub fn unsettled_before(&self, name: &str) -> bool {
        self.unsettled
            .get(name)
            .is_some_and(|&(_, segment)| segment < self.segments)
    }

    /// True if some name has a change whose outcome is not known yet.
    pub fn any_unsettled(&self) -> bool {
        !self.unsettled.is_empty()
    }

    fn unsettle(&mut self, undo: &Option<Undo>) {
        if let Some(u) = undo {
            let segments = self.segments;
            let e = self
                .unsettled
                .entry(u.name.clone())
                .or_insert((0, segments));
            e.0 += 1;
        }
    }

    /// The outcome of a change is known (it happened, or was taken back).
    fn settle(&mut self, undo: &Option<Undo>) {
        if let Some(u) = undo
            && let Some(e) = self.unsettled.get_mut(&u.name)
        {
            e.0 -= 1;
            if e.0 == 0 {
                self.unsettled.remove(&u.name);
            }
        }
    }

    /// How many simple Queries the last server message made the server's skipping swallow
    /// (they get no ReadyForQuery); resets the count.
    pub fn take_skipped_queries(&mut self) -> usize {
        std::mem::take(&mut self.skipped_queries)
    }

    /// True while the server skips the client's messages until its next Sync (see
    /// `skipping_until_sync`): the relay must drop everything but Sync (and Terminate).
    pub fn skipping_until_sync(&self) -> bool {
        self.skipping_until_sync
    }

    /// True if a synthetic answer is due now (everything before it has been answered).
    pub fn synthetic_due(&self) -> bool {
        matches!(self.queue.front(), Some(Reply::Synthetic(..)))
    }

    /// An extended-protocol message whose answer goes to the client as it is.
    pub fn push_pass(&mut self) {
        if let Some(Reply::Pass(n)) = self.queue.back_mut() {
            *n += 1;
        } else {
            self.queue.push_back(Reply::Pass(1));
        }
    }

    pub fn push_query(&mut self) {
        self.segments += 1;
        self.queue.push_back(Reply::Query);
    }

    pub fn push_sync(&mut self) {
        // The server stops skipping at this Sync; its ReadyForQuery is owed as usual.
        self.skipping_until_sync = false;
        self.segments += 1;
        self.queue.push_back(Reply::Sync);
    }

    pub fn push_parse(
        &mut self,
        def: &Arc<StatementDef>,
        generation: u64,
        swallow: bool,
        undo: Option<Undo>,
    ) {
        self.unsettle(&undo);
        self.queue.push_back(Reply::Parse {
            def: Arc::clone(def),
            generation,
            swallow,
            undo,
        });
    }

    /// A client's Bind or Describe re-targeted at a statement's server name.
    pub fn push_renamed(&mut self) {
        self.queue.push_back(Reply::Renamed);
    }

    /// True if the oldest answer owed is for a renamed Bind or Describe: an error now answers
    /// it (see [`Reply::Renamed`]).
    pub fn renamed_due(&self) -> bool {
        matches!(self.queue.front(), Some(Reply::Renamed))
    }

    pub fn push_swallow(&mut self) {
        self.queue.push_back(Reply::Swallow);
    }

    pub fn push_evict(&mut self, def: Arc<StatementDef>) {
        self.queue.push_back(Reply::Evict(def));
    }

    /// Queues an answer pgward gives itself; written out by [`Replies::drain_synthetic`] when
    /// everything before it has been answered.
    pub fn push_synthetic(&mut self, s: Synthetic, undo: Option<Undo>) {
        self.unsettle(&undo);
        self.queue.push_back(Reply::Synthetic(s, undo));
    }

    /// Writes the synthetic answers now at the head of the queue.
    pub fn drain_synthetic(&mut self, out: &mut BytesMut) {
        while let Some(Reply::Synthetic(s, _)) = self.queue.front() {
            out.put_u8(s.tag());
            out.put_i32(4);
            if let Some(Reply::Synthetic(_, undo)) = self.queue.pop_front() {
                self.settle(&undo);
            }
        }
    }

    /// Accounts for one server message (only its tag matters). Call
    /// [`Replies::drain_synthetic`] afterwards.
    pub fn on_server(
        &mut self,
        tag: u8,
        server: &mut ServerStatements,
        client: &mut ClientStatements,
    ) -> ReplyAction {
        let Some(head) = self.queue.front_mut() else {
            return ReplyAction::Forward;
        };
        match head {
            Reply::Query | Reply::Sync => {
                if tag == b'Z' {
                    self.queue.pop_front();
                }
                ReplyAction::Forward
            }
            Reply::Synthetic(..) => {
                // Synthetic answers are drained as soon as they reach the head; one here means
                // the caller forgot to drain. Nothing of the server's completes it.
                ReplyAction::Forward
            }
            _ => match tag {
                b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's' => self.complete_head(server),
                b'E' => {
                    // The failing message is done, and the server skips everything else up to
                    // the next Sync: their answers never come, synthetic ones included. With
                    // no Sync queued yet, it goes on skipping what the client sends next.
                    if !self.skip_to_sync(server, client, true) {
                        self.skipping_until_sync = true;
                    }
                    ReplyAction::Forward
                }
                b'Z' => {
                    // Out of step (should not happen): the server is back at a sync point, so
                    // is the queue; what it never answered was skipped and is taken back.
                    self.skip_to_sync(server, client, false);
                    if matches!(self.queue.front(), Some(Reply::Sync | Reply::Query)) {
                        self.queue.pop_front();
                    }
                    self.skipping_until_sync = false;
                    ReplyAction::Forward
                }
                _ => ReplyAction::Forward,
            },
        }
    }

    /// Takes the entries before the next Sync off the queue as messages the server skipped:
    /// their Parses never happened, evicted statements are still there, the client's name
    /// changes are taken back (newest first). After an error PostgreSQL ignores simple Queries
    /// too until the Sync (`through_queries`): they are counted in `skipped_queries` for the
    /// relay, which expects no ReadyForQuery for them; otherwise a Query ends the skip as a
    /// Sync does. Returns false if no Sync (or Query) is queued.
    fn skip_to_sync(
        &mut self,
        server: &mut ServerStatements,
        client: &mut ClientStatements,
        through_queries: bool,
    ) -> bool {
        let mut undos = Vec::new();
        let mut synced = false;
        while let Some(r) = self.queue.front() {
            if matches!(r, Reply::Sync) || (!through_queries && matches!(r, Reply::Query)) {
                synced = true;
                break;
            }
            match self.queue.pop_front() {
                Some(Reply::Query) => self.skipped_queries += 1,
                Some(Reply::Parse {
                    def,
                    generation,
                    undo,
                    ..
                }) => {
                    server.forget(def.id, generation);
                    self.settle(&undo);
                    undos.extend(undo);
                }
                Some(Reply::Synthetic(_, undo)) => {
                    self.settle(&undo);
                    undos.extend(undo);
                }
                Some(Reply::Evict(def)) => server.restore(def),
                _ => {}
            }
        }
        for u in undos.into_iter().rev() {
            client.revert(u);
        }
        synced
    }

    fn complete_head(&mut self, server: &mut ServerStatements) -> ReplyAction {
        match self.queue.front_mut() {
            Some(Reply::Pass(n)) => {
                *n -= 1;
                if *n == 0 {
                    self.queue.pop_front();
                }
                ReplyAction::Forward
            }
            Some(Reply::Parse {
                def,
                generation,
                swallow,
                ..
            }) => {
                server.confirm(def.id, *generation);
                def.validated.store(true, Ordering::Relaxed);
                let action = if *swallow {
                    ReplyAction::Swallow
                } else {
                    ReplyAction::Forward
                };
                if let Some(Reply::Parse { undo, .. }) = self.queue.pop_front() {
                    self.settle(&undo);
                }
                action
            }
            Some(Reply::Renamed) => {
                self.queue.pop_front();
                ReplyAction::Forward
            }
            Some(Reply::Swallow) | Some(Reply::Evict(_)) => {
                self.queue.pop_front();
                ReplyAction::Swallow
            }
            _ => ReplyAction::Forward,
        }
    }

    /// COPY FROM STDIN began: the Syncs already sent behind the Execute reach a server in COPY
    /// mode, which ignores them.
    pub fn on_copy_in(&mut self) {
        if matches!(self.queue.front(), Some(Reply::Query) | None) {
            return;
        }
        self.queue.retain(|r| !matches!(r, Reply::Sync));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(sql: &str, types: &[u32]) -> Vec<u8> {
        let mut v = sql.as_bytes().to_vec();
        v.push(0);
        v.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for t in types {
            v.extend_from_slice(&t.to_be_bytes());
        }
        v
    }

    #[test]
    fn equal_statements_share_a_name_and_different_ones_never_do() {
        let reg = StatementRegistry::default();
        let a = reg.intern(&tail("SELECT 1", &[]), || None);
        let b = reg.intern(&tail("SELECT 1", &[]), || None);
        let c = reg.intern(&tail("SELECT 1 ", &[]), || None);
        let d = reg.intern(&tail("SELECT 1", &[23]), || None);
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
        assert_eq!(a.query(), b"SELECT 1");
    }

    #[test]
    fn parse_and_close_messages_are_well_formed() {
        let reg = StatementRegistry::default();
        let def = reg.intern(&tail("SELECT $1", &[23]), || None);
        let mut out = BytesMut::new();
        def.put_parse(&mut out);
        let (tag, len) = (out[0], i32::from_be_bytes([out[1], out[2], out[3], out[4]]));
        assert_eq!(tag, b'P');
        assert_eq!(len as usize, out.len() - 1);
        let (name, query) = crate::protocol::messages::decode_parse_raw(&out[5..]).unwrap();
        assert_eq!(name, def.server_name.as_bytes());
        assert_eq!(query, b"SELECT $1");
        out.clear();
        def.put_close(&mut out);
        let (kind, name) = crate::protocol::messages::decode_target(&out[5..], "Close").unwrap();
        assert_eq!((kind, name), (b'S', &*def.server_name));
    }

    #[test]
    fn swallowed_and_synthetic_answers_keep_protocol_order() {
        let reg = StatementRegistry::default();
        let def = reg.intern(&tail("SELECT 1", &[]), || None);
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        let mut r = Replies::default();
        // Client: Bind s1 (pgward first sends Close + Parse), Execute, then Parse s2 of a
        // statement the server has: ParseComplete synthesized after the Execute's answer.
        r.push_swallow();
        let g = server.insert_pending(&def, 1);
        r.push_parse(&def, g, true, None);
        r.push_pass();
        r.push_pass();
        let undo = client.insert("s2", Arc::clone(&def));
        r.push_synthetic(Synthetic::ParseComplete, Some(undo));
        r.push_sync();
        let mut out = BytesMut::new();
        let mut step = |tag, out: &mut BytesMut| {
            let a = r.on_server(tag, &mut server, &mut client);
            r.drain_synthetic(out);
            a
        };
        assert_eq!(step(b'3', &mut out), ReplyAction::Swallow);
        assert_eq!(step(b'1', &mut out), ReplyAction::Swallow);
        assert_eq!(step(b'2', &mut out), ReplyAction::Forward);
        assert_eq!(step(b'D', &mut out), ReplyAction::Forward);
        assert!(out.is_empty());
        assert_eq!(step(b'C', &mut out), ReplyAction::Forward);
        assert_eq!(&out[..], b"1\0\0\0\x04");
        assert_eq!(step(b'Z', &mut out), ReplyAction::Forward);
        assert!(r.is_empty());
        assert!(server.usable(def.id, 99));
        assert!(def.validated());
        assert!(client.get("s2").is_some());
    }

    #[test]
    fn an_error_skips_to_sync_and_takes_back_what_was_skipped() {
        let reg = StatementRegistry::default();
        let old = reg.intern(&tail("SELECT 1", &[]), || None);
        let new = reg.intern(&tail("SELECT 2", &[]), || None);
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        client.insert("s", Arc::clone(&old));
        let mut r = Replies::default();
        // Bind (fails), Close s (synthetic), Parse s as new text (sent), Sync.
        r.push_pass();
        let u1 = client.remove("s");
        r.push_synthetic(Synthetic::CloseComplete, Some(u1));
        let u2 = client.insert("s", Arc::clone(&new));
        let g = server.insert_pending(&new, 1);
        r.push_swallow();
        r.push_parse(&new, g, false, Some(u2));
        r.push_sync();
        let mut out = BytesMut::new();
        assert_eq!(
            r.on_server(b'E', &mut server, &mut client),
            ReplyAction::Forward
        );
        r.drain_synthetic(&mut out);
        assert!(out.is_empty(), "skipped messages get no synthetic answer");
        assert!(Arc::ptr_eq(client.get("s").unwrap(), &old));
        assert!(!server.usable(new.id, 2));
        r.on_server(b'Z', &mut server, &mut client);
        assert!(r.is_empty());
    }

    #[test]
    fn an_error_with_no_sync_queued_skips_until_the_clients_sync() {
        let reg = StatementRegistry::default();
        let kept = reg.intern(&tail("SELECT 1", &[]), || None);
        let fresh = reg.intern(&tail("SELECT 2", &[]), || None);
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        client.insert("k", Arc::clone(&kept));
        let mut r = Replies::default();
        // Bind/Execute (the Bind fails), Close k (synthetic), a Query, Flush: no Sync yet.
        r.push_pass();
        r.push_pass();
        let u = client.remove("k");
        r.push_synthetic(Synthetic::CloseComplete, Some(u));
        r.push_query();
        assert_eq!(
            r.on_server(b'E', &mut server, &mut client),
            ReplyAction::Forward
        );
        assert!(r.skipping_until_sync(), "the server skips until a Sync");
        assert!(!r.is_empty(), "a skipping server is not idle");
        assert!(!r.synthetic_due());
        assert_eq!(r.take_skipped_queries(), 1, "the Query is ignored too");
        assert!(
            Arc::ptr_eq(client.get("k").unwrap(), &kept),
            "Close taken back"
        );
        r.push_sync();
        assert!(!r.skipping_until_sync());
        r.on_server(b'Z', &mut server, &mut client);
        assert!(r.is_empty());

        // Out of step: a ReadyForQuery while entries are unanswered takes them back too.
        let g = server.insert_pending(&fresh, 7);
        let u = client.insert("f", Arc::clone(&fresh));
        r.push_swallow();
        r.push_parse(&fresh, g, false, Some(u));
        r.push_sync();
        r.on_server(b'Z', &mut server, &mut client);
        assert!(r.is_empty());
        assert!(client.get("f").is_none());
        assert!(!server.usable(fresh.id, 7));
    }

    #[test]
    fn a_taken_back_change_never_undoes_a_later_one() {
        let reg = StatementRegistry::default();
        let broken = reg.intern(&tail("SELEC 1", &[]), || None);
        let fixed = reg.intern(&tail("SELECT 1", &[]), || None);
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        let mut r = Replies::default();
        // Segment 1: Parse s1 (will fail), Sync.
        let g = server.insert_pending(&broken, 1);
        let u = client.insert("s1", Arc::clone(&broken));
        r.push_swallow();
        r.push_parse(&broken, g, false, Some(u));
        assert!(
            !r.unsettled_before("s1"),
            "same segment: LIFO undo is exact"
        );
        r.push_sync();
        assert!(r.any_unsettled());
        assert!(r.unsettled_before("s1"), "the relay makes segment 2 wait");
        assert!(!r.unsettled_before("other"));
        // Had segment 2 not waited: Close s1, Parse s1 as the fixed text.
        let u = client.remove("s1");
        r.push_synthetic(Synthetic::CloseComplete, Some(u));
        let g2 = server.insert_pending(&fixed, 2);
        let u = client.insert("s1", Arc::clone(&fixed));
        r.push_swallow();
        r.push_parse(&fixed, g2, false, Some(u));
        r.push_sync();
        let mut out = BytesMut::new();
        for tag in [b'3', b'E', b'Z', b'3', b'1', b'Z'] {
            r.on_server(tag, &mut server, &mut client);
            r.drain_synthetic(&mut out);
        }
        assert!(r.is_empty());
        assert!(!r.any_unsettled(), "every outcome is known");
        assert!(
            Arc::ptr_eq(client.get("s1").unwrap(), &fixed),
            "the failed Parse's undo left the later Parse alone"
        );
    }

    #[test]
    fn a_renamed_bind_is_answered_like_any_client_message() {
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        let mut r = Replies::default();
        r.push_renamed();
        r.push_renamed();
        r.push_sync();
        assert!(r.renamed_due());
        assert_eq!(
            r.on_server(b'2', &mut server, &mut client),
            ReplyAction::Forward
        );
        assert!(r.renamed_due(), "one answer each, never merged");
        r.on_server(b'E', &mut server, &mut client);
        assert!(!r.renamed_due());
        r.on_server(b'Z', &mut server, &mut client);
        assert!(r.is_empty());
    }

    #[test]
    fn a_clients_statements_are_counted_in_bytes() {
        let reg = StatementRegistry::default();
        let a = reg.intern(&tail("SELECT 1", &[]), || None);
        let b = reg.intern(&tail("SELECT 22", &[23]), || None);
        let (ca, cb) = (a.parse_tail.len(), b.parse_tail.len());
        let mut c = ClientStatements::default();
        let u1 = c.insert("x", Arc::clone(&a));
        assert_eq!(c.bytes(), 1 + ca);
        let u2 = c.insert("yy", Arc::clone(&a));
        assert_eq!(c.bytes(), 1 + ca + 2 + ca, "each name counts");
        let u3 = c.remove("x");
        assert_eq!(c.bytes(), 2 + ca);
        let u4 = c.insert("x", Arc::clone(&b));
        assert_eq!(c.bytes(), 2 + ca + 1 + cb);
        for u in [u4, u3, u2, u1] {
            c.revert(u);
        }
        assert_eq!(c.bytes(), 0);
        assert!(c.is_empty());
        c.insert("x", Arc::clone(&b));
        c.clear();
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn an_eviction_the_server_skipped_puts_the_statement_back() {
        let reg = StatementRegistry::default();
        let victim = reg.intern(&tail("SELECT 'victim'", &[]), || None);
        let bad = reg.intern(&tail("SELEC 1", &[]), || None);
        let mut server = ServerStatements::default();
        let mut client = ClientStatements::default();
        let g = server.insert_pending(&victim, 1);
        server.confirm(victim.id, g);
        let mut r = Replies::default();
        // Close + Parse of a bad statement, then the LRU's Close of the victim, then Sync.
        r.push_swallow();
        let g = server.insert_pending(&bad, 2);
        r.push_parse(&bad, g, false, None);
        let evicted = server.evict_over(1).expect("victim evicted");
        r.push_evict(evicted);
        r.push_sync();
        assert!(!server.usable(victim.id, 2));
        r.on_server(b'3', &mut server, &mut client);
        r.on_server(b'E', &mut server, &mut client);
        r.on_server(b'Z', &mut server, &mut client);
        assert!(r.is_empty());
        assert!(server.usable(victim.id, 3), "the server still has it");
        assert!(!server.usable(bad.id, 3));
    }

    #[test]
    fn lru_evicts_the_least_recently_used_confirmed_statement() {
        let reg = StatementRegistry::default();
        let defs: Vec<_> = (0..3)
            .map(|i| reg.intern(&tail(&format!("SELECT {i}"), &[]), || None))
            .collect();
        let mut s = ServerStatements::default();
        for d in &defs {
            let g = s.insert_pending(d, 1);
            s.confirm(d.id, g);
        }
        assert!(s.usable(defs[0].id, 2));
        assert!(s.evict_over(3).is_none());
        let evicted = s.evict_over(2).unwrap();
        assert_eq!(evicted.id, defs[1].id);
        assert!(!s.usable(defs[1].id, 2));
        assert!(s.usable(defs[2].id, 2));
    }

    #[test]
    fn registry_sweeps_statements_nobody_holds() {
        let reg = StatementRegistry::default();
        for i in 0..3000 {
            reg.intern(&tail(&format!("SELECT {i}"), &[]), || None);
        }
        assert!(reg.len() < 2100, "dead entries are swept: {}", reg.len());
    }
}
