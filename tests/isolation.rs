//! Regressions from a review of session isolation in transaction mode: each test sets up the
//! attack or fault that was found and asserts the safe behaviour. Most use a pool of one
//! server connection so that clients must share it.

mod support;

use std::time::{Duration, Instant};

use support::pgward::{
    APP_PASSWORD, APP_USER, Options, RawSession, TestEnv, db_message, one_value, query_message,
    sqlstate,
};
use support::wire::{bind, execute, msg, parse, sync};

/// Reads until ReadyForQuery; returns the tags seen.
fn until_ready(s: &mut RawSession) -> Vec<u8> {
    let mut tags = Vec::new();
    loop {
        let (t, body) = s.read_message();
        tags.push(t);
        if t == b'E' {
            eprintln!("error: {}", String::from_utf8_lossy(&body));
        }
        if t == b'Z' {
            return tags;
        }
    }
}

/// 1. A half-sent CopyData from client A stays on the server connection when it goes back to
/// the pool; the server then eats client B's bytes as the rest of A's CopyData and parses
/// from the middle of B's Bind parameter: a message smuggled into B's session.
#[tokio::test(flavor = "multi_thread")]
async fn partial_copydata_desyncs_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup.simple_query("SELECT 1").await.unwrap();
    drop(setup);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut a = RawSession::login(port, "appdb");
    let mut b = RawSession::login(port, "appdb");

    // B's pipeline, with an attacker-influenced parameter value.
    let smuggled = query_message("CREATE TABLE smuggled_by_a (x int)");
    let p = parse("SELECT $1::bytea");
    let bmsg = bind(&[&smuggled]);
    let mut b_bytes = Vec::new();
    b_bytes.extend_from_slice(&p);
    b_bytes.extend_from_slice(&bmsg);
    b_bytes.extend_from_slice(&execute());
    b_bytes.extend_from_slice(&sync());
    // Where the parameter value starts in B's stream.
    let offset = p.len() + 1 + 4 + 1 + 1 + 2 + 2 + 4;

    // A: a query and, behind it, the header of a CopyData whose body A never sends.
    let mut a_bytes = query_message("SELECT 1");
    a_bytes.push(b'd');
    a_bytes.extend_from_slice(&((4 + offset) as i32).to_be_bytes());
    a.send(&a_bytes);
    let tags = until_ready(&mut a);
    eprintln!("A got {:?}", String::from_utf8_lossy(&tags));
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "pool stats: {:?}",
        env.pgward
            .app
            .pools()
            .into_iter()
            .map(|p| (p.key.clone(), p.stats()))
            .collect::<Vec<_>>()
    );

    b.send(&b_bytes);
    b.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = Vec::new();
    while let Some((t, body)) = b.try_read_message() {
        got.push(t);
        if t == b'E' {
            eprintln!("B error: {}", String::from_utf8_lossy(&body));
        }
        if t == b'Z' {
            break;
        }
    }
    eprintln!("B got {:?}", String::from_utf8_lossy(&got));
    let exists = env.pg.superuser_sql_in(
        "appdb",
        "SELECT count(*) FROM pg_class WHERE relname = 'smuggled_by_a'",
    );
    eprintln!("table smuggled_by_a exists: {exists}");
    assert_eq!(
        exists.trim(),
        "0",
        "A's bytes + B's parameter ran as a statement in B's session"
    );
}

/// 2b. FunctionCall ('F') is forwarded without any classification.
#[tokio::test(flavor = "multi_thread")]
async fn function_call_message_leaks_search_path() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let mut a = RawSession::login(port, "appdb");
    // set_config(text, text, bool) is OID 2078.
    let mut f = Vec::new();
    f.extend_from_slice(&2078i32.to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes()); // arg formats: all text
    f.extend_from_slice(&3i16.to_be_bytes());
    for v in [&b"search_path"[..], b"evil_schema", b"false"] {
        f.extend_from_slice(&(v.len() as i32).to_be_bytes());
        f.extend_from_slice(v);
    }
    f.extend_from_slice(&0i16.to_be_bytes()); // result format
    a.send(&msg(b'F', &f));
    let tags = until_ready(&mut a);
    eprintln!("A got {:?}", String::from_utf8_lossy(&tags));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = env.client("appdb").await;
    let seen = one_value(&b, "SHOW search_path").await;
    eprintln!("B sees search_path = {seen}");
    assert_ne!(
        seen, "evil_schema",
        "A's search_path leaked into B's session"
    );
}

