//! The statement policy's costs: the per-execution check of a statement already seen (a cache
//! hit, or for a named prepared statement only the client's name lookup), and the first sight of
//! a statement (normalize, fingerprint, parse, read-only classification, allowlist match).

use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use pgward::policy::allowlist::{AllowlistEntry, render};
use pgward::policy::normalize::{LiteralMode, normalize};
use pgward::policy::{Allowances, Mode, Policy, PolicySettings, Via};
use pgward::session::prepared::{ClientStatements, StatementRegistry};

const STATEMENTS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND o.created_at > $2 ORDER BY o.created_at DESC LIMIT 20",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
];

fn policy(dir: &std::path::Path, literals: LiteralMode) -> Policy {
    let entries: Vec<AllowlistEntry> = STATEMENTS
        .iter()
        .map(|s| {
            let n = normalize(s, literals).expect("normalizes");
            AllowlistEntry {
                fingerprint: n.fingerprint,
                text: n.text,
                name: None,
                comment: None,
            }
        })
        .collect();
    let path = dir.join(format!("allow-{literals:?}.toml"));
    std::fs::write(&path, render(&entries, "bench")).expect("write allowlist");
    Policy::new(PolicySettings {
        name: "bench".into(),
        mode: Mode::Enforce,
        prepared_only: literals == LiteralMode::Keep,
        read_only: false,
        allowlist: Some(path),
        literals,
        session_statements: vec!["BEGIN".into(), "COMMIT".into()],
        read_only_functions: Vec::new(),
        learn_file: None,
        max_statement_bytes: 1 << 20,
        allow: Allowances::default(),
    })
    .expect("policy")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = policy(dir.path(), LiteralMode::Keep);
    let sql = STATEMENTS[0].as_bytes();
    assert!(p.judge(sql, Via::Parse).denial.is_none());

    c.bench_function(
        "policy/check cached statement (unnamed Parse, simple Query)",
        |b| b.iter(|| black_box(p.judge(black_box(sql), Via::Parse))),
    );

    // pgbench -S over the simple protocol: the value is inline and new each time. With
    // literals replaced, the statement is found by its shape (integer literals masked).
    let replacing = policy(dir.path(), LiteralMode::Replace);
    let inline: Vec<String> = (1..=4096)
        .map(|aid| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"))
        .collect();
    assert!(
        replacing
            .judge(inline[7].as_bytes(), Via::SimpleQuery)
            .denial
            .is_none()
    );
    let mut next = inline.iter().cycle();
    c.bench_function(
        "policy/check an inline-literal statement, new value each time (by shape)",
        |b| {
            b.iter(|| {
                let sql = next.next().map_or(&[][..], |s| s.as_bytes());
                black_box(replacing.judge(black_box(sql), Via::SimpleQuery))
            })
        },
    );

    // A named statement is judged once, at Parse; each execution only finds the client's name.
    let registry = StatementRegistry::default();
    let mut client = ClientStatements::default();
    let mut tail = sql.to_vec();
    tail.extend_from_slice(&[0, 0, 0]);
    client.insert("P_0", registry.intern(&tail, || None));
    c.bench_function(
        "policy/execution of a named prepared statement (name lookup)",
        |b| b.iter(|| black_box(client.get(black_box("P_0")).map(Arc::clone))),
    );

    for (label, s) in [("short", STATEMENTS[0]), ("join", STATEMENTS[2])] {
        c.bench_function(
            &format!("policy/first sight: normalize + fingerprint ({label})"),
            |b| b.iter(|| black_box(normalize(black_box(s), LiteralMode::Keep))),
        );
        c.bench_function(
            &format!("policy/first sight: full analysis ({label})"),
            |b| b.iter(|| black_box(p.analyze(black_box(s.as_bytes())))),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
