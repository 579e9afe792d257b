//! `statement.executed` audit events: which statement ran, how long it took and how it ended
//! (command tag and rows, or SQLSTATE). The relay reports what it forwards (a Query, a Bind's
//! statement, an Execute, a Sync) and what the server answers; this module pairs them up.
//!
//! What a statement is — fingerprint, text with every literal replaced, read or write — is
//! worked out once per distinct text, or per distinct shape for statements whose only
//! differences are integer literals, and cached ([`Descriptions`]), so an audited execution
//! costs a hash lookup, also over the simple protocol with literals inlined. "Write" is decided from the statement's words (lexically), conservatively:
//! anything not positively a read counts as a write, so `statements = "writes"` never misses one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::audit::codes::{Protocol, StatementKind};
use crate::audit::event::{CommandTag, NormalizedSql, SqlState, StatementExecuted};
use crate::policy::normalize::{self, Fingerprint, LiteralMode};
use crate::policy::shape;

/// Distinct statement texts (or shapes) described and kept; beyond it the cache starts over.
const CACHE_LIMIT: usize = 20_000;

/// What an audited statement is.
#[derive(Debug)]
pub struct Described {
    pub fingerprint: Fingerprint,
    pub text: Option<NormalizedSql>,
    pub kind: StatementKind,
}

/// Descriptions of statements, shared by all sessions: by their exact text, and — for
/// statements simple enough to tell their integer literals apart without a tokenizer — by
/// their shape (see [`shape::shape`]), so that a simple-protocol statement with a new literal each
/// time (`... WHERE id = 42`) is still a cache hit, not a normalization.
#[derive(Debug, Default)]
pub struct Descriptions {
    maps: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    exact: HashMap<Box<[u8]>, Arc<Described>>,
    shapes: HashMap<Box<[u8]>, Arc<Described>>,
}

impl Descriptions {
    /// The description of `sql`: by its shape when it has one (normalization with literals
    /// replaced cannot depend on a masked value, see [`shape::shape`]), else by exact text.
    pub fn describe(&self, sql: &[u8]) -> Arc<Described> {
        let shape_key = shape::with_shape(sql, shape::ANY_DIGITS, |key| {
            let key = key?;
            let maps = self.lock();
            Some(match maps.shapes.get(key).or_else(|| maps.exact.get(sql)) {
                Some(d) => Ok(Arc::clone(d)),
                None => Err(Box::<[u8]>::from(key)),
            })
        });
        let shape_key = match shape_key {
            Some(Ok(hit)) => return hit,
            Some(Err(key)) => Some(key),
            None => {
                if let Some(d) = self.lock().exact.get(sql) {
                    return Arc::clone(d);
                }
                None
            }
        };
        let d = Arc::new(describe(sql));
        let mut maps = self.lock();
        // Only a statement that normalized goes by its shape: one that did not is
        // fingerprinted by its exact text, literals and all, which the shape does not keep.
        let (map, key) = match shape_key {
            Some(key) if d.text.is_some() => (&mut maps.shapes, key),
            _ => (&mut maps.exact, Box::from(sql)),
        };
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, Arc::clone(&d));
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn describe(sql: &[u8]) -> Described {
    let text = std::str::from_utf8(sql).ok();
    let normalized = text.and_then(|t| normalize::normalize(t, LiteralMode::Replace).ok());
    match normalized {
        Some(n) => Described {
            fingerprint: n.fingerprint,
            kind: if is_read(&n.text) {
                StatementKind::Read
            } else {
                StatementKind::Write
            },
            // Normalized once: this is the text `NormalizedSql::from_sql` would make.
            text: Some(NormalizedSql::from_replaced(n.text)),
        },
        // No normalized form: a fingerprint of the raw text still groups repeats.
        None => Described {
            fingerprint: normalize::fingerprint(&String::from_utf8_lossy(sql)),
            text: None,
            kind: StatementKind::Write,
        },
    }
}

/// A read: a query or a statement that changes no data (transaction control, SHOW, SET), with
/// none of the words that would make it write (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `INTO`,
/// `FOR UPDATE` / `FOR SHARE`), one statement only.
fn is_read(normalized: &str) -> bool {
    const READ_FIRST: &[&str] = &[
        "SELECT",
        "WITH",
        "VALUES",
        "TABLE",
        "SHOW",
        "FETCH",
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "SET",
        "RESET",
    ];
    const WRITE_WORDS: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "SHARE"];
    let mut words = normalized
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("");
    READ_FIRST.contains(&first)
        && !normalized.contains(';')
        && !normalized
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| WRITE_WORDS.contains(&w))
}