/// 2c. With standard_conforming_strings off, a backslash-escaped quote would hide a SET from
/// the lexer: changing how literals are parsed is refused in transaction mode.
#[tokio::test(flavor = "multi_thread")]
async fn backslash_quote_hides_a_set_from_the_classifier() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    let e = a
        .simple_query("SET standard_conforming_strings = off")
        .await
        .expect_err("refused");
    assert_eq!(
        support::pgward::sqlstate(&e).as_deref(),
        Some("0A000"),
        "{e}"
    );
    let _ = a
        .simple_query(
            "SELECT 'a\\''; SET/**/search_path=evil_schema; SET/**/standard_conforming_strings=on; --'",
        )
        .await;
    let b = env.client("appdb").await;
    let seen = one_value(&b, "SHOW search_path").await;
    eprintln!("B sees search_path = {seen}");
    assert_ne!(
        seen, "evil_schema",
        "A's search_path leaked into B's session"
    );
}

/// 3. COPY FROM STDIN over the extended protocol, as libpq does it (P/B/E/S, then CopyData,
/// CopyDone, Sync): the server ignores the first Sync during COPY, so pending_syncs never
/// returns to 0.
#[tokio::test(flavor = "multi_thread")]
async fn extended_copy_in_leaves_a_sync_pending() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup.batch_execute("CREATE TABLE c (x int)").await.unwrap();
    drop(setup);
    let mut a = RawSession::login(port, "appdb");
    let mut bytes = parse("COPY c FROM STDIN");
    bytes.extend_from_slice(&bind(&[]));
    bytes.extend_from_slice(&execute());
    bytes.extend_from_slice(&sync());
    a.send(&bytes);
    loop {
        let (t, _) = a.read_message();
        if t == b'G' {
            break;
        }
    }
    let mut bytes = msg(b'd', b"1\n");
    bytes.extend_from_slice(&msg(b'c', &[]));
    bytes.extend_from_slice(&sync());
    a.send(&bytes);
    let tags = until_ready(&mut a);
    eprintln!("A got {:?}", String::from_utf8_lossy(&tags));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats: Vec<_> = env
        .pgward
        .app
        .pools()
        .into_iter()
        .map(|p| (p.key.clone(), p.stats()))
        .collect();
    eprintln!("pool stats after COPY: {stats:?}");
    // A refused statement now pauses forever.
    a.send(&query_message("LISTEN x"));
    a.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let answer = a.try_read_message();
    eprintln!("answer to LISTEN: {:?}", answer.map(|(t, _)| t as char));
    // Another client cannot get the (idle) server.
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        env.try_client("app", support::pgward::APP_PASSWORD, "appdb"),
    )
    .await;
    eprintln!(
        "second client after {:?}: {:?}",
        started.elapsed(),
        r.as_ref()
            .map(|r| r.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    );
}

