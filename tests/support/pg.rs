//! Throwaway PostgreSQL servers for integration tests.
//!
//! Every test that talks to PostgreSQL gets its own private server from
//! [`PgServer::start`]: its own cluster directory, its own TCP port on
//! 127.0.0.1, its own log file. Nothing is shared with other tests or with a
//! system PostgreSQL installation, so tests can run in parallel (nextest runs
//! each test in its own process) and can freely create roles, databases and
//! tables. Dropping the [`PgServer`] stops the server and deletes the
//! directory, also when the test panics (drop runs during unwinding).
//!
//! What this module owns, and why it looks the way it does:
//!
//! * **Finding the binaries.** `initdb`, `pg_ctl` and `postgres` are looked up
//!   on `PATH` first, then in Debian's versioned directory
//!   (`/usr/lib/postgresql/<version>/bin`, highest version), because Debian
//!   does not put the server binaries on `PATH`. `psql` and `pgbench` are
//!   resolved the same way. When something is missing the panic says to run
//!   `scripts/install-deps.sh`.
//! * **Running as root.** `initdb` and `pg_ctl` refuse to run as root, and CI
//!   runs the suite as root. So when the test process is root, the server
//!   tools run as the `postgres` OS user through `runuser -u postgres --`, and
//!   the cluster directory is `chown`ed to that user. Directories live under
//!   `/tmp` with mode 0755 so that user can reach them. Client programs
//!   (`psql`, `pgbench`) run as whoever runs the tests.
//! * **Template cluster.** `initdb` takes 1-2 seconds, far longer than copying
//!   its result. The first `start()` on a machine builds a template cluster in
//!   the temp directory (named after the PostgreSQL major version and a hash
//!   of everything that shapes it); every `start()` then copies it with
//!   `cp -a`. Parallel test processes coordinate with a lock file: copying
//!   holds a shared lock, (re)building holds an exclusive one, and a new
//!   template only appears under its final name through an atomic rename, so
//!   no process ever copies a half-built template. A template that fails to
//!   start is deleted and rebuilt once.
//! * **Configuration.** The server listens on 127.0.0.1 only, on a free port
//!   (taken from the kernel, retried if another process grabs it first), with
//!   its unix socket in the cluster directory (no `/var/run/postgresql`
//!   needed). Durability is switched off for speed. `pg_hba.conf` trusts the
//!   unix socket, which only the harness's own superuser calls use, and
//!   requires SCRAM-SHA-256 for every TCP connection, exactly like a
//!   production server the pooler would sit in front of.
//! * **No leaked servers.** `Drop` runs `pg_ctl stop -m immediate`. Because a
//!   test process can also die without unwinding (nextest timeout, SIGKILL),
//!   each server also gets a small detached watchdog shell that stops the
//!   server and deletes its directory once the test process is gone.
//! * **TLS (opt-in, per server).** [`PgServer::start`] gives a plaintext
//!   server (`ssl = off`). [`PgServer::start_with_tls`], or
//!   `PgServer::builder().tls(&pki)...start()`, gives one with `ssl = on`: a
//!   server certificate for `localhost` and `127.0.0.1`, issued by the test
//!   CA in the given [`TestPki`] (`tests/support/pki.rs`), and that CA as
//!   `ssl_ca_file`, so the server can verify client certificates (and does
//!   verify any a client presents). `ssl_min_protocol_version = 'TLSv1.2'`.
//!   The template stays shared and plaintext: `configure_tls` applies the
//!   TLS settings to each copy before it starts, copying certificate, key
//!   (0600) and CA into the data directory, where the `chown` described above
//!   makes them the server user's, as PostgreSQL requires of its key. Which
//!   TCP clients `pg_hba.conf` admits is chosen on the builder: by default
//!   `host all all 127.0.0.1/32 scram-sha-256`, TLS or not;
//!   [`PgServerBuilder::tls_only`] adds `hostssl` + `hostnossl ... reject`,
//!   so a successful login proves the client used TLS;
//!   [`PgServerBuilder::require_client_cert`] also demands a client
//!   certificate from the test CA whose CN is the user name
//!   (`clientcert=verify-full`). Clients verify the server against
//!   [`PgServer::server_ca`] (a copy of the CA certificate that lives as long
//!   as the server).
//! * **Client SSL modes.** The plain helpers ([`PgServer::conn_string`],
//!   [`psql_cmd`], [`pgbench_cmd`]) always use `sslmode=disable`, also against
//!   a TLS server, so no test uses TLS by accident (and they fail against a
//!   TLS-only server). TLS clients say so: [`PgServer::psql_tls_cmd`] and
//!   [`PgServer::conn_string_tls`] take the `sslmode` and supply
//!   `sslrootcert`. All helpers clear libpq's `PG*` variables inherited from
//!   the environment, and `psql_tls_cmd` also keeps libpq from picking up a
//!   client certificate or CA from `~/.postgresql`.
//!
//! All methods block (they run `psql`/`pg_ctl` as child processes). They are
//! fine to call from `#[tokio::test]`, but they stall the calling runtime
//! thread for the duration of the call; if a task on a current-thread runtime
//! (e.g. a pooler under test) must make progress meanwhile, use
//! `#[tokio::test(flavor = "multi_thread")]` or `spawn_blocking`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::pki::TestPki;

