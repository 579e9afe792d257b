//! A client's session state as pgward carries it between server connections: the startup
//! parameters the client asked for and the session-level `SET`s it has made. In transaction
//! mode this state belongs to the client, not to any server connection: it is re-applied on the
//! server a client gets whenever that server carries different state, so one client's settings
//! are never seen by another.

use std::sync::Arc;

use crate::error::ClientError;

/// Startup parameters pgward accepts from clients and applies to the server on their behalf.
/// Everything else is refused: `options` and `replication` would let a client change what the
/// backend role may do or open a replication connection.
pub const ALLOWED_STARTUP_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
];

/// Parameters consumed by pgward itself (routing), never forwarded.
const ROUTING_PARAMS: &[&str] = &["user", "database"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// Allowed startup parameters, names lowercased, in the order sent.
    pub startup: Vec<(String, String)>,
    /// Tracked session-level SETs: (parameter name, the client's statement text), in order.
    pub sets: Vec<(String, String)>,
}

impl SessionParams {
    /// Picks the startup parameters to carry; refuses any that are not allowed.
    pub fn from_startup(params: &[(String, String)]) -> Result<SessionParams, ClientError> {
        let mut startup = Vec::new();
        for (k, v) in params {
            let lower = k.to_ascii_lowercase();
            if ROUTING_PARAMS.contains(&lower.as_str()) {
                continue;
            }
            // libpq sends fallback_application_name only when application_name is unset; it is
            // the client's default name.
            if lower == "fallback_application_name" {
                if !params
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("application_name"))
                {
                    startup.push(("application_name".to_string(), v.clone()));
                }
                continue;
            }
            if !ALLOWED_STARTUP_PARAMS.contains(&lower.as_str()) {
                return Err(ClientError::StartupParamRefused { name: k.clone() });
            }
            startup.push((lower, v.clone()));
        }
        Ok(SessionParams {
            startup,
            sets: Vec::new(),
        })
    }

    pub fn is_default(&self) -> bool {
        self.startup.is_empty() && self.sets.is_empty()
    }

    /// Records a SET; a later SET of the same parameter replaces the earlier one.
    pub fn record_set(&mut self, name: &str, statement: &str) {
        self.sets.retain(|(n, _)| n != name);
        self.sets.push((name.to_owned(), statement.to_owned()));
    }

    pub fn record_reset(&mut self, name: &str) {
        self.sets.retain(|(n, _)| n != name);
    }

    pub fn record_reset_all(&mut self) {
        self.sets.clear();
    }

    /// The startup parameters a server connection may be opened with for this client (see
    /// [`ServerBase`]).
    pub fn base(&self) -> SessionParams {
        SessionParams {
            startup: self
                .startup
                .iter()
                .filter(|(k, _)| BASE_PARAMS.contains(&k.as_str()))
                .cloned()
                .collect(),
            sets: Vec::new(),
        }
    }

    /// The statements that make a server that was reset to its defaults carry this state.
    pub fn apply_statements(&self) -> Vec<String> {
        self.statements_over(&ServerBase::default())
    }

    /// The statements that make a server connection reset to `base` (fresh, or after `RESET
    /// ALL` or `DISCARD ALL`) carry this state: a `SET` for each startup parameter the
    /// connection does not already have at this value, then the client's own SETs. The
    /// connection was opened with none of the client's parameters or with all of them (the
    /// pool gives it to no other client: see [`ServerBase`]).
    ///
    /// Startup parameters are applied with `SET` (a utility statement: cheaper than a query),
    /// except `search_path`, whose value is a list: `set_config` parses it exactly as a startup
    /// packet does. Names come from the allowlist; values are quoted as E'' literals so they
    /// stay literals whatever `standard_conforming_strings` is.
    pub fn statements_over(&self, base: &ServerBase) -> Vec<String> {
        // Empty (no allocation) for a client on a connection opened with its parameters: the
        // common hand-over.
        let mut out = Vec::new();
        for (k, v) in &self.startup {
            let has = |list: &[(String, String)]| list.iter().any(|(n, x)| n == k && x == v);
            let opened_with = base.opened_with.startup.iter().any(|(n, _)| n == k);
            if has(&base.opened_with.startup) || (!opened_with && has(&base.reported)) {
                continue;
            }
            out.push(set_statement(k, v));
        }
        out.extend(self.sets.iter().map(|(_, s)| s.clone()));
        out
    }
}

