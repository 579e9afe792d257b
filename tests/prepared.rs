//! Named prepared statements in transaction mode: each client's statements work on whichever
//! server connection it gets, under the client's own names, without clients seeing each
//! other's — checked with tokio-postgres and with raw protocol messages where the exact
//! sequence matters.

mod support;

use support::pgward::{Options, RawSession, TestEnv, query_message};
use support::wire::{bind_named, execute, parse_named, run_named, statement_target, sync};

type Param = dyn tokio_postgres::types::ToSql + Sync;

fn env_with(pool_size: usize) -> TestEnv {
    TestEnv::with(Options {
        pool_size,
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_statements_are_reused_across_transactions_and_connections() {
    let env = env_with(2);
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    let c = env.client("appdb").await;
    let sa = a.prepare("SELECT $1::int + 1").await.expect("prepare a");
    let sb = b
        .prepare("SELECT $1::text || '-b'")
        .await
        .expect("prepare b");
    let sc = c.prepare("SELECT $1::int + 1").await.expect("prepare c");
    // Many rounds: with three clients on two server connections each statement runs on
    // connections that did not prepare it.
    for i in 0..30i32 {
        let (text, ten) = (i.to_string(), i * 10);
        let pa: [&Param; 1] = [&i];
        let pb: [&Param; 1] = [&text];
        let pc: [&Param; 1] = [&ten];
        let (ra, rb, rc) = tokio::join!(
            a.query_one(&sa, &pa),
            b.query_one(&sb, &pb),
            c.query_one(&sc, &pc),
        );
        assert_eq!(ra.expect("a").get::<_, i32>(0), i + 1);
        assert_eq!(rb.expect("b").get::<_, String>(0), format!("{i}-b"));
        assert_eq!(rc.expect("c").get::<_, i32>(0), i * 10 + 1);
    }
    // Inside an explicit transaction too.
    a.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(
        a.query_one(&sa, &[&41])
            .await
            .expect("in tx")
            .get::<_, i32>(0),
        42
    );
    a.batch_execute("COMMIT").await.expect("commit");
    // Dropping a statement closes it for the client only; others keep theirs.
    drop(sa);
    assert_eq!(
        c.query_one(&sc, &[&1])
            .await
            .expect("c after a's close")
            .get::<_, i32>(0),
        2
    );
    let again = a
        .prepare("SELECT $1::int + 1")
        .await
        .expect("prepare again");
    assert_eq!(
        a.query_one(&again, &[&5])
            .await
            .expect("a again")
            .get::<_, i32>(0),
        6
    );
}

/// pgward with one more transaction-mode database `name` (appdb, pool of one) carrying the
/// extra `setting` line.
fn env_with_database(name: &str, setting: &str) -> TestEnv {
    TestEnv::with(Options {
        pool_size: 1,
        extra: format!(
            "\n[[databases]]\nname = \"{name}\"\ndbname = \"appdb\"\nport = PORT\n\
             backend_user = \"app_rw\"\nbackend_password_file = \"app_rw.password\"\n\
             pool_mode = \"transaction\"\npool_size = 1\n{setting}\n"
        ),
        ..Options::default()
    })
}

#[test]
fn two_clients_may_use_one_name_for_different_sql() {
    let env = env_with(1);
    let mut a = RawSession::login(env.port(), "appdb");
    let mut b = RawSession::login(env.port(), "appdb");
    for (s, text) in [(&mut a, "SELECT 'from-a'"), (&mut b, "SELECT 'from-b'")] {
        let mut batch = parse_named("s1", text, &[]);
        batch.extend(sync());
        s.send(&batch);
        let (errors, _) = s.until_ready();
        assert!(errors.is_empty(), "{errors:?}");
    }
    for _ in 0..3 {
        for (s, want, other) in [(&mut a, "from-a", "from-b"), (&mut b, "from-b", "from-a")] {
            let batch = run_named("s1");
            s.send(&batch);
            let (errors, rows) = s.until_ready();
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(rows.len(), 1);
            assert!(
                rows[0].contains(want) && !rows[0].contains(other),
                "{rows:?}"
            );
        }
    }
}

#[test]
fn postgres_errors_for_duplicate_and_unknown_names_and_the_session_goes_on() {
    let env = env_with(2);
    let mut s = RawSession::login(env.port(), "appdb");
    let mut batch = parse_named("dup", "SELECT 1", &[]);
    batch.extend(sync());
    s.send(&batch);
    assert!(s.until_ready().0.is_empty());
    // Same name again: 42P05, and the rest of the pipeline is skipped as PostgreSQL does.
    let mut batch = parse_named("dup", "SELECT 2", &[]);
    batch.extend(bind_named("dup", &[]));
    batch.extend(execute());
    batch.extend(sync());
    s.send(&batch);
    let (errors, rows) = s.until_ready();
    assert_eq!(errors, vec!["42P05".to_string()]);
    assert!(rows.is_empty());
    // The original statement still works.
    let batch = run_named("dup");
    s.send(&batch);
    let (errors, rows) = s.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1);
    // Unknown name: 26000.
    let batch = run_named("nope");
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["26000".to_string()]);
    // A Parse the server rejects leaves no name behind.
    let mut batch = parse_named("bad", "SELEC 1", &[]);
    batch.extend(sync());
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["42601".to_string()]);
    let batch = run_named("bad");
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["26000".to_string()]);
}