/// Name of the cluster's bootstrap superuser. Fixed (instead of initdb's
/// default, the OS user name) so tests behave the same as root and non-root.
pub const SUPERUSER: &str = "postgres";

/// OS user that runs the server when the tests run as root.
const SERVER_OS_USER: &str = "postgres";

/// The only address the servers listen on.
const HOST: &str = "127.0.0.1";

/// SSL mode of the plain client helpers (`conn_string`, `psql_cmd`,
/// `pgbench_cmd`), whether or not the server has TLS: tests that want TLS use
/// the `_tls` helpers, which take the mode explicitly.
const CLIENT_SSLMODE: &str = "disable";

/// Names the TLS server certificate, key and CA get in the data directory.
const SERVER_CERT_FILE: &str = "server.crt";
const SERVER_KEY_FILE: &str = "server.key";
const SERVER_CA_FILE: &str = "root.crt";

/// Copy of the CA certificate in the cluster directory, for clients
/// ([`PgServer::server_ca`]); outside `data/`, which only the server user
/// may enter.
const CLIENT_CA_FILE: &str = "server-ca.crt";

/// A file that never exists in a cluster directory: libpq settings pointed
/// at it are off (no client certificate, no root certificate).
const NO_FILE: &str = "no-such-file";

/// Bump when the template layout changes in a way the hash below would not
/// notice, so stale templates from older harness versions are not reused.
const TEMPLATE_FORMAT: u32 = 1;

/// Marker file written into a template as the last step of building it. It
/// holds a nonce identifying this particular build (see `invalidate_template`).
const TEMPLATE_MARKER: &str = "pgward-template-complete";

/// initdb arguments after `-D <dir>`. `-A trust` only silences initdb's warning;
/// pg_hba.conf is replaced below. `--no-sync` because tests never need the
/// template to survive a power cut. `--locale=C` so no locale packages are
/// needed and sorting is deterministic.
const INITDB_ARGS: &[&str] = &[
    "-U",
    SUPERUSER,
    "-A",
    "trust",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
];

/// Appended to the template's postgresql.conf. Per-server settings (port,
/// socket directory, TLS) go into `INSTANCE_CONF`, included at the end.
const TEMPLATE_CONF: &str = "
# --- pgward test harness (tests/support/pg.rs) ---
listen_addresses = '127.0.0.1'
max_connections = 100
password_encryption = 'scram-sha-256'
# Durability off: test data is thrown away, speed matters.
fsync = off
synchronous_commit = off
full_page_writes = off
# Quiet log, but FATAL errors (e.g. failed authentication) still show up.
log_min_messages = warning
# pg_ctl -l sends the server's stderr to a file in the cluster directory;
# no collector, so even startup failures land in that file.
logging_collector = off
log_destination = 'stderr'
include_if_exists = 'pgward_instance.conf'
";

/// Replaces the template's pg_hba.conf. The unix socket (in the private
/// cluster directory) is trusted so the harness can act as superuser without
/// a password; every TCP connection must use SCRAM-SHA-256.
const PG_HBA: &str = "\
# pgward test harness (tests/support/pg.rs)
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
";

/// Per-server settings file, in the data directory.
const INSTANCE_CONF: &str = "pgward_instance.conf";

const INSTALL_HINT: &str = "install the test dependencies with `scripts/install-deps.sh` \
     (Debian: apt-get install postgresql postgresql-contrib postgresql-client)";

/// How many times `start` picks a new port after losing a port race.
const PORT_ATTEMPTS: usize = 10;

/// Kept alive by the watchdog: stops the server and removes its directory
/// once the test process (`$1`) has exited. `$@` after the shift is the
/// pg_ctl invocation (possibly prefixed with runuser).
const WATCHDOG_SCRIPT: &str = r#"
parent="$1"; data="$2"; root="$3"; shift 3
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
if [ -f "$data/postmaster.pid" ]; then
    "$@" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1
fi
rm -rf "$root"
"#;

/// A private PostgreSQL server, stopped and deleted on drop.
pub struct PgServer {
    port: u16,
    /// Cluster directory: unix socket, log file, and `data/` (PGDATA).
    dir: TempDir,
    data_dir: PathBuf,
    log_file: PathBuf,
    watchdog: Option<Child>,
    /// The CA that issued the server certificate (copy in `dir`), if TLS.
    server_ca: Option<PathBuf>,
}

/// Which TCP clients `pg_hba.conf` admits on a TLS server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsClients {
    /// `host`: TLS or plaintext.
    Optional,
    /// `hostssl`, and `hostnossl ... reject`.
    Required,
    /// Like `Required`, with `clientcert=verify-full`.
    RequiredWithClientCert,
}

/// Options for [`PgServer::builder`]. Without any, `start` is [`PgServer::start`].
#[must_use = "nothing happens until `start()`"]
pub struct PgServerBuilder<'a> {
    pki: Option<&'a TestPki>,
    clients: TlsClients,
}

/// What `configure_tls` needs for one server.
struct InstanceTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    clients: TlsClients,
}

