//! Pooling with real clients: pgbench through transaction mode stays within the pool, session
//! mode runs prepared statements, waiters are served in arrival order, and session state never
//! travels from one client to the next.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use support::pgward::{BACKEND_ROLE, Options, TestEnv, metric_sample, one_value, run, sqlstate};

/// Runs pgbench through pgward while sampling pg_stat_activity; returns (stdout, max backends).
fn pgbench_with_backend_sampling(env: &TestEnv, db: &str, args: &[&str]) -> (String, i64) {
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicI64::new(0));
    let sampler = {
        let stop = Arc::clone(&stop);
        let max_seen = Arc::clone(&max_seen);
        let port = env.pg.port();
        let dir = env.pg.dir().to_path_buf();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new("psql")
                    .args(["-X", "-At", "-h"])
                    .arg(&dir)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
                    .arg(format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{BACKEND_ROLE}' AND backend_type = 'client backend'"
                    ))
                    .output();
                if let Some(n) = out.ok().and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<i64>()
                        .ok()
                }) {
                    max_seen.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (ok, out, err) = run(env.pgbench(db).args(args));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert!(ok, "pgbench {args:?} failed:\n{out}\n{err}");
    (out, max_seen.load(Ordering::Relaxed))
}

fn failed_transactions(pgbench_out: &str) -> u64 {
    pgbench_out
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failed-transactions line in:\n{pgbench_out}"))
}

#[test]
fn pgbench_transaction_mode_50_clients_over_5_connections() {
    let env = TestEnv::with(Options {
        pool_size: 5,
        ..Options::default()
    });
    let (ok, out, err) = run(env.pgbench("appdb").args(["-i", "-s", "1", "-q"]));
    assert!(ok, "pgbench -i through pgward failed:\n{out}\n{err}");
    // `prepared`: named statements prepared once per client, used on whichever of the five
    // server connections each transaction gets (PgBouncer 1.18 aborts this run).
    for protocol in ["simple", "extended", "prepared"] {
        let (out, max_backends) = pgbench_with_backend_sampling(
            &env,
            "appdb",
            &["-c", "50", "-j", "2", "-T", "4", "-M", protocol],
        );
        assert_eq!(failed_transactions(&out), 0, "{protocol}:\n{out}");
        assert!(
            out.contains("number of transactions actually processed"),
            "{out}"
        );
        assert!(
            (1..=5).contains(&max_backends),
            "{protocol}: PostgreSQL saw {max_backends} backend connections for a pool of 5"
        );
    }
}