#[test]
fn close_then_reparse_under_the_same_name_in_one_pipeline() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    let mut batch = parse_named("q", "SELECT 'old'", &[]);
    batch.extend(sync());
    s.send(&batch);
    assert!(s.until_ready().0.is_empty());
    let mut batch = statement_target(b'C', "q");
    batch.extend(parse_named("q", "SELECT 'new'", &[]));
    batch.extend(bind_named("q", &[]));
    batch.extend(execute());
    batch.extend(sync());
    s.send(&batch);
    let (errors, rows, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("new"), "{rows:?}");
    // CloseComplete, ParseComplete, BindComplete, DataRow, CommandComplete, ReadyForQuery:
    // exactly what PostgreSQL answers, in its order.
    assert_eq!(tags, b"312DCZ".to_vec());
}

#[test]
fn describe_of_a_named_statement_on_another_connection() {
    let env = env_with(1);
    let mut a = RawSession::login(env.port(), "appdb");
    let mut b = RawSession::login(env.port(), "appdb");
    let mut batch = parse_named("d", "SELECT $1::int AS n, 'x'::text AS t", &[]);
    batch.extend(sync());
    a.send(&batch);
    assert!(a.until_ready().0.is_empty());
    // B takes the only connection and resets it with DISCARD ALL: A's statement is gone from
    // the server, and pgward must prepare it again before A's Describe.
    b.send(&query_message("DISCARD ALL"));
    assert!(b.until_ready().0.is_empty());
    let mut batch = statement_target(b'D', "d");
    batch.extend(sync());
    a.send(&batch);
    let (errors, _, tags) = a.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    // ParameterDescription, RowDescription, ReadyForQuery — nothing of pgward's own Parse.
    assert_eq!(tags, b"tTZ".to_vec());
}

#[test]
fn deallocate_and_discard_all_act_on_the_clients_own_statements() {
    let env = env_with(2);
    let mut s = RawSession::login(env.port(), "appdb");
    for name in ["one", "two", "three"] {
        let mut batch = parse_named(name, "SELECT 1", &[]);
        batch.extend(sync());
        s.send(&batch);
        assert!(s.until_ready().0.is_empty());
    }
    let run = |s: &mut RawSession, name: &str| {
        let batch = run_named(name);
        s.send(&batch);
        s.until_ready().0
    };
    s.send(&query_message("DEALLOCATE one"));
    let (errors, _, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, b"CZ".to_vec());
    assert_eq!(run(&mut s, "one"), vec!["26000".to_string()]);
    assert!(run(&mut s, "two").is_empty());
    s.send(&query_message("DEALLOCATE one"));
    assert_eq!(s.until_ready().0, vec!["26000".to_string()]);
    s.send(&query_message("DEALLOCATE ALL"));
    assert!(s.until_ready().0.is_empty());
    assert_eq!(run(&mut s, "two"), vec!["26000".to_string()]);
    // DISCARD ALL drops them too, as in PostgreSQL.
    let mut batch = parse_named("four", "SELECT 1", &[]);
    batch.extend(sync());
    s.send(&batch);
    assert!(s.until_ready().0.is_empty());
    s.send(&query_message("DISCARD ALL"));
    assert!(s.until_ready().0.is_empty());
    assert_eq!(run(&mut s, "four"), vec!["26000".to_string()]);
}

