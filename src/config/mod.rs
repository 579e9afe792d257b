//! Configuration: loading (one TOML file + `PGWARD__SECTION__KEY` environment overrides) and
//! validation into typed values. Every problem is collected and reported at once, so an operator
//! fixes a file in one pass. `pgward check-config` is a thin wrapper around [`load`].

pub mod raw;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use thiserror::Error;

use crate::auth::scram::ScramVerifier;
use crate::auth::secret::Secret;
use crate::tls::identity::CertIdentity;
pub use raw::RawConfig;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A validated configuration. Shared read-only by `Arc`.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    /// `None`: no TLS towards clients (`mode = "disable"` or no `[client_tls]`).
    pub client_tls: Option<ClientTlsSettings>,
    pub users: HashMap<String, Arc<User>>,
    pub databases: HashMap<String, Arc<Database>>,
    /// Statement policies by name (users hold theirs).
    pub policies: HashMap<String, Arc<crate::policy::Policy>>,
    /// Where audit events go; `None`: no audit.
    pub audit: Option<crate::audit::settings::AuditSettings>,
    /// Mock SCRAM verifiers for unknown users, made from a key that is stable while the
    /// configured verifiers are, and derived from their secret keys so an outsider cannot
    /// predict their salts.
    pub mock_auth: crate::auth::scram::MockVerifiers,
    /// The file it was loaded from ([`load`]); what a reload reads again. `None` for a config
    /// made from text.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_client_connections: usize,
    pub max_message_bytes: usize,
    pub startup_timeout: Duration,
    pub client_idle_timeout: Option<Duration>,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// Users who may use the admin console (database `pgward`).
    pub admin_users: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who may connect to pgward, and how they prove it.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub auth: ClientAuth,
    pub max_connections: Option<usize>,
    /// This user's own backend role, overriding the database's (per-service credentials).
    pub backend: Option<BackendLogin>,
    /// Databases the user may ask for; `None`: all.
    pub databases: Option<Vec<String>>,
    /// The statement policy for this user's sessions.
    pub policy: Option<Arc<crate::policy::Policy>>,
}

#[derive(Debug)]
pub enum ClientAuth {
    Scram(ScramVerifier),
    /// The verified client certificate alone, which must carry this identity.
    Cert(CertIdentity),
    /// Both: the certificate must carry the identity, and the SCRAM exchange must succeed.
    CertAndScram(CertIdentity, ScramVerifier),
    /// No password; accepted only from loopback addresses.
    Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// TLS when the client asks for it.
    Allow,
    /// TLS or nothing: a plaintext StartupMessage is refused (the pooler's `rds.force_ssl`).
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    None,
    /// Verified when presented.
    Optional,
    /// A session without a verified client certificate is refused.
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSettings {
    pub mode: ClientTlsMode,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_cert: ClientCertMode,
    pub min_version: TlsMinVersion,
    pub handshake_timeout: Duration,
    pub max_concurrent_handshakes: usize,
    pub end_session_on_cert_expiry: bool,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsMode {
    Disable,
    /// Encrypted, server certificate not verified (libpq's `require`): protects against
    /// sniffing, not against an active attacker.
    Require,
    /// Certificate chain verified against the CA, name not checked.
    VerifyCa,
    /// Chain and server name verified.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsSettings {
    pub mode: BackendTlsMode,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    /// Client certificate and key for mTLS to the database.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl BackendTlsSettings {
    pub fn disabled() -> Self {
        BackendTlsSettings {
            mode: BackendTlsMode::Disable,
            ca: None,
            server_name: None,
            client_cert: None,
        }
    }

    /// The server is authenticated by its certificate: secrets may be sent over this leg.
    pub fn verified(&self) -> bool {
        matches!(
            self.mode,
            BackendTlsMode::VerifyCa | BackendTlsMode::VerifyFull
        )
    }
}

/// How pgward logs in to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendLogin {
    pub user: String,
    pub password: PasswordSource,
    /// Log in with `default_transaction_read_only = on` as a startup parameter (for users whose
    /// policy enforces read_only): a session default that RESET and DISCARD ALL return to.
    pub read_only: bool,
}

/// Where a backend password comes from. Read at every new server connection, so replacing the
/// file (or the variable, on restart) rotates the credential without touching pgward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    None,
    File(PathBuf),
    Env(String),
}