/// 4. A startup deadline that fires while the pool opens a connection leaks `total`.
#[tokio::test(flavor = "multi_thread")]
async fn startup_timeout_during_open_leaks_pool_slot() {
    // A "server" that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let env = TestEnv::with(Options {
        pool_size: 5,
        server_extra: "startup_timeout = 1".into(),
        extra: format!(
            r#"
[[databases]]
name = "silentdb"
port = {silent_port}
backend_user = "app_rw"
backend_password_file = "app_rw.password"
pool_size = 1
connect_timeout = 5
checkout_timeout = 2
"#
        ),
        ..Options::default()
    });
    for _ in 0..2 {
        let r = env
            .try_client("app", support::pgward::APP_PASSWORD, "silentdb")
            .await;
        eprintln!("client: {:?}", r.map(|_| ()).map_err(|e| e.to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats: Vec<_> = env
            .pgward
            .app
            .pools()
            .into_iter()
            .filter(|p| p.key.database == "silentdb")
            .map(|p| p.stats())
            .collect();
        eprintln!("silentdb pool: {stats:?}");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats: Vec<_> = env
        .pgward
        .app
        .pools()
        .into_iter()
        .filter(|p| p.key.database == "silentdb")
        .map(|p| p.stats())
        .collect();
    eprintln!("silentdb pool after connect_timeout: {stats:?}");
    assert_eq!(stats[0].total, 0, "slot leaked");
}

/// 5. A refusal while the server waits for COPY data pauses the relay forever; the client's
/// disconnect is never noticed and the server connection stays held.
#[tokio::test(flavor = "multi_thread")]
async fn refusal_during_copy_in_hangs_and_leaks() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup
        .batch_execute("CREATE TABLE c2 (x int)")
        .await
        .unwrap();
    drop(setup);
    let mut a = RawSession::login(port, "appdb");
    a.send(&query_message("COPY c2 FROM STDIN"));
    loop {
        let (t, _) = a.read_message();
        if t == b'G' {
            break;
        }
    }
    a.send(&query_message("LISTEN x"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats: Vec<_> = env
        .pgward
        .app
        .pools()
        .into_iter()
        .filter(|p| p.key.database == "appdb")
        .map(|p| p.stats())
        .collect();
    eprintln!("appdb pool 3s after the client left: {stats:?}");
    let active = env.pg.superuser_sql_in(
        "appdb",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY c2%'",
    );
    eprintln!("COPY backends still there: {active}");
    assert_eq!(active.trim(), "0");
}

/// 8. A non-UTF-8 query (client_encoding LATIN1) ends the session in transaction mode.
#[tokio::test(flavor = "multi_thread")]
async fn latin1_query_kills_session() {
    let env = TestEnv::start();
    let c = env.client("appdb").await;
    c.simple_query("SET client_encoding = 'LATIN1'")
        .await
        .unwrap();
    let mut raw = RawSession::login(env.port(), "appdb");
    raw.send(&query_message("SET client_encoding = 'LATIN1'"));
    let _ = until_ready(&mut raw);
    let mut q = b"SELECT 'caf".to_vec();
    q.push(0xE9);
    q.extend_from_slice(b"'");
    q.push(0);
    raw.send(&msg(b'Q', &q));
    let mut tags = Vec::new();
    while let Some((t, body)) = raw.try_read_message() {
        tags.push(t);
        if t == b'E' {
            eprintln!("error: {}", String::from_utf8_lossy(&body));
        }
        if t == b'Z' {
            break;
        }
    }
    eprintln!("tags: {:?}", String::from_utf8_lossy(&tags));
    assert!(tags.contains(&b'Z'), "session ended");
}

/// 9. A SET inside a failed multi-statement Query (implicit transaction, rolled back) is
/// recorded as the client's state and replayed later.
#[tokio::test(flavor = "multi_thread")]
async fn rolled_back_set_is_replayed() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    let r = a.simple_query("SET work_mem = '77MB'; SELECT 1/0").await;
    eprintln!("A: {:?}", r.map(|_| ()).map_err(|e| e.to_string()));
    let direct_same_server = one_value(&a, "SHOW work_mem").await;
    one_value(&b, "SELECT 1").await;
    let after_switch = one_value(&a, "SHOW work_mem").await;
    eprintln!("A sees work_mem {direct_same_server} then {after_switch}");
    assert_eq!(after_switch, direct_same_server);
}

/// 10. Temporary tables created without the words TEMP/TEMPORARY among the first four tokens.
#[tokio::test(flavor = "multi_thread")]
async fn temp_tables_escape_the_classifier() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    a.batch_execute("CREATE TABLE orders (id int, secret text)")
        .await
        .unwrap();
    for sql in [
        "SELECT 1 AS id, 'planted by A'::text AS secret INTO TEMP orders",
        "CREATE TABLE pg_temp.shadow2 (x int)",
    ] {
        let r = a.simple_query(sql).await;
        eprintln!("A: {sql}: {:?}", r.map(|_| ()).map_err(|e| e.to_string()));
    }
    let b = env.client("appdb").await;
    b.simple_query("INSERT INTO orders VALUES (2, 'B''s card number')")
        .await
        .unwrap();
    let seen = one_value(&b, "SELECT string_agg(secret, ',') FROM orders").await;
    eprintln!("B reads orders: {seen}");
    let n = env
        .pg
        .superuser_sql_in("appdb", "SELECT count(*) FROM public.orders");
    eprintln!("rows really in public.orders: {n}");
    let a_view = one_value(&a, "SELECT string_agg(secret, ',') FROM orders").await;
    eprintln!("A later reads orders: {a_view}");
    assert_eq!(n.trim(), "1");
}

/// 1b. The same, by one client alone: its own next Bind parameter becomes a message pgward
/// never classified (here LISTEN, refused in transaction mode).
#[tokio::test(flavor = "multi_thread")]
async fn partial_copydata_lets_a_client_smuggle_refused_statements() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let mut a = RawSession::login(port, "appdb");
    let smuggled = query_message("CREATE TABLE self_smuggled (x int)");
    let p = parse("SELECT $1::bytea");
    let mut next = Vec::new();
    next.extend_from_slice(&p);
    next.extend_from_slice(&bind(&[&smuggled]));
    next.extend_from_slice(&execute());
    next.extend_from_slice(&sync());
    let offset = p.len() + 1 + 4 + 1 + 1 + 2 + 2 + 4;
    let mut first = query_message("SELECT 1");
    first.push(b'd');
    first.extend_from_slice(&((4 + offset) as i32).to_be_bytes());
    a.send(&first);
    let _ = until_ready(&mut a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(&next);
    a.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    while let Some((t, _)) = a.try_read_message() {
        if t == b'Z' {
            break;
        }
    }
    let exists = env.pg.superuser_sql_in(
        "appdb",
        "SELECT count(*) FROM pg_class WHERE relname = 'self_smuggled'",
    );
    eprintln!("self_smuggled exists: {exists}");
}

/// 2. Session state set inside a function is invisible to the lexical classifier; the reset on
/// hand-over keeps it from reaching the next client of the same server connection. (After a
/// reset a custom setting reads as empty, not as missing.)
#[tokio::test(flavor = "multi_thread")]
async fn set_config_inside_a_function_leaks_to_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    a.batch_execute(
        "CREATE FUNCTION set_tenant(t text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('app.tenant', t, false) $$",
    )
    .await
    .unwrap();
    one_value(&a, "SELECT set_tenant('tenant-A')").await;
    let b = env.client("appdb").await;
    let seen = one_value(
        &b,
        "SELECT coalesce(current_setting('app.tenant', true), '<unset>')",
    )
    .await;
    eprintln!("B sees app.tenant = {seen}");
    // After RESET ALL a custom setting reads as empty rather than missing.
    assert!(
        seen.is_empty() || seen == "<unset>",
        "A's tenant leaked into B's session: {seen}"
    );
}

