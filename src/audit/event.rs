//! The audit event types: what can be said in an audit record, and nothing else.
//!
//! An [`Event`] is built by the caller from typed parts: the common context (session id,
//! client address, [`Identity`], database) and one [`EventFields`] variant per event name.
//! There is deliberately no free-form map and no field that takes arbitrary text from a
//! statement or a protocol message: reasons are enums or `&'static str` chosen in code,
//! statement text is only a [`NormalizedSql`] (literals removed), command tags and SQLSTATEs
//! are validated newtypes. So a password, a token, a SCRAM verifier, a bind parameter value or
//! a literal cannot be put into an event by accident — there is no type that would carry it.
//!
//! Strings that remain are names configured by the operator (policy, backend role) or chosen
//! by the client as its identity (user, database, application_name, certificate names); they
//! are JSON-escaped, and the encoder writes only ASCII (see [`super::encode`]).
//!
//! `ts` and `seq` are not here: the writer assigns them when the event is written, so that
//! file order is sequence order.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use super::codes::*;
use crate::policy::Mode;
use crate::policy::normalize::{self, Fingerprint, LiteralMode, NormalizeError};
use crate::tls::identity::ClientIdentity;

/// One audit record, before the writer stamps it with `ts`, `seq` (and `prev`).
#[derive(Debug, Clone)]
pub struct Event {
    /// Session id; `None` for process-level events (`config.reloaded`, some `admin.command`).
    pub sid: Option<u64>,
    pub client: Option<SocketAddr>,
    /// Shared by the events of one session: built once, cloned by reference.
    pub identity: Option<Arc<Identity>>,
    /// The database name the client asked for.
    pub database: Option<Arc<str>>,
    pub fields: EventFields,
}

impl Event {
    /// An event with no context yet; add it with the builder methods.
    pub fn new(fields: EventFields) -> Event {
        Event {
            sid: None,
            client: None,
            identity: None,
            database: None,
            fields,
        }
    }

    pub fn sid(mut self, sid: u64) -> Event {
        self.sid = Some(sid);
        self
    }

    pub fn client(mut self, client: SocketAddr) -> Event {
        self.client = Some(client);
        self
    }

    pub fn identity(mut self, identity: Arc<Identity>) -> Event {
        self.identity = Some(identity);
        self
    }

    pub fn database(mut self, database: impl Into<Arc<str>>) -> Event {
        self.database = Some(database.into());
        self
    }

    pub fn kind(&self) -> EventKind {
        self.fields.kind()
    }
}

/// Who the client is: the pgward user it asked to be and, when it presented one, its verified
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user name from the startup packet (claimed in `auth.failed`, proven afterwards).
    pub user: String,
    /// `CN=<common name>` of the verified client certificate.
    pub cert_subject: Option<String>,
    /// Subject alternative names: URIs (SPIFFE IDs) then DNS names.
    pub cert_san: Vec<String>,
    /// SHA-256 of the DER certificate.
    pub cert_sha256: Option<[u8; 32]>,
}

impl Identity {
    pub fn user(user: impl Into<String>) -> Identity {
        Identity {
            user: user.into(),
            ..Identity::default()
        }
    }

    /// Adds what a verified client certificate says.
    pub fn with_certificate(mut self, cert: &ClientIdentity) -> Identity {
        self.cert_subject = cert.subject_cn.as_ref().map(|cn| format!("CN={cn}"));
        self.cert_san = cert
            .uri_sans
            .iter()
            .chain(cert.dns_sans.iter())
            .cloned()
            .collect();
        self.cert_sha256 = Some(cert.fingerprint_sha256);
        self
    }
}

