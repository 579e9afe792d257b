//! pgward running in process in front of a [`PgServer`]: the configuration the integration
//! tests share, a server on `127.0.0.1:0` with its own runtime thread, and client helpers.
//!
//! pgward gets its own multi-threaded runtime on a separate thread so that tests may block
//! (psql, pgbench, the harness's superuser calls) without stalling the pooler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use pgward::App;
use pgward::auth::scram::ScramVerifier;
use pgward::auth::secret::Secret;

use super::pg::{PgServer, pgbench_cmd, psql_cmd};

/// The client user's password (what applications know).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-client-secret-7f3a";
/// The backend role's password (what only pgward knows).
pub const BACKEND_ROLE: &str = "app_rw";
pub const BACKEND_PASSWORD: &str = "backend-secret-91c2";

/// Knobs the tests turn; everything else is fixed.
#[derive(Clone)]
pub struct Options {
    pub pool_size: usize,
    pub checkout_timeout: f64,
    pub max_client_connections: usize,
    pub user_max_connections: Option<usize>,
    pub max_message_bytes: usize,
    /// Extra lines for the `[server]` section.
    pub server_extra: String,
    /// A `[client_tls]` section (whole), if any.
    pub client_tls: String,
    /// An inline `backend_tls = { … }` line for the two standard databases, if any.
    pub backend_tls: String,
    /// Extra lines for the `app` user.
    pub user_extra: String,
    /// Extra TOML appended to the generated config (more users, databases); `PORT` in it is
    /// replaced by the test server's port.
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: 5,
            checkout_timeout: 10.0,
            max_client_connections: 200,
            user_max_connections: None,
            max_message_bytes: 1 << 20,
            server_extra: String::new(),
            client_tls: String::new(),
            backend_tls: String::new(),
            user_extra: String::new(),
            extra: String::new(),
        }
    }
}

/// A PostgreSQL server with roles and databases, and pgward in front of it with two databases:
/// `appdb` (transaction mode) and `appdb_session` (session mode), both as `app_rw`.
pub struct TestEnv {
    pub pgward: Pgward,
    pub pg: PgServer,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn start() -> TestEnv {
        Self::with(Options::default())
    }

    pub fn with(opts: Options) -> TestEnv {
        Self::build(PgServer::start(), opts)
    }