/// 7. Half-duplex relay: while pgward blocks writing a client's pipeline to the server, it
/// does not read the server's results, and the server blocks writing them: deadlock.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_pipeline_does_not_deadlock_the_relay() {
    let env = TestEnv::with(Options {
        pool_size: 2,
        ..Options::default()
    });
    let pad = "x".repeat(4000);
    let sql = format!("SELECT repeat('y', 8000) /* {pad} */");
    let n: usize = 20_000;
    // Directly against PostgreSQL.
    let (direct, conn) = tokio_postgres::connect(
        &env.pg
            .conn_string("app_rw", support::pgward::BACKEND_PASSWORD, "appdb"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let futs = (0..n).map(|_| direct.simple_query(&sql));
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(futs),
    )
    .await;
    eprintln!(
        "direct: {} after {:?}",
        if r.is_ok() { "done" } else { "TIMED OUT" },
        started.elapsed()
    );
    let c = env.client("appdb").await;
    let started = Instant::now();
    let futs = (0..n).map(|_| c.simple_query(&sql));
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(futs),
    )
    .await;
    eprintln!(
        "through pgward: {} after {:?}",
        if r.is_ok() { "done" } else { "TIMED OUT" },
        started.elapsed()
    );
    assert!(r.is_ok(), "pipeline through pgward deadlocked");
}

