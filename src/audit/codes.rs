//! The codes events carry instead of text: why a connection was rejected, a handshake or an
//! authentication failed, a session ended or a statement was denied, and how. Each is a
//! fieldless enum with a fixed snake_case spelling (part of the audit contract), so no event
//! field can carry a message that quotes client input.

use crate::policy::Denial;
use crate::policy::readonly::ReadOnlyViolation;

/// Declares a fieldless enum with the snake_case code written into events.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $code:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }
    };
}

codes! {
    /// Why `connection.rejected`.
    RejectReason {
        /// `max_client_connections` reached.
        Limit => "limit",
        /// The user's `max_connections` reached.
        UserLimit => "user_limit",
        /// A network ACL refused the address.
        Acl => "acl",
        RateLimit => "rate_limit",
        /// pgward is shutting down.
        Draining => "draining",
        /// Plaintext where TLS is required.
        TlsRequired => "tls_required",
        /// A malformed or oversized startup packet.
        Protocol => "protocol",
        /// A refused startup parameter (`options`, `replication`, …).
        StartupParameter => "startup_parameter",
        UnknownDatabase => "unknown_database",
        /// The user may not use this database.
        DatabaseNotAllowed => "database_not_allowed",
        /// `fail_closed` and the audit sink is failing.
        AuditUnavailable => "audit_unavailable",
        Timeout => "timeout",
    }
}

codes! {
    /// Why `tls.handshake_failed`.
    TlsFailure {
        Timeout => "timeout",
        /// Not TLS, or a TLS alert/protocol error.
        Protocol => "protocol",
        /// The client certificate did not verify.
        BadCertificate => "bad_certificate",
        /// Client certificates are required and none was sent.
        CertificateRequired => "certificate_required",
        /// Bytes followed SSLRequest before the handshake (CVE-2021-23214 class).
        BytesAfterSslRequest => "bytes_after_sslrequest",
        Io => "io",
    }
}

codes! {
    AuthMethod {
        Scram => "scram-sha-256",
        /// SCRAM with channel binding.
        ScramPlus => "scram-sha-256-plus",
        Cert => "cert",
        CertAndScram => "cert+scram",
        Trust => "trust",
    }
}

codes! {
    /// Why `auth.failed`. The client is told less than this (no user enumeration).
    AuthFailure {
        UnknownUser => "unknown_user",
        WrongPassword => "wrong_password",
        /// The certificate does not carry the user's `cert_identity`.
        CertificateMismatch => "certificate_mismatch",
        CertificateRequired => "certificate_required",
        ChannelBinding => "channel_binding",
        /// The client used a method this user does not allow.
        MethodNotAllowed => "method_not_allowed",
        Protocol => "protocol",
        Timeout => "timeout",
    }
}

codes! {
    /// Why `session.ended`.
    EndReason {
        /// The client sent Terminate.
        Terminate => "terminate",
        /// The client's connection closed or failed.
        Disconnect => "disconnect",
        IdleTimeout => "idle_timeout",
        IdleInTransactionTimeout => "idle_in_transaction_timeout",
        Shutdown => "shutdown",
        ProtocolError => "protocol_error",
        ServerError => "server_error",
        /// The policy's reading of SQL changed under the session.
        PolicyChanged => "policy_changed",
        AdminKilled => "admin_killed",
    }
}

codes! {
    StatementKind {
        Read => "read",
        Write => "write",
    }
}

codes! {
    /// How the statement arrived.
    Protocol {
        /// Query message.
        Simple => "simple",
        /// Parse/Bind/Execute.
        Extended => "extended",
        /// FunctionCall message.
        FunctionCall => "function_call",
    }
}

codes! {
    AdminInterface {
        /// `psql -d pgward`.
        Console => "console",
        Http => "http",
    }
}