impl<'a> PgServerBuilder<'a> {
    /// Turns TLS on, with a server certificate for `localhost` and
    /// `127.0.0.1` issued by `pki` (written to `pki.dir()` as
    /// `postgres-server-<pid>-<n>.{crt,key}`), and `pki`'s CA as the CA for
    /// client certificates. TLS is optional for clients unless
    /// [`tls_only`](Self::tls_only) or
    /// [`require_client_cert`](Self::require_client_cert) is also set.
    pub fn tls(mut self, pki: &'a TestPki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// TCP clients must use TLS: `pg_hba.conf` becomes
    /// `hostssl all all 127.0.0.1/32 scram-sha-256` and
    /// `hostnossl all all 0.0.0.0/0 reject`. Needs [`tls`](Self::tls).
    pub fn tls_only(mut self) -> Self {
        self.clients = TlsClients::Required;
        self
    }

    /// Like [`tls_only`](Self::tls_only), and TCP clients must also present a
    /// certificate issued by the test CA whose CN equals the user name:
    /// `hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full`
    /// (the password is still checked). Needs [`tls`](Self::tls).
    pub fn require_client_cert(mut self) -> Self {
        self.clients = TlsClients::RequiredWithClientCert;
        self
    }

    /// Starts the server; see [`PgServer::start`].
    pub fn start(self) -> PgServer {
        let tls = match self.pki {
            Some(pki) => Some(issue_server_tls(pki, self.clients)),
            None => {
                assert!(
                    self.clients == TlsClients::Optional,
                    "PgServerBuilder: tls_only()/require_client_cert() need tls(&pki)"
                );
                None
            }
        };
        PgServer::start_instance(tls.as_ref())
    }
}

impl PgServer {
    /// Starts a fresh plaintext server (copied from the shared template
    /// cluster, which is built first if needed) and waits until it accepts
    /// connections.
    ///
    /// Panics with the server log if it cannot be started.
    pub fn start() -> PgServer {
        PgServer::start_instance(None)
    }

    /// Like [`PgServer::start`], with TLS: `PgServer::builder().tls(pki).start()`.
    /// Clients may connect with or without TLS.
    pub fn start_with_tls(pki: &TestPki) -> PgServer {
        PgServer::builder().tls(pki).start()
    }

    /// Options for the server (TLS and who must use it), then `.start()`.
    pub fn builder() -> PgServerBuilder<'static> {
        PgServerBuilder {
            pki: None,
            clients: TlsClients::Optional,
        }
    }

    fn start_instance(tls: Option<&InstanceTls>) -> PgServer {
        let mut port_retries = 0;
        let mut rebuilt_template = false;
        loop {
            let port = free_port();
            let (dir, template_nonce) = with_template(|template| {
                (
                    prepare_instance(template, port, tls),
                    template.nonce.clone(),
                )
            });
            let data_dir = dir.path().join("data");
            let log_file = dir.path().join("postgres.log");
            // Started before the server so there is no moment in which a
            // killed test process would leave it running.
            let mut watchdog = spawn_watchdog(&data_dir, dir.path());

            let output = run(
                server_command(&tools().pg_ctl)
                    .arg("start")
                    .arg("-D")
                    .arg(&data_dir)
                    .arg("-l")
                    .arg(&log_file)
                    .args(["-w", "-t", "60", "-s"]),
                "pg_ctl start",
            );
            let failure = if output.status.success() {
                // pg_ctl only waits for "ready"; a damaged cluster can get
                // that far and still fail every session, so check one.
                let check = psql_superuser(dir.path(), port, "postgres", "SELECT 1");
                if check.status.success() && String::from_utf8_lossy(&check.stdout).trim() == "1" {
                    let server_ca = tls.map(|_| dir.path().join(CLIENT_CA_FILE));
                    return PgServer {
                        port,
                        dir,
                        data_dir,
                        log_file,
                        watchdog,
                        server_ca,
                    };
                }
                format!(
                    "server started, but `SELECT 1` as superuser failed: {}",
                    output_text(&check)
                )
            } else {
                format!("pg_ctl start failed: {}", output_text(&output))
            };

            // Failed: make sure nothing is left running before the directory
            // goes away with `dir`.
            stop_server(&data_dir);
            stop_watchdog(&mut watchdog);
            let log = read_log(&log_file);
            let lost_port_race = log.contains("Address already in use")
                || log.contains("could not create any TCP/IP sockets");
            if lost_port_race && port_retries < PORT_ATTEMPTS {
                // Another process bound the port between free_port() and the
                // postmaster's bind; try another one.
                port_retries += 1;
                continue;
            }
            // A TLS setup the server refuses (key permissions, unreadable
            // certificate) is not the template's fault: rebuilding it would
            // only slow down every other test process.
            let tls_rejected = tls.is_some()
                && ["private key", "certificate", "SSL", "ssl_"]
                    .iter()
                    .any(|word| log.contains(word));
            if !lost_port_race && !tls_rejected && !rebuilt_template {
                // Possibly a damaged template (e.g. a tmp cleaner removed
                // files from it): throw it away and try once more.
                eprintln!(
                    "pgward test harness: server copied from the template is not usable, \
                     rebuilding the template. {failure}\nserver log:\n{log}"
                );
                invalidate_template(&template_nonce);
                rebuilt_template = true;
                continue;
            }
            panic!(
                "could not start PostgreSQL on port {port} ({port_retries} port retries, \
                 template rebuilt: {rebuilt_template}, TLS: {}).\n{failure}\n\
                 server log ({}):\n{log}",
                if tls.is_some() { "on" } else { "off" },
                log_file.display()
            );
        }
    }

