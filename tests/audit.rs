//! Audit events and metrics from a real workload: the audit file has the required fields in
//! `seq` order, records sessions, failed logins and denied statements, never contains a password
//! or a literal a client sent, and its hash chain verifies (and a tampered line is found);
//! `/metrics` moves as clients connect and run statements.

mod support;

use std::io::{Read, Write};

use support::pgward::{
    APP_PASSWORD, APP_USER, Options, TestEnv, find_metric_sample, metric_sample, run,
};

const SECRET_LITERAL: &str = "s3cret-literal-4242";
const DENIED_LITERAL: &str = "denied-literal-7777";

fn audited_env() -> TestEnv {
    let env = TestEnv::with(Options {
        user_extra: "policy = \"ro\"".into(),
        extra: "
[policies.ro]
mode = \"enforce\"
read_only = true

[audit]
sink = \"file\"
path = \"audit.jsonl\"
fsync = \"always\"
chain = true
statements = \"all\"
"
        .into(),
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE TABLE t (v text); GRANT ALL ON t TO app_rw;",
    );
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_leaves_a_complete_redacted_verifiable_audit_trail() {
    let env = audited_env();
    let before = env.scrape_metrics();
    let pool = "pool=\"appdb/app_rw/ro\"";
    let c = env.client("appdb").await;
    let rows = c
        .query(&format!("SELECT '{SECRET_LITERAL}'"), &[])
        .await
        .expect("read allowed");
    assert_eq!(rows.len(), 1);
    let e = c
        .simple_query(&format!("INSERT INTO t VALUES ('{DENIED_LITERAL}')"))
        .await
        .expect_err("write denied");
    assert_eq!(support::pgward::sqlstate(&e).as_deref(), Some("42501"));
    let e = c
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(support::pgward::sqlstate(&e).as_deref(), Some("22012"));
    // Metrics moved: an active client, transactions on the read-only pool, policy decisions.
    let during = env.scrape_metrics();
    assert!(
        metric_sample(&during, "pgward_client_connections{state=\"idle\"}")
            + metric_sample(&during, "pgward_client_connections{state=\"active\"}")
            >= 1.0,
        "{during}"
    );
    let tx = format!("pgward_transactions_total{{{pool}}}");
    assert!(
        metric_sample(&during, &tx) > find_metric_sample(&before, &tx).unwrap_or(0.0),
        "{during}"
    );
    assert!(
        metric_sample(
            &during,
            "pgward_policy_decisions_total{outcome=\"denied\",policy=\"ro\"}"
        ) >= 1.0,
        "{during}"
    );
    drop(c);
    // A failed login is recorded too.
    assert!(
        env.try_client(APP_USER, "wrong-password", "appdb")
            .await
            .is_err()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let TestEnv { pgward, pg, dir } = env;
    // Stopping pgward flushes the audit queue.
    drop(pgward);
    drop(pg);
    let path = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("audit file");
    for secret in [
        APP_PASSWORD,
        SECRET_LITERAL,
        DENIED_LITERAL,
        "wrong-password",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} leaked into the audit file"
        );
    }
    let mut last_seq = 0;
    let mut events = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for field in ["ts", "event", "seq"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        let seq = v["seq"].as_u64().expect("seq");
        assert!(seq > last_seq, "seq out of order: {line}");
        last_seq = seq;
        events.push(v);
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in [
        "connection.accepted",
        "auth.succeeded",
        "session.started",
        "statement.denied",
        "session.ended",
        "auth.failed",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
    let denied = events
        .iter()
        .find(|e| e["event"] == "statement.denied")
        .expect("denied event");
    assert_eq!(denied["policy"], "ro");
    assert_eq!(denied["user"], APP_USER);
    assert_eq!(denied["database"], "appdb");
    assert!(
        denied["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16)
    );
    assert_eq!(denied["text"], "INSERT INTO t VALUES (?)", "{denied}");
    let executed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "statement.executed")
        .collect();
    let select = executed
        .iter()
        .find(|e| e["text"] == "SELECT ?")
        .unwrap_or_else(|| panic!("no executed SELECT in {executed:?}"));
    assert_eq!(select["command"], "SELECT");
    assert_eq!(select["rows"], 1);
    assert_eq!(select["kind"], "read");
    assert_eq!(select["protocol"], "extended");
    assert!(select["duration_us"].as_u64().is_some());
    let failed = executed
        .iter()
        .find(|e| e["sqlstate"] == "22012")
        .unwrap_or_else(|| panic!("no failed statement in {executed:?}"));
    assert_eq!(failed["protocol"], "simple");
    assert!(
        !executed
            .iter()
            .any(|e| e["text"].as_str().is_some_and(|t| t.starts_with("INSERT"))),
        "a denied statement never executed"
    );
    let started = events
        .iter()
        .find(|e| e["event"] == "session.started")
        .expect("started");
    assert!(started["sid"].as_u64().is_some() && started["client"].as_str().is_some());

    // The hash chain verifies; an edited line is found.
    let pgward_bin = env!("CARGO_BIN_EXE_pgward");
    let (ok, out, err) = run(std::process::Command::new(pgward_bin)
        .args(["audit", "verify"])
        .arg(&path));
    assert!(ok && out.contains("hash chain intact"), "{out}\n{err}");
    let tampered: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                l.replacen("\"seq\"", "\"seq\" ", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, tampered.join("\n") + "\n").expect("tamper");
    let (ok, out, err) = run(std::process::Command::new(pgward_bin)
        .args(["audit", "verify"])
        .arg(&path));
    assert!(!ok, "tampering must be detected: {out}");
    assert!(
        err.contains("line 4"),
        "the first break is the line after the edit: {err}"
    );
}

#[test]
fn health_endpoints_answer() {
    let env = TestEnv::with(Options::default());
    for (path, want) in [("/healthz", "200"), ("/nope", "404")] {
        let mut s = std::net::TcpStream::connect(env.pgward.admin_addr).expect("admin endpoint");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {out}"
        );
    }
    // Ready once the backend probe has reached PostgreSQL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut s = std::net::TcpStream::connect(env.pgward.admin_addr).expect("admin endpoint");
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
