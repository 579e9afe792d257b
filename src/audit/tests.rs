//! Delivery tests: the writer task with real files, local sockets and injected sinks (slow,
//! failing, partly failing), through the public [`Auditor`] handle.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::*;
use crate::policy::normalize::Fingerprint;

const SHUTDOWN: Duration = Duration::from_secs(10);

fn settings(sink: SinkSettings) -> AuditSettings {
    AuditSettings {
        sink,
        queue_capacity: 1000,
        on_full: OnFull::Block,
        fail_closed: false,
        statements: StatementFilter::Writes,
        chain: false,
        max_text_bytes: 4096,
    }
}

fn file_settings(path: &Path) -> AuditSettings {
    settings(SinkSettings::File {
        path: path.to_path_buf(),
        fsync: FsyncPolicy::Always,
    })
}

fn accepted(sid: u64) -> Event {
    let client: SocketAddr = "192.0.2.10:40000".parse().expect("addr");
    Event::new(EventFields::ConnectionAccepted)
        .sid(sid)
        .client(client)
}

fn statement(sid: u64) -> Event {
    Event::new(EventFields::StatementExecuted(StatementExecuted {
        fingerprint: Fingerprint(sid),
        text: NormalizedSql::from_sql("UPDATE t SET pw = 'secret' WHERE id = 7").ok(),
        kind: StatementKind::Write,
        protocol: Protocol::Extended,
        duration: Duration::from_micros(1234),
        command: CommandTag::parse(b"UPDATE 1"),
        sqlstate: None,
    }))
    .sid(sid)
    .identity(Arc::new(Identity::user("app")))
    .database("appdb")
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect()
}

/// What an injected sink does on one write.
#[derive(Debug, Clone, Copy)]
enum Step {
    Ok,
    /// Deliver this many lines, then fail.
    Fail(usize),
}

/// Collects lines in memory; optionally slow, optionally following a script of failures.
#[derive(Clone, Default)]
struct MemorySink {
    out: Arc<Mutex<Vec<u8>>>,
    delay: Duration,
    script: Arc<Mutex<VecDeque<Step>>>,
    writes: Arc<Mutex<usize>>,
}

impl MemorySink {
    fn slow(delay: Duration) -> MemorySink {
        MemorySink {
            delay,
            ..MemorySink::default()
        }
    }

    fn scripted(steps: &[Step]) -> MemorySink {
        MemorySink {
            script: Arc::new(Mutex::new(steps.iter().copied().collect())),
            ..MemorySink::default()
        }
    }

    fn text(&self) -> String {
        String::from_utf8(self.out.lock().expect("lock").clone()).expect("utf-8")
    }

    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

impl Sink for MemorySink {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        *self.writes.lock().expect("lock") += 1;
        let step = self
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Step::Ok);
        let mut out = self.out.lock().expect("lock");
        match step {
            Step::Ok => {
                out.extend_from_slice(batch.bytes());
                Ok(())
            }
            Step::Fail(n) => {
                let n = n.min(batch.len());
                for line in batch.lines().take(n) {
                    out.extend_from_slice(line.json);
                    out.push(b'\n');
                }
                Err(SinkError {
                    delivered: n,
                    error: io::Error::other("scripted failure"),
                })
            }
        }
    }
}