impl PasswordSource {
    pub fn read(&self) -> std::io::Result<Option<Secret>> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::File(p) => {
                let mut bytes = std::fs::read(p)?;
                // A trailing newline is an editor's, not the password's.
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                Ok(Some(Secret::new(bytes)))
            }
            PasswordSource::Env(var) => match std::env::var_os(var) {
                Some(v) => Ok(Some(Secret::new(v.into_encoded_bytes()))),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("environment variable {var} is not set"),
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: usize,
    pub min_idle: usize,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    pub server_idle_timeout: Option<Duration>,
    pub server_lifetime: Option<Duration>,
}

/// Where a database really is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Database {
    pub name: String,
    pub target: Target,
    pub backend: BackendLogin,
    pub allow_cleartext_password: bool,
    pub pool: PoolSettings,
    pub tls: BackendTlsSettings,
    /// Transaction mode: reset session settings whenever a connection changes hands.
    pub reset_on_handover: bool,
    /// Transaction mode: named prepared statements kept per server connection; 0 refuses them.
    pub max_prepared_statements: usize,
    /// Transaction mode: bytes of named prepared statements one client may hold.
    pub max_client_statement_bytes: usize,
}

/// Loads a config file with environment overrides and validates it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = load_raw(path)?;
    let mut config = validate(raw, path.parent().unwrap_or(Path::new(".")))?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let settings = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("PGWARD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    settings
        .try_deserialize()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

/// Parses TOML text (no environment overrides); for tests and embedding.
pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    validate(raw, base_dir)
}

fn seconds(v: f64, key: &str, errors: &mut Vec<String>) -> Duration {
    if !v.is_finite() || !(0.0..=31_536_000.0).contains(&v) {
        errors.push(format!(
            "{key} must be between 0 and 31536000 seconds, got {v}"
        ));
        return Duration::ZERO;
    }
    Duration::from_secs_f64(v)
}