#[test]
fn statements_per_server_connection_are_bounded_by_an_lru() {
    // A database with a limit of 3 statements per server connection.
    let env = env_with_database("lru", "max_prepared_statements = 3");
    let mut s = RawSession::login(env.port(), "lru");
    for i in 0..8 {
        let mut batch = parse_named(&format!("s{i}"), &format!("SELECT {i}"), &[]);
        batch.extend(sync());
        s.send(&batch);
        assert!(s.until_ready().0.is_empty());
    }
    // Every statement still works (evicted ones are prepared again), results are right.
    for round in 0..2 {
        for i in 0..8 {
            let batch = run_named(&format!("s{i}"));
            s.send(&batch);
            let (errors, rows) = s.until_ready();
            assert!(errors.is_empty(), "round {round} s{i}: {errors:?}");
            assert!(rows[0].ends_with(&i.to_string()), "{rows:?}");
        }
    }
    s.send(&query_message(
        "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgward_%'",
    ));
    let (errors, rows) = s.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    let n: usize = rows[0]
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a count");
    assert!(n <= 3, "server holds {n} statements for a limit of 3");
}

#[test]
fn deallocate_after_an_unsynced_pipeline_is_answered_in_order() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    s.stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    // Parse/Bind/Execute and a Flush, no Sync; then DEALLOCATE ALL as a simple query.
    let mut batch = parse_named("p", "SELECT 'piped'", &[]);
    batch.extend(bind_named("p", &[]));
    batch.extend(execute());
    batch.extend(support::wire::msg(b'H', b""));
    batch.extend(query_message("DEALLOCATE ALL"));
    s.send(&batch);
    let (errors, rows, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("piped"));
    // ParseComplete, BindComplete, DataRow, CommandComplete (SELECT), CommandComplete
    // (DEALLOCATE ALL), ReadyForQuery.
    assert_eq!(tags, b"12DCCZ".to_vec());
    s.send(&run_named("p"));
    assert_eq!(s.until_ready().0, vec!["26000".to_string()]);
}

/// Parse `name` as `sql` and Sync; asserts it succeeded.
fn prepare_ok(s: &mut RawSession, name: &str, sql: &str) {
    let mut batch = parse_named(name, sql, &[]);
    batch.extend(sync());
    s.send(&batch);
    let (errors, _) = s.until_ready();
    assert!(errors.is_empty(), "prepare {name}: {errors:?}");
}

/// Runs `name` and returns its errors and rows.
fn run(s: &mut RawSession, name: &str) -> (Vec<String>, Vec<String>) {
    s.send(&run_named(name));
    s.until_ready()
}

#[test]
fn an_error_before_any_sync_skips_the_clients_messages_until_its_sync() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    // "keep" is on the (only) server connection: pgward answers a Parse of it by itself.
    prepare_ok(&mut s, "keep", "SELECT 'kept'");
    // A pipeline that fails while no Sync is queued; Flush asks for the answers.
    let mut batch = parse_named("boom", "SELECT 1/0", &[]);
    batch.extend(bind_named("boom", &[]));
    batch.extend(execute());
    batch.extend(support::wire::msg(b'H', b""));
    s.send(&batch);
    let (tag, _) = s.read_message();
    assert_eq!(tag, b'1');
    let (tag, body) = s.read_message();
    assert_eq!(tag, b'E');
    assert_eq!(support::pgward::error_code(&body), "22012");
    // PostgreSQL now skips every message until the client's Sync: a Close and a Parse that
    // pgward would answer by itself are skipped too, and change nothing.
    let mut batch = statement_target(b'C', "keep");
    batch.extend(parse_named("again", "SELECT 'kept'", &[]));
    batch.extend(bind_named("again", &[]));
    batch.extend(execute());
    batch.extend(support::wire::msg(b'H', b""));
    batch.extend(sync());
    s.send(&batch);
    let (errors, rows, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(tags, b"Z".to_vec(), "only the Sync is answered");
    let (errors, rows) = run(&mut s, "keep");
    assert!(
        errors.is_empty(),
        "the skipped Close left keep alone: {errors:?}"
    );
    assert!(rows[0].contains("kept"), "{rows:?}");
    assert_eq!(run(&mut s, "again").0, vec!["26000".to_string()]);
    // The Parse before the error did happen.
    assert_eq!(run(&mut s, "boom").0, vec!["22012".to_string()]);
}

