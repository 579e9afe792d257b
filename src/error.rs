//! The one place that decides what a client is told when pgward refuses or fails something:
//! the SQLSTATE, the severity and the text. Internal details (backend addresses, server error
//! text from authentication, file paths) go to the log, never to the client.

use bytes::BytesMut;

use crate::protocol::messages::put_error_fields;
use crate::protocol::sqlstate as code;

/// Why pgward is ending or refusing a client request. Each variant maps to exactly one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Wrong password *or* unknown user: the same text, so users cannot be enumerated.
    AuthFailed {
        user: String,
    },
    /// `trust` auth requested from a non-loopback address, or a method the client cannot use.
    AuthNotAllowed {
        user: String,
        reason: &'static str,
    },
    /// No `user` in the startup packet.
    NoUser,
    /// A plaintext StartupMessage where TLS is required.
    TlsRequired,
    /// No verified client certificate where one is required.
    ClientCertRequired,
    /// The client certificate does not carry the identity the user requires.
    CertIdentityMismatch {
        user: String,
    },
    /// The client certificate of this session has expired.
    CertificateExpired,
    /// The database the client asked for is not configured.
    UnknownDatabase {
        database: String,
    },
    /// A startup parameter that pgward refuses (`options`, `replication`, unknown ones).
    StartupParamRefused {
        name: String,
    },
    UnsupportedProtocol {
        major: u16,
        minor: u16,
    },
    /// Malformed or oversized input.
    ProtocolViolation {
        reason: String,
    },
    TooManyClients,
    TooManyClientsForUser {
        user: String,
    },
    /// Waiting for a server connection exceeded the pool's checkout timeout.
    CheckoutTimeout {
        database: String,
        waited_ms: u64,
    },
    /// The backend could not be reached or refused pgward's login.
    ServerUnavailable {
        database: String,
    },
    /// The server connection failed while the client was using it.
    ServerConnectionLost,
    /// The reset that removes another client's state from a server connection failed when
    /// the connection changed hands. None of the client's messages ran; the connection is
    /// closed.
    ServerResetFailed,
    /// Bind/Describe of the unnamed statement that this client has not parsed on its current
    /// server connection (it may be another client's).
    UnnamedStatementMissing,
    /// Something that cannot be shared between clients in transaction pooling mode.
    NotInTransactionMode {
        what: &'static str,
    },
    /// Parse of a statement name this client already uses.
    DuplicatePreparedStatement {
        name: String,
    },
    /// Bind/Describe/DEALLOCATE of a statement name this client has not prepared.
    UnknownPreparedStatement {
        name: String,
    },
    /// More named statements than one client may hold.
    TooManyPreparedStatements {
        limit: usize,
    },
    /// Named statements bigger in total than one client may hold (`max_client_statement_bytes`).
    PreparedStatementsTooLarge {
        limit: usize,
    },
    /// More open portals than one client may have in transaction mode.
    TooManyPortals {
        limit: usize,
    },
    /// A command pgward answers itself, sent inside a failed transaction block.
    InFailedTransaction,
    /// The statement policy denies the statement. Names the policy and the statement's
    /// fingerprint, never its text (it may carry literals that are secrets).
    PolicyDenied {
        policy: String,
        fingerprint: String,
        reason: String,
    },
    /// The server reports a setting under which the statement policy cannot read SQL the way
    /// PostgreSQL does (client_encoding, standard_conforming_strings): the session ends.
    PolicyUnenforceable {
        setting: String,
    },
    /// The audit sink is failing and the audit config says to fail closed.
    AuditUnavailable,
    /// The admin console is for `server.admin_users` only.
    AdminNotAllowed {
        user: String,
    },
    /// A command the admin console does not know.
    AdminUnknownCommand {
        hint: &'static str,
    },
    /// RELOAD found the configuration file unusable; the running configuration stays. The
    /// reason names settings and files, never their secret contents (admin users only).
    ReloadFailed {
        reason: String,
    },
    ClientIdleTimeout,
    IdleInTransactionTimeout,
    ShuttingDown,
    /// A configuration reload took away what this session runs on (its user, its access to
    /// the database, its pool mode), or changed its statement policy where the session cannot
    /// adopt the new rules (session mode): it ends at its next idle point.
    ReloadedAway {
        what: &'static str,
    },
}