    fn build(pg: PgServer, opts: Options) -> TestEnv {
        pg.create_role(BACKEND_ROLE, BACKEND_PASSWORD);
        pg.create_database("appdb", BACKEND_ROLE);
        let dir = tempfile::tempdir().expect("temp dir for the pgward config");
        std::fs::write(
            dir.path().join("app_rw.password"),
            format!("{BACKEND_PASSWORD}\n"),
        )
        .expect("write backend password file");
        let verifier = ScramVerifier::new_random(&Secret::new(APP_PASSWORD), 4096);
        let user_max = opts
            .user_max_connections
            .map(|n| format!("max_connections = {n}\n"))
            .unwrap_or_default();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_client_connections = {max_clients}
max_message_bytes = {max_message}
{server_extra}
shutdown_timeout = 2

[[users]]
name = "{APP_USER}"
scram_verifier = "{verifier}"
{user_max}
{user_extra}

[[databases]]
name = "appdb"
port = {port}
backend_user = "{BACKEND_ROLE}"
backend_password_file = "app_rw.password"
pool_mode = "transaction"
pool_size = {pool_size}
checkout_timeout = {checkout}
{backend_tls}

[[databases]]
name = "appdb_session"
dbname = "appdb"
port = {port}
backend_user = "{BACKEND_ROLE}"
backend_password_file = "app_rw.password"
pool_mode = "session"
pool_size = {pool_size}
checkout_timeout = {checkout}
{backend_tls}
{extra}
{client_tls}
"#,
            max_clients = opts.max_client_connections,
            max_message = opts.max_message_bytes,
            server_extra = opts.server_extra,
            port = pg.port(),
            pool_size = opts.pool_size,
            checkout = opts.checkout_timeout,
            extra = opts.extra.replace("PORT", &pg.port().to_string()),
            user_extra = opts.user_extra,
            backend_tls = opts.backend_tls,
            client_tls = opts.client_tls,
        );
        std::fs::write(dir.path().join("pgward.toml"), &toml).expect("write config");
        let mut config = pgward::config::from_toml(&toml, dir.path()).expect("valid test config");
        // What RELOAD and SIGHUP read again.
        config.source = Some(dir.path().join("pgward.toml"));
        let pgward = Pgward::start(config);
        TestEnv { pgward, pg, dir }
    }

    /// Like [`TestEnv::with`], against an already started server (e.g. one with TLS).
    pub fn with_server(pg: PgServer, opts: Options) -> TestEnv {
        Self::build(pg, opts)
    }

    pub fn port(&self) -> u16 {
        self.pgward.addr.port()
    }

    /// A libpq connection string to pgward.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable connect_timeout=10",
            self.port()
        )
    }

    /// tokio-postgres through pgward as the app user; the connection task is spawned.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        self.try_client(APP_USER, APP_PASSWORD, db)
            .await
            .unwrap_or_else(|e| panic!("connect through pgward to {db}: {e}"))
    }

    pub async fn try_client(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// psql through pgward as the app user.
    pub fn psql(&self, db: &str) -> Command {
        psql_cmd("127.0.0.1", self.port(), APP_USER, APP_PASSWORD, db)
    }

    /// pgbench through pgward as the app user.
    pub fn pgbench(&self, db: &str) -> Command {
        pgbench_cmd("127.0.0.1", self.port(), APP_USER, APP_PASSWORD, db)
    }

    /// The text `/metrics` serves on the admin endpoint, as a scraper sees it.
    pub fn scrape_metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.pgward.admin_addr).expect("admin endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: pgward\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgward.toml")
    }
}