#[test]
fn a_query_behind_a_pipeline_that_failed_before_its_sync_is_ignored_as_in_postgres() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        checkout_timeout: 3.0,
        ..Options::default()
    });
    let mut a = RawSession::login(env.port(), "appdb");
    let mut b = RawSession::login(env.port(), "appdb");
    // No Sync: the Parse fails, and PostgreSQL ignores everything until the Sync, the simple
    // Query included (no answer at all for it).
    let mut batch = parse_named("bad", "SELEC 1", &[]);
    batch.extend(support::wire::msg(b'H', b""));
    batch.extend(query_message("SELECT 'ignored'"));
    a.send(&batch);
    let (tag, body) = a.read_message();
    assert_eq!(tag, b'E');
    assert_eq!(support::pgward::error_code(&body), "42601");
    a.send(&query_message("SELECT 'also ignored'"));
    a.send(&sync());
    let (errors, rows, tags) = a.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(tags, b"Z".to_vec());
    // pgward expects no answer for the ignored Queries: the connection goes back to the pool
    // and the other client gets it.
    b.send(&query_message("SELECT 'b'"));
    let (errors, rows) = b.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains('b'), "{rows:?}");
    a.send(&query_message("SELECT 'a again'"));
    let (errors, rows) = a.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("a again"), "{rows:?}");
}

#[test]
fn a_failed_parse_is_taken_back_without_undoing_what_later_segments_did() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    // One write: a Parse that fails, then (next segment) Close and Parse of the same name.
    let mut batch = parse_named("s1", "SELEC 'broken'", &[]);
    batch.extend(sync());
    batch.extend(statement_target(b'C', "s1"));
    batch.extend(parse_named("s1", "SELECT 'fixed'", &[]));
    batch.extend(bind_named("s1", &[]));
    batch.extend(execute());
    batch.extend(sync());
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["42601".to_string()]);
    let (errors, rows, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("fixed"), "{rows:?}");
    assert_eq!(tags, b"312DCZ".to_vec());
    let (errors, rows) = run(&mut s, "s1");
    assert!(errors.is_empty(), "s1 is the fixed statement: {errors:?}");
    assert!(rows[0].contains("fixed"), "{rows:?}");
}

#[test]
fn a_skipped_close_keeps_the_name_for_later_segments_as_postgres_does() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    prepare_ok(&mut s, "s1", "SELECT 'original'");
    // Segment 1 fails before its Close of s1, which PostgreSQL then skips: s1 still exists
    // when segment 2 parses that name again.
    let mut batch = parse_named("x", "SELEC 1", &[]);
    batch.extend(statement_target(b'C', "s1"));
    batch.extend(sync());
    batch.extend(parse_named("s1", "SELECT 'replacement'", &[]));
    batch.extend(sync());
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["42601".to_string()]);
    assert_eq!(s.until_ready().0, vec!["42P05".to_string()]);
    let (errors, rows) = run(&mut s, "s1");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("original"), "{rows:?}");
    // Likewise a Parse skipped in segment 1: segment 2 cannot run the statement.
    let mut batch = parse_named("x", "SELEC 1", &[]);
    batch.extend(parse_named("s2", "SELECT 'skipped'", &[]));
    batch.extend(sync());
    batch.extend(run_named("s2"));
    s.send(&batch);
    assert_eq!(s.until_ready().0, vec!["42601".to_string()]);
    let (errors, rows) = s.until_ready();
    assert_eq!(errors, vec!["26000".to_string()]);
    assert!(rows.is_empty(), "{rows:?}");
}

#[test]
fn parse_inside_a_failed_transaction_block_fails_as_in_postgres() {
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    // The connection has the statement: pgward could answer a Parse of it by itself.
    prepare_ok(&mut s, "a", "SELECT 42");
    s.send(&query_message("BEGIN"));
    assert!(s.until_ready().0.is_empty());
    s.send(&query_message("SELECT 1/0"));
    assert_eq!(s.until_ready().0, vec!["22012".to_string()]);
    // PostgreSQL: 25P02 for a Parse in a failed block (except COMMIT/ROLLBACK and the like);
    // a Close works.
    let mut batch = parse_named("b", "SELECT 42", &[]);
    batch.extend(sync());
    s.send(&batch);
    let (errors, _, tags) = s.until_ready_tags();
    assert_eq!(errors, vec!["25P02".to_string()]);
    assert_eq!(tags, b"EZ".to_vec());
    let mut batch = statement_target(b'C', "a");
    batch.extend(sync());
    s.send(&batch);
    let (errors, _, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, b"3Z".to_vec());
    let mut batch = parse_named("rb", "ROLLBACK", &[]);
    batch.extend(sync());
    s.send(&batch);
    let (errors, _, tags) = s.until_ready_tags();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, b"1Z".to_vec());
    let (errors, _, tags) = {
        s.send(&run_named("rb"));
        s.until_ready_tags()
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, b"2CZ".to_vec());
    assert_eq!(run(&mut s, "b").0, vec!["26000".to_string()]);
    assert_eq!(run(&mut s, "a").0, vec!["26000".to_string()]);
}