/// Startup parameters a server connection may be opened with: its *base*, the values `RESET
/// ALL` and `DISCARD ALL` bring it back to. A connection opened with a client's values owes
/// that client (and every client that asked for the same) no `SET` after a hand-over reset;
/// and is given to no other client, whose `RESET` there would bring back the first client's
/// values. Not `client_encoding`: pgward's own connections keep the server's encoding,
/// whatever a client chose (and a client's UTF8 usually is the server's, so no `SET` is owed
/// anyway).
pub const BASE_PARAMS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
];

/// Parameters the server reports at login, lowercased: their values on a connection that was
/// not opened with them are the server's defaults.
pub const REPORTED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
];

/// What a server connection is when reset: the startup parameters it was opened with and what
/// the server reported at login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerBase {
    /// Startup parameters (only [`BASE_PARAMS`]) the connection was opened with: a logged-in
    /// client's, which the server had accepted. No SETs.
    pub opened_with: Arc<SessionParams>,
    /// [`REPORTED_PARAMS`] as the server reported them at login (names lowercased).
    pub reported: Vec<(String, String)>,
}

impl ServerBase {
    /// Keeps what the server reported at login of the parameters it reports.
    pub fn record_reported(&mut self, server_params: &[(String, String)]) {
        self.reported = server_params
            .iter()
            .filter_map(|(k, v)| {
                let k = k.to_ascii_lowercase();
                REPORTED_PARAMS
                    .contains(&k.as_str())
                    .then(|| (k, v.clone()))
            })
            .collect();
    }
}

/// What a login tells its client about the server: the server's parameters, and the
/// ParameterStatus messages that say them, encoded once. A pool answers logins with the same
/// parameters from one report for a while ([`crate::pool::Pool::login_report`]), and encoding
/// ~13 messages afresh at each of them was ~7% of pgward's instructions per `pgbench -C`
/// connection (callgrind).
#[derive(Debug)]
pub struct ServerReport {
    params: Box<[(String, String)]>,
    messages: bytes::Bytes,
}

impl ServerReport {
    pub fn new(params: &[(String, String)]) -> Self {
        let mut messages = bytes::BytesMut::new();
        for (k, v) in params {
            crate::protocol::messages::put_parameter_status(&mut messages, k, v);
        }
        ServerReport {
            params: params.into(),
            messages: messages.freeze(),
        }
    }

    /// The server's parameters, as it spelled them.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// One ParameterStatus message per parameter, in order.
    pub fn messages(&self) -> &[u8] {
        &self.messages
    }
}

/// One startup parameter as a statement (see [`SessionParams::statements_over`]).
fn set_statement(k: &str, v: &str) -> String {
    if k == "search_path" {
        format!(
            "SELECT pg_catalog.set_config({}, {}, false)",
            quote(k),
            quote(v)
        )
    } else {
        format!("SET {k} TO {}", quote(v))
    }
}

/// An E'' string literal with backslashes and quotes escaped; NULs cannot occur (values come
/// from C strings).
pub fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 3);
    s.push_str("E'");
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            '\0' => {}
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn startup_params_are_allowlisted() {
        let s = SessionParams::from_startup(&p(&[
            ("user", "u"),
            ("database", "d"),
            ("DateStyle", "ISO"),
            ("fallback_application_name", "psql"),
        ]))
        .unwrap();
        assert_eq!(
            s.startup,
            p(&[("datestyle", "ISO"), ("application_name", "psql")])
        );
        for bad in ["options", "replication", "session_authorization", "role"] {
            let e = SessionParams::from_startup(&p(&[(bad, "x")])).unwrap_err();
            assert_eq!(e, ClientError::StartupParamRefused { name: bad.into() });
        }
    }

    #[test]
    fn quoting_cannot_be_escaped() {
        assert_eq!(quote("a'b\\c"), "E'a''b\\\\c'");
        let s = SessionParams::from_startup(&p(&[("application_name", "x'); DROP TABLE t; --")]))
            .unwrap();
        assert_eq!(
            s.apply_statements(),
            vec!["SET application_name TO E'x''); DROP TABLE t; --'"]
        );
        let s = SessionParams::from_startup(&p(&[("search_path", "a, b")])).unwrap();
        assert_eq!(
            s.apply_statements(),
            vec!["SELECT pg_catalog.set_config(E'search_path', E'a, b', false)"]
        );
    }

    #[test]
    fn sets_replace_and_reset() {
        let mut s = SessionParams::default();
        s.record_set("a", "SET a = 1");
        s.record_set("b", "SET b = 1");
        s.record_set("a", "SET a = 2");
        assert_eq!(s.apply_statements(), vec!["SET b = 1", "SET a = 2"]);
        s.record_reset("b");
        assert_eq!(s.apply_statements(), vec!["SET a = 2"]);
        s.record_reset_all();
        assert!(s.is_default());
    }
}
