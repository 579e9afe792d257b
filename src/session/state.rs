//! A client's session state as pgward carries it between server connections: the startup
//! parameters the client asked for and the session-level `SET`s it has made. In transaction
//! mode this state belongs to the client, not to any server connection: it is re-applied on the
//! server a client gets whenever that server carries different state, so one client's settings
//! are never seen by another.

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

    /// The statements that make a server that was reset to its defaults carry this state.
    /// Startup parameters are applied with `SET` (a utility statement: cheaper than a query),
    /// except `search_path`, whose value is a list: `set_config` parses it exactly as a startup
    /// packet does. Names come from the allowlist; values are quoted as E'' literals so they
    /// stay literals whatever `standard_conforming_strings` is.
    pub fn apply_statements(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.startup.len() + self.sets.len());
        for (k, v) in &self.startup {
            if k == "search_path" {
                out.push(format!(
                    "SELECT pg_catalog.set_config({}, {}, false)",
                    quote(k),
                    quote(v)
                ));
            } else {
                out.push(format!("SET {k} TO {}", quote(v)));
            }
        }
        out.extend(self.sets.iter().map(|(_, s)| s.clone()));
        out
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