#[tokio::test]
async fn file_lines_are_json_with_the_contract_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let auditor = start(file_settings(&path)).await.expect("starts");
    auditor.emit(accepted(1)).await;
    auditor.emit(statement(1)).await;
    auditor
        .emit(Event::new(EventFields::ConfigReloaded {
            succeeded: true,
            errors: 0,
        }))
        .await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");

    let lines = read_lines(&path);
    assert_eq!(seqs(&lines), vec![1, 2, 3]);
    for v in &lines {
        let ts = v["ts"].as_str().expect("ts");
        assert!(
            ts.ends_with('Z') && ts.len() == 27 && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
        assert!(v["event"].is_string());
        assert!(v.get("sid").is_some());
        assert!(v.get("prev").is_none());
    }
    assert_eq!(lines[0]["event"], "connection.accepted");
    assert_eq!(lines[0]["client"], "192.0.2.10:40000");
    assert_eq!(lines[1]["event"], "statement.executed");
    assert_eq!(lines[1]["user"], "app");
    assert_eq!(lines[1]["database"], "appdb");
    assert_eq!(lines[1]["text"], "UPDATE t SET pw = ? WHERE id = ?");
    assert_eq!(lines[1]["command"], "UPDATE");
    assert_eq!(lines[1]["rows"], 1);
    assert_eq!(lines[1]["duration_us"], 1234);
    assert_eq!(lines[2]["sid"], Value::Null);
    assert!(
        !std::fs::read_to_string(&path)
            .expect("read")
            .contains("secret")
    );
    assert_eq!(
        auditor.stats(),
        AuditStats {
            queue_depth: 0,
            written: 3,
            dropped: 0,
            sink_failing: false
        }
    );
}