    /// TCP port the server listens on (on [`PgServer::host`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address the server listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The cluster directory: holds the unix socket, `postgres.log` and the
    /// data directory `data/`. Deleted on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` (one or more statements) in database `postgres` as the
    /// superuser over the unix socket and returns psql's trimmed output
    /// (unaligned, tuples only: one row per line, columns separated by `|`).
    /// Panics with psql's stderr if any statement fails.
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.superuser_sql_in("postgres", sql)
    }

    /// Like [`PgServer::superuser_sql`], in database `dbname`.
    pub fn superuser_sql_in(&self, dbname: &str, sql: &str) -> String {
        self.run_superuser_sql(dbname, sql, sql)
    }

    /// Creates a LOGIN role with `password`, stored as a SCRAM-SHA-256 verifier
    /// (the server's `password_encryption`).
    pub fn create_role(&self, name: &str, password: &str) {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        );
        // The password goes to psql on stdin, never on a command line; keep
        // it out of panic messages too.
        let shown = format!(
            "CREATE ROLE {} LOGIN PASSWORD <redacted>",
            quote_ident(name)
        );
        self.run_superuser_sql("postgres", &sql, &shown);
    }

    /// Creates database `name` owned by role `owner`.
    pub fn create_database(&self, name: &str, owner: &str) {
        self.superuser_sql(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(owner)
        ));
    }

    /// Connection string for a direct `tokio_postgres::connect` (bypassing the
    /// pooler) over TCP with password authentication, without TLS
    /// (`sslmode=disable`, also when the server has TLS; see
    /// [`PgServer::conn_string_tls`]).
    pub fn conn_string(&self, user: &str, password: &str, dbname: &str) -> String {
        self.conn_string_tls(user, password, dbname, CLIENT_SSLMODE)
    }

    /// Like [`PgServer::conn_string`], with `sslmode=<sslmode>`; for
    /// `verify-ca` and `verify-full` also `sslrootcert=<server_ca()>` (when the
    /// server has TLS). The host is `127.0.0.1`, which the server certificate
    /// names, so `verify-full` works.
    ///
    /// Every mode is valid for libpq (`psql "<string>"`, which then puts the
    /// password on its command line; prefer [`PgServer::psql_tls_cmd`]).
    /// tokio-postgres only knows `disable`, `prefer` and `require` (and
    /// rejects `sslrootcert`): with those it leaves certificate checking to
    /// the TLS connector passed to `connect`, which should trust
    /// [`PgServer::server_ca`].
    pub fn conn_string_tls(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
        sslmode: &str,
    ) -> String {
        let mut conn = format!(
            "host={HOST} port={} user={} password={} dbname={} sslmode={} connect_timeout=10",
            self.port,
            quote_conn_value(user),
            quote_conn_value(password),
            quote_conn_value(dbname),
            // A keyword; left unquoted so `conn_string` is unchanged.
            sslmode,
        );
        if let Some(ca) = &self.server_ca
            && sslmode.starts_with("verify")
        {
            let _ = write!(
                conn,
                " sslrootcert={}",
                quote_conn_value(&ca.to_string_lossy())
            );
        }
        conn
    }

    /// The CA certificate (PEM) that issued this server's certificate: what a
    /// client uses as `sslrootcert` (or a rustls root store) to verify the
    /// server. `None` for a server without TLS. The file is a copy in the
    /// cluster directory, valid as long as the server (not the `TestPki`).
    pub fn server_ca(&self) -> Option<PathBuf> {
        self.server_ca.clone()
    }

    /// `psql` to this server with `sslmode=<sslmode>`: [`psql_cmd`] with
    /// `host` (`"localhost"` and `"127.0.0.1"` are both in the server
    /// certificate) and this server's port, plus `PGSSLMODE=<sslmode>` and
    /// `PGSSLROOTCERT=<server_ca()>`.
    ///
    /// No client certificate is sent (`PGSSLCERT`/`PGSSLKEY` point at a file
    /// that does not exist, so none from `~/.postgresql` is used either);
    /// give one with `.env("PGSSLCERT", cert).env("PGSSLKEY", key)`. Other
    /// settings can be overridden the same way, e.g. `PGSSLROOTCERT` for a
    /// wrong CA, or `PGHOSTADDR=127.0.0.1` with a `host` that is not in the
    /// certificate. On a server without TLS, `PGSSLROOTCERT` also points at
    /// the missing file, so `verify-*` modes fail.
    pub fn psql_tls_cmd(
        &self,
        host: &str,
        user: &str,
        password: &str,
        dbname: &str,
        sslmode: &str,
    ) -> Command {
        let no_file = self.dir.path().join(NO_FILE);
        let root_cert = self.server_ca.clone().unwrap_or_else(|| no_file.clone());
        let mut cmd = psql_cmd(host, self.port, user, password, dbname);
        cmd.env("PGSSLMODE", sslmode)
            .env("PGSSLROOTCERT", root_cert)
            .env("PGSSLCERT", &no_file)
            .env("PGSSLKEY", &no_file);
        cmd
    }

    /// Number of client backends (sessions) currently connected as `usename`,
    /// according to `pg_stat_activity`. The harness's own psql session runs as
    /// the superuser and is only counted for `usename = "postgres"`.
    pub fn backend_count(&self, usename: &str) -> i64 {
        let out = self.superuser_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND usename = {}",
            quote_literal(usename)
        ));
        out.parse()
            .unwrap_or_else(|e| panic!("backend_count: unexpected psql output {out:?}: {e}"))
    }

    /// Polls [`PgServer::backend_count`] until it equals `expected` or
    /// `timeout` passes, and returns the last count seen. Backends exit
    /// asynchronously after a client disconnects, so tests checking that a
    /// connection was closed should use this rather than a single read.
    pub fn wait_for_backend_count(&self, usename: &str, expected: i64, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.backend_count(usename);
            if count == expected || Instant::now() >= deadline {
                return count;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far: startup/shutdown, warnings, errors (including
    /// failed logins); see `log_min_messages`. Meant for failure messages.
    pub fn log_contents(&self) -> String {
        read_log(&self.log_file)
    }

    fn run_superuser_sql(&self, dbname: &str, sql: &str, shown: &str) -> String {
        let output = psql_superuser(self.dir.path(), self.port, dbname, sql);
        if !output.status.success() {
            panic!(
                "superuser SQL failed in database {dbname:?} on port {}:\n{shown}\n{}",
                self.port,
                output_text(&output)
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Must not panic: this also runs while a failed test unwinds.
        stop_server(&self.data_dir);
        stop_watchdog(&mut self.watchdog);
        // `self.dir` (TempDir) removes the cluster directory after this.
    }
}

/// `psql` configured through the environment to connect to `host:port` as
/// `user` over TCP. The password is passed in `PGPASSWORD`, never on the
/// command line. `-X` (ignore ~/.psqlrc) and `-v ON_ERROR_STOP=1` are already
/// added; append the rest, e.g. `.args(["-c", "SELECT 1"])`.
pub fn psql_cmd(host: &str, port: u16, user: &str, password: &str, dbname: &str) -> Command {
    let mut cmd = Command::new(psql_path());
    client_env(&mut cmd, host, port, user, password, dbname);
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// `pgbench` configured like [`psql_cmd`]. No arguments are added.
pub fn pgbench_cmd(host: &str, port: u16, user: &str, password: &str, dbname: &str) -> Command {
    let mut cmd = Command::new(pgbench_path());
    client_env(&mut cmd, host, port, user, password, dbname);
    cmd
}

/// Runs `sql` with psql as the superuser over the unix socket in
/// `socket_dir` (trusted by pg_hba.conf). The SQL goes in on stdin, so
/// passwords in it never appear on a command line.
fn psql_superuser(socket_dir: &Path, port: u16, dbname: &str, sql: &str) -> Output {
    let mut cmd = Command::new(psql_path());
    remove_pg_env(&mut cmd);
    cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", SUPERUSER, "-d", dbname, "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not run psql ({e}); {INSTALL_HINT}"));
    let mut stdin = child
        .stdin
        .take()
        .expect("psql stdin was requested as piped");
    // Feed stdin from a thread so a large result cannot deadlock against a
    // full stdin pipe.
    thread::scope(|s| {
        s.spawn(move || {
            // A write error means psql exited early; its stderr explains.
            let _ = stdin.write_all(sql.as_bytes());
        });
        child.wait_with_output().expect("waiting for psql")
    })
}

fn client_env(cmd: &mut Command, host: &str, port: u16, user: &str, password: &str, db: &str) {
    remove_pg_env(cmd);
    cmd.env("PGHOST", host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGSSLMODE", CLIENT_SSLMODE)
        .env("PGCONNECT_TIMEOUT", "10");
}

/// Libpq (and Debian's pg_wrapper) settings inherited from the developer's
/// shell would silently redirect or alter connections; tests must not depend
/// on them.
fn remove_pg_env(cmd: &mut Command) {
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGREQUIRESSL",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLROOTCERT",
        "PGSSLCRL",
        "PGSSLCRLDIR",
        "PGSSLSNI",
        "PGSSLCOMPRESSION",
        "PGSSLMINPROTOCOLVERSION",
        "PGSSLMAXPROTOCOLVERSION",
        "PGSSLNEGOTIATION",
        "PGSSLCERTMODE",
        "PGGSSENCMODE",
        "PGREQUIREAUTH",
        "PGCHANNELBINDING",
        "PGCLUSTER",
        "PGDATA",
        "PGTARGETSESSIONATTRS",
    ] {
        cmd.env_remove(var);
    }
}

// ---------------------------------------------------------------------------
// Instances

/// Copies the template into a fresh cluster directory and writes the
/// per-server settings. Runs while the template's shared lock is held.
fn prepare_instance(template: &Template, port: u16, tls: Option<&InstanceTls>) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgward-test-")
        .tempdir_in(base_dir())
        .expect("creating the cluster directory in the temp dir");
    // tempfile creates 0700; the server user must be able to enter it when
    // it is not the owner (root runs the tests, postgres runs the server).
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 on the cluster directory");
    let data_dir = dir.path().join("data");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(&template.data_dir)
            .arg(&data_dir),
        "copying the template cluster (cp -a)",
    );

    let mut conf = format!(
        "port = {port}\nunix_socket_directories = {}\n",
        quote_literal(&dir.path().to_string_lossy())
    );
    for line in configure_tls(&data_dir, tls) {
        conf.push_str(&line);
        conf.push('\n');
    }
    fs::write(data_dir.join(INSTANCE_CONF), conf).expect("writing pgward_instance.conf");
    if let Some(tls) = tls {
        copy_file(&tls.ca, &dir.path().join(CLIENT_CA_FILE), 0o644);
    }

    if running_as_root() {
        chown_to_server_user(dir.path());
    }
    dir
}

/// Issues the server certificate for a TLS server (`localhost`, `127.0.0.1`)
/// from `pki`, under a name unique within this process.
fn issue_server_tls(pki: &TestPki, clients: TlsClients) -> InstanceTls {
    static ISSUED: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "postgres-server-{}-{}",
        std::process::id(),
        ISSUED.fetch_add(1, Ordering::Relaxed)
    );
    let (cert, key) = pki.server_cert(&name, &["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    InstanceTls {
        cert,
        key,
        ca: pki.ca_cert(),
        clients,
    }
}

/// Applies a server's TLS settings to its fresh copy of the template: copies
/// certificate, key and CA into `data_dir` (the caller then `chown`s it all
/// to the server user, who must own the key), replaces `pg_hba.conf` when
/// TCP clients must use TLS, and returns the lines for
/// `pgward_instance.conf`. Nothing for a plaintext server.
fn configure_tls(data_dir: &Path, tls: Option<&InstanceTls>) -> Vec<String> {
    let Some(tls) = tls else {
        return Vec::new();
    };
    let cert = data_dir.join(SERVER_CERT_FILE);
    let key = data_dir.join(SERVER_KEY_FILE);
    let ca = data_dir.join(SERVER_CA_FILE);
    copy_file(&tls.cert, &cert, 0o644);
    // PostgreSQL refuses a key that group or others can read (unless owned
    // by root, which it is not after the chown).
    copy_file(&tls.key, &key, 0o600);
    copy_file(&tls.ca, &ca, 0o644);

    let hba = match tls.clients {
        // The template's: `host` matches TLS and plaintext connections.
        TlsClients::Optional => None,
        TlsClients::Required => Some("hostssl all all 127.0.0.1/32 scram-sha-256"),
        TlsClients::RequiredWithClientCert => {
            Some("hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full")
        }
    };
    if let Some(hostssl) = hba {
        // Truncating keeps the file's owner (the server user).
        fs::write(
            data_dir.join("pg_hba.conf"),
            format!(
                "# pgward test harness (tests/support/pg.rs), TLS only\n\
                 local all all trust\n\
                 {hostssl}\n\
                 hostnossl all all 0.0.0.0/0 reject\n"
            ),
        )
        .expect("writing the TLS-only pg_hba.conf");
    }

    let path = |p: &Path| quote_literal(&p.to_string_lossy());
    vec![
        "ssl = on".to_string(),
        format!("ssl_cert_file = {}", path(&cert)),
        format!("ssl_key_file = {}", path(&key)),
        format!("ssl_ca_file = {}", path(&ca)),
        "ssl_min_protocol_version = 'TLSv1.2'".to_string(),
    ]
}

/// Copies `from` to `to` and gives the copy exactly `mode`.
fn copy_file(from: &Path, to: &Path, mode: u32) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", to.display()));
}

/// Stops the server in `data_dir` if it runs. Never panics (used from Drop).
fn stop_server(data_dir: &Path) {
    let pid_file = data_dir.join("postmaster.pid");
    if !pid_file.exists() {
        return;
    }
    let stopped = server_command(&tools().pg_ctl)
        .arg("stop")
        .arg("-D")
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "-t", "30", "-s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match stopped {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!(
                "pgward test harness: pg_ctl stop failed ({other:?}); killing the postmaster"
            );
            // Last resort, so no postmaster outlives the test: the first line
            // of postmaster.pid is its PID. Its children exit on their own
            // once they notice the postmaster is gone.
            if let Ok(contents) = fs::read_to_string(&pid_file)
                && let Some(pid) = contents.lines().next().map(str::trim)
                && pid.parse::<u32>().is_ok()
            {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

/// Starts the watchdog that cleans up after a test process that died without
/// running destructors. `setsid` puts it in its own session so it survives
/// nextest killing the test's process group (the postmaster is in its own
/// session already: pg_ctl detaches it).
fn spawn_watchdog(data_dir: &Path, root: &Path) -> Option<Child> {
    let mut pg_ctl: Vec<OsString> = Vec::new();
    if running_as_root() {
        pg_ctl.extend(["runuser", "-u", SERVER_OS_USER, "--"].map(OsString::from));
    }
    pg_ctl.push(tools().pg_ctl.clone().into_os_string());

    let spawn = |program: &str, setsid: bool| {
        let mut cmd = Command::new(program);
        if setsid {
            cmd.arg("sh");
        }
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pgward-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(data_dir)
            .arg(root)
            .args(&pg_ctl)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    match spawn("setsid", true).or_else(|_| spawn("sh", false)) {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("pgward test harness: could not start watchdog ({e}); relying on Drop");
            None
        }
    }
}

/// Ends a watchdog whose job is done. It is our own child: kill and reap it.
fn stop_watchdog(watchdog: &mut Option<Child>) {
    if let Some(mut child) = watchdog.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Asks the kernel for a currently free port. The listener is dropped before
/// the server binds, so another process can win the port in between; `start`
/// retries when that happens.
fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the port-probe listener")
        .port()
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<could not read {}: {e}>", path.display()))
}

// ---------------------------------------------------------------------------
// Template cluster

struct Template {
    data_dir: PathBuf,
    /// Identifies this build of the template (content of the marker file).
    nonce: String,
}

/// Name (without directory) of the template for the current binaries and
/// settings. Anything that changes what initdb produces changes the hash, so
/// stale templates are never reused.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let t = tools();
        let key = format!(
            "{TEMPLATE_FORMAT}\n{}\n{}\n{}\n{}\n{INITDB_ARGS:?}\n{TEMPLATE_CONF}\n{PG_HBA}",
            t.initdb.display(),
            t.postgres.display(),
            t.version,
            effective_uid(),
        );
        format!(
            "pgward-test-template-{}-{:016x}",
            t.major,
            fnv1a(key.as_bytes())
        )
    })
}