/// Why a statement was denied, as a code. Built from [`Denial`] without its text: a parser
/// error message can quote the statement, literals included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    Unanalyzable,
    TooLong,
    AdHoc,
    MultiStatement,
    NotAllowlisted,
    ReadOnly(ReadOnlyReason),
    /// A blocked feature, named in code (`"COPY FROM"`, …).
    Blocked(&'static str),
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::Unanalyzable => "unanalyzable",
            DenialReason::TooLong => "too_long",
            DenialReason::AdHoc => "ad_hoc",
            DenialReason::MultiStatement => "multi_statement",
            DenialReason::NotAllowlisted => "not_allowlisted",
            DenialReason::ReadOnly(_) => "read_only",
            DenialReason::Blocked(_) => "blocked",
        }
    }

    /// The second-level code written as `detail`.
    pub fn detail(self) -> Option<&'static str> {
        match self {
            DenialReason::ReadOnly(r) => Some(r.as_str()),
            DenialReason::Blocked(what) => Some(what),
            _ => None,
        }
    }
}

impl From<&Denial> for DenialReason {
    fn from(d: &Denial) -> DenialReason {
        match d {
            Denial::Unanalyzable(_) => DenialReason::Unanalyzable,
            Denial::TooLong(_) => DenialReason::TooLong,
            Denial::AdHoc => DenialReason::AdHoc,
            Denial::MultiStatement => DenialReason::MultiStatement,
            Denial::NotAllowlisted => DenialReason::NotAllowlisted,
            Denial::ReadOnly(v) => DenialReason::ReadOnly(v.into()),
            Denial::Blocked(what) => DenialReason::Blocked(what),
        }
    }
}

codes! {
    /// [`ReadOnlyViolation`] without the names it quotes.
    ReadOnlyReason {
        Write => "write",
        Locking => "locking",
        WritableCte => "writable_cte",
        SelectInto => "select_into",
        ExplainAnalyzeWrite => "explain_analyze_write",
        Function => "function",
        Operator => "operator",
        UndoesReadOnly => "undoes_read_only",
        ChangesIdentity => "changes_identity",
        ProtectedSetting => "protected_setting",
        NotARead => "not_a_read",
        Unparsable => "unparsable",
    }
}

impl From<&ReadOnlyViolation> for ReadOnlyReason {
    fn from(v: &ReadOnlyViolation) -> ReadOnlyReason {
        match v {
            ReadOnlyViolation::Write(_) => ReadOnlyReason::Write,
            ReadOnlyViolation::Locking => ReadOnlyReason::Locking,
            ReadOnlyViolation::WritableCte => ReadOnlyReason::WritableCte,
            ReadOnlyViolation::SelectInto => ReadOnlyReason::SelectInto,
            ReadOnlyViolation::ExplainAnalyzeWrite => ReadOnlyReason::ExplainAnalyzeWrite,
            ReadOnlyViolation::Function(_) => ReadOnlyReason::Function,
            ReadOnlyViolation::Operator(_) => ReadOnlyReason::Operator,
            ReadOnlyViolation::UndoesReadOnly(_) => ReadOnlyReason::UndoesReadOnly,
            ReadOnlyViolation::ChangesIdentity(_) => ReadOnlyReason::ChangesIdentity,
            ReadOnlyViolation::ProtectedSetting(_) => ReadOnlyReason::ProtectedSetting,
            ReadOnlyViolation::NotARead(_) => ReadOnlyReason::NotARead,
            ReadOnlyViolation::Unparsable(_) => ReadOnlyReason::Unparsable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_reasons_drop_the_text() {
        let d = Denial::ReadOnly(ReadOnlyViolation::Unparsable("found 'hunter2'".into()));
        let r = DenialReason::from(&d);
        assert_eq!((r.as_str(), r.detail()), ("read_only", Some("unparsable")));
        let r = DenialReason::from(&Denial::Blocked("COPY FROM"));
        assert_eq!((r.as_str(), r.detail()), ("blocked", Some("COPY FROM")));
    }
}
