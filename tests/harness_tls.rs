//! Tests of the harness's TLS support (`tests/support/pki.rs` and the TLS
//! options of `tests/support/pg.rs`): the test CA's certificates, and real
//! PostgreSQL servers that clients (psql, i.e. libpq) verify, or that verify
//! the clients' certificates.

mod support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use support::pg::{PgServer, psql_cmd};
use support::pki::{CA_NAME, OTHER_CA_NAME, TestPki};
use tempfile::TempDir;
use tokio_postgres::NoTls;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// What a session sees of its own connection's TLS state.
const SSL_QUERY: &str = "SELECT ssl, coalesce(version, ''), coalesce(client_dn, ''), \
     coalesce(issuer_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A fresh test CA in its own temp directory (kept alive alongside).
fn pki() -> (TempDir, TestPki) {
    let dir = TempDir::new().expect("temp dir for the test CA");
    let pki = TestPki::new(dir.path());
    (dir, pki)
}

/// Role `app` (password `pw`) owning database `appdb`.
fn add_app(pg: &PgServer) {
    pg.create_role("app", "pw");
    pg.create_database("appdb", "app");
}

/// Runs psql with `-A -t -c <sql>`: `Ok(stdout)` if it succeeds, else
/// `Err(stderr)`.
fn psql(cmd: &mut Command, sql: &str) -> Result<String, String> {
    let out = cmd
        .args(["-A", "-t", "-c", sql])
        .output()
        .expect("running psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`psql`] that must succeed; returns the `SSL_QUERY` row.
fn ssl_row(pg: &PgServer, what: &str, cmd: &mut Command) -> String {
    psql(cmd, SSL_QUERY).unwrap_or_else(|err| {
        panic!(
            "{what}: psql failed: {err}\nserver log:\n{}",
            pg.log_contents()
        )
    })
}

/// [`psql`] that must fail; returns its stderr.
fn psql_error(pg: &PgServer, what: &str, cmd: &mut Command) -> String {
    match psql(cmd, SSL_QUERY) {
        Ok(row) => panic!(
            "{what}: psql should have failed, but got {row:?}\nserver log:\n{}",
            pg.log_contents()
        ),
        Err(err) => err,
    }
}

/// The server writes its log line about a refused connection as the connection ends, which can
/// be just after the client has exited: wait up to 5 s for it.
fn assert_logged(pg: &PgServer, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pg.log_contents().contains(needle) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_contains(&pg.log_contents(), needle, "server log");
}

fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected {needle:?} in:\n{haystack}"
    );
}