/// Runs `f` with a valid template, holding a shared lock so it is not rebuilt
/// or removed meanwhile. Builds the template first if needed.
fn with_template<R>(f: impl FnOnce(&Template) -> R) -> R {
    let base = base_dir();
    let dir = base.join(template_name());
    let lock_path = base.join(format!("{}.lock", template_name()));
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening template lock {}: {e}", lock_path.display()));

    // Two rounds suffice: build under the exclusive lock, then use it under
    // the shared one. The third is slack for a concurrent invalidation.
    for _ in 0..3 {
        lock.lock_shared()
            .unwrap_or_else(|e| panic!("shared lock on {}: {e}", lock_path.display()));
        if let Some(nonce) = valid_template_nonce(&dir) {
            let result = f(&Template {
                data_dir: dir.join("data"),
                nonce,
            });
            // Unlocking explicitly (instead of by dropping the file) keeps the
            // lock's scope obvious; an error here is harmless.
            let _ = lock.unlock();
            return result;
        }
        // No valid template: switch to the exclusive lock. Someone else may
        // build it in the gap, hence the re-check.
        lock.unlock().expect("releasing the template lock");
        lock.lock()
            .unwrap_or_else(|e| panic!("exclusive lock on {}: {e}", lock_path.display()));
        if valid_template_nonce(&dir).is_none() {
            build_template(&base, &dir);
        }
        lock.unlock().expect("releasing the template lock");
    }
    panic!("template {} kept disappearing while in use", dir.display());
}