#[test]
fn pgbench_prepared_in_session_mode() {
    let env = TestEnv::start();
    let (ok, out, err) = run(env.pgbench("appdb_session").args(["-i", "-s", "1", "-q"]));
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = run(env
        .pgbench("appdb_session")
        .args(["-c", "4", "-j", "2", "-T", "3", "-M", "prepared"]));
    assert!(ok, "{out}\n{err}");
    assert_eq!(failed_transactions(&out), 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_mode_state_is_gone_for_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb_session").await;
    let pid_a = one_value(&a, "SELECT pg_backend_pid()").await;
    a.batch_execute(
        "SET statement_timeout = 4321; CREATE TEMP TABLE t_a(x int); SELECT pg_advisory_lock(77); \
         LISTEN chan_a; PREPARE p_a AS SELECT 1",
    )
    .await
    .expect("session state");
    drop(a);
    // The same (only) server connection serves the next client, reset.
    let b = env.client("appdb_session").await;
    assert_eq!(
        one_value(&b, "SELECT pg_backend_pid()").await,
        pid_a,
        "same backend"
    );
    assert_eq!(one_value(&b, "SHOW statement_timeout").await, "0");
    assert_eq!(
        one_value(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(
        one_value(&b, "SELECT to_regclass('pg_temp.t_a') IS NULL").await,
        "t"
    );
    assert_eq!(
        one_value(&b, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        one_value(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_mode_set_does_not_reach_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    let pid = one_value(&a, "SELECT pg_backend_pid()").await;
    a.batch_execute("SET statement_timeout = 1234")
        .await
        .expect("set");
    assert_eq!(one_value(&a, "SHOW statement_timeout").await, "1234ms");
    // B gets the same server connection, without A's setting.
    assert_eq!(
        one_value(&b, "SELECT pg_backend_pid()").await,
        pid,
        "same backend"
    );
    assert_eq!(one_value(&b, "SHOW statement_timeout").await, "0");
    // A's setting is A's: it comes back on A's next transaction.
    assert_eq!(one_value(&a, "SHOW statement_timeout").await, "1234ms");
    assert_eq!(one_value(&b, "SHOW statement_timeout").await, "0");
    // RESET drops it for A too.
    a.batch_execute("RESET statement_timeout")
        .await
        .expect("reset");
    assert_eq!(one_value(&a, "SHOW statement_timeout").await, "0");
    // set_config(…, false) cannot be replayed: the server is reset before B uses it.
    a.simple_query("SELECT set_config('work_mem', '7MB', false)")
        .await
        .expect("set_config");
    assert_eq!(one_value(&b, "SHOW work_mem").await, "4MB");
    // A SET inside a rolled-back transaction is not kept.
    a.batch_execute("BEGIN; SET search_path = nowhere; ROLLBACK")
        .await
        .expect("rolled back set");
    assert_eq!(one_value(&a, "SHOW search_path").await, "\"$user\", public");
    // A SET inside a committed transaction is kept, and still not seen by B.
    a.batch_execute("BEGIN; SET DateStyle = 'German'; COMMIT")
        .await
        .expect("committed set");
    assert_eq!(one_value(&b, "SHOW DateStyle").await, "ISO, MDY");
    assert_eq!(one_value(&a, "SHOW DateStyle").await, "German, DMY");
}

/// A client of `appdb` through pgward with startup parameter `application_name`.
async fn connect_named(env: &TestEnv, application_name: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(env.port())
        .user(support::pgward::APP_USER)
        .password(support::pgward::APP_PASSWORD)
        .dbname("appdb")
        .application_name(application_name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_parameters_belong_to_the_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = connect_named(&env, "client_a").await;
    let b = env.client("appdb").await;
    assert_eq!(one_value(&a, "SHOW application_name").await, "client_a");
    assert_eq!(one_value(&b, "SHOW application_name").await, "");
    assert_eq!(one_value(&a, "SHOW application_name").await, "client_a");
    // tokio-postgres asks for client_encoding UTF8 and gets it.
    assert_eq!(one_value(&a, "SHOW client_encoding").await, "UTF8");
}

/// A server connection opened for a client carries its startup parameters as the server's own
/// (what `RESET` returns to), so it owes that client no `SET` after a hand-over reset. It is
/// never given to a client with other parameters: whether that client waits for it or finds
/// it idle, it gets a connection opened without any, and its `RESET` brings back nobody's.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_opened_with_a_clients_parameters_serves_no_other_client() {
    let env = TestEnv::with(Options {
        pool_size: 2,
        ..Options::default()
    });
    const RESET_VAL: &str = "SELECT reset_val FROM pg_settings WHERE name = 'application_name'";
    let x = env.client("appdb").await;
    let a = connect_named(&env, "client_a").await;
    // X holds the one connection so far: A's next transaction opens one with its parameters.
    x.batch_execute("BEGIN").await.expect("x begin");
    assert_eq!(one_value(&a, RESET_VAL).await, "client_a");
    a.batch_execute("RESET application_name")
        .await
        .expect("reset");
    assert_eq!(one_value(&a, "SHOW application_name").await, "client_a");
    let pid_a = one_value(&a, "SELECT pg_backend_pid()").await;

    // B waits for a connection; A's, released, is replaced by one opened without parameters.
    a.batch_execute("BEGIN").await.expect("a begin");
    let port = env.port();
    let b = tokio::spawn(async move {
        let conn = format!(
            "host=127.0.0.1 port={port} user={} password={} dbname=appdb",
            support::pgward::APP_USER,
            support::pgward::APP_PASSWORD
        );
        let (b, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect b");
        tokio::spawn(c);
        b
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.batch_execute("COMMIT").await.expect("a commit");
    let b = b.await.expect("b task");
    assert_ne!(one_value(&b, "SELECT pg_backend_pid()").await, pid_a);
    assert_eq!(one_value(&b, "SHOW application_name").await, "");
    assert_eq!(one_value(&b, RESET_VAL).await, "");
    b.batch_execute("RESET ALL").await.expect("reset all");
    assert_eq!(one_value(&b, "SHOW application_name").await, "");

    // B's connection goes away; A opens one with its parameters again, and it sits idle
    // while X holds the other: B finds it idle and gets a new one in its place.
    let pid_b = one_value(&b, "SELECT pg_backend_pid()").await;
    env.pg
        .superuser_sql(&format!("SELECT pg_terminate_backend({pid_b})"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(one_value(&a, RESET_VAL).await, "client_a");
    let pid_a = one_value(&a, "SELECT pg_backend_pid()").await;
    assert_ne!(one_value(&b, "SELECT pg_backend_pid()").await, pid_a);
    assert_eq!(one_value(&b, RESET_VAL).await, "");
    b.batch_execute("RESET ALL").await.expect("reset all");
    assert_eq!(one_value(&b, "SHOW application_name").await, "");
    // A still gets its own value, now set on a connection opened without it.
    assert_eq!(one_value(&a, "SHOW application_name").await, "client_a");
    x.batch_execute("COMMIT").await.expect("x commit");
    // Both of A's connections were closed to open one for B in their place, and counted.
    let replaced = metric_sample(
        &env.scrape_metrics(),
        "pgward_server_connections_replaced_total{",
    );
    assert_eq!(replaced, 2.0);
}

/// A startup value the server refuses fails that client's login, each time, with the server's
/// reason; pgward never opens a pool connection with it. A value the server took at one login
/// is what later logins with the same parameters get, without anyone else seeing it.
#[test]
fn a_startup_value_the_server_refuses_fails_the_login_not_the_pool() {
    let env = TestEnv::with(Options {
        pool_size: 2,
        ..Options::default()
    });
    let show = |datestyle: Option<&str>| {
        let mut cmd = env.psql("appdb");
        if let Some(d) = datestyle {
            cmd.env("PGDATESTYLE", d);
        }
        run(cmd.args(["-At", "-c", "SHOW DateStyle"]))
    };
    for _ in 0..2 {
        let (ok, out, err) = show(Some("garbage"));
        assert!(!ok, "{out}");
        assert!(
            err.contains("value rejected by the server")
                && err.contains("invalid value for parameter"),
            "{err}"
        );
    }
    for _ in 0..3 {
        let (ok, out, err) = show(Some("German"));
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "German, DMY");
        let (ok, out, err) = show(None);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "ISO, MDY");
    }
}

/// In transaction mode a login with startup parameters the server accepted at a recent login
/// is answered from the pool: it gets in while every server connection is busy, and is told
/// exactly what that login was told (the server's spelling of its values). Parameters no login
/// has had accepted still take a server connection to be checked.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_the_server_recently_accepted_needs_no_server_connection() {
    let env = Arc::new(TestEnv::with(Options {
        pool_size: 1,
        checkout_timeout: 1.0,
        ..Options::default()
    }));
    let port = env.port();
    let probe = [("application_name", "probe"), ("DateStyle", "german")];
    let first = support::pgward::RawSession::login_with(port, "appdb", &probe);
    assert!(
        first
            .reported
            .contains(&("DateStyle".to_owned(), "German, DMY".to_owned())),
        "{:?}",
        first.reported
    );
    // The only server connection is held in a transaction.
    let holder = env.client("appdb").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let second = tokio::task::spawn_blocking(move || {
        support::pgward::RawSession::login_with(port, "appdb", &probe)
    })
    .await
    .expect("a login with accepted parameters gets in while the pool is busy");
    assert_eq!(second.reported, first.reported);
    let other = tokio::task::spawn_blocking(move || {
        support::pgward::RawSession::login_with(port, "appdb", &[("DateStyle", "SQL")])
    })
    .await;
    let refused = other.expect_err("parameters no login had accepted wait for a connection");
    let why = refused
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(why.contains("53300"), "{why}");
    // The logged-in client's first statement waits for the connection.
    let mut second = second;
    second.send(&support::wire::msg(b'Q', b"SHOW DateStyle\0"));
    holder.batch_execute("COMMIT").await.expect("commit");
    let (errors, rows) = tokio::task::spawn_blocking(move || second.until_ready())
        .await
        .expect("answer");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        rows.len() == 1 && rows[0].contains("German, DMY"),
        "{rows:?}"
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_mode_refuses_what_cannot_be_shared_and_stays_usable() {
    let env = TestEnv::start();
    let c = env.client("appdb").await;
    for sql in [
        "LISTEN chan",
        "PREPARE p AS SELECT 1",
        "CREATE TEMP TABLE t(x int)",
        "SELECT pg_advisory_lock(1)",
        "SET ROLE postgres",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e}");
        assert_eq!(one_value(&c, "SELECT 1").await, "1", "usable after {sql}");
    }
    // A named prepared statement (tokio-postgres prepares one per query) works.
    let row = c
        .query_one("SELECT $1::int", &[&2i32])
        .await
        .expect("named");
    assert_eq!(row.get::<_, i32>(0), 2);
    // Inside a transaction the refusal fails the transaction, as a PostgreSQL error would.
    c.batch_execute("BEGIN").await.expect("begin");
    c.simple_query("LISTEN x").await.expect_err("listen");
    let e = c.simple_query("SELECT 3").await.expect_err("block failed");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(one_value(&c, "SELECT 4").await, "4");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiters_are_served_in_arrival_order() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let holder = env.client("appdb").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(env.client("appdb").await);
    }
    holder.batch_execute("BEGIN").await.expect("begin");
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let v = one_value(&c, "SELECT clock_timestamp()::text").await;
            (i, v)
        }));
        // Let each request reach the queue before the next one.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.batch_execute("COMMIT").await.expect("commit");
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.expect("task"));
    }
    let mut by_time = served.clone();
    by_time.sort_by(|a, b| a.1.cmp(&b.1));
    let order: Vec<usize> = by_time.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![0, 1, 2, 3], "served out of order: {served:?}");
}

#[test]
fn min_idle_warms_up_and_lifetime_replaces_connections() {
    let env = TestEnv::with(Options {
        extra: r#"
[[databases]]
name = "warm"
dbname = "appdb"
port = PORT
backend_user = "app_rw"
backend_password_file = "app_rw.password"
min_idle = 2
server_lifetime = 1.5
"#
        .into(),
        ..Options::default()
    });
    // Nobody connected, yet two server connections appear.
    let seen = env
        .pg
        .wait_for_backend_count(BACKEND_ROLE, 2, Duration::from_secs(5));
    assert_eq!(seen, 2, "min_idle warm-up");
    let pids = |env: &TestEnv| {
        env.pg.superuser_sql(&format!(
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE usename = '{BACKEND_ROLE}'"
        ))
    };
    let before = pids(&env);
    // After the lifetime (1.5 s minus up to 10% jitter) the idle ones are replaced.
    std::thread::sleep(Duration::from_millis(3000));
    let after = pids(&env);
    assert_ne!(
        before, after,
        "connections past their lifetime must be replaced"
    );
    assert_eq!(
        env.pg
            .wait_for_backend_count(BACKEND_ROLE, 2, Duration::from_secs(5)),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_changes_hidden_in_code_do_not_reach_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    env.pg
        .superuser_sql("CREATE ROLE auditor NOLOGIN; GRANT auditor TO app_rw");
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    for sql in [
        "DO $$BEGIN PERFORM set_config('work_mem','77MB',false); END$$",
        "SELECT \"set_config\"('work_mem','78MB',false)",
        "DO $$BEGIN PERFORM set_config('role','auditor',false); END$$",
        "SELECT query_to_xml('select set_config(''search_path'',''nowhere'',false)', true, true, '')",
    ] {
        a.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(one_value(&b, "SHOW work_mem").await, "4MB", "after {sql}");
        assert_eq!(
            one_value(&b, "SELECT current_user").await,
            BACKEND_ROLE,
            "after {sql}"
        );
        assert_eq!(
            one_value(&b, "SHOW search_path").await,
            "\"$user\", public",
            "after {sql}"
        );
    }
}

/// Session state a server function creates out of pgward's sight — a temporary table, a
/// session advisory lock — is gone when the connection changes hands: the hand-over reset of
/// a connection without pgward's prepared statements is `DISCARD ALL`.
#[tokio::test(flavor = "multi_thread")]
async fn temp_tables_and_advisory_locks_made_in_code_do_not_reach_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE FUNCTION public.hidden_state() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           CREATE TEMP TABLE IF NOT EXISTS hidden_t(x int);
           PERFORM pg_advisory_lock(4242);
           RETURN 1;
         END$$",
    );
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    assert_eq!(one_value(&a, "SELECT public.hidden_state()").await, "1");
    // The same client keeps its connection's state (no hand-over, no reset)...
    // (No string or word here may look like session state to pgward's classifier, which
    // would reset the connection anyway.)
    let temp_tables = "SELECT count(*) FROM pg_class WHERE relname = 'hidden_t' AND relnamespace = pg_my_temp_schema()";
    assert_eq!(one_value(&a, temp_tables).await, "1");
    // ...the next client does not get it.
    assert_eq!(one_value(&b, temp_tables).await, "0");
    assert_eq!(
        one_value(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()"
        )
        .await,
        "0"
    );
}

