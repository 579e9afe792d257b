//! Statement policies against a real PostgreSQL with real clients: the learn → build → enforce
//! rollout, prepared_only, read_only (classified and enforced by the backend session), denials
//! that never reach the server, and fail-closed handling of what cannot be analyzed.

mod support;

use support::pgward::{Options, Pgward, RawSession, TestEnv, db_message, run, sqlstate};
use support::wire::{bind, execute, parse, sync};

/// A TestEnv whose `app` user has policy `p`, configured by `policy` (TOML lines).
fn env_with_policy(policy: &str) -> TestEnv {
    let env = TestEnv::with(Options {
        user_extra: "policy = \"p\"".into(),
        extra: format!("\n[policies.p]\n{policy}\n"),
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items VALUES (1, 'one'), (2, 'two');
         CREATE TABLE written (v text);
         CREATE SEQUENCE s;
         GRANT ALL ON items, written TO app_rw;
         GRANT ALL ON SEQUENCE s TO app_rw;",
    );
    env
}

fn rows_in(env: &TestEnv, table: &str) -> String {
    env.pg
        .superuser_sql_in("appdb", &format!("SELECT count(*) FROM {table}"))
        .trim()
        .to_string()
}

/// What the application does: prepared statements with parameters, inside and outside a
/// transaction (tokio-postgres prepares every query).
async fn workload(c: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let name: String = c
        .query_one("SELECT name FROM items WHERE id = $1", &[&1i32])
        .await?
        .get(0);
    assert_eq!(name, "one");
    c.batch_execute("BEGIN").await?;
    c.execute(
        "UPDATE items SET name = $2 WHERE id = $1",
        &[&2i32, &"deux"],
    )
    .await?;
    c.execute("INSERT INTO written (v) VALUES ($1)", &[&"w"])
        .await?;
    c.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn learn_build_enforce_round_trip() {
    let mut env = env_with_policy("mode = \"learn\"\nlearn_file = \"learned.jsonl\"");
    let c = env.client("appdb").await;
    workload(&c)
        .await
        .expect("learn mode lets everything through");
    drop(c);
    let learned = env.dir.path().join("learned.jsonl");
    let allow = env.dir.path().join("allow.toml");
    let (ok, out, err) = run(std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["allowlist", "build", "--learned"])
        .arg(&learned)
        .arg("--out")
        .arg(&allow));
    assert!(ok, "allowlist build: {out}\n{err}");
    let list = std::fs::read_to_string(&allow).expect("allowlist written");
    assert!(
        list.contains("SELECT name FROM items WHERE id = $1"),
        "learned statements are in the allowlist:\n{list}"
    );
    let (ok, out, err) = run(std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["allowlist", "check"])
        .arg(&allow));
    assert!(ok, "allowlist check: {out}\n{err}");

    // The same config, now enforcing the built allowlist.
    let text = std::fs::read_to_string(env.config_path())
        .expect("config")
        .replace(
            "mode = \"learn\"",
            "mode = \"enforce\"\nallowlist = \"allow.toml\"",
        );
    let config = pgward::config::from_toml(&text, env.dir.path()).expect("enforcing config");
    env.pgward = Pgward::start(config);
    let c = env.client("appdb").await;
    workload(&c).await.expect("every learned statement passes");
    // A statement never learned is denied with 42501, naming policy and fingerprint only.
    let e = c
        .query_one("SELECT name FROM items WHERE name = $1", &[&"x"])
        .await
        .expect_err("not on the allowlist");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let message = db_message(&e);
    assert!(
        message.contains("policy \"p\"") && message.contains("fingerprint"),
        "{message}"
    );
    assert!(
        !message.contains("items"),
        "the text is never echoed: {message}"
    );
    // The injection-shaped variant of an approved statement is a different statement.
    let e = c
        .query_one("SELECT name FROM items WHERE id = $1 OR 1=1", &[&1i32])
        .await
        .expect_err("injection variant");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    // The session goes on.
    workload(&c).await.expect("still usable after denials");
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_only_refuses_ad_hoc_sql_but_not_the_same_statement_prepared() {
    let env = env_with_policy("mode = \"enforce\"\nprepared_only = true");
    let (ok, out, err) = run(env.psql("appdb").args(["-c", "select 1"]));
    assert!(!ok, "psql -c must be refused: {out}");
    assert!(err.contains("prepared_only"), "{err}");
    let c = env.client("appdb").await;
    let row = c
        .query_one("select 1", &[])
        .await
        .expect("prepared: allowed");
    assert_eq!(row.get::<_, i32>(0), 1);
    // Exact session statements still pass over the simple protocol; others do not, nor do
    // several statements in one string.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("COMMIT").await.expect("COMMIT");
    let e = c
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect_err("multi-statement");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_refuses_writes_and_the_backend_session_is_read_only_too() {
    let env = env_with_policy(
        "mode = \"enforce\"\nread_only = true\nread_only_functions = [\"public.sneaky_write\"]",
    );
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE FUNCTION public.sneaky_write() RETURNS int LANGUAGE sql AS
           $$ INSERT INTO written VALUES ('sneaky') RETURNING 1 $$;
         GRANT EXECUTE ON FUNCTION public.sneaky_write() TO app_rw;",
    );
    let c = env.client("appdb").await;
    for sql in [
        "INSERT INTO written VALUES ('x')",
        "WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x",
        "SELECT * FROM items FOR UPDATE",
        "SELECT nextval('s')",
        "SET default_transaction_read_only = off",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            sqlstate(&e).as_deref(),
            Some("42501"),
            "{sql} prepared: {e}"
        );
    }
    let rows = c
        .query("SELECT name FROM items WHERE id = $1", &[&1i32])
        .await
        .expect("a plain SELECT passes");
    assert_eq!(rows.len(), 1);
    // Enforced twice: a write the classifier lets through (a function the policy allows) is
    // stopped by the backend session, which runs read-only.
    let e = c
        .query("SELECT public.sneaky_write()", &[])
        .await
        .expect_err("backend read-only");
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e}");
    assert_eq!(
        support::pgward::one_value(&c, "SHOW default_transaction_read_only").await,
        "on"
    );
    // Nothing was written, nothing was deleted.
    assert_eq!(rows_in(&env, "written"), "0");
    assert_eq!(rows_in(&env, "items"), "2");
    assert_eq!(
        env.pg
            .superuser_sql_in("appdb", "SELECT last_value FROM s")
            .trim(),
        "1",
        "the sequence never advanced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_statement_never_reaches_postgres_and_fails_its_transaction() {
    let env = env_with_policy("mode = \"enforce\"\nread_only = false\nprepared_only = true");
    let c = env.client("appdb").await;
    // Ad-hoc INSERT over the simple protocol: denied; the table stays empty.
    let e = c
        .simple_query("INSERT INTO written VALUES ('ad-hoc')")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    assert_eq!(rows_in(&env, "written"), "0");
    // Inside a transaction, a denial aborts it like a PostgreSQL error: the earlier INSERT in
    // the same transaction is not committed either.
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute("INSERT INTO written VALUES ($1)", &[&"in-tx"])
        .await
        .expect("prepared insert");
    c.simple_query("DELETE FROM written")
        .await
        .expect_err("ad-hoc delete denied");
    let e = c
        .query("SELECT 1", &[])
        .await
        .expect_err("transaction is aborted");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("COMMIT").await.expect("commit ends it");
    assert_eq!(rows_in(&env, "written"), "0");
    // The server's own statement statistics never saw the denied text.
    let seen = env.pg.superuser_sql_in(
        "appdb",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ad-hoc%' AND query NOT LIKE '%pg_stat_activity%'",
    );
    assert_eq!(seen.trim(), "0");
}