/// A statement sent and not yet answered, or a Sync.
#[derive(Debug)]
enum Pending {
    Statement {
        what: Arc<Described>,
        protocol: Protocol,
        started: Instant,
        /// Whether an event is wanted (the filter said so); otherwise only tracked for order.
        wanted: bool,
        tag: Option<CommandTag>,
        sqlstate: Option<SqlState>,
    },
    Sync,
}

/// Pairs forwarded statements with the server's answers.
#[derive(Debug, Default)]
pub struct Executions {
    pending: VecDeque<Pending>,
}

impl Executions {
    /// A simple Query (all its statements, as one) or an Execute was forwarded.
    pub fn sent(&mut self, what: Arc<Described>, protocol: Protocol, wanted: bool) {
        self.pending.push_back(Pending::Statement {
            what,
            protocol,
            started: Instant::now(),
            wanted,
            tag: None,
            sqlstate: None,
        });
    }

    pub fn sent_sync(&mut self) {
        self.pending.push_back(Pending::Sync);
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// A server message; returns a finished statement's event fields, if one ended and was
    /// wanted.
    pub fn on_server(&mut self, tag: u8, body: &[u8]) -> Option<StatementExecuted> {
        let simple = matches!(
            self.pending.front(),
            Some(Pending::Statement {
                protocol: Protocol::Simple,
                ..
            })
        );
        match (tag, simple) {
            // COPY FROM STDIN started by an Execute: the Syncs already sent behind it reach a
            // server in COPY mode, which ignores them (as `prepared::Replies::on_copy_in`).
            (b'G', false) => {
                self.pending.retain(|p| !matches!(p, Pending::Sync));
                None
            }
            // A simple Query ends at ReadyForQuery; its last tag and first error count.
            (b'C', true) => {
                if let Some(Pending::Statement { tag, .. }) = self.pending.front_mut() {
                    *tag = CommandTag::parse(body);
                }
                None
            }
            (b'E', true) => {
                if let Some(Pending::Statement { sqlstate, .. }) = self.pending.front_mut()
                    && sqlstate.is_none()
                {
                    *sqlstate = error_code(body);
                }
                None
            }
            (b'Z', true) => self.finish(),
            (b'Z', false) => {
                if matches!(self.pending.front(), Some(Pending::Sync)) {
                    self.pending.pop_front();
                }
                None
            }
            // An Execute ends with its CommandComplete, EmptyQuery or PortalSuspended.
            (b'C' | b'I' | b's', false) => {
                if let Some(Pending::Statement { tag: t, .. }) = self.pending.front_mut()
                    && tag == b'C'
                {
                    *t = CommandTag::parse(body);
                }
                self.finish()
            }
            (b'E', false) => {
                let ended = match self.pending.front_mut() {
                    Some(Pending::Statement { sqlstate, .. }) => {
                        *sqlstate = error_code(body);
                        self.finish()
                    }
                    _ => None,
                };
                // After an error the server skips everything up to the Sync: those never ran.
                while matches!(self.pending.front(), Some(Pending::Statement { .. })) {
                    self.pending.pop_front();
                }
                ended
            }
            _ => None,
        }
    }

    fn finish(&mut self) -> Option<StatementExecuted> {
        match self.pending.pop_front()? {
            Pending::Statement {
                what,
                protocol,
                started,
                wanted: true,
                tag,
                sqlstate,
            } => Some(StatementExecuted {
                fingerprint: what.fingerprint,
                text: what.text.clone(),
                kind: what.kind,
                protocol,
                duration: started.elapsed(),
                command: tag,
                sqlstate,
            }),
            _ => None,
        }
    }
}

fn error_code(body: &[u8]) -> Option<SqlState> {
    let e = crate::protocol::messages::decode_error(body).ok()?;
    SqlState::parse(e.code.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart_conservatively() {
        let d = Descriptions::default();
        for (sql, read) in [
            ("select * from t where id = 1", true),
            ("BEGIN", true),
            ("SHOW search_path", true),
            ("INSERT INTO t VALUES (1)", false),
            (
                "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                false,
            ),
            ("SELECT * INTO t2 FROM t", false),
            ("SELECT * FROM t FOR UPDATE", false),
            ("SELECT 1; DELETE FROM t", false),
            ("CREATE TABLE x (a int)", false),
            ("SELECT '", false),
        ] {
            let kind = d.describe(sql.as_bytes()).kind;
            assert_eq!(kind == StatementKind::Read, read, "{sql}");
        }
        let a = d.describe(b"SELECT 'secret'");
        assert_eq!(a.text.as_ref().map(|t| t.as_str()), Some("SELECT ?"));
    }

    /// The shape cache's promise: a statement found by its shape is described exactly as it
    /// would be on its own. Each template is described with several literals through one
    /// cache, so all but the first are shape hits, and compared with a fresh description.
    #[test]
    fn a_shape_hit_describes_like_a_fresh_description() {
        let templates = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
            "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {};",
            "UPDATE pgbench_accounts SET abalance = abalance + -{} WHERE aid = {};",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({}, {}, {}, -{}, CURRENT_TIMESTAMP);",
            "select * from t where a = {} and b in ({},{}) order by 1 limit {} offset {}",
            "SELECT {}",
            "SELECT {} {}",
            "SELECT {}+{}, {}-{}, {}*{}, {}/{}, {}%{}, {}<{}, {}>={}, {}<>{}",
            "SELECT x>-{} FROM t",
            "SELECT {}e-{}, {}e+{}, {}E{}",
            "SELECT a[{}:{}], b[{}]::int8 FROM t",
            "SELECT {};SELECT {};",
            "SET statement_timeout = {}",
            "FETCH {} FROM c",
            "SELECT t{} FROM t{} WHERE c{}x = {}",
            "SELECT {}abc, {}.{}, 0x{}, {}L",
            "SELECT ({}),({})",
            "SELECT\t{}\r\n,\n{}",
            "DELETE FROM t WHERE id = {}",
            "SELECT * FROM t WHERE id = {} FOR UPDATE",
        ];
        let values = [
            "7",
            "0",
            "00",
            "42",
            "007",
            "9",
            "123456789012345678901234567890",
        ];
        let d = Descriptions::default();
        for template in templates {
            for (n, value) in values.iter().enumerate() {
                // The same literal everywhere, then a different one per position.
                let mut sql = template.replace("{}", value);
                if n % 2 == 1 {
                    let mut i = 0;
                    sql = template
                        .split("{}")
                        .enumerate()
                        .map(|(k, part)| {
                            i += 1;
                            if k == 0 {
                                part.to_owned()
                            } else {
                                format!("{}{part}", values[(n + i) % values.len()])
                            }
                        })
                        .collect();
                }
                let cached = d.describe(sql.as_bytes());
                let fresh = describe(sql.as_bytes());
                assert_eq!(cached.fingerprint, fresh.fingerprint, "{sql}");
                assert_eq!(cached.text, fresh.text, "{sql}");
                assert_eq!(cached.kind, fresh.kind, "{sql}");
                // (Digits in names, as in `t{}`, are names, not literals.)
                if let Some(text) = cached.text.as_ref().filter(|_| !template.contains("t{}")) {
                    assert!(!text.as_str().contains("123456789"), "{sql}: {text:?}");
                }
            }
        }
        let maps = d.lock();
        assert!(!maps.shapes.is_empty() && !maps.exact.is_empty());
    }

    #[test]
    fn executions_pair_with_answers_and_skipped_ones_are_dropped() {
        let d = Descriptions::default();
        let mut x = Executions::default();
        x.sent(d.describe(b"SELECT 1"), Protocol::Extended, true);
        x.sent(d.describe(b"SELECT 2"), Protocol::Extended, true);
        x.sent_sync();
        let first = x.on_server(b'C', b"SELECT 1\0").expect("first finished");
        let tag = first.command.expect("a tag");
        assert_eq!((tag.command(), tag.rows()), ("SELECT", Some(1)));
        let mut err = bytes::BytesMut::new();
        crate::error::ClientError::InFailedTransaction.write_to(&mut err);
        let second = x.on_server(b'E', &err[5..]).expect("second failed");
        assert_eq!(second.sqlstate.as_ref().map(|s| s.as_str()), Some("25P02"));
        assert!(x.on_server(b'Z', b"I").is_none());
        assert!(x.pending.is_empty());
        // COPY FROM STDIN by Execute: the Sync sent behind it is ignored by the server.
        x.sent(d.describe(b"COPY t FROM STDIN"), Protocol::Extended, true);
        x.sent_sync();
        assert!(x.on_server(b'G', b"").is_none());
        x.sent_sync();
        assert!(x.on_server(b'C', b"COPY 3\0").is_some());
        assert!(x.on_server(b'Z', b"I").is_none());
        assert!(x.pending.is_empty(), "{:?}", x.pending);
        x.sent(d.describe(b"SELECT 3; SELECT 4"), Protocol::Simple, true);
        assert!(x.on_server(b'C', b"SELECT 1\0").is_none());
        assert!(x.on_server(b'C', b"SELECT 1\0").is_none());
        assert!(x.on_server(b'Z', b"I").is_some());
    }
}