/// The dotted event names of the audit contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ConnectionAccepted,
    ConnectionRejected,
    TlsHandshakeFailed,
    AuthSucceeded,
    AuthFailed,
    SessionStarted,
    SessionEnded,
    StatementExecuted,
    StatementDenied,
    StatementLearned,
    PoolCheckoutTimeout,
    ConfigReloaded,
    AdminCommand,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::ConnectionAccepted,
        EventKind::ConnectionRejected,
        EventKind::TlsHandshakeFailed,
        EventKind::AuthSucceeded,
        EventKind::AuthFailed,
        EventKind::SessionStarted,
        EventKind::SessionEnded,
        EventKind::StatementExecuted,
        EventKind::StatementDenied,
        EventKind::StatementLearned,
        EventKind::PoolCheckoutTimeout,
        EventKind::ConfigReloaded,
        EventKind::AdminCommand,
    ];

    /// The `event` field; also the syslog MSGID (at most 32 printable ASCII characters).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ConnectionAccepted => "connection.accepted",
            EventKind::ConnectionRejected => "connection.rejected",
            EventKind::TlsHandshakeFailed => "tls.handshake_failed",
            EventKind::AuthSucceeded => "auth.succeeded",
            EventKind::AuthFailed => "auth.failed",
            EventKind::SessionStarted => "session.started",
            EventKind::SessionEnded => "session.ended",
            EventKind::StatementExecuted => "statement.executed",
            EventKind::StatementDenied => "statement.denied",
            EventKind::StatementLearned => "statement.learned",
            EventKind::PoolCheckoutTimeout => "pool.checkout_timeout",
            EventKind::ConfigReloaded => "config.reloaded",
            EventKind::AdminCommand => "admin.command",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Syslog severity (RFC 5424 §6.2.1): refusals and failures are warnings (4), operator
    /// actions notices (5), the rest informational (6).
    pub fn severity(self) -> u8 {
        match self {
            EventKind::ConnectionRejected
            | EventKind::TlsHandshakeFailed
            | EventKind::AuthFailed
            | EventKind::StatementDenied
            | EventKind::PoolCheckoutTimeout => 4,
            EventKind::ConfigReloaded | EventKind::AdminCommand => 5,
            _ => 6,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What each event says beyond the common context.
#[derive(Debug, Clone)]
pub enum EventFields {
    /// A TCP connection was accepted (before TLS and authentication).
    ConnectionAccepted,
    /// A connection or session was refused before it could run anything.
    ConnectionRejected {
        reason: RejectReason,
    },
    TlsHandshakeFailed {
        reason: TlsFailure,
    },
    AuthSucceeded {
        method: AuthMethod,
        /// The backend role the identity maps to.
        backend_role: Option<Arc<str>>,
    },
    AuthFailed {
        /// `None` when the failure came before a method was chosen.
        method: Option<AuthMethod>,
        reason: AuthFailure,
    },
    SessionStarted(SessionStarted),
    SessionEnded(SessionEnded),
    StatementExecuted(StatementExecuted),
    StatementDenied(StatementDenied),
    /// Learn mode saw a statement for the first time.
    StatementLearned {
        policy: Arc<str>,
        fingerprint: Fingerprint,
        text: Option<NormalizedSql>,
    },
    PoolCheckoutTimeout {
        backend_role: Arc<str>,
        waited: Duration,
        pool_size: u32,
    },
    ConfigReloaded {
        succeeded: bool,
        /// How many problems the new configuration had (0 when it was applied). The messages
        /// themselves go to the log: they can quote configuration values.
        errors: u32,
    },
    AdminCommand {
        interface: AdminInterface,
        /// The recognized command (`"SHOW POOLS"`, `"GET /metrics"`), never the raw input.
        command: &'static str,
        allowed: bool,
    },
}

impl EventFields {
    pub fn kind(&self) -> EventKind {
        match self {
            EventFields::ConnectionAccepted => EventKind::ConnectionAccepted,
            EventFields::ConnectionRejected { .. } => EventKind::ConnectionRejected,
            EventFields::TlsHandshakeFailed { .. } => EventKind::TlsHandshakeFailed,
            EventFields::AuthSucceeded { .. } => EventKind::AuthSucceeded,
            EventFields::AuthFailed { .. } => EventKind::AuthFailed,
            EventFields::SessionStarted(_) => EventKind::SessionStarted,
            EventFields::SessionEnded(_) => EventKind::SessionEnded,
            EventFields::StatementExecuted(_) => EventKind::StatementExecuted,
            EventFields::StatementDenied(_) => EventKind::StatementDenied,
            EventFields::StatementLearned { .. } => EventKind::StatementLearned,
            EventFields::PoolCheckoutTimeout { .. } => EventKind::PoolCheckoutTimeout,
            EventFields::ConfigReloaded { .. } => EventKind::ConfigReloaded,
            EventFields::AdminCommand { .. } => EventKind::AdminCommand,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionStarted {
    pub backend_role: Option<Arc<str>>,
    pub pool_mode: Option<crate::config::PoolMode>,
    /// The policy attached to the user, if any.
    pub policy: Option<Arc<str>>,
    /// Whether the client leg is TLS.
    pub tls: bool,
    /// The client's `application_name`; the encoder keeps at most 64 bytes of it.
    pub application_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionEnded {
    pub duration: Duration,
    pub transactions: u64,
    pub statements: u64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    pub reason: EndReason,
}

#[derive(Debug, Clone)]
pub struct StatementExecuted {
    pub fingerprint: Fingerprint,
    /// `None` when the text has no normalized form; the fingerprint still identifies it.
    pub text: Option<NormalizedSql>,
    pub kind: StatementKind,
    pub protocol: Protocol,
    pub duration: Duration,
    /// From CommandComplete; `None` on error.
    pub command: Option<CommandTag>,
    /// From ErrorResponse.
    pub sqlstate: Option<SqlState>,
}

#[derive(Debug, Clone)]
pub struct StatementDenied {
    pub policy: Arc<str>,
    /// `enforce`: refused. `audit`: would have been refused, and ran.
    pub mode: Mode,
    pub reason: DenialReason,
    pub fingerprint: Fingerprint,
    pub text: Option<NormalizedSql>,
    pub protocol: Protocol,
}

/// Statement text with every literal replaced by `?`.
///
/// It must come from [`crate::policy::normalize`] with [`LiteralMode::Replace`] — whatever
/// literal mode the statement's policy uses for matching, because a `Keep`-mode text still
/// holds the values (`ALTER ROLE app PASSWORD '...'`). [`NormalizedSql::from_sql`] does that;
/// code that has the replaced text already (the statement audit's descriptions) uses
/// `NormalizedSql::from_replaced` (crate-private). Nothing else can make one, so raw SQL cannot reach an
/// event. Shared (`Arc`) so an event for a cached statement costs no copy of its text.
#[derive(Clone, PartialEq, Eq)]
pub struct NormalizedSql(Arc<str>);

impl NormalizedSql {
    /// Normalizes `sql` with literals replaced.
    pub fn from_sql(sql: &str) -> Result<NormalizedSql, NormalizeError> {
        normalize::normalize(sql, LiteralMode::Replace).map(|n| NormalizedSql(n.text.into()))
    }

    /// Wraps text that is already the output of `normalize(_, LiteralMode::Replace)` (or
    /// `normalize_stored` with it). Only for code that has that text already (the statement
    /// audit's descriptions), so it is not normalized twice.
    pub(crate) fn from_replaced(text: impl Into<Arc<str>>) -> NormalizedSql {
        NormalizedSql(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NormalizedSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A command tag from CommandComplete, split into the command and its row count.
///
/// Only upper-case words and numbers are accepted (which is all PostgreSQL sends), so a tag
/// cannot smuggle text. Stored inline: building a statement event allocates nothing for it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CommandTag {
    command: [u8; CommandTag::MAX],
    len: u8,
    rows: Option<u64>,
}

impl CommandTag {
    /// Longest command accepted; PostgreSQL's longest is `CREATE TEXT SEARCH CONFIGURATION`.
    const MAX: usize = 40;

    /// Parses a tag such as `INSERT 0 5`, `SELECT 3`, `CREATE TABLE`. `None` when it is not
    /// shaped like a PostgreSQL command tag.
    pub fn parse(tag: &[u8]) -> Option<CommandTag> {
        let tag = tag.strip_suffix(b"\0").unwrap_or(tag);
        let text = std::str::from_utf8(tag).ok()?;
        // Words of capitals, then numbers; counted in place, as this runs per statement.
        let mut command_len = 0;
        let mut last_number: Option<&str> = None;
        let mut pos = 0;
        for word in text.split(' ') {
            if word.bytes().all(|b| b.is_ascii_uppercase()) && !word.is_empty() {
                if last_number.is_some() {
                    return None;
                }
                command_len = pos + word.len();
            } else if word.bytes().all(|b| b.is_ascii_digit()) && !word.is_empty() {
                if command_len == 0 {
                    return None;
                }
                last_number = Some(word);
            } else {
                return None;
            }
            pos += word.len() + 1;
        }
        if command_len == 0 || command_len > CommandTag::MAX {
            return None;
        }
        let command = &text[..command_len];
        // The row count is the last number (`INSERT oid rows`); an overflowing one is dropped.
        let rows = last_number.and_then(|n| n.parse().ok());
        let mut buf = [0u8; CommandTag::MAX];
        buf[..command.len()].copy_from_slice(command.as_bytes());
        Some(CommandTag {
            command: buf,
            len: command.len() as u8,
            rows,
        })
    }

    pub fn command(&self) -> &str {
        // Only ASCII upper-case letters and spaces were copied in.
        std::str::from_utf8(&self.command[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn rows(&self) -> Option<u64> {
        self.rows
    }
}

impl fmt::Debug for CommandTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rows {
            Some(rows) => write!(f, "{} {rows}", self.command()),
            None => f.write_str(self.command()),
        }
    }
}

/// A five-character SQLSTATE (digits and upper-case letters).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SqlState([u8; 5]);

impl SqlState {
    pub fn parse(code: &[u8]) -> Option<SqlState> {
        let code: [u8; 5] = code.try_into().ok()?;
        code.iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(code))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_fit_a_syslog_msgid() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
            assert!(kind.name().len() <= 32 && kind.name().bytes().all(|b| b.is_ascii_graphic()));
        }
        assert_eq!(EventKind::from_name("session.bogus"), None);
    }

    #[test]
    fn command_tags_split_command_and_rows() {
        let t = CommandTag::parse(b"INSERT 0 5\0").expect("tag");
        assert_eq!((t.command(), t.rows()), ("INSERT", Some(5)));
        let t = CommandTag::parse(b"SELECT 3").expect("tag");
        assert_eq!((t.command(), t.rows()), ("SELECT", Some(3)));
        let t = CommandTag::parse(b"CREATE TEXT SEARCH CONFIGURATION").expect("tag");
        assert_eq!(
            (t.command(), t.rows()),
            ("CREATE TEXT SEARCH CONFIGURATION", None)
        );
        assert_eq!(format!("{t:?}"), "CREATE TEXT SEARCH CONFIGURATION");
    }

    #[test]
    fn command_tags_refuse_anything_else() {
        for bad in [
            &b""[..],
            b"5",
            b"select 1",
            b"SELECT 'x'",
            b"SELECT  1",
            b"INSERT 0 5 extra",
            b"\xff",
            b"SELECT 99999999999999999999999",
        ] {
            let parsed = CommandTag::parse(bad);
            // An overflowing count keeps the command and loses the number, never panics.
            if bad.starts_with(b"SELECT 9") {
                assert_eq!(parsed.map(|t| t.rows()), Some(None));
            } else {
                assert!(parsed.is_none(), "{bad:?}");
            }
        }
        assert!(CommandTag::parse(&[b'A'; 41]).is_none());
    }

    #[test]
    fn sqlstates_are_five_code_characters() {
        assert_eq!(SqlState::parse(b"23505").map(|s| s.0), Some(*b"23505"));
        assert!(SqlState::parse(b"42P01").is_some());
        for bad in [&b"2350"[..], b"235055", b"2350a", b"23 05"] {
            assert!(SqlState::parse(bad).is_none());
        }
    }

    #[test]
    fn normalized_sql_has_no_literals() {
        let n = NormalizedSql::from_sql("select * from t where pw = 'hunter2' and n = 42")
            .expect("normalizes");
        assert_eq!(n.as_str(), "SELECT * FROM t WHERE pw = ? AND n = ?");
        let n = NormalizedSql::from_sql("ALTER ROLE app PASSWORD $$secret$$").expect("normalizes");
        assert!(!n.as_str().contains("secret"), "{n:?}");
    }
}