fn optional_seconds(v: f64, key: &str, errors: &mut Vec<String>) -> Option<Duration> {
    let d = seconds(v, key, errors);
    (!d.is_zero()).then_some(d)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn password_source(
    file: Option<&String>,
    env: Option<&String>,
    base: &Path,
    what: &str,
    errors: &mut Vec<String>,
) -> PasswordSource {
    match (file, env) {
        (Some(_), Some(_)) => {
            errors.push(format!(
                "{what}: set backend_password_file or backend_password_env, not both"
            ));
            PasswordSource::None
        }
        (Some(f), None) => PasswordSource::File(resolve(base, f)),
        (None, Some(e)) => PasswordSource::Env(e.clone()),
        (None, None) => PasswordSource::None,
    }
}

/// Reads a users file: one `"name" "verifier"` per line, `#` comments, blank lines ignored.
fn read_users_file(path: &Path, errors: &mut Vec<String>) -> Vec<(String, String)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("auth.users_file {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('"').collect();
        // `"a" "b"` splits into ["", "a", " ", "b", ""].
        match fields.as_slice() {
            ["", name, sep, verifier, ""] if sep.trim().is_empty() && !name.is_empty() => {
                out.push(((*name).to_owned(), (*verifier).to_owned()))
            }
            _ => errors.push(format!(
                "auth.users_file {} line {}: expected \"user\" \"SCRAM-SHA-256$…\"",
                path.display(),
                i + 1
            )),
        }
    }
    out
}

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let s = &raw.server;
    let listen = s.listen.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "server.listen: not an address:port: {:?}",
            s.listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 6432))
    });
    let admin_listen = s.admin_listen.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "server.admin_listen: not an address:port: {:?}",
            s.admin_listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 9930))
    });
    if s.max_client_connections == 0 {
        errors.push("server.max_client_connections must be at least 1".into());
    }
    if !(1024..=(1 << 30)).contains(&s.max_message_bytes) {
        errors.push("server.max_message_bytes must be between 1024 and 1073741824".into());
    }
    let log_format = match s.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errors.push(format!(
                "server.log_format must be \"text\" or \"json\", got {other:?}"
            ));
            LogFormat::Text
        }
    };
    let startup_timeout = seconds(s.startup_timeout, "server.startup_timeout", &mut errors);
    if startup_timeout.is_zero() {
        errors.push("server.startup_timeout must be greater than 0".into());
    }
    let server = ServerSettings {
        listen,
        admin_listen,
        max_client_connections: s.max_client_connections as usize,
        max_message_bytes: s.max_message_bytes as usize,
        startup_timeout,
        client_idle_timeout: optional_seconds(
            s.client_idle_timeout,
            "server.client_idle_timeout",
            &mut errors,
        ),
        idle_in_transaction_timeout: optional_seconds(
            s.idle_in_transaction_timeout,
            "server.idle_in_transaction_timeout",
            &mut errors,
        ),
        shutdown_timeout: seconds(s.shutdown_timeout, "server.shutdown_timeout", &mut errors),
        log_format,
        admin_users: s.admin_users.clone(),
    };

    let client_tls = raw
        .client_tls
        .as_ref()
        .and_then(|t| validate_client_tls(t, base, &mut errors));

    // Databases first: users refer to them.
    let mut databases = HashMap::new();
    for d in &raw.databases {
        let what = format!("databases.{}", d.name);
        if d.name.is_empty() {
            errors.push("databases: a database has an empty name".into());
        }
        if d.backend_user.is_empty() {
            errors.push(format!("{what}.backend_user must not be empty"));
        }
        let mode = match d.pool_mode.as_str() {
            "session" => PoolMode::Session,
            "transaction" => PoolMode::Transaction,
            other => {
                errors.push(format!(
                    "{what}.pool_mode must be \"session\" or \"transaction\", got {other:?}"
                ));
                PoolMode::Transaction
            }
        };
        if d.pool_size == 0 || d.pool_size > 10_000 {
            errors.push(format!("{what}.pool_size must be between 1 and 10000"));
        }
        if d.min_idle > d.pool_size {
            errors.push(format!("{what}.min_idle must not exceed pool_size"));
        }
        let connect_timeout = seconds(
            d.connect_timeout,
            &format!("{what}.connect_timeout"),
            &mut errors,
        );
        let checkout_timeout = seconds(
            d.checkout_timeout,
            &format!("{what}.checkout_timeout"),
            &mut errors,
        );
        if connect_timeout.is_zero() || checkout_timeout.is_zero() {
            errors.push(format!(
                "{what}: connect_timeout and checkout_timeout must be greater than 0"
            ));
        }
        let pool = PoolSettings {
            mode,
            size: d.pool_size as usize,
            min_idle: d.min_idle as usize,
            connect_timeout,
            checkout_timeout,
            server_idle_timeout: optional_seconds(
                d.server_idle_timeout,
                &format!("{what}.server_idle_timeout"),
                &mut errors,
            ),
            server_lifetime: optional_seconds(
                d.server_lifetime,
                &format!("{what}.server_lifetime"),
                &mut errors,
            ),
        };
        let password = password_source(
            d.backend_password_file.as_ref(),
            d.backend_password_env.as_ref(),
            base,
            &what,
            &mut errors,
        );
        let tls = validate_backend_tls(d.backend_tls.as_ref(), base, &what, &mut errors);
        let db = Database {
            tls,
            reset_on_handover: d.reset_on_handover,
            max_prepared_statements: d.max_prepared_statements as usize,
            max_client_statement_bytes: usize::try_from(d.max_client_statement_bytes)
                .unwrap_or(usize::MAX),
            name: d.name.clone(),
            target: Target {
                host: d.host.clone(),
                port: d.port,
                dbname: d.dbname.clone().unwrap_or_else(|| d.name.clone()),
            },
            backend: BackendLogin {
                user: d.backend_user.clone(),
                password,
                read_only: false,
            },
            allow_cleartext_password: d.allow_cleartext_password,
            pool,
        };
        if databases.insert(d.name.clone(), Arc::new(db)).is_some() {
            errors.push(format!("databases: {:?} is defined twice", d.name));
        }
    }
    if databases.is_empty() {
        errors.push("no [[databases]] configured".into());
    }

    let file_verifiers = raw
        .auth
        .users_file
        .as_ref()
        .map(|f| read_users_file(&resolve(base, f), &mut errors))
        .unwrap_or_default();

    let audit = match &raw.audit {
        None => None,
        Some(a) => match crate::audit::settings::AuditSettings::from_raw(a, base) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("audit: {e}"));
                None
            }
        },
    };
    let mut policies = HashMap::new();
    for (name, p) in &raw.policies {
        match crate::policy::PolicySettings::from_raw(name, p, base)
            .and_then(crate::policy::Policy::new)
        {
            Ok(policy) => {
                policies.insert(name.clone(), Arc::new(policy));
            }
            Err(e) => errors.push(format!("policies.{name}: {e}")),
        }
    }

    let mut users = HashMap::new();
    let mut mock_material = digest::Context::new(&digest::SHA256);
    mock_material.update(b"pgward mock scram salt v1");
    for u in &raw.users {
        let what = format!("users.{}", u.name);
        if u.name.is_empty() {
            errors.push("users: a user has an empty name".into());
        }
        let from_file = file_verifiers
            .iter()
            .find(|(n, _)| n == &u.name)
            .map(|(_, v)| v.clone());
        let verifier_text = match (&u.scram_verifier, &u.scram_verifier_file) {
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "{what}: set scram_verifier or scram_verifier_file, not both"
                ));
                None
            }
            (Some(v), None) => Some(v.clone()),
            (None, Some(f)) => match std::fs::read_to_string(resolve(base, f)) {
                Ok(t) => Some(t.trim().to_owned()),
                Err(e) => {
                    errors.push(format!("{what}.scram_verifier_file {f}: {e}"));
                    None
                }
            },
            (None, None) => from_file,
        };
        let auth = match u.auth.as_str() {
            "scram" => match verifier_text.as_deref().map(ScramVerifier::parse) {
                Some(Ok(v)) => {
                    mock_material.update(v.to_string().as_bytes());
                    ClientAuth::Scram(v)
                }
                Some(Err(e)) => {
                    errors.push(format!("{what}.scram_verifier: {e}"));
                    ClientAuth::Trust
                }
                None => {
                    errors.push(format!(
                        "{what}: auth = \"scram\" needs scram_verifier, scram_verifier_file or an entry in auth.users_file (make one with `pgward scram-verifier`)"
                    ));
                    ClientAuth::Trust
                }
            },
            "trust" => {
                if verifier_text.is_some() {
                    errors.push(format!("{what}: auth = \"trust\" takes no verifier"));
                }
                ClientAuth::Trust
            }
            "cert" | "cert+scram" => {
                let identity = match u.cert_identity.as_deref().map(CertIdentity::parse) {
                    Some(Ok(i)) => Some(i),
                    Some(Err(e)) => {
                        errors.push(format!("{what}.cert_identity: {e}"));
                        None
                    }
                    None => {
                        errors.push(format!(
                            "{what}: auth = {:?} needs cert_identity (spiffe://…, DNS:name or CN=name)",
                            u.auth
                        ));
                        None
                    }
                };
                let verifies_certs = client_tls
                    .as_ref()
                    .is_some_and(|t| t.client_cert != ClientCertMode::None);
                if !verifies_certs {
                    errors.push(format!(
                        "{what}: auth = {:?} needs [client_tls] with client_ca and client_cert = \"optional\" or \"required\"",
                        u.auth
                    ));
                }
                let scram = if u.auth == "cert+scram" {
                    match verifier_text.as_deref().map(ScramVerifier::parse) {
                        Some(Ok(v)) => {
                            mock_material.update(v.to_string().as_bytes());
                            Some(v)
                        }
                        Some(Err(e)) => {
                            errors.push(format!("{what}.scram_verifier: {e}"));
                            None
                        }
                        None => {
                            errors.push(format!(
                                "{what}: auth = \"cert+scram\" needs a SCRAM verifier too"
                            ));
                            None
                        }
                    }
                } else {
                    if verifier_text.is_some() {
                        errors.push(format!(
                            "{what}: auth = \"cert\" takes no verifier (use \"cert+scram\")"
                        ));
                    }
                    None
                };
                match (identity, scram, u.auth.as_str()) {
                    (Some(i), _, "cert") => ClientAuth::Cert(i),
                    (Some(i), Some(v), _) => ClientAuth::CertAndScram(i, v),
                    _ => ClientAuth::Trust,
                }
            }
            other => {
                errors.push(format!(
                    "{what}.auth must be \"scram\", \"cert\", \"cert+scram\" or \"trust\", got {other:?}"
                ));
                ClientAuth::Trust
            }
        };
        let backend = match &u.backend_user {
            Some(user) => Some(BackendLogin {
                user: user.clone(),
                password: password_source(
                    u.backend_password_file.as_ref(),
                    u.backend_password_env.as_ref(),
                    base,
                    &what,
                    &mut errors,
                ),
                read_only: false,
            }),
            None => {
                if u.backend_password_file.is_some() || u.backend_password_env.is_some() {
                    errors.push(format!("{what}: a backend password needs backend_user"));
                }
                None
            }
        };
        if u.cert_identity.is_some() && !matches!(u.auth.as_str(), "cert" | "cert+scram") {
            errors.push(format!(
                "{what}: cert_identity is only used with auth = \"cert\" or \"cert+scram\""
            ));
        }
        if let Some(dbs) = &u.databases {
            for d in dbs {
                if !databases.contains_key(d) {
                    errors.push(format!(
                        "{what}.databases: {d:?} is not a configured database"
                    ));
                }
            }
        }
        if u.max_connections == Some(0) {
            errors.push(format!("{what}.max_connections must be at least 1"));
        }
        let policy = match &u.policy {
            None => None,
            Some(p) => {
                let found = policies.get(p).cloned();
                if found.is_none() {
                    errors.push(format!("{what}.policy: {p:?} is not a configured policy"));
                }
                found
            }
        };
        let user = User {
            name: u.name.clone(),
            auth,
            max_connections: u.max_connections.map(|n| n as usize),
            backend,
            databases: u.databases.clone(),
            policy,
        };
        if users.insert(u.name.clone(), Arc::new(user)).is_some() {
            errors.push(format!("users: {:?} is defined twice", u.name));
        }
    }
    // Users that appear only in the users file get default settings.
    for (name, verifier) in file_verifiers {
        if users.contains_key(&name) {
            continue;
        }
        match ScramVerifier::parse(&verifier) {
            Ok(v) => {
                mock_material.update(v.to_string().as_bytes());
                users.insert(
                    name.clone(),
                    Arc::new(User {
                        name,
                        auth: ClientAuth::Scram(v),
                        max_connections: None,
                        backend: None,
                        databases: None,
                        policy: None,
                    }),
                );
            }
            Err(e) => errors.push(format!("auth.users_file: user {name:?}: {e}")),
        }
    }

    for a in &server.admin_users {
        if !users.contains_key(a) {
            errors.push(format!(
                "server.admin_users: {a:?} is not a configured user"
            ));
        }
    }
    if databases.contains_key(crate::admin::ADMIN_DATABASE) {
        errors.push(format!(
            "databases: {:?} is the admin console's name",
            crate::admin::ADMIN_DATABASE
        ));
    }
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    let mut mock_auth_key = [0u8; 32];
    mock_auth_key.copy_from_slice(mock_material.finish().as_ref());
    Ok(Config {
        server,
        client_tls,
        users,
        databases,
        policies,
        audit,
        mock_auth: crate::auth::scram::MockVerifiers::new(
            &mock_auth_key,
            crate::auth::scram::MOCK_ITERATIONS,
        ),
        source: None,
    })
}