/// The server-side number of the client's statement `sql` on the current connection.
fn server_id_of(s: &mut RawSession, sql: &str) -> u64 {
    s.send(&query_message(&format!(
        "SELECT name FROM pg_prepared_statements WHERE statement = '{}'",
        sql.replace('\'', "''")
    )));
    let (errors, rows) = s.until_ready();
    assert!(errors.is_empty(), "{errors:?}");
    let row = rows.first().expect("the statement is on the connection");
    let digits: String = row
        .rsplit("pgward_")
        .next()
        .expect("a pgward_ name")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a statement number")
}

#[test]
fn statements_dropped_or_prepared_by_a_function_do_not_poison_the_connection() {
    let env = env_with(1);
    // Functions that do, inside the server, what pgward cannot see: drop every prepared
    // statement of the session, or prepare one under a name pgward will use.
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE FUNCTION drop_all_statements() RETURNS int LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN 1; END $$; \
         CREATE FUNCTION drop_statement(n int) RETURNS int LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE format('DEALLOCATE pgward_%s', n); RETURN 1; END $$; \
         CREATE FUNCTION hijack(n int) RETURNS int LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE format('PREPARE pgward_%s AS SELECT %L', n, 'hijacked'); RETURN 1; END $$;",
    );
    let mut a = RawSession::login(env.port(), "appdb");
    let mut b = RawSession::login(env.port(), "appdb");
    prepare_ok(&mut a, "s", "SELECT 'a-stmt'");
    prepare_ok(&mut b, "t", "SELECT 'b-stmt'");
    assert!(run(&mut a, "s").0.is_empty());
    assert!(run(&mut b, "t").0.is_empty());

    // DEALLOCATE ALL behind pgward's back: the first use of a statement may fail (26000);
    // then pgward prepares again what it needs, for this client and for the others.
    a.send(&query_message("SELECT drop_all_statements()"));
    assert!(a.until_ready().0.is_empty());
    let (errors, _) = run(&mut a, "s");
    assert!(
        errors.is_empty() || errors == vec!["26000".to_string()],
        "{errors:?}"
    );
    for _ in 0..3 {
        let (errors, rows) = run(&mut a, "s");
        assert!(errors.is_empty(), "a after the heal: {errors:?}");
        assert!(rows[0].contains("a-stmt"), "{rows:?}");
        let (errors, rows) = run(&mut b, "t");
        assert!(errors.is_empty(), "b is not poisoned: {errors:?}");
        assert!(rows[0].contains("b-stmt"), "{rows:?}");
    }

    // One statement dropped: the same.
    let id = server_id_of(&mut b, "SELECT 'b-stmt'");
    a.send(&query_message(&format!("SELECT drop_statement({id})")));
    assert!(a.until_ready().0.is_empty());
    let (errors, _) = run(&mut b, "t");
    assert!(
        errors.is_empty() || errors == vec!["26000".to_string()],
        "{errors:?}"
    );
    for _ in 0..3 {
        let (errors, rows) = run(&mut b, "t");
        assert!(errors.is_empty(), "b after the heal: {errors:?}");
        assert!(rows[0].contains("b-stmt"), "{rows:?}");
        assert!(run(&mut a, "s").0.is_empty());
    }

    // A function prepares statements under the names pgward will give the next statements:
    // pgward closes a name before preparing it on a connection it does not know to have it,
    // so its own statement replaces the impostor.
    let next = id.max(server_id_of(&mut a, "SELECT 'a-stmt'")) + 1;
    for n in next..next + 5 {
        a.send(&query_message(&format!("SELECT hijack({n})")));
        assert!(a.until_ready().0.is_empty());
    }
    prepare_ok(&mut a, "mine", "SELECT 'mine'");
    let mut b_sql = parse_named("also", "SELECT 'b-own'", &[]);
    b_sql.extend(sync());
    b.send(&b_sql);
    assert!(b.until_ready().0.is_empty());
    let (errors, rows) = run(&mut a, "mine");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("mine"), "{rows:?}");
    let (errors, rows) = run(&mut b, "also");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("b-own"), "{rows:?}");
}

/// Sends `bytes` from another thread while the caller reads: a long pipeline would otherwise
/// fill the socket buffers both ways.
fn send_in_background(s: &RawSession, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let mut w = s.stream.try_clone().expect("clone stream");
    std::thread::spawn(move || w.write_all(&bytes).expect("send pipeline"))
}