/// 6. A refusal inside a pipeline commits what came before it (injected Sync), where
/// PostgreSQL would roll the implicit transaction back.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_in_a_pipeline_rolls_back_its_earlier_statements() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup
        .batch_execute("CREATE TABLE t6 (x int)")
        .await
        .unwrap();
    let mut a = RawSession::login(port, "appdb");
    let mut bytes = parse("INSERT INTO t6 VALUES (1)");
    bytes.extend_from_slice(&bind(&[]));
    bytes.extend_from_slice(&execute());
    bytes.extend_from_slice(&parse("LISTEN x"));
    bytes.extend_from_slice(&bind(&[]));
    bytes.extend_from_slice(&execute());
    bytes.extend_from_slice(&sync());
    a.send(&bytes);
    let tags = until_ready(&mut a);
    eprintln!("A got {:?}", String::from_utf8_lossy(&tags));
    let n = one_value(&setup, "SELECT count(*) FROM t6").await;
    eprintln!("rows in t6: {n}");
    assert_eq!(
        n, "0",
        "PostgreSQL would have rolled the pipeline's INSERT back"
    );
}

/// 13. A hand-over reset that fails (here: a function left a 1 ms `statement_timeout` and a
/// thousand temporary tables, so `DISCARD ALL` is cancelled) must not let the next client's
/// statements run on a connection that still carries the previous client's state. The reset
/// used to go out as a Query of its own ahead of the client's messages, and the server ran
/// them after it failed. Now the server skips them, the client's session ends with 08006 and
/// the connection is closed. Checked for a simple Query and for a pipeline of two Syncs: the
/// server stops skipping at a Sync, so nothing may follow the first before the reset is
/// confirmed.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hand_over_reset_runs_nothing_of_the_next_client() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    env.pg.superuser_sql_in("appdb", SPOIL_THE_CONNECTION);
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE TABLE public.ran_after_reset (what text);
         GRANT INSERT, SELECT ON public.ran_after_reset TO PUBLIC",
    );
    let port = env.port();
    let pipelined = {
        let mut b = Vec::new();
        for what in ["first", "second"] {
            b.extend_from_slice(&parse(&format!(
                "INSERT INTO public.ran_after_reset VALUES ('{what} ' || current_setting('pgward_test.left_by', true))"
            )));
            b.extend_from_slice(&bind(&[]));
            b.extend_from_slice(&execute());
            b.extend_from_slice(&sync());
        }
        b
    };
    let simple = query_message(
        "INSERT INTO public.ran_after_reset VALUES ('simple ' || current_setting('pgward_test.left_by', true))",
    );
    for victim_sends in [simple, pipelined] {
        let a = env.client("appdb").await;
        // The victim logs in first: its login takes the (clean) connection and gives it back.
        let mut b = RawSession::login(port, "appdb");
        assert_eq!(
            one_value(&a, "SELECT public.spoil_the_connection()").await,
            "1"
        );
        b.send(&victim_sends);
        let codes = tokio::task::spawn_blocking(move || b.errors_until_closed())
            .await
            .unwrap();
        assert_eq!(
            codes,
            ["08006"],
            "the victim's session ends with a connection failure"
        );
        assert_eq!(
            env.pg
                .superuser_sql_in("appdb", "SELECT count(*) FROM public.ran_after_reset")
                .trim(),
            "0",
            "nothing the victim sent ran on the spoiled connection"
        );
        drop(a);
    }
    // The spoiled connections were closed: the next client gets a clean one.
    let c = env.client("appdb").await;
    assert_eq!(
        one_value(
            &c,
            "SELECT coalesce(current_setting('pgward_test.left_by', true), '')"
        )
        .await,
        ""
    );
    assert_eq!(one_value(&c, "SHOW statement_timeout").await, "0");
}

