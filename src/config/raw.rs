//! The configuration file as written: serde structs that mirror the TOML, with defaults.
//! Unknown keys are errors (`deny_unknown_fields`) so a typo never silently weakens a setting.
//! Nothing here is trusted yet: `super::validate` turns it into typed values.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub auth: RawAuth,
    pub client_tls: Option<RawClientTls>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub databases: Vec<RawDatabase>,
    /// Statement policies by name, attached to users with `policy = "name"`.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, RawPolicy>,
    /// Audit events; none when absent.
    pub audit: Option<crate::audit::settings::RawAudit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `off | learn | audit | enforce`; a policy that is written down is enforced unless it
    /// says otherwise.
    #[serde(default = "default_policy_mode")]
    pub mode: String,
    /// Refuse ad-hoc SQL over the simple query protocol (except `session_statements`).
    #[serde(default)]
    pub prepared_only: bool,
    /// Only reads pass; the backend session also runs with default_transaction_read_only.
    #[serde(default)]
    pub read_only: bool,
    /// A file of approved statements; anything else is denied.
    pub allowlist: Option<String>,
    /// Normalize literals to `?` (for the allowlist and learned records).
    #[serde(default)]
    pub replace_literals: bool,
    /// Exact statements allowed over the simple protocol under `prepared_only` (and outside
    /// the allowlist). Default: BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT.
    pub session_statements: Option<Vec<String>>,
    /// Functions a read-only policy allows beyond the built-in safe list.
    #[serde(default)]
    pub read_only_functions: Vec<String>,
    /// Where learn mode appends the statements it sees (JSON lines).
    pub learn_file: Option<String>,
    /// Longer statements are denied (fail closed).
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: u64,
    /// Blocked unless allowed here.
    #[serde(default)]
    pub allow_copy_from: bool,
    #[serde(default)]
    pub allow_copy_to: bool,
    #[serde(default)]
    pub allow_listen_notify: bool,
    #[serde(default)]
    pub allow_function_call: bool,
    #[serde(default)]
    pub allow_set_role: bool,
}

fn default_policy_mode() -> String {
    "enforce".into()
}

fn default_max_statement_bytes() -> u64 {
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub admin_listen: String,
    pub max_client_connections: u64,
    /// Largest message a client may send, header included, in bytes.
    pub max_message_bytes: u64,
    /// Seconds a new connection has to finish its startup and authentication.
    pub startup_timeout: f64,
    /// Seconds a client may sit idle outside a transaction (0: no limit).
    pub client_idle_timeout: f64,
    /// Seconds a client may sit idle inside a transaction (0: no limit).
    pub idle_in_transaction_timeout: f64,
    /// Seconds to wait for sessions to finish on shutdown before closing them.
    pub shutdown_timeout: f64,
    /// `text` or `json`.
    pub log_format: String,
    /// Users (from `[[users]]`) who may connect to the admin console, database `pgward`.
    pub admin_users: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:6432".into(),
            admin_listen: "127.0.0.1:9930".into(),
            max_client_connections: 5000,
            max_message_bytes: 64 * 1024 * 1024,
            startup_timeout: 10.0,
            client_idle_timeout: 0.0,
            idle_in_transaction_timeout: 0.0,
            shutdown_timeout: 30.0,
            log_format: "text".into(),
            admin_users: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// A file of `"user" "SCRAM-SHA-256$…"` lines (PostgreSQL's pg_authid verifier format).
    pub users_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    #[serde(default = "default_auth")]
    pub auth: String,
    pub scram_verifier: Option<String>,
    pub scram_verifier_file: Option<String>,
    pub max_connections: Option<u64>,
    pub backend_user: Option<String>,
    pub backend_password_file: Option<String>,
    pub backend_password_env: Option<String>,
    /// Databases this user may use; all when absent.
    pub databases: Option<Vec<String>>,
    /// For `cert` and `cert+scram`: the identity the client certificate must carry
    /// (`spiffe://…` URI SAN, `DNS:name` or a bare DNS SAN, or `CN=name`).
    pub cert_identity: Option<String>,
    /// The statement policy for this user's sessions (a key of `[policies]`).
    pub policy: Option<String>,
}