/// Deletes the template if it is still the build identified by `nonce` (so a
/// template someone else already rebuilt is left alone).
fn invalidate_template(nonce: &str) {
    let base = base_dir();
    let dir = base.join(template_name());
    let lock_path = base.join(format!("{}.lock", template_name()));
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening template lock {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("exclusive lock on {}: {e}", lock_path.display()));
    if valid_template_nonce(&dir).as_deref() == Some(nonce) {
        fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("removing broken template {}: {e}", dir.display()));
    }
    lock.unlock().expect("releasing the template lock");
}

/// The template's build nonce if it looks complete.
fn valid_template_nonce(dir: &Path) -> Option<String> {
    let nonce = fs::read_to_string(dir.join(TEMPLATE_MARKER)).ok()?;
    let data = dir.join("data");
    let complete = [
        "PG_VERSION",
        "global/pg_control",
        "postgresql.conf",
        "pg_hba.conf",
    ]
    .iter()
    .all(|f| data.join(f).is_file());
    complete.then_some(nonce)
}

/// Builds the template from scratch. Caller holds the exclusive lock, so any
/// leftover directories are from builds that died halfway and can go.
fn build_template(base: &Path, dir: &Path) {
    let started = Instant::now();
    eprintln!(
        "pgward test harness: building template cluster {}",
        dir.display()
    );
    if dir.exists() {
        fs::remove_dir_all(dir)
            .unwrap_or_else(|e| panic!("removing incomplete template {}: {e}", dir.display()));
    }
    let staging_prefix = format!("{}.building-", template_name());
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&staging_prefix)
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    // Built under a temporary name and renamed at the end, so the final name
    // only ever refers to a complete template.
    let staging = base.join(format!("{staging_prefix}{}", std::process::id()));
    fs::create_dir(&staging).unwrap_or_else(|e| panic!("creating {}: {e}", staging.display()));
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 on the template staging directory");
    if running_as_root() {
        // initdb (as the server user) must be able to create data/ in it.
        chown_to_server_user(&staging);
    }
    let data = staging.join("data");
    run_ok(
        server_command(&tools().initdb)
            .arg("-D")
            .arg(&data)
            .args(INITDB_ARGS),
        "initdb",
    );

    // Appending/truncating keeps the files' owner (the server user).
    let conf_path = data.join("postgresql.conf");
    let mut conf = File::options()
        .append(true)
        .open(&conf_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", conf_path.display()));
    conf.write_all(TEMPLATE_CONF.as_bytes())
        .expect("appending the harness settings to postgresql.conf");
    drop(conf);
    fs::write(data.join("pg_hba.conf"), PG_HBA).expect("writing pg_hba.conf");

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    fs::write(
        staging.join(TEMPLATE_MARKER),
        format!("{}-{nanos}", std::process::id()),
    )
    .expect("writing the template marker");
    fs::rename(&staging, dir)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", staging.display(), dir.display()));
    eprintln!(
        "pgward test harness: template built in {:.2?}",
        started.elapsed()
    );
}