fn validate_client_tls(
    t: &raw::RawClientTls,
    base: &Path,
    errors: &mut Vec<String>,
) -> Option<ClientTlsSettings> {
    let mode = match t.mode.as_str() {
        "disable" => return None,
        "allow" => ClientTlsMode::Allow,
        "require" => ClientTlsMode::Require,
        other => {
            errors.push(format!(
                "client_tls.mode must be \"disable\", \"allow\" or \"require\", got {other:?}"
            ));
            return None;
        }
    };
    let (Some(cert), Some(key)) = (&t.cert, &t.key) else {
        errors.push("client_tls: cert and key are required unless mode = \"disable\"".into());
        return None;
    };
    let client_ca = t.client_ca.as_ref().map(|p| resolve(base, p));
    let client_cert = match (t.client_cert.as_deref(), &client_ca) {
        (None, None) | (Some("none"), _) => ClientCertMode::None,
        (None, Some(_)) | (Some("optional"), Some(_)) => ClientCertMode::Optional,
        (Some("required"), Some(_)) => ClientCertMode::Required,
        (Some("optional" | "required"), None) => {
            errors.push(
                "client_tls.client_cert needs client_ca to verify certificates against".into(),
            );
            ClientCertMode::None
        }
        (Some(other), _) => {
            errors.push(format!(
                "client_tls.client_cert must be \"none\", \"optional\" or \"required\", got {other:?}"
            ));
            ClientCertMode::None
        }
    };
    let min_version = match t.min_version.as_str() {
        "1.2" => TlsMinVersion::Tls12,
        "1.3" => TlsMinVersion::Tls13,
        other => {
            errors.push(format!(
                "client_tls.min_version must be \"1.2\" or \"1.3\", got {other:?}"
            ));
            TlsMinVersion::Tls12
        }
    };
    if t.max_concurrent_handshakes == 0 {
        errors.push("client_tls.max_concurrent_handshakes must be at least 1".into());
    }
    let handshake_timeout = seconds(t.handshake_timeout, "client_tls.handshake_timeout", errors);
    let reload_interval = seconds(t.reload_interval, "client_tls.reload_interval", errors);
    if handshake_timeout.is_zero() || reload_interval.is_zero() {
        errors.push(
            "client_tls: handshake_timeout and reload_interval must be greater than 0".into(),
        );
    }
    let settings = ClientTlsSettings {
        mode,
        cert: resolve(base, cert),
        key: resolve(base, key),
        client_ca,
        client_cert,
        min_version,
        handshake_timeout,
        max_concurrent_handshakes: t.max_concurrent_handshakes as usize,
        end_session_on_cert_expiry: t.end_session_on_cert_expiry,
        reload_interval,
    };
    // Load it now, so a broken certificate is a config error, not a runtime surprise.
    if let Err(e) = crate::tls::server::ServerTls::load(&settings) {
        errors.push(format!("client_tls: {e}"));
    }
    Some(settings)
}

