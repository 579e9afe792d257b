//! Client authentication through pgward, with real clients: SCRAM-SHA-256 with psql and
//! tokio-postgres; wrong passwords and unknown users are indistinguishable; refused startup
//! parameters; the backend role and its password stay with pgward.

mod support;

use support::pgward::{
    APP_PASSWORD, APP_USER, BACKEND_PASSWORD, BACKEND_ROLE, TestEnv, db_message, run, sqlstate,
};

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_logs_in_with_scram_and_runs_as_the_backend_role() {
    let env = TestEnv::start();
    let client = env.client("appdb").await;
    let rows = client
        .simple_query("SELECT current_user, session_user")
        .await
        .expect("query");
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    assert_eq!(row.get(0), Some(BACKEND_ROLE));
}

#[test]
fn psql_logs_in_with_scram() {
    let env = TestEnv::start();
    let (ok, out, err) = run(env.psql("appdb").args(["-At", "-c", "SELECT 40 + 2"]));
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.trim(), "42");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_fail_the_same_way() {
    let env = TestEnv::start();
    let wrong = env
        .try_client(APP_USER, "not-the-password", "appdb")
        .await
        .expect_err("wrong password must fail");
    let unknown = env
        .try_client("mallory", "not-the-password", "appdb")
        .await
        .expect_err("unknown user must fail");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"));
    assert_eq!(
        db_message(&wrong).replace(APP_USER, "USER"),
        db_message(&unknown).replace("mallory", "USER"),
        "the messages must not tell a wrong password from an unknown user"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_password_does_not_log_in_to_pgward() {
    let env = TestEnv::start();
    // Clients cannot use the backend credentials against pgward.
    let e = env
        .try_client(BACKEND_ROLE, BACKEND_PASSWORD, "appdb")
        .await
        .expect_err("backend role is not a pgward user");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
}

#[test]
fn options_and_replication_startup_parameters_are_refused() {
    let env = TestEnv::start();
    let (ok, _, err) = run(env
        .psql("appdb")
        .env("PGOPTIONS", "-c work_mem=1GB")
        .args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(err.contains("\"options\" is not allowed"), "{err}");
    let conn = format!(
        "{} replication=database",
        env.conn_str(APP_USER, APP_PASSWORD, "appdb")
    );
    let (ok, _, err) = run(std::process::Command::new("psql").args([&conn, "-c", "SELECT 1"]));
    assert!(!ok);
    assert!(err.contains("replication"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_database_is_refused_after_authentication() {
    let env = TestEnv::start();
    let e = env
        .try_client(APP_USER, APP_PASSWORD, "nosuchdb")
        .await
        .expect_err("unknown database");
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"));
    // Before authentication nothing about databases is revealed.
    let e = env
        .try_client(APP_USER, "wrong", "nosuchdb")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_password_file_is_read_for_every_new_server_connection() {
    let env = TestEnv::start();
    // The first client opens a server connection with the first password and keeps it busy.
    let a = env.client("appdb").await;
    a.batch_execute("BEGIN").await.expect("begin");
    // Rotate: the role gets a new password, the file follows.
    env.pg
        .superuser_sql("ALTER ROLE app_rw PASSWORD 'rotated-password-2'");
    std::fs::write(
        env.dir.path().join("app_rw.password"),
        "rotated-password-2\n",
    )
    .expect("rotate file");
    // A second client needs a second server connection: it must log in with the new password.
    let b = env.client("appdb").await;
    b.simple_query("SELECT 1")
        .await
        .expect("query on a connection opened after rotation");
    a.batch_execute("COMMIT").await.expect("commit");
}