/// UID of the OS user that runs the server when the tests run as root.
fn postgres_uid() -> u32 {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id -u postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

async fn connect(conn_string: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn_string, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

// ---------------------------------------------------------------------------
// The test CA

fn parse_pem(path: &Path) -> Vec<u8> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .unwrap_or_else(|e| panic!("{} is not PEM: {e}", path.display()));
    assert_eq!(pem.label, "CERTIFICATE", "{}", path.display());
    pem.contents
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn ext_key_usage(cert: &X509Certificate<'_>) -> (bool, bool) {
    let eku = cert
        .extended_key_usage()
        .expect("valid extendedKeyUsage")
        .expect("extendedKeyUsage present")
        .value;
    (eku.server_auth, eku.client_auth)
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .map(|name| match name {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("other:{other:?}"),
        })
        .collect()
}

fn roots(ca: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(parse_pem(ca)))
        .expect("CA certificate accepted as a root");
    Arc::new(roots)
}

/// Verifies `cert` as a TLS server certificate for `name` with webpki.
fn verify_server(ca: &Path, cert: &Path, name: &str) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider)
        .build()
        .expect("server verifier");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    verifier
        .verify_server_cert(
            &CertificateDer::from(parse_pem(cert)),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// Verifies `cert` as a TLS client certificate with webpki.
fn verify_client(ca: &Path, cert: &Path) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider)
        .build()
        .expect("client verifier");
    verifier
        .verify_client_cert(&CertificateDer::from(parse_pem(cert)), &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn pki_issues_the_documented_certificates() {
    let (dir, pki) = pki();
    assert_eq!(pki.dir(), dir.path());
    assert_eq!(pki.ca_cert(), dir.path().join("ca.crt"));

    let ca_der = parse_pem(&pki.ca_cert());
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("CA certificate parses");
    assert_eq!(ca.subject().to_string(), format!("CN={CA_NAME}"));
    assert_eq!(ca.issuer(), ca.subject(), "CA is self-signed");
    assert!(ca.is_ca(), "CA has basicConstraints cA=TRUE");
    assert!(ca.validity().is_valid(), "CA valid now");
    assert_eq!(
        ca.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "EC key"
    );
    assert_eq!(mode(&pki.ca_cert()), 0o644);

    let (cert, key) = pki.server_cert(
        "srv",
        &["localhost", "db.test"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    );
    assert_eq!(cert, dir.path().join("srv.crt"));
    assert_eq!(key, dir.path().join("srv.key"));
    assert_eq!(mode(&key), 0o600, "server key mode");
    assert!(fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    let der = parse_pem(&cert);
    let (_, server) = X509Certificate::from_der(&der).expect("server certificate parses");
    assert_eq!(server.issuer(), ca.subject());
    assert_eq!(server.subject().to_string(), "CN=localhost");
    assert!(!server.is_ca());
    assert!(server.validity().is_valid());
    assert_eq!(ext_key_usage(&server), (true, false), "serverAuth only");
    assert_eq!(
        sans(&server),
        ["dns:localhost", "dns:db.test", "ip:[127, 0, 0, 1]"]
    );
    // A real verifier (webpki, via rustls) accepts it for both names.
    for name in ["localhost", "127.0.0.1", "db.test"] {
        verify_server(&pki.ca_cert(), &cert, name)
            .unwrap_or_else(|e| panic!("server certificate for {name}: {e}"));
    }
    assert!(
        verify_server(&pki.ca_cert(), &cert, "other.test").is_err(),
        "a name not in the certificate must not verify"
    );

    let (cert, key) = pki.client_cert(
        "alice",
        "app",
        &["spiffe://pgward.test/app"],
        &["client.test"],
    );
    assert_eq!(mode(&key), 0o600, "client key mode (libpq insists)");
    let der = parse_pem(&cert);
    let (_, client) = X509Certificate::from_der(&der).expect("client certificate parses");
    assert_eq!(client.subject().to_string(), "CN=app");
    assert_eq!(client.issuer(), ca.subject());
    assert_eq!(ext_key_usage(&client), (false, true), "clientAuth only");
    assert_eq!(
        sans(&client),
        ["uri:spiffe://pgward.test/app", "dns:client.test"]
    );
    verify_client(&pki.ca_cert(), &cert).expect("client certificate verifies");
    // The EKUs are enforced: neither certificate works in the other role.
    assert!(verify_server(&pki.ca_cert(), &cert, "client.test").is_err());
    assert!(verify_client(&pki.ca_cert(), &dir.path().join("srv.crt")).is_err());

    // Reissuing under the same name replaces the files, and a key that was
    // made readable meanwhile is locked down again.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (_, key_again) = pki.client_cert("alice", "app", &[], &[]);
    assert_eq!(mode(&key_again), 0o600);

    // The other CA is a different issuer with a different key.
    let other_dir = TempDir::new().unwrap();
    let other = TestPki::other_ca(other_dir.path());
    let other_der = parse_pem(&other.ca_cert());
    let (_, other_ca) = X509Certificate::from_der(&other_der).unwrap();
    assert_eq!(
        other_ca.subject().to_string(),
        format!("CN={OTHER_CA_NAME}")
    );
    assert_ne!(other_ca.public_key().raw, ca.public_key().raw);
    let err = verify_server(&other.ca_cert(), &dir.path().join("srv.crt"), "localhost")
        .expect_err("the other CA must not verify this CA's certificates");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let (other_client, _) = other.client_cert("app", "app", &[], &[]);
    assert!(verify_client(&pki.ca_cert(), &other_client).is_err());
}

// ---------------------------------------------------------------------------
// Servers with TLS

#[test]
fn tls_server_is_configured_as_documented() {
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    let settings = pg.superuser_sql(
        "SELECT current_setting('ssl'), current_setting('ssl_min_protocol_version'), \
         current_setting('ssl_cert_file'), current_setting('ssl_key_file'), \
         current_setting('ssl_ca_file')",
    );
    let data = pg.dir().join("data");
    assert_eq!(
        settings,
        format!(
            "on|TLSv1.2|{}|{}|{}",
            data.join("server.crt").display(),
            data.join("server.key").display(),
            data.join("root.crt").display()
        )
    );
    // The server may read its key only if the key is private to it.
    let key = fs::metadata(data.join("server.key")).expect("server.key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    // As root the server runs as `postgres`, otherwise as us.
    let my_uid = fs::metadata("/proc/self").expect("/proc/self").uid();
    let server_uid = if my_uid == 0 { postgres_uid() } else { my_uid };
    assert_eq!(key.uid(), server_uid, "server.key owned by the server user");

    // The default pg_hba.conf: one `host` line, TLS optional.
    assert_eq!(
        pg.superuser_sql(
            "SELECT string_agg(type || ':' || coalesce(array_to_string(options, ','), ''), ' ' \
             ORDER BY line_number) FROM pg_hba_file_rules"
        ),
        "local: host:"
    );

    // server_ca() is a copy of the CA, independent of the pki directory.
    let ca = pg.server_ca().expect("TLS server has a CA");
    assert!(ca.starts_with(pg.dir()), "{}", ca.display());
    assert_eq!(
        fs::read(&ca).unwrap(),
        fs::read(pki.ca_cert()).unwrap(),
        "server_ca() is the test CA"
    );

    let plain = PgServer::start();
    assert_eq!(plain.server_ca(), None);
    assert_eq!(plain.superuser_sql("SHOW ssl"), "off");
}

#[test]
fn verify_full_with_host_name_uses_tls() {
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    let row = ssl_row(
        &pg,
        "verify-full, host=localhost",
        &mut pg.psql_tls_cmd("localhost", "app", "pw", "appdb", "verify-full"),
    );
    let cols: Vec<&str> = row.split('|').collect();
    assert_eq!(cols[0], "t", "pg_stat_ssl.ssl: {row}");
    assert!(
        cols[1] == "TLSv1.2" || cols[1] == "TLSv1.3",
        "version: {row}"
    );
    assert_eq!(cols[2], "", "no client certificate was sent: {row}");
}

#[test]
fn verify_full_with_ip_address_uses_tls() {
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    let row = ssl_row(
        &pg,
        "verify-full, host=127.0.0.1",
        &mut pg.psql_tls_cmd("127.0.0.1", "app", "pw", "appdb", "verify-full"),
    );
    assert!(row.starts_with("t|TLSv1."), "{row}");

    // The same through conn_string_tls as a libpq connection string, which
    // names the CA itself.
    let conn = pg.conn_string_tls("app", "pw", "appdb", "verify-full");
    let ca = pg.server_ca().unwrap();
    assert!(
        conn.contains(&format!("sslrootcert='{}'", ca.display())),
        "{conn}"
    );
    let mut cmd = psql_cmd(pg.host(), pg.port(), "nobody", "wrong", "postgres");
    cmd.arg("-d").arg(&conn);
    let row = ssl_row(&pg, "psql with conn_string_tls(verify-full)", &mut cmd);
    assert!(row.starts_with("t|TLSv1."), "{row}");
}

#[test]
fn verify_full_rejects_a_host_name_not_in_the_certificate() {
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    // Connect to 127.0.0.1 but check the certificate against another name.
    let err = psql_error(
        &pg,
        "verify-full, host=db.invalid",
        pg.psql_tls_cmd("db.invalid", "app", "pw", "appdb", "verify-full")
            .env("PGHOSTADDR", "127.0.0.1"),
    );
    assert_contains(&err, "does not match host name \"db.invalid\"", "psql");
    // verify-ca does not check names: the same connection works.
    let row = ssl_row(
        &pg,
        "verify-ca, host=db.invalid",
        pg.psql_tls_cmd("db.invalid", "app", "pw", "appdb", "verify-ca")
            .env("PGHOSTADDR", "127.0.0.1"),
    );
    assert!(row.starts_with("t|"), "{row}");
}

#[test]
fn server_is_not_trusted_with_another_ca() {
    let (_dir, pki) = pki();
    let other_dir = TempDir::new().unwrap();
    let other = TestPki::other_ca(other_dir.path());
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    for sslmode in ["verify-ca", "verify-full"] {
        let err = psql_error(
            &pg,
            &format!("{sslmode} with the other CA as root"),
            pg.psql_tls_cmd("localhost", "app", "pw", "appdb", sslmode)
                .env("PGSSLROOTCERT", other.ca_cert()),
        );
        assert_contains(&err, "certificate verify failed", sslmode);
    }
    // Control: the right CA works with the very same command otherwise.
    let row = ssl_row(
        &pg,
        "verify-full with the test CA",
        pg.psql_tls_cmd("localhost", "app", "pw", "appdb", "verify-full")
            .env("PGSSLROOTCERT", pki.ca_cert()),
    );
    assert!(row.starts_with("t|"), "{row}");
}

#[tokio::test]
async fn default_tls_server_also_accepts_plaintext() {
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    // psql_cmd stays plaintext (sslmode=disable), and pg_stat_ssl says so.
    let row = ssl_row(
        &pg,
        "psql_cmd against a TLS server",
        &mut psql_cmd(pg.host(), pg.port(), "app", "pw", "appdb"),
    );
    assert_eq!(row, "f|||");
    // So does conn_string with tokio-postgres.
    let client = connect(&pg.conn_string("app", "pw", "appdb"))
        .await
        .unwrap_or_else(|e| panic!("plaintext connection failed: {e:?}\n{}", pg.log_contents()));
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(!ssl);
    // sslmode=require (no verification) uses TLS.
    let row = ssl_row(
        &pg,
        "sslmode=require",
        &mut pg.psql_tls_cmd("127.0.0.1", "app", "pw", "appdb", "require"),
    );
    assert!(row.starts_with("t|"), "{row}");
}

#[tokio::test]
async fn tls_only_server_rejects_plaintext() {
    let (_dir, pki) = pki();
    let pg = PgServer::builder().tls(&pki).tls_only().start();
    add_app(&pg);
    assert_eq!(
        pg.superuser_sql(
            "SELECT string_agg(type || ':' || auth_method, ' ' ORDER BY line_number) \
             FROM pg_hba_file_rules"
        ),
        "local:trust hostssl:scram-sha-256 hostnossl:reject"
    );

    let err = psql_error(
        &pg,
        "sslmode=disable against a TLS-only server",
        &mut psql_cmd(pg.host(), pg.port(), "app", "pw", "appdb"),
    );
    assert_contains(&err, "no encryption", "psql sslmode=disable");
    assert_logged(
        &pg,
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"app\", database \"appdb\", no encryption",
    );
    match connect(&pg.conn_string("app", "pw", "appdb")).await {
        Ok(_) => panic!("tokio-postgres connected without TLS to a TLS-only server"),
        Err(e) => assert_contains(&format!("{e:?}"), "no encryption", "tokio-postgres"),
    }

    // With TLS the same role gets in, and the password is still required.
    let row = ssl_row(
        &pg,
        "verify-full against a TLS-only server",
        &mut pg.psql_tls_cmd("localhost", "app", "pw", "appdb", "verify-full"),
    );
    assert!(row.starts_with("t|"), "{row}");
    let err = psql_error(
        &pg,
        "wrong password over TLS",
        &mut pg.psql_tls_cmd("localhost", "app", "wrong", "appdb", "verify-full"),
    );
    assert_contains(&err, "password authentication failed", "psql");
}

#[test]
fn client_certificate_is_required_and_verified() {
    let (_dir, pki) = pki();
    let pg = PgServer::builder().tls(&pki).require_client_cert().start();
    add_app(&pg);
    assert_eq!(
        pg.superuser_sql(
            "SELECT string_agg(type || ':' || coalesce(array_to_string(options, ','), ''), ' ' \
             ORDER BY line_number) FROM pg_hba_file_rules"
        ),
        "local: hostssl:clientcert=verify-full hostnossl:"
    );
    let tls =
        |password: &str| pg.psql_tls_cmd("localhost", "app", password, "appdb", "verify-full");

    // A certificate from the test CA with CN = user name: accepted.
    let (cert, key) = pki.client_cert("app", "app", &["spiffe://pgward.test/app"], &[]);
    let row = ssl_row(
        &pg,
        "client certificate CN=app",
        tls("pw").env("PGSSLCERT", &cert).env("PGSSLKEY", &key),
    );
    assert_eq!(
        row.split('|').skip(2).collect::<Vec<_>>(),
        ["/CN=app", &format!("/CN={CA_NAME}")],
        "client_dn, issuer_dn: {row}"
    );
    // ... but the password is still checked.
    let err = psql_error(
        &pg,
        "client certificate with a wrong password",
        tls("wrong").env("PGSSLCERT", &cert).env("PGSSLKEY", &key),
    );
    assert_contains(&err, "password authentication failed", "psql");

    // No certificate: rejected.
    let err = psql_error(&pg, "no client certificate", &mut tls("pw"));
    assert_contains(
        &err,
        "connection requires a valid client certificate",
        "psql",
    );

    // A certificate for someone else, with the right password: rejected.
    // The client is told its password failed (the hba method's message); the
    // log says why.
    let (cert, key) = pki.client_cert("mallory", "mallory", &[], &[]);
    let err = psql_error(
        &pg,
        "client certificate CN=mallory",
        tls("pw").env("PGSSLCERT", &cert).env("PGSSLKEY", &key),
    );
    assert_contains(
        &err,
        "password authentication failed for user \"app\"",
        "psql",
    );
    assert_logged(
        &pg,
        "certificate validation (clientcert=verify-full) failed for user \"app\": CN mismatch",
    );

    // The right CN from another CA: the TLS handshake fails.
    let other_dir = TempDir::new().unwrap();
    let other = TestPki::other_ca(other_dir.path());
    let (cert, key) = other.client_cert("app", "app", &[], &[]);
    let err = psql_error(
        &pg,
        "client certificate from another CA",
        tls("pw").env("PGSSLCERT", &cert).env("PGSSLKEY", &key),
    );
    assert_contains(&err, "unknown ca", "psql");
    assert_logged(&pg, "certificate verify failed");
}

#[test]
fn client_certificate_shows_up_without_being_required() {
    // On the default TLS server a client certificate is optional, but one
    // that is sent is verified and visible in pg_stat_ssl.
    let (_dir, pki) = pki();
    let pg = PgServer::start_with_tls(&pki);
    add_app(&pg);
    let (cert, key) = pki.client_cert("someone", "someone else", &[], &[]);
    let row = ssl_row(
        &pg,
        "optional client certificate",
        pg.psql_tls_cmd("localhost", "app", "pw", "appdb", "verify-full")
            .env("PGSSLCERT", &cert)
            .env("PGSSLKEY", &key),
    );
    assert!(
        row.starts_with("t|") && row.ends_with(&format!("|/CN=someone else|/CN={CA_NAME}")),
        "{row}"
    );
}