#[test]
fn one_clients_statements_are_bounded_in_bytes() {
    let env = env_with_database("small", "max_client_statement_bytes = 4096");
    let mut s = RawSession::login(env.port(), "small");
    // Each statement is 1000 bytes of text: with its name and parameter count, four fit.
    let sql = |i: usize| format!("SELECT '{}{i}'", "x".repeat(990));
    for i in 0..4 {
        prepare_ok(&mut s, &format!("s{i}"), &sql(i));
    }
    let refused = |s: &mut RawSession, name: &str, text: &str| {
        let mut batch = parse_named(name, text, &[]);
        batch.extend(sync());
        s.send(&batch);
        s.until_ready().0
    };
    assert_eq!(refused(&mut s, "s4", &sql(4)), vec!["54000".to_string()]);
    // Too big on its own.
    let huge = format!("SELECT '{}'", "y".repeat(5000));
    assert_eq!(refused(&mut s, "h", &huge), vec!["54000".to_string()]);
    // Closing one makes room; a Parse the server rejects gives its bytes back.
    let mut batch = statement_target(b'C', "s0");
    batch.extend(sync());
    s.send(&batch);
    assert!(s.until_ready().0.is_empty());
    let broken = format!("SELEC '{}'", "z".repeat(991));
    assert_eq!(refused(&mut s, "bad", &broken), vec!["42601".to_string()]);
    prepare_ok(&mut s, "s4", &sql(4));
    let (errors, rows) = run(&mut s, "s4");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows[0].contains("x4"), "{rows:?}");
    // DEALLOCATE ALL gives everything back.
    s.send(&query_message("DEALLOCATE ALL"));
    assert!(s.until_ready().0.is_empty());
    for i in 10..14 {
        prepare_ok(&mut s, &format!("s{i}"), &sql(i));
    }
}

#[test]
fn portal_bookkeeping_is_bounded_within_one_transaction() {
    const LIMIT: usize = 10_000;
    let env = env_with(1);
    let mut s = RawSession::login(env.port(), "appdb");
    prepare_ok(&mut s, "one", "SELECT 1");
    // Outside a block every portal goes at its Sync: a long pipeline of named portals never
    // hits the limit.
    let mut batch = Vec::new();
    for i in 0..=LIMIT {
        let p = format!("p{i}");
        batch.extend(support::wire::bind_portal(&p, "one", &[]));
        batch.extend(support::wire::execute_portal(&p));
        batch.extend(sync());
    }
    let writer = send_in_background(&s, batch);
    for i in 0..=LIMIT {
        let (errors, _) = s.until_ready();
        assert!(errors.is_empty(), "segment {i}: {errors:?}");
    }
    writer.join().expect("writer");
    // Closed portals do not count either.
    s.send(&query_message("BEGIN"));
    assert!(s.until_ready().0.is_empty());
    let mut batch = Vec::new();
    for i in 0..=LIMIT {
        let p = format!("c{i}");
        batch.extend(support::wire::bind_portal(&p, "one", &[]));
        batch.extend(support::wire::close_portal(&p));
    }
    batch.extend(sync());
    let writer = send_in_background(&s, batch);
    let (errors, _) = s.until_ready();
    writer.join().expect("writer");
    assert!(errors.is_empty(), "{errors:?}");
    // Open portals inside one transaction block: refused past the limit with 54000, and the
    // block fails as it would on a PostgreSQL error.
    let mut batch = Vec::new();
    for i in 0..=LIMIT {
        batch.extend(support::wire::bind_portal(&format!("o{i}"), "one", &[]));
    }
    batch.extend(sync());
    let writer = send_in_background(&s, batch);
    let (errors, _, tags) = s.until_ready_tags();
    writer.join().expect("writer");
    assert_eq!(errors, vec!["54000".to_string()]);
    assert_eq!(tags.iter().filter(|t| **t == b'2').count(), LIMIT);
    s.send(&query_message("ROLLBACK"));
    assert!(s.until_ready().0.is_empty());
    // The block is over, its portals with it.
    s.send(&query_message("BEGIN"));
    assert!(s.until_ready().0.is_empty());
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(support::wire::bind_portal(&format!("o{i}"), "one", &[]));
    }
    batch.extend(sync());
    s.send(&batch);
    assert!(s.until_ready().0.is_empty());
    s.send(&query_message("COMMIT"));
    assert!(s.until_ready().0.is_empty());
}