/// `[client_tls]`: TLS between clients and pgward.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    /// `disable`, `allow` or `require`.
    #[serde(default = "default_client_tls_mode")]
    pub mode: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// CA bundle that client certificates are verified against.
    pub client_ca: Option<String>,
    /// `none`, `optional` or `required`; `optional` when client_ca is set, else `none`.
    pub client_cert: Option<String>,
    /// `1.2` or `1.3`.
    #[serde(default = "default_tls_min_version")]
    pub min_version: String,
    /// Seconds a TLS handshake may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: f64,
    /// Handshakes in progress at once; more wait (up to the handshake timeout).
    #[serde(default = "default_max_handshakes")]
    pub max_concurrent_handshakes: u64,
    /// End a session when its client certificate expires.
    #[serde(default)]
    pub end_session_on_cert_expiry: bool,
    /// Seconds between checks of the certificate, key and CA files for changes.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: f64,
}

fn default_client_tls_mode() -> String {
    "require".into()
}
fn default_tls_min_version() -> String {
    "1.2".into()
}
fn default_handshake_timeout() -> f64 {
    10.0
}
fn default_max_handshakes() -> u64 {
    1024
}
fn default_reload_interval() -> f64 {
    5.0
}

/// `backend_tls` of a database: TLS between pgward and PostgreSQL.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// `disable`, `require`, `verify-ca` or `verify-full` (the default when `ca` is set).
    pub mode: Option<String>,
    /// CA bundle the server certificate is verified against (e.g. the AWS RDS global bundle).
    pub ca: Option<String>,
    /// The name to verify instead of `host` (and to send as SNI).
    pub server_name: Option<String>,
    /// Client certificate and key, for mTLS to the database.
    pub cert: Option<String>,
    pub key: Option<String>,
}

fn default_auth() -> String {
    "scram".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub dbname: Option<String>,
    pub backend_user: String,
    pub backend_password_file: Option<String>,
    pub backend_password_env: Option<String>,
    /// Send a cleartext password to a server that asks for one over an unencrypted connection.
    #[serde(default)]
    pub allow_cleartext_password: bool,
    #[serde(default = "default_pool_mode")]
    pub pool_mode: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: u64,
    #[serde(default)]
    pub min_idle: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: f64,
    #[serde(default = "default_checkout_timeout")]
    pub checkout_timeout: f64,
    #[serde(default = "default_server_idle_timeout")]
    pub server_idle_timeout: f64,
    #[serde(default = "default_server_lifetime")]
    pub server_lifetime: f64,
    pub backend_tls: Option<RawBackendTls>,
    /// Transaction mode: reset session settings (RESET ALL, RESET ROLE) whenever a server
    /// connection passes to another client, pipelined in front of its first message.
    #[serde(default = "default_true")]
    pub reset_on_handover: bool,
    /// Transaction mode: named prepared statements kept per server connection (LRU); 0
    /// refuses named prepared statements.
    #[serde(default = "default_max_prepared_statements")]
    pub max_prepared_statements: u64,
    /// Transaction mode: bytes of named prepared statements (text, parameter types, names) one
    /// client may hold.
    #[serde(default = "default_max_client_statement_bytes")]
    pub max_client_statement_bytes: u64,
}

fn default_max_prepared_statements() -> u64 {
    200
}

fn default_max_client_statement_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_pool_mode() -> String {
    "transaction".into()
}
fn default_pool_size() -> u64 {
    20
}
fn default_connect_timeout() -> f64 {
    5.0
}
fn default_checkout_timeout() -> f64 {
    10.0
}
fn default_server_idle_timeout() -> f64 {
    600.0
}
fn default_server_lifetime() -> f64 {
    3600.0
}