/// 64-bit FNV-1a: stable across Rust versions and processes, unlike
/// `DefaultHasher`, which matters because the hash names a shared directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Binaries, users, processes

struct Tools {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    postgres: PathBuf,
    /// `postgres --version` output.
    version: String,
    /// Major version, e.g. "15"; part of the template name.
    major: String,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let postgres = find_tool("postgres");
        let out = run_ok(
            Command::new(&postgres).arg("--version"),
            "postgres --version",
        );
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15"
        let major = version
            .split_once("(PostgreSQL) ")
            .and_then(|(_, rest)| rest.split(['.', ' ']).next())
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("cannot parse PostgreSQL version from {version:?}"))
            .to_string();
        if running_as_root() {
            check_server_user();
        }
        Tools {
            initdb: find_tool("initdb"),
            pg_ctl: find_tool("pg_ctl"),
            postgres,
            version,
            major,
        }
    })
}

fn psql_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_tool("psql"))
}

fn pgbench_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_tool("pgbench"))
}

/// `name` on PATH, else in the highest `/usr/lib/postgresql/<version>/bin`.
fn find_tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    });
    if let Some(found) = on_path {
        return found;
    }

    // Debian: /usr/lib/postgresql/15/bin, /usr/lib/postgresql/9.6/bin, ...
    let mut versioned: Vec<((u32, u32), PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().into_owned();
            let (major, minor) = version.split_once('.').unwrap_or((&version, "0"));
            let key = (major.parse().ok()?, minor.parse().ok()?);
            let candidate = entry.path().join("bin").join(name);
            is_executable(&candidate).then_some((key, candidate))
        })
        .collect();
    versioned.sort();
    match versioned.pop() {
        Some((_, path)) => path,
        None => panic!(
            "PostgreSQL program `{name}` not found on PATH or in /usr/lib/postgresql/*/bin; \
             {INSTALL_HINT}"
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Effective UID of this process, from /proc (no libc dependency), falling
/// back to `id -u`.
fn effective_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let from_proc = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
                let line = status.lines().find(|l| l.starts_with("Uid:"))?;
                line.split_whitespace().nth(2)?.parse().ok()
            });
        from_proc.unwrap_or_else(|| {
            let out = run_ok(Command::new("id").arg("-u"), "id -u");
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse()
                .unwrap_or_else(|e| panic!("cannot parse `id -u` output {text:?}: {e}"))
        })
    })
}