/// A function that makes the next `DISCARD ALL` on its connection fail: it leaves a 1 ms
/// `statement_timeout` and a thousand temporary tables, which take longer than that to drop.
const SPOIL_THE_CONNECTION: &str =
    "CREATE FUNCTION public.spoil_the_connection() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           FOR i IN 1..1000 LOOP
             EXECUTE format('CREATE TEMP TABLE spoiled_%s (x int)', i);
           END LOOP;
           PERFORM set_config('pgward_test.left_by', 'the previous client', false);
           PERFORM set_config('statement_timeout', '1', false);
           RETURN 1;
         END$$";

/// The same failing reset at login, when a client logs in on a connection another client
/// spoiled: the login fails with 08006 saying the connection could not be reset (not that a
/// startup parameter was refused), and the connection is closed. The client's startup
/// parameters are new to the server, so its login checks out a connection to apply them (a
/// login with parameters accepted moments ago takes none).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_reset_at_login_is_reported_as_such() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    env.pg.superuser_sql_in("appdb", SPOIL_THE_CONNECTION);
    let a = env.client("appdb").await;
    assert_eq!(
        one_value(&a, "SELECT public.spoil_the_connection()").await,
        "1"
    );
    let new_kind = format!(
        "{} application_name=first_of_its_kind",
        env.conn_str(APP_USER, APP_PASSWORD, "appdb")
    );
    let err = match tokio_postgres::connect(&new_kind, tokio_postgres::NoTls).await {
        Ok(_) => panic!("a login on the spoiled connection succeeded"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    assert!(
        db_message(&err).contains("could not be reset"),
        "{}",
        db_message(&err)
    );
    drop(a);
    let c = env.client("appdb").await;
    assert_eq!(one_value(&c, "SHOW statement_timeout").await, "0");
}

/// 14. The hand-over reset of a connection that keeps pgward's prepared statements is
/// `RESET ALL` and `RESET ROLE`, sent ahead of the next client's messages. It commits on its
/// own: were it part of the next client's first transaction, that client's ROLLBACK would
/// bring back what a function of the previous client set.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_clients_rollback_does_not_undo_the_hand_over_reset() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE FUNCTION public.leave_a_setting() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM set_config('pgward_test.left_by', 'the previous client', false);
           RETURN 1;
         END$$",
    );
    let left_by = "SELECT coalesce(current_setting('pgward_test.left_by', true), '')";
    let a = env.client("appdb").await;
    // B sends no startup parameters: no SETs of its own follow the reset (a Query of them
    // would commit it).
    let mut b = RawSession::login(env.port(), "appdb");
    // A prepared statement keeps the connection's statements through hand-overs.
    let stmt = a.prepare("SELECT public.leave_a_setting()").await.unwrap();
    let row = a.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    // B's first transaction, rolled back; its first message rides behind the reset.
    b.send(&query_message(&format!("BEGIN; {left_by}; ROLLBACK")));
    let (errors, rows) = b.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains("previous"), "{rows:?}");
    // The connection stays B's (no hand-over, no reset): the setting must still be gone.
    b.send(&query_message(left_by));
    let (errors, rows) = b.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!rows[0].contains("previous"), "{rows:?}");
    // A's statement survived the reset.
    assert_eq!(a.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 1);
    // Later hand-overs only bind the reset's statements, prepared on the connection the first
    // time: they reset as well.
    for round in 0..2 {
        b.send(&query_message(left_by));
        let (errors, rows) = b.until_ready();
        assert!(errors.is_empty(), "round {round}: {errors:?}");
        assert!(!rows[0].contains("previous"), "round {round}: {rows:?}");
        assert_eq!(a.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 1);
    }
    // A DO block (code pgward cannot read) gets the connection cleaned with DISCARD ALL when B
    // is done, which drops the reset's statements too: the next reset prepares them again.
    b.send(&query_message("DO $$BEGIN END$$"));
    let (errors, _) = b.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(a.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 1);
    b.send(&query_message(left_by));
    let (errors, rows) = b.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!rows[0].contains("previous"), "{rows:?}");
}
