//! What happens when clients misbehave or give up: a client killed while holding a lock, a
//! cancelled query, a cancel with the wrong key, COPY in both directions, notices, LISTEN/NOTIFY
//! in session mode, and protocol version negotiation.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::pgward::{Options, TestEnv, one_value, run, sqlstate};
use support::wire::msg;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

#[tokio::test(flavor = "multi_thread")]
async fn killed_client_does_not_leave_its_lock_held() {
    let env = TestEnv::with(Options {
        pool_size: 2,
        ..Options::default()
    });
    let setup = env.client("appdb").await;
    setup
        .batch_execute("CREATE TABLE locked(id int primary key); INSERT INTO locked VALUES (1)")
        .await
        .expect("setup");
    // psql takes the row lock and sleeps; then it is killed (no Terminate, no ROLLBACK).
    let mut psql = env
        .psql("appdb")
        .args([
            "-c",
            "BEGIN",
            "-c",
            "SELECT id FROM locked WHERE id = 1 FOR UPDATE",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let deadline = Instant::now() + Duration::from_secs(10);
    while one_value(
        &setup,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'",
    )
    .await
        != "1"
    {
        assert!(Instant::now() < deadline, "psql never started sleeping");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    psql.kill().expect("kill psql");
    let _ = psql.wait();
    let started = Instant::now();
    setup
        .batch_execute("SET lock_timeout = '5s'")
        .await
        .expect("lock timeout");
    let rows = setup
        .simple_query("SELECT id FROM locked WHERE id = 1 FOR UPDATE")
        .await
        .expect("the lock must be free again");
    assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "lock freed only after {:?}",
        started.elapsed()
    );
    assert_eq!(
        one_value(
            &setup,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'"
        )
        .await,
        "0",
        "the abandoned query must not keep running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_with_the_clients_key_stops_its_query_only() {
    let env = TestEnv::start();
    let client = env.client("appdb").await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let started = Instant::now();
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (r.map(|_| ()), started.elapsed(), client)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let (result, took, client) = sleeper.await.expect("task");
    let e = result.expect_err("the query must be cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    assert_eq!(one_value(&client, "SELECT 'usable'").await, "usable");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_with_a_wrong_key_is_ignored() {
    let env = TestEnv::start();
    let client = env.client("appdb").await;
    let port = env.port();
    let sleeper =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1.5), 'done'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Forge cancel requests for every plausible key: none may land.
    for (pid, secret) in [(1i32, 1i32), (0, 0), (i32::MAX, -1)] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut packet = Vec::new();
        packet.extend_from_slice(&16i32.to_be_bytes());
        packet.extend_from_slice(&80_877_102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&secret.to_be_bytes());
        s.write_all(&packet).expect("send");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let rows = sleeper
        .await
        .expect("task")
        .expect("the query must finish normally");
    assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
}

#[test]
fn copy_in_and_out_through_transaction_mode() {
    let env = TestEnv::start();
    let (ok, _, err) = run(env
        .psql("appdb")
        .args(["-c", "CREATE TABLE items(id int, name text)"]));
    assert!(ok, "{err}");
    let mut child = env
        .psql("appdb")
        .args(["-c", "\\copy items FROM STDIN"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql copy in");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for i in 0..5000 {
            writeln!(stdin, "{i}\tname {i}").expect("write row");
        }
    }
    let out = child.wait_with_output().expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out, err) =
        run(env
            .psql("appdb")
            .args(["-At", "-c", "SELECT count(*), sum(id) FROM items"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5000|12497500");
    let (ok, out, err) = run(env
        .psql("appdb")
        .args(["-c", "\\copy (SELECT * FROM items ORDER BY id) TO STDOUT"]));
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines[4999], "4999\tname 4999");
    // A failing COPY leaves the session usable.
    let (ok, out, err) = run(env.psql("appdb").args([
        "-v",
        "ON_ERROR_STOP=0",
        "-c",
        "COPY items FROM STDIN",
        "-At",
        "-c",
        "SELECT 'after'",
    ]));
    let _ = ok;
    assert!(out.contains("after"), "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notices_and_listen_notify_in_session_mode() {
    let env = TestEnv::start();
    let (listener, mut conn) = tokio_postgres::connect(
        &env.conn_str(
            support::pgward::APP_USER,
            support::pgward::APP_PASSWORD,
            "appdb_session",
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN jobs").await.expect("listen");
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .expect("notice");
    let sender = env.client("appdb").await;
    sender
        .batch_execute("NOTIFY jobs, 'job-42'")
        .await
        .expect("notify");
    let mut saw_notice = false;
    let mut saw_notification = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(saw_notice && saw_notification) {
        // The listener sees the notification when it next reads from the server.
        let _ = listener.simple_query("SELECT 1").await;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(AsyncMessage::Notice(n))) => {
                saw_notice |= n.message() == "hello from plpgsql";
            }
            Ok(Some(AsyncMessage::Notification(n))) => {
                saw_notification |= n.channel() == "jobs" && n.payload() == "job-42";
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(saw_notice, "notice not relayed");
    assert!(saw_notification, "notification not relayed");
}

/// A client asking for protocol 3.2 with an unknown protocol option gets
/// NegotiateProtocolVersion (3.0, naming the option) and then continues, as with PostgreSQL 15.
#[test]
fn newer_protocol_minor_is_negotiated_down() {
    let env = TestEnv::start();
    let mut s = TcpStream::connect(("127.0.0.1", env.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let packet = support::pgward::startup_packet(
        (3 << 16) | 2,
        &[("user", "app"), ("database", "appdb"), ("_pq_.shiny", "1")],
    );
    s.write_all(&packet).expect("send startup");
    let mut header = [0u8; 5];
    s.read_exact(&mut header).expect("read reply");
    assert_eq!(header[0], b'v', "expected NegotiateProtocolVersion");
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 4;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).expect("read body");
    assert_eq!(&rest[..4], &0u32.to_be_bytes(), "newest minor version 0");
    assert_eq!(&rest[4..8], &1u32.to_be_bytes(), "one unsupported option");
    assert_eq!(&rest[8..], b"_pq_.shiny\0");
    // Then authentication starts, as usual.
    s.read_exact(&mut header).expect("read auth request");
    assert_eq!(header[0], b'R');
}

#[test]
fn ssl_and_gssenc_requests_are_answered_no() {
    let env = TestEnv::start();
    for code in [80_877_103u32, 80_877_104u32] {
        let mut s = TcpStream::connect(("127.0.0.1", env.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&code.to_be_bytes());
        s.write_all(&packet).expect("send");
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).expect("answer");
        assert_eq!(&answer, b"N");
    }
    // And libpq with sslmode=prefer falls back to plaintext.
    let (ok, out, err) = run(std::process::Command::new("psql").args([
        &format!(
            "host=127.0.0.1 port={} user=app password={} dbname=appdb sslmode=prefer",
            env.port(),
            support::pgward::APP_PASSWORD
        ),
        "-XAt",
        "-c",
        "SELECT 'plain'",
    ]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "plain");
}

/// Reads to ReadyForQuery; returns (error codes, data rows as text).
fn until_ready(s: &mut support::pgward::RawSession) -> (Vec<String>, Vec<String>) {
    s.until_ready()
}

#[test]
fn a_client_cannot_execute_another_clients_unnamed_statement() {
    use support::pgward::RawSession;
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let mut a = RawSession::login(env.port(), "appdb");
    let mut b = RawSession::login(env.port(), "appdb");
    // A parses the unnamed statement and syncs: its server goes back to the pool, where the
    // unnamed statement still exists.
    let mut batch = msg(b'P', b"\0SELECT 'secret-of-a'\0\0\0");
    batch.extend(msg(b'S', b""));
    a.send(&batch);
    let (errors, _) = until_ready(&mut a);
    assert!(errors.is_empty(), "{errors:?}");
    // B binds the unnamed statement without parsing it: refused, never A's statement.
    let mut batch = msg(b'B', b"\0\0\0\0\0\0\0\0");
    batch.extend(msg(b'E', b"\0\0\0\0\0"));
    batch.extend(msg(b'S', b""));
    b.send(&batch);
    let (errors, rows) = until_ready(&mut b);
    assert_eq!(errors, vec!["26000".to_string()]);
    assert!(rows.is_empty(), "B must not see A's statement: {rows:?}");
    // B's own Parse/Bind/Execute works on the same connection.
    let mut batch = msg(b'P', b"\0SELECT 'b-own'\0\0\0");
    batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(msg(b'E', b"\0\0\0\0\0"));
    batch.extend(msg(b'S', b""));
    b.send(&batch);
    let (errors, rows) = until_ready(&mut b);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("b-own"));
}

#[test]
fn a_refusal_inside_a_pipeline_skips_to_sync_like_postgres() {
    use support::pgward::RawSession;
    let env = TestEnv::start();
    let mut s = RawSession::login(env.port(), "appdb");
    // First statement runs; the second is LISTEN (refused in transaction mode); the rest
    // until Sync is skipped; one ReadyForQuery ends it.
    let mut batch = msg(b'P', b"\0SELECT 'first'\0\0\0");
    batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(msg(b'E', b"\0\0\0\0\0"));
    batch.extend(msg(b'P', b"\0LISTEN second\0\0\0"));
    batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(msg(b'E', b"\0\0\0\0\0"));
    batch.extend(msg(b'S', b""));
    s.send(&batch);
    let (errors, rows) = until_ready(&mut s);
    assert_eq!(errors, vec!["0A000".to_string()]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("first"));
    // The session goes on.
    s.send(&support::pgward::query_message("SELECT 'after'"));
    let (errors, rows) = until_ready(&mut s);
    assert!(errors.is_empty());
    assert!(rows[0].contains("after"), "{rows:?}");
}

#[test]
fn shutdown_ends_idle_sessions_with_57p01_and_lets_transactions_finish() {
    use support::pgward::{RawSession, error_code, query_message};
    let mut env = TestEnv::start();
    let mut idle = RawSession::login(env.port(), "appdb");
    let mut busy = RawSession::login(env.port(), "appdb");
    busy.send(&query_message("BEGIN"));
    let (errors, _) = until_ready(&mut busy);
    assert!(errors.is_empty());
    env.pgward.begin_shutdown();
    // The idle session is told and closed.
    let (tag, body) = idle.read_message();
    assert_eq!((tag, error_code(&body).as_str()), (b'E', "57P01"));
    assert!(idle.try_read_message().is_none(), "closed after the FATAL");
    // The session inside a transaction may finish it, then it is closed too.
    busy.send(&query_message("SELECT 'finishing'"));
    let (errors, rows) = until_ready(&mut busy);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1);
    busy.send(&query_message("COMMIT"));
    let (errors, _) = until_ready(&mut busy);
    assert!(errors.is_empty());
    assert_eq!(busy.errors_until_closed(), vec!["57P01".to_string()]);
    // New connections are no longer accepted.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", env.port())).is_err()
            || RawSession::try_login_fails(env.port()),
        "the listener is closed"
    );
}