/// Severity of the reply: FATAL closes the connection, ERROR keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

impl ClientError {
    pub fn sqlstate(&self) -> &'static str {
        use ClientError::*;
        match self {
            AuthFailed { .. } => code::INVALID_PASSWORD,
            AuthNotAllowed { .. }
            | NoUser
            | TlsRequired
            | ClientCertRequired
            | CertIdentityMismatch { .. }
            | CertificateExpired => code::INVALID_AUTHORIZATION_SPECIFICATION,
            UnknownDatabase { .. } => code::INVALID_CATALOG_NAME,
            StartupParamRefused { .. } | UnsupportedProtocol { .. } => code::FEATURE_NOT_SUPPORTED,
            ProtocolViolation { .. } => code::PROTOCOL_VIOLATION,
            TooManyClients | TooManyClientsForUser { .. } => code::TOO_MANY_CONNECTIONS,
            CheckoutTimeout { .. } => code::TOO_MANY_CONNECTIONS,
            ServerUnavailable { .. } => code::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            ServerConnectionLost | ServerResetFailed => code::CONNECTION_FAILURE,
            NotInTransactionMode { .. } => code::FEATURE_NOT_SUPPORTED,
            UnnamedStatementMissing | UnknownPreparedStatement { .. } => {
                code::INVALID_SQL_STATEMENT_NAME
            }
            DuplicatePreparedStatement { .. } => code::DUPLICATE_PREPARED_STATEMENT,
            TooManyPreparedStatements { .. }
            | PreparedStatementsTooLarge { .. }
            | TooManyPortals { .. } => code::PROGRAM_LIMIT_EXCEEDED,
            InFailedTransaction => code::IN_FAILED_SQL_TRANSACTION,
            PolicyDenied { .. } | PolicyUnenforceable { .. } => code::INSUFFICIENT_PRIVILEGE,
            AuditUnavailable => code::CANNOT_CONNECT_NOW,
            AdminNotAllowed { .. } => code::INVALID_AUTHORIZATION_SPECIFICATION,
            AdminUnknownCommand { .. } => code::FEATURE_NOT_SUPPORTED,
            ReloadFailed { .. } => code::CONFIG_FILE_ERROR,
            ClientIdleTimeout => code::IDLE_SESSION_TIMEOUT,
            IdleInTransactionTimeout => code::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            ShuttingDown | ReloadedAway { .. } => code::ADMIN_SHUTDOWN,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            // The session survives these: the request fails, the client may retry.
            ClientError::NotInTransactionMode { .. }
            | ClientError::CheckoutTimeout { .. }
            | ClientError::UnnamedStatementMissing
            | ClientError::DuplicatePreparedStatement { .. }
            | ClientError::UnknownPreparedStatement { .. }
            | ClientError::TooManyPreparedStatements { .. }
            | ClientError::PreparedStatementsTooLarge { .. }
            | ClientError::TooManyPortals { .. }
            | ClientError::InFailedTransaction
            | ClientError::PolicyDenied { .. }
            | ClientError::AdminUnknownCommand { .. }
            | ClientError::ReloadFailed { .. } => Severity::Error,
            _ => Severity::Fatal,
        }
    }

    pub fn message(&self) -> String {
        use ClientError::*;
        match self {
            // PostgreSQL's own wording, so clients and operators recognise it.
            AuthFailed { user } => format!("password authentication failed for user \"{user}\""),
            AuthNotAllowed { user, reason } => {
                format!("authentication method not allowed for user \"{user}\": {reason}")
            }
            NoUser => "no PostgreSQL user name specified in startup packet".into(),
            TlsRequired => "TLS is required: connect with sslmode=require or stronger".into(),
            ClientCertRequired => "a valid client certificate is required".into(),
            CertIdentityMismatch { user } => {
                format!("certificate authentication failed for user \"{user}\"")
            }
            CertificateExpired => "the client certificate of this session has expired".into(),
            UnknownDatabase { database } => format!("database \"{database}\" does not exist"),
            StartupParamRefused { name } => {
                format!("startup parameter \"{name}\" is not allowed by pgward")
            }
            UnsupportedProtocol { major, minor } => {
                format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")
            }
            ProtocolViolation { reason } => format!("protocol violation: {reason}"),
            TooManyClients => "sorry, too many clients already".into(),
            TooManyClientsForUser { user } => {
                format!("too many connections for role \"{user}\"")
            }
            CheckoutTimeout {
                database,
                waited_ms,
            } => format!(
                "no server connection available for database \"{database}\" within {waited_ms} ms (pool exhausted)"
            ),
            ServerUnavailable { database } => {
                format!("could not connect to the server for database \"{database}\"")
            }
            ServerConnectionLost => "server connection lost".into(),
            ServerResetFailed => {
                "the server connection could not be reset for this client; nothing was run".into()
            }
            // PostgreSQL's wording.
            UnnamedStatementMissing => "unnamed prepared statement does not exist".into(),
            NotInTransactionMode { what } => {
                format!("{what} is not supported in transaction pooling mode")
            }
            DuplicatePreparedStatement { name } => {
                format!("prepared statement \"{name}\" already exists")
            }
            UnknownPreparedStatement { name } => {
                format!("prepared statement \"{name}\" does not exist")
            }
            TooManyPreparedStatements { limit } => {
                format!("too many prepared statements: one client may hold at most {limit}")
            }
            PreparedStatementsTooLarge { limit } => format!(
                "prepared statements too large: one client's named statements may total at most {limit} bytes (max_client_statement_bytes)"
            ),
            TooManyPortals { limit } => {
                format!("too many open portals: one client may have at most {limit}")
            }
            InFailedTransaction => {
                "current transaction is aborted, commands ignored until end of transaction block"
                    .into()
            }
            PolicyDenied {
                policy,
                fingerprint,
                reason,
            } => format!(
                "statement denied by pgward policy \"{policy}\" (fingerprint {fingerprint}): {reason}"
            ),
            PolicyUnenforceable { setting } => format!(
                "terminating connection: {setting} changed to a value under which the statement policy cannot be enforced"
            ),
            AdminUnknownCommand { hint } => format!("unknown admin command; try {hint}"),
            ReloadFailed { reason } => {
                format!("configuration not reloaded; the running configuration stays: {reason}")
            }
            AdminNotAllowed { user } => {
                format!("user \"{user}\" is not allowed to use the pgward admin console")
            }
            AuditUnavailable => {
                "the audit log is unavailable; new sessions are refused until it recovers".into()
            }
            ClientIdleTimeout => "terminating connection due to idle-session timeout".into(),
            IdleInTransactionTimeout => {
                "terminating connection due to idle-in-transaction timeout".into()
            }
            ShuttingDown => "terminating connection due to administrator command".into(),
            ReloadedAway { what } => {
                format!("terminating connection: {what} changed in a configuration reload")
            }
        }
    }

    fn hint(&self) -> Option<&'static str> {
        use ClientError::*;
        match self {
            StartupParamRefused { .. } => Some(
                "pgward accepts application_name, client_encoding, DateStyle, TimeZone, IntervalStyle, extra_float_digits and search_path; set other parameters with SET",
            ),
            NotInTransactionMode { .. } => {
                Some("use a database configured with pool_mode = \"session\"")
            }
            CheckoutTimeout { .. } => Some("raise pool_size or checkout_timeout, or reduce load"),
            ReloadedAway { .. } => Some("reconnect"),
            _ => None,
        }
    }

    /// Appends the ErrorResponse for this error to `buf`.
    pub fn write_to(&self, buf: &mut BytesMut) {
        put_error_fields(
            buf,
            b'E',
            self.severity().as_str(),
            self.sqlstate(),
            &self.message(),
            None,
            self.hint(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::decode_error;

    #[test]
    fn auth_failure_text_does_not_depend_on_user_existence() {
        let a = ClientError::AuthFailed { user: "u".into() };
        assert_eq!(a.sqlstate(), "28P01");
        let mut b = BytesMut::new();
        a.write_to(&mut b);
        let e = decode_error(&b[5..]).unwrap();
        assert_eq!(e.code, "28P01");
        assert_eq!(e.severity, "FATAL");
    }

    #[test]
    fn limits_are_53300() {
        assert_eq!(ClientError::TooManyClients.sqlstate(), "53300");
        assert_eq!(
            ClientError::TooManyClientsForUser { user: "x".into() }.sqlstate(),
            "53300"
        );
    }
}