/// pgward serving on 127.0.0.1:0 from its own runtime thread until dropped.
pub struct Pgward {
    pub addr: SocketAddr,
    /// The admin HTTP endpoint (metrics, health).
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Pgward {
    pub fn start(config: pgward::Config) -> Pgward {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("pgward test runtime");
            rt.block_on(async move {
                // Inside the runtime: the audit writer is a task of it.
                let app = App::start(config).await.expect("pgward starts");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind pgward test listener");
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind pgward test admin listener");
                addr_tx
                    .send((
                        listener.local_addr().expect("local addr"),
                        admin.local_addr().expect("admin addr"),
                        Arc::clone(&app),
                    ))
                    .expect("report address");
                pgward::run_app(app, listener, Some(admin), async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let (addr, admin_addr, app) = addr_rx.recv().expect("pgward started");
        Pgward {
            addr,
            admin_addr,
            app,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Pgward {
    /// Starts a graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Pgward {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of the first metric sample whose line starts with `prefix` (in the text of
/// [`TestEnv::scrape_metrics`]).
pub fn metric_sample(metrics: &str, prefix: &str) -> f64 {
    find_metric_sample(metrics, prefix)
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
}

/// [`metric_sample`], or `None` where the sample is absent (a labelled counter appears only once
/// something has counted it).
pub fn find_metric_sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgward) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

/// The message of a tokio-postgres error sent by the server (or pgward).
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run client program");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw protocol-3.0 connection logged in through pgward as the app user, for tests that must
/// send bytes no well-behaved client library would.
#[derive(Debug)]
pub struct RawSession {
    pub stream: std::net::TcpStream,
    /// The ParameterStatus values the login was told, in order.
    pub reported: Vec<(String, String)>,
}

impl RawSession {
    pub fn login(port: u16, db: &str) -> RawSession {
        RawSession::login_with(port, db, &[])
    }

    /// [`RawSession::login`] with more startup parameters.
    pub fn login_with(port: u16, db: &str, params: &[(&str, &str)]) -> RawSession {
        use pgward::auth::scram::{ChannelBinding, ScramClient};
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(&startup_packet(
                3 << 16,
                &[&[("user", APP_USER), ("database", db)], params].concat(),
            ))
            .expect("startup");
        let mut raw = RawSession {
            stream,
            reported: Vec::new(),
        };
        let mut scram: Option<ScramClient> = None;
        loop {
            let (tag, body) = raw.read_message();
            match tag {
                b'R' => {
                    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    match code {
                        0 => {}
                        10 => {
                            let mut c = ScramClient::new(
                                &Secret::new(APP_PASSWORD),
                                ChannelBinding::NotSupported,
                                &["SCRAM-SHA-256"],
                            )
                            .expect("scram client");
                            let first = c.client_first();
                            let mut m = vec![b'p'];
                            let len = 4 + c.mechanism().len() + 1 + 4 + first.len();
                            m.extend_from_slice(&(len as i32).to_be_bytes());
                            m.extend_from_slice(c.mechanism().as_bytes());
                            m.push(0);
                            m.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            m.extend_from_slice(&first);
                            raw.stream.write_all(&m).expect("sasl initial");
                            scram = Some(c);
                        }
                        11 => {
                            let fin = scram
                                .as_mut()
                                .expect("sasl started")
                                .server_first(data)
                                .expect("server first");
                            let mut m = vec![b'p'];
                            m.extend_from_slice(&((4 + fin.len()) as i32).to_be_bytes());
                            m.extend_from_slice(&fin);
                            raw.stream.write_all(&m).expect("sasl response");
                        }
                        12 => scram
                            .as_mut()
                            .expect("sasl started")
                            .server_final(data)
                            .expect("server signature"),
                        other => panic!("unexpected auth request {other}"),
                    }
                }
                b'S' => {
                    let mut fields = body.split(|b| *b == 0);
                    let mut next =
                        || String::from_utf8_lossy(fields.next().unwrap_or(b"")).into_owned();
                    let (name, value) = (next(), next());
                    raw.reported.push((name, value));
                }
                b'Z' => return raw,
                b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }

    /// True if a new connection cannot complete a login (listener closed or connection dropped).
    pub fn try_login_fails(port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return true;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let _ = s.write_all(&startup_packet(
            3 << 16,
            &[("user", APP_USER), ("database", "appdb")],
        ));
        let mut first = [0u8; 1];
        !matches!(s.read(&mut first), Ok(1) if first[0] == b'R')
    }

    /// Reads one message; panics on EOF.
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        self.try_read_message().expect("message from pgward")
    }

    /// Reads one message; `None` once pgward has closed the connection.
    pub fn try_read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream.read_exact(&mut body).ok()?;
        Some((header[0], body))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads up to the next ReadyForQuery; returns the SQLSTATEs of the errors and the data
    /// rows (lossy text) received.
    pub fn until_ready(&mut self) -> (Vec<String>, Vec<String>) {
        let (errors, rows, _) = self.until_ready_tags();
        (errors, rows)
    }

    /// Like [`RawSession::until_ready`], with the type bytes of every message received.
    pub fn until_ready_tags(&mut self) -> (Vec<String>, Vec<String>, Vec<u8>) {
        let mut errors = Vec::new();
        let mut rows = Vec::new();
        let mut tags = Vec::new();
        loop {
            let (tag, body) = self.read_message();
            tags.push(tag);
            match tag {
                b'E' => errors.push(error_code(&body)),
                b'D' => rows.push(String::from_utf8_lossy(&body).into_owned()),
                b'Z' => return (errors, rows, tags),
                _ => {}
            }
        }
    }

    /// Reads until the connection closes; returns the SQLSTATEs of the errors received.
    pub fn errors_until_closed(&mut self) -> Vec<String> {
        let mut codes = Vec::new();
        while let Some((tag, body)) = self.try_read_message() {
            if tag == b'E' {
                codes.push(error_code(&body));
            }
        }
        codes
    }
}

/// The SQLSTATE field of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((4 + sql.len() + 1) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// A StartupMessage for `version` (major << 16 | minor) with the given parameters.
pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// The first column of the first row of a simple query.
pub async fn one_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}
