//! Tests of the test harness itself (`tests/support/pg.rs`): if these fail,
//! every other integration test's result is meaningless.

mod support;

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use support::pg::{PgServer, pgbench_cmd, psql_cmd};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// A server with role `app` (password `pw`) owning database `appdb`.
fn server_with_app() -> PgServer {
    let pg = PgServer::start();
    pg.create_role("app", "pw");
    pg.create_database("appdb", "app");
    pg
}

async fn connect(conn_string: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn_string, NoTls).await?;
    tokio::spawn(async move {
        // Ends with an error when the server goes away; not this test's concern.
        let _ = connection.await;
    });
    Ok(client)
}

#[test]
fn server_is_configured_as_documented() {
    let pg = PgServer::start();
    assert_eq!(pg.host(), "127.0.0.1");
    let settings = pg.superuser_sql(
        "SELECT current_setting('port'), current_setting('listen_addresses'), \
         current_setting('password_encryption'), current_setting('max_connections'), \
         current_setting('fsync'), current_setting('ssl'), current_user",
    );
    assert_eq!(
        settings,
        format!("{}|127.0.0.1|scram-sha-256|100|off|off|postgres", pg.port())
    );
    // The unix socket is private to this server, in its cluster directory.
    assert!(
        pg.dir().join(format!(".s.PGSQL.{}", pg.port())).exists(),
        "socket missing from {}",
        pg.dir().display()
    );
}

#[tokio::test]
async fn tcp_login_with_scram_password_works() {
    let pg = server_with_app();
    // The role's secret is a SCRAM verifier, not md5 or plaintext.
    assert_eq!(
        pg.superuser_sql(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'"
        ),
        "t"
    );

    let client = connect(&pg.conn_string("app", "pw", "appdb"))
        .await
        .unwrap_or_else(|e| panic!("direct connection failed: {e:?}\n{}", pg.log_contents()));
    let row = client
        .query_one("SELECT 1::int4, current_user, current_database()", &[])
        .await
        .expect("SELECT 1");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), "app");
    assert_eq!(row.get::<_, String>(2), "appdb");
}

#[tokio::test]
async fn tcp_login_with_wrong_password_is_rejected() {
    let pg = server_with_app();
    let err = match connect(&pg.conn_string("app", "not-pw", "appdb")).await {
        Ok(_) => panic!("connected with a wrong password"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    // FATAL messages pass log_min_messages = warning, so the log shows why.
    assert!(
        pg.log_contents()
            .contains("password authentication failed for user \"app\""),
        "log: {}",
        pg.log_contents()
    );
}

#[tokio::test]
async fn tcp_login_without_password_is_rejected() {
    // Proves pg_hba.conf does not trust TCP connections: the server asks for
    // a password, and the client has none to give.
    let pg = server_with_app();
    let conn_string = format!(
        "host={} port={} user=app dbname=appdb sslmode=disable",
        pg.host(),
        pg.port()
    );
    match connect(&conn_string).await {
        Ok(_) => panic!("connected over TCP without a password"),
        // tokio-postgres only reports a missing password when the server
        // asked for one.
        Err(e) => assert!(format!("{e:?}").contains("password missing"), "{e:?}"),
    }
}

#[test]
fn psql_cmd_runs_a_query() {
    let pg = server_with_app();
    let out = psql_cmd(pg.host(), pg.port(), "app", "pw", "appdb")
        .args(["-A", "-t", "-c", "SELECT 1, current_user"])
        .output()
        .expect("running psql");
    assert!(out.status.success(), "psql failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1|app");

    let wrong = psql_cmd(pg.host(), pg.port(), "app", "wrong", "appdb")
        .args(["-c", "SELECT 1"])
        .output()
        .expect("running psql");
    assert!(
        !wrong.status.success(),
        "psql with a wrong password succeeded"
    );
}

#[test]
fn pgbench_cmd_initializes_and_runs() {
    let pg = server_with_app();
    let init = pgbench_cmd(pg.host(), pg.port(), "app", "pw", "appdb")
        .args(["-i", "-s", "1", "-q"])
        .output()
        .expect("running pgbench -i");
    assert!(init.status.success(), "pgbench -i failed: {init:?}");

    let run = pgbench_cmd(pg.host(), pg.port(), "app", "pw", "appdb")
        .args(["-T", "2", "-c", "2", "-S"])
        .output()
        .expect("running pgbench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "pgbench failed: {run:?}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "pgbench output: {stdout}"
    );
    assert_eq!(
        pg.superuser_sql_in("appdb", "SELECT count(*) FROM pgbench_branches"),
        "1"
    );
}

// multi_thread: the harness blocks its calling thread, and the connection
// task must keep running to notice the dropped client and close the session.
#[tokio::test(flavor = "multi_thread")]
async fn backend_count_sees_open_connections() {
    let pg = server_with_app();
    assert_eq!(pg.backend_count("app"), 0);

    let client = connect(&pg.conn_string("app", "pw", "appdb"))
        .await
        .expect("direct connection");
    client.simple_query("SELECT 1").await.expect("SELECT 1");
    assert_eq!(pg.backend_count("app"), 1);
    // Only client backends of that user are counted.
    assert_eq!(pg.backend_count("nobody"), 0);

    drop(client);
    assert_eq!(
        pg.wait_for_backend_count("app", 0, Duration::from_secs(10)),
        0
    );
}

#[test]
fn concurrent_servers_get_distinct_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(PgServer::start);
        let b = s.spawn(PgServer::start);
        (
            a.join().expect("first server thread"),
            b.join().expect("second server thread"),
        )
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    // Each answers on its own port, with its own data.
    a.superuser_sql("CREATE TABLE only_in_a ()");
    assert_eq!(a.superuser_sql("SHOW port"), a.port().to_string());
    assert_eq!(b.superuser_sql("SHOW port"), b.port().to_string());
    assert_eq!(
        b.superuser_sql("SELECT to_regclass('only_in_a') IS NULL"),
        "t"
    );
}

#[test]
#[should_panic(expected = "superuser SQL failed")]
fn superuser_sql_panics_on_error() {
    let pg = PgServer::start();
    pg.superuser_sql("SELECT 1; SELECT * FROM no_such_table; SELECT 2");
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2)).is_ok()
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let pg = PgServer::start();
    let (port, dir): (u16, PathBuf) = (pg.port(), pg.dir().to_path_buf());
    assert!(accepting(port));
    drop(pg);
    assert!(
        !accepting(port),
        "server still listening on {port} after drop"
    );
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[test]
fn panicking_test_does_not_leak_server() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pg = PgServer::start();
        seen = Some((pg.port(), pg.dir().to_path_buf()));
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let (port, dir) = seen.expect("server was started before the panic");
    assert!(!accepting(port), "server on {port} survived the panic");
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}