#[test]
fn a_denial_inside_a_pipeline_skips_to_sync_like_postgres() {
    let env = env_with_policy("mode = \"enforce\"\nread_only = true");
    let mut s = RawSession::login(env.port(), "appdb");
    let mut batch = parse("SELECT 'first'");
    batch.extend(bind(&[]));
    batch.extend(execute());
    batch.extend(parse("INSERT INTO written VALUES ('piped')"));
    batch.extend(bind(&[]));
    batch.extend(execute());
    batch.extend(parse("SELECT 'after-the-denial'"));
    batch.extend(bind(&[]));
    batch.extend(execute());
    batch.extend(sync());
    s.send(&batch);
    let (errors, rows) = s.until_ready();
    assert_eq!(errors, vec!["42501".to_string()]);
    assert_eq!(
        rows.len(),
        1,
        "only the statement before the denial ran: {rows:?}"
    );
    assert_eq!(rows_in(&env, "written"), "0");
    let mut batch = parse("SELECT 'next'");
    batch.extend(bind(&[]));
    batch.extend(execute());
    batch.extend(sync());
    s.send(&batch);
    let (errors, rows) = s.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_analyzed_is_denied_in_enforce_mode_and_reported_in_audit_mode() {
    // `TABLE items` is valid PostgreSQL that sqlparser cannot parse.
    let env = env_with_policy("mode = \"enforce\"");
    let c = env.client("appdb").await;
    let e = c
        .simple_query("TABLE items")
        .await
        .expect_err("unparseable");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert!(db_message(&e).contains("cannot be analyzed"), "{e}");
    // Blocked by default: COPY and LISTEN.
    for sql in ["COPY items TO STDOUT", "LISTEN ch"] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
    }
    let audit = env_with_policy("mode = \"audit\"\nprepared_only = true");
    let c = audit.client("appdb").await;
    let rows = c
        .simple_query("TABLE items")
        .await
        .expect("audit mode lets it through");
    assert!(!rows.is_empty());
}