#[tokio::test]
async fn block_mode_with_a_slow_sink_loses_nothing() {
    let sink = MemorySink::slow(Duration::from_millis(5));
    let mut s = settings(SinkSettings::Stdout);
    s.queue_capacity = 4;
    let auditor = start_with_sink(s, sink.clone()).await.expect("starts");
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let a = auditor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                a.emit(accepted(t * 1000 + i)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let lines = sink.lines();
    assert_eq!(seqs(&lines), (1..=400).collect::<Vec<_>>());
    let stats = auditor.stats();
    assert_eq!((stats.written, stats.dropped), (400, 0));
    // Every session's events are there, in the order each session sent them.
    for t in 0..8u64 {
        let sids: Vec<u64> = lines
            .iter()
            .filter_map(|v| v["sid"].as_u64())
            .filter(|s| s / 1000 == t)
            .collect();
        assert_eq!(sids, (t * 1000..t * 1000 + 50).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn drop_mode_counts_what_does_not_fit() {
    let sink = MemorySink::slow(Duration::from_millis(50));
    let mut s = settings(SinkSettings::Stdout);
    s.queue_capacity = 2;
    s.on_full = OnFull::Drop;
    let auditor = start_with_sink(s, sink.clone()).await.expect("starts");
    for i in 0..100 {
        // Never waits, however slow the sink.
        tokio::time::timeout(Duration::from_millis(50), auditor.emit(accepted(i)))
            .await
            .expect("drop mode does not block");
    }
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let stats = auditor.stats();
    let written = sink.lines().len() as u64;
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.written, written);
    assert_eq!(written + stats.dropped, 100, "{stats:?}");
    // What was written is in order and gapless: seq is given at write time.
    assert_eq!(seqs(&sink.lines()), (1..=written).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_flushes_everything_queued() {
    let sink = MemorySink::slow(Duration::from_millis(2));
    let auditor = start_with_sink(settings(SinkSettings::Stdout), sink.clone())
        .await
        .expect("starts");
    for i in 0..500 {
        auditor.emit(accepted(i)).await;
    }
    assert!(auditor.stats().queue_depth > 0 || sink.lines().len() == 500);
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    assert_eq!(sink.lines().len(), 500);
    // After shutdown, events are counted as dropped, not queued forever.
    auditor.emit(accepted(9)).await;
    assert_eq!(auditor.stats().dropped, 1);
    auditor
        .shutdown(SHUTDOWN)
        .await
        .expect("second call is a no-op");
}

#[tokio::test]
async fn shutdown_gives_up_on_a_stuck_sink() {
    let sink = MemorySink::slow(Duration::from_secs(3600));
    let auditor = start_with_sink(settings(SinkSettings::Stdout), sink)
        .await
        .expect("starts");
    auditor.emit(accepted(1)).await;
    auditor.emit(accepted(2)).await;
    let r = auditor.shutdown(Duration::from_millis(100)).await;
    assert!(
        matches!(r, Err(AuditError::ShutdownTimeout { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn block_mode_retries_failed_writes_without_loss_or_duplicates() {
    let sink = MemorySink::scripted(&[Step::Fail(0), Step::Fail(1), Step::Fail(0), Step::Ok]);
    let mut s = settings(SinkSettings::Stdout);
    s.chain = true;
    s.fail_closed = true;
    let auditor = start_with_sink(s, sink.clone()).await.expect("starts");
    assert!(auditor.accepting_sessions());
    for i in 0..3 {
        auditor.emit(accepted(i)).await;
    }
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let report = chain::verify_reader(sink.text().as_bytes()).expect("chain intact");
    assert_eq!((report.lines, report.chained_from), (3, Some(1)));
    assert_eq!(seqs(&sink.lines()), vec![1, 2, 3]);
    assert!(!auditor.stats().sink_failing);
}

#[tokio::test]
async fn fail_closed_refuses_sessions_while_the_sink_fails() {
    let sink = MemorySink::scripted(&[Step::Fail(0); 3]);
    let mut s = settings(SinkSettings::Stdout);
    s.fail_closed = true;
    s.on_full = OnFull::Drop;
    let auditor = start_with_sink(s, sink.clone()).await.expect("starts");
    auditor.emit(accepted(1)).await;
    let mut refused = false;
    for _ in 0..100 {
        if !auditor.accepting_sessions() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused);
    assert!(auditor.stats().sink_failing);
    // The rejections a refusing server records are what probes the sink; once a write
    // succeeds, sessions are accepted again.
    for i in 0..10 {
        auditor
            .emit(
                Event::new(EventFields::ConnectionRejected {
                    reason: RejectReason::AuditUnavailable,
                })
                .sid(i),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        if auditor.accepting_sessions() {
            break;
        }
    }
    assert!(auditor.accepting_sessions());
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let stats = auditor.stats();
    assert!(stats.dropped >= 3, "{stats:?}");
    assert_eq!(stats.written as usize, sink.lines().len());
}

#[tokio::test]
async fn drop_mode_keeps_the_chain_valid_across_lost_writes() {
    let sink = MemorySink::scripted(&[Step::Ok, Step::Fail(1), Step::Ok, Step::Fail(0)]);
    let mut s = settings(SinkSettings::Stdout);
    s.chain = true;
    s.on_full = OnFull::Drop;
    let auditor = start_with_sink(s, sink.clone()).await.expect("starts");
    for i in 0..12 {
        auditor.emit(accepted(i)).await;
        // One event per batch, mostly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let report = chain::verify_reader(sink.text().as_bytes()).expect("chain intact");
    let stats = auditor.stats();
    assert_eq!(report.lines, stats.written);
    assert_eq!(stats.written + stats.dropped, 12, "{stats:?}");
    assert!(stats.dropped >= 1);
}

/// Counts fsyncs; the first `fail` of them fail.
#[derive(Clone, Default)]
struct Syncs {
    mem: MemorySink,
    syncs: Arc<Mutex<usize>>,
    fail: Arc<Mutex<usize>>,
}

impl Sink for Syncs {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.mem.write(batch).await
    }
    async fn sync(&mut self) -> io::Result<()> {
        *self.syncs.lock().expect("lock") += 1;
        let mut fail = self.fail.lock().expect("lock");
        if *fail > 0 {
            *fail -= 1;
            return Err(io::Error::other("scripted fsync failure"));
        }
        Ok(())
    }
}

fn fsync_settings(fsync: FsyncPolicy) -> AuditSettings {
    let mut s = settings(SinkSettings::File {
        path: "unused".into(),
        fsync,
    });
    s.fail_closed = true;
    s
}

#[tokio::test]
async fn fsync_policies() {
    // always: after every batch (one event per batch here).
    let sink = Syncs::default();
    let a = start_with_sink(fsync_settings(FsyncPolicy::Always), sink.clone())
        .await
        .expect("starts");
    for i in 0..3 {
        a.emit(accepted(i)).await;
        // One batch per event: wait for this one's fsync before the next event (a fixed sleep
        // let two events share a batch on a loaded machine).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while *sink.syncs.lock().expect("lock") < i as usize + 1
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*sink.syncs.lock().expect("lock"), 3);
    a.shutdown(SHUTDOWN).await.expect("shuts down");

    // never: not even at shutdown.
    let sink = Syncs::default();
    let a = start_with_sink(fsync_settings(FsyncPolicy::Never), sink.clone())
        .await
        .expect("starts");
    a.emit(accepted(1)).await;
    a.shutdown(SHUTDOWN).await.expect("shuts down");
    assert_eq!(*sink.syncs.lock().expect("lock"), 0);

    // interval: once for a burst, some time after it; a failure marks the sink failing
    // (sessions refused) until a retry succeeds.
    let sink = Syncs::default();
    *sink.fail.lock().expect("lock") = 2;
    let a = start_with_sink(
        fsync_settings(FsyncPolicy::Interval(Duration::from_millis(100))),
        sink.clone(),
    )
    .await
    .expect("starts");
    for i in 0..20 {
        a.emit(accepted(i)).await;
    }
    assert_eq!(*sink.syncs.lock().expect("lock"), 0);
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        refused |= !a.accepting_sessions();
        if *sink.syncs.lock().expect("lock") >= 3 && a.accepting_sessions() {
            break;
        }
    }
    assert!(refused, "a failed fsync fails the sink");
    assert!(a.accepting_sessions(), "a successful retry clears it");
    assert_eq!(*sink.syncs.lock().expect("lock"), 3);
    a.shutdown(SHUTDOWN).await.expect("shuts down");
}

#[tokio::test]
async fn events_too_long_for_the_sink_are_dropped() {
    #[derive(Clone, Default)]
    struct Small(MemorySink);
    impl Sink for Small {
        async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
            self.0.write(batch).await
        }
        fn max_line(&self) -> Option<usize> {
            Some(200)
        }
    }
    let sink = Small::default();
    let auditor = start_with_sink(settings(SinkSettings::Stdout), sink.clone())
        .await
        .expect("starts");
    auditor.emit(accepted(1)).await;
    auditor.emit(statement(2)).await; // longer than 200 bytes
    auditor.emit(accepted(3)).await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let lines = sink.0.lines();
    assert_eq!(seqs(&lines), vec![1, 3]);
    assert_eq!(auditor.stats().dropped, 1);
}

#[tokio::test]
async fn logrotate_rename_is_followed_automatically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut s = file_settings(&path);
    s.chain = true;
    let auditor = start(s).await.expect("starts");
    auditor.emit(accepted(1)).await;
    auditor.emit(accepted(2)).await;
    wait_for_lines(&path, 2).await;
    std::fs::rename(&path, &rotated).expect("rotate");
    // The writer checks the path about once a second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    auditor.emit(accepted(3)).await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");

    assert_eq!(seqs(&read_lines(&rotated)), vec![1, 2]);
    assert_eq!(seqs(&read_lines(&path)), vec![3]);
    // Each file verifies on its own: the new one starts from genesis.
    for p in [&rotated, &path] {
        let r = verify_file(p).expect("intact");
        assert_eq!(r.chained_from, Some(1));
    }
}

#[tokio::test]
async fn reopen_follows_a_rotation_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let auditor = start(file_settings(&path)).await.expect("starts");
    auditor.emit(accepted(1)).await;
    wait_for_lines(&path, 1).await;
    std::fs::rename(&path, &rotated).expect("rotate");
    auditor.reopen(); // what the SIGHUP handler calls
    auditor.emit(accepted(2)).await;
    wait_for_lines(&path, 1).await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    assert_eq!(seqs(&read_lines(&rotated)), vec![1]);
    assert_eq!(seqs(&read_lines(&path)), vec![2]);
}

async fn wait_for_lines(path: &Path, n: usize) {
    for _ in 0..200 {
        if std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never had {n} lines", path.display());
}

#[tokio::test]
async fn chain_verifies_and_an_edit_is_found_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut s = file_settings(&path);
    s.chain = true;
    let auditor = start(s.clone()).await.expect("starts");
    for i in 0..5 {
        auditor.emit(statement(i)).await;
    }
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");

    // A second process appends: the chain continues from the last line, seq starts over.
    let auditor = start(s).await.expect("starts again");
    auditor.emit(accepted(9)).await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let report = verify_file(&path).expect("intact");
    assert_eq!(
        (report.lines, report.chained_from, report.restarts),
        (6, Some(1), 1)
    );
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(1)));

    // Change one field of line 3: the break shows at line 4.
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("\"rows\":1", "\"rows\":0");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    match verify_file(&path) {
        Err(VerifyError::Break {
            line: 4,
            problem: Break::PrevMismatch { expected, found },
        }) => {
            assert_eq!(
                expected,
                encode::hex_sha256(&chain::line_hash(lines[2].as_bytes()))
            );
            assert_ne!(expected, found);
        }
        other => panic!("expected a break at line 4, got {other:?}"),
    }
}

#[tokio::test]
async fn syslog_over_tcp_end_to_end() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let auditor = start(settings(SinkSettings::Syslog(SyslogSettings {
        address: addr.to_string(),
        protocol: SyslogProtocol::Tcp,
        facility: 16,
        app_name: "pgward".into(),
    })))
    .await
    .expect("starts");
    let (conn, _) = listener.accept().await.expect("accept");
    auditor
        .emit(
            Event::new(EventFields::AuthFailed {
                method: Some(AuthMethod::Scram),
                reason: AuthFailure::WrongPassword,
            })
            .sid(3),
        )
        .await;
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
    let mut r = BufReader::new(conn);
    let mut len = Vec::new();
    r.read_until(b' ', &mut len).await.expect("length");
    let len: usize = std::str::from_utf8(&len[..len.len() - 1])
        .expect("ascii")
        .parse()
        .expect("number");
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await.expect("frame");
    let msg = String::from_utf8(msg).expect("utf-8");
    // local0 (16) * 8 + warning (4) = 132.
    assert!(msg.starts_with("<132>1 "), "{msg}");
    let json = msg.splitn(8, ' ').nth(7).expect("MSG");
    let v: Value = serde_json::from_str(json).expect("json");
    assert_eq!(
        (
            v["event"].as_str(),
            v["reason"].as_str(),
            v["method"].as_str()
        ),
        (
            Some("auth.failed"),
            Some("wrong_password"),
            Some("scram-sha-256")
        )
    );
}

#[tokio::test]
async fn syslog_over_udp_end_to_end() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let auditor = start(settings(SinkSettings::Syslog(SyslogSettings {
        address: receiver.local_addr().expect("addr").to_string(),
        protocol: SyslogProtocol::Udp,
        facility: 10,
        app_name: "pgward".into(),
    })))
    .await
    .expect("starts");
    auditor.emit(accepted(1)).await;
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(SHUTDOWN, receiver.recv(&mut buf))
        .await
        .expect("in time")
        .expect("datagram");
    let msg = std::str::from_utf8(&buf[..n]).expect("utf-8");
    assert!(msg.starts_with("<86>1 "), "{msg}");
    assert!(msg.contains(" connection.accepted - {\"ts\":"), "{msg}");
    auditor.shutdown(SHUTDOWN).await.expect("shuts down");
}

#[tokio::test]
async fn a_disabled_auditor_does_nothing() {
    let a = Auditor::disabled();
    assert!(!a.enabled() && !a.wants_statement(true) && a.accepting_sessions());
    a.emit(accepted(1)).await;
    a.emit_now(accepted(2));
    a.reopen();
    assert_eq!(a.stats().written, 0);
    a.shutdown(SHUTDOWN).await.expect("no-op");
}

#[tokio::test]
async fn the_statement_filter() {
    for (filter, read, write) in [
        (StatementFilter::All, true, true),
        (StatementFilter::Writes, false, true),
        (StatementFilter::None, false, false),
    ] {
        let mut s = settings(SinkSettings::Stdout);
        s.statements = filter;
        let a = start_with_sink(s, MemorySink::default())
            .await
            .expect("starts");
        assert_eq!(
            (a.wants_statement(false), a.wants_statement(true)),
            (read, write)
        );
        a.shutdown(SHUTDOWN).await.expect("shuts down");
    }
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(file_settings(&dir.path().join("missing/audit.jsonl"))).await;
    assert!(matches!(r, Err(AuditError::Open { .. })), "{r:?}");
}