fn validate_backend_tls(
    t: Option<&raw::RawBackendTls>,
    base: &Path,
    what: &str,
    errors: &mut Vec<String>,
) -> BackendTlsSettings {
    let Some(t) = t else {
        return BackendTlsSettings::disabled();
    };
    let mode = match (t.mode.as_deref(), &t.ca) {
        (None, Some(_)) | (Some("verify-full"), _) => BackendTlsMode::VerifyFull,
        (Some("verify-ca"), _) => BackendTlsMode::VerifyCa,
        (Some("require"), _) => BackendTlsMode::Require,
        (Some("disable"), _) | (None, None) => BackendTlsMode::Disable,
        (Some(other), _) => {
            errors.push(format!(
                "{what}.backend_tls.mode must be \"disable\", \"require\", \"verify-ca\" or \"verify-full\", got {other:?}"
            ));
            BackendTlsMode::Disable
        }
    };
    if matches!(mode, BackendTlsMode::VerifyCa | BackendTlsMode::VerifyFull) && t.ca.is_none() {
        errors.push(format!(
            "{what}.backend_tls: mode {mode:?} needs ca (the CA bundle to verify the server with)"
        ));
    }
    let client_cert = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((resolve(base, c), resolve(base, k))),
        (None, None) => None,
        _ => {
            errors.push(format!("{what}.backend_tls: cert and key go together"));
            None
        }
    };
    BackendTlsSettings {
        mode,
        ca: t.ca.as_ref().map(|p| resolve(base, p)),
        server_name: t.server_name.clone(),
        client_cert,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn minimal_config_validates() {
        let c = from_toml(
            &format!(
                r#"
[[users]]
name = "app"
scram_verifier = "{VERIFIER}"
[[databases]]
name = "appdb"
backend_user = "app_rw"
backend_password_env = "APP_RW_PASSWORD"
"#
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 6432);
        let db = &c.databases["appdb"];
        assert_eq!(db.pool.mode, PoolMode::Transaction);
        assert_eq!(db.target.dbname, "appdb");
        assert!(matches!(c.users["app"].auth, ClientAuth::Scram(_)));
    }

    #[test]
    fn all_errors_are_reported_at_once_and_unknown_keys_rejected() {
        let e = from_toml(
            r#"
[server]
listen = "nonsense"
max_client_connections = 0
[[users]]
name = "app"
auth = "md5"
[[databases]]
name = "appdb"
backend_user = "x"
pool_mode = "statement"
pool_size = 0
"#,
            Path::new("."),
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = e else {
            panic!("expected validation errors, got {e}")
        };
        assert!(list.len() >= 5, "{list:?}");
        let unknown = from_toml("[server]\nlisten_port = 1\n", Path::new(".")).unwrap_err();
        assert!(unknown.to_string().contains("listen_port"), "{unknown}");
    }

    #[test]
    fn users_file_supplies_verifiers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.txt"),
            format!("# comment\n\"file_user\" \"{VERIFIER}\"\n"),
        )
        .unwrap();
        let c = from_toml(
            "[auth]\nusers_file = \"users.txt\"\n[[databases]]\nname = \"d\"\nbackend_user = \"b\"\n",
            dir.path(),
        )
        .unwrap();
        assert!(c.users.contains_key("file_user"));
    }

    #[test]
    fn password_file_is_read_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "one\n").unwrap();
        let src = PasswordSource::File(f.clone());
        assert_eq!(src.read().unwrap().unwrap().expose(), b"one");
        std::fs::write(&f, "two").unwrap();
        assert_eq!(src.read().unwrap().unwrap().expose(), b"two");
    }
}