fn running_as_root() -> bool {
    effective_uid() == 0
}

fn check_server_user() {
    let exists = Command::new("id")
        .arg("-u")
        .arg(SERVER_OS_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        panic!(
            "the tests run as root, and initdb/pg_ctl refuse to run as root, so the harness \
             runs the server as OS user `{SERVER_OS_USER}`, which does not exist; {INSTALL_HINT}"
        );
    }
}

fn chown_to_server_user(path: &Path) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{SERVER_OS_USER}:{SERVER_OS_USER}"))
            .arg(path),
        "chown -R to the server user",
    );
}

/// A command for a server-side tool (`initdb`, `pg_ctl`), run as the server
/// user via `runuser` when we are root, since those tools refuse root.
fn server_command(program: &Path) -> Command {
    let mut cmd = if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_OS_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    remove_pg_env(&mut cmd);
    // The server user may not be able to enter the test's working directory.
    cmd.current_dir("/");
    cmd
}

/// Runs `cmd` to completion, capturing output. Panics only if it cannot be
/// started at all.
fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "could not run {what} ({:?}): {e}; {INSTALL_HINT}",
            cmd.get_program()
        )
    })
}

/// Like [`run`], and panics with the output unless the command succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let output = run(cmd, what);
    if !output.status.success() {
        panic!("{what} failed: {cmd:?}\n{}", output_text(&output));
    }
    output
}

fn output_text(output: &Output) -> String {
    let mut text = output.status.to_string();
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !bytes.is_empty() {
            let _ = write!(
                text,
                "\n--- {name} ---\n{}",
                String::from_utf8_lossy(bytes).trim_end()
            );
        }
    }
    text
}

/// Where cluster directories and the template live: `$PGWARD_TEST_TMPDIR` if
/// set (e.g. a tmpfs, which makes copying the template several times faster
/// than on a disk-backed /tmp), else /tmp as root, else the usual temp dir.
/// As root the server runs as another user that must traverse every parent
/// directory, hence /tmp rather than a possibly private $TMPDIR.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGWARD_TEST_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if running_as_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// SQL identifier quoting: `"` doubled, always quoted.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// SQL string literal quoting (standard_conforming_strings is on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Value quoting for libpq-style key/value connection strings, which
/// tokio-postgres also accepts: single quotes, `\` escapes `\` and `'`.
fn quote_conn_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