/// An idle pool gives a client back the connection it used last. That connection carries only
/// this client's own state, so no reset is owed: what the client's code left there is still
/// there for it (as on a connection of its own), and another client never sees it.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_gets_its_own_connection_back_from_an_idle_pool() {
    let env = TestEnv::with(Options {
        pool_size: 2,
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE FUNCTION public.tag(t text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('app.tag', t, false) $$",
    );
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    // Two connections: A holds one in a transaction while B needs one.
    a.batch_execute("BEGIN").await.expect("begin");
    let pid_a = one_value(&a, "SELECT pg_backend_pid()").await;
    let pid_b = one_value(&b, "SELECT pg_backend_pid()").await;
    assert_ne!(pid_a, pid_b, "B waited for A's connection");
    assert_eq!(one_value(&a, "SELECT public.tag('A')").await, "A");
    a.batch_execute("COMMIT").await.expect("commit");
    // A's connection is now the most recently used idle one; B still gets its own.
    assert_eq!(one_value(&b, "SELECT public.tag('B')").await, "B");
    // (No string or word here may look like session state to pgward's classifier, which
    // would reset the connection anyway.)
    let tag = "SELECT coalesce(current_setting('app.tag', true), '<none>')";
    for round in 0..3 {
        assert_eq!(
            one_value(&a, "SELECT pg_backend_pid()").await,
            pid_a,
            "round {round}"
        );
        assert_eq!(one_value(&a, tag).await, "A", "round {round}");
        assert_eq!(
            one_value(&b, "SELECT pg_backend_pid()").await,
            pid_b,
            "round {round}"
        );
        assert_eq!(one_value(&b, tag).await, "B", "round {round}");
    }
    // When the connection does change hands, the reset still runs: C gets one of the two.
    let c = env.client("appdb").await;
    let seen = one_value(&c, tag).await;
    assert!(
        seen.is_empty() || seen == "<none>",
        "another client's tag reached C: {seen}"
    );
}
