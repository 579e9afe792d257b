//! The per-statement cost of `statements = "all"` audit, piece by piece.
//!
//! With statement audit on, every statement a session forwards is described (fingerprint,
//! normalized text, read or write), paired with the server's answer, turned into a
//! `statement.executed` event and queued for the writer task, which stamps it, encodes it to
//! a JSON line (and hashes that line for the chain) and hands batches to the sink. pgbench
//! `-S` showed that path costing about a fifth of select-only throughput, so each step is
//! measured on its own here:
//!
//! - `describe`: what a session pays before forwarding: a cached text (the extended protocol,
//!   where the statement text never changes), and a simple-protocol Query whose literal is
//!   different every time (pgbench `-S -M simple`), which no cache of exact texts can serve;
//! - `pair`: `Executions` matching a sent Query with its CommandComplete and ReadyForQuery;
//! - `build event`: the event the relay builds from that (shared context cloned by reference);
//! - `encode`: the writer's work per event: the JSON line, without and with the hash chain
//!   (the `prev` field, and the SHA-256 of the line for the next one);
//! - `emit (writer keeps up)`: queueing one event with `Auditor::emit` (`on_full = "block"`)
//!   from a task on a two-thread runtime whose writer task drains into a sink that discards.
//!   Events go in timed bursts well under the queue's capacity, each written (untimed) before
//!   the next, so no emit waits for room: the cost a session sees per event;
//! - `per statement`: describe + pair + build + emit together, as a session does it, in the
//!   same bursts;
//! - `emit (queue kept full)`: emitting flat out, so the queue stays full and each emit waits
//!   for the writer: the writer's throughput (stamp, encode, batch, hand over) per event.
//!
//! Run with `cargo bench --bench audit`; the bursts' untimed waits make the emit cases take
//! several times their measurement time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use pgward::audit::chain::line_hash;
use pgward::audit::{
    AuditSettings, Auditor, Batch, CommandTag, Event, EventFields, FsyncPolicy, Identity, OnFull,
    Protocol, Sink, SinkError, SinkSettings, Stamp, StatementExecuted, StatementFilter,
    encode_event,
};
use pgward::session::executed::{Descriptions, Executions};

/// What pgbench `-S` sends, with `{}` for the account id.
const SELECT_ONLY: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = {};";
/// pgbench's select-only statement under `-M prepared` / `-M extended`.
const PREPARED: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
/// Distinct select-only texts cycled through: five times `Descriptions`' cache limit.
const QUERIES: u64 = 100_000;

/// A sink that takes every batch and keeps nothing: the writer never falls behind.
struct Discard(Arc<AtomicU64>);

impl Sink for Discard {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn select_only(aid: u64) -> String {
    SELECT_ONLY.replace("{}", &aid.to_string())
}

/// A session's shared event context, and the fields of one finished select.
fn event(d: &Descriptions, identity: &Arc<Identity>, database: &Arc<str>) -> Event {
    let what = d.describe(PREPARED.as_bytes());
    Event::new(EventFields::StatementExecuted(StatementExecuted {
        fingerprint: what.fingerprint,
        text: what.text.clone(),
        kind: what.kind,
        protocol: Protocol::Simple,
        duration: Duration::from_micros(87),
        command: CommandTag::parse(b"SELECT 1\0"),
        sqlstate: None,
    }))
    .sid(4711)
    .client("127.0.0.1:51234".parse::<SocketAddr>().expect("addr"))
    .identity(Arc::clone(identity))
    .database(Arc::clone(database))
}

/// Events queued per timed burst: well under the queue's capacity, so no emit waits for room.
const BURST: u64 = 5_000;

/// Waits (untimed) until the writer has written `target` events in all.
async fn written_up_to(written: &AtomicU64, target: u64) {
    while written.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn settings() -> AuditSettings {
    AuditSettings {
        sink: SinkSettings::File {
            path: "unused".into(),
            fsync: FsyncPolicy::Never,
        },
        queue_capacity: 10_000,
        on_full: OnFull::Block,
        fail_closed: false,
        statements: StatementFilter::All,
        chain: false,
        max_text_bytes: 4096,
    }
}

fn bench(c: &mut Criterion) {
    let identity = Arc::new(Identity::user("bench"));
    let database: Arc<str> = Arc::from("bench");

    // --- describe
    let d = Arc::new(Descriptions::default());
    c.bench_function("audit/describe: cached text (extended protocol)", |b| {
        b.iter(|| black_box(d.describe(black_box(PREPARED.as_bytes()))))
    });
    // More distinct texts than the cache keeps, so an exact-text cache misses as it would under
    // pgbench (a million accounts at scale 10).
    let queries: Arc<Vec<String>> = Arc::new((1..=QUERIES).map(select_only).collect());
    let mut i = 0;
    c.bench_function(
        "audit/describe: simple Query, a new literal each time (pgbench -S)",
        |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(d.describe(black_box(queries[i].as_bytes())))
            })
        },
    );

    // --- pairing and building
    let what = d.describe(PREPARED.as_bytes());
    let mut x = Executions::default();
    c.bench_function("audit/pair: Query, CommandComplete, ReadyForQuery", |b| {
        b.iter(|| {
            x.sent(Arc::clone(&what), Protocol::Simple, true);
            black_box(x.on_server(b'T', b""));
            black_box(x.on_server(b'D', b""));
            black_box(x.on_server(b'C', b"SELECT 1\0"));
            black_box(x.on_server(b'Z', b"I"))
        })
    });
    c.bench_function("audit/build event", |b| {
        b.iter(|| black_box(event(&d, &identity, &database)))
    });

    // --- encoding (the writer's share)
    let ev = event(&d, &identity, &database);
    let mut out = Vec::with_capacity(1024);
    let mut seq = 0u64;
    c.bench_function("audit/encode statement.executed", |b| {
        b.iter(|| {
            out.clear();
            seq += 1;
            let stamp = Stamp {
                ts: SystemTime::now(),
                seq,
                prev: None,
            };
            encode_event(&mut out, black_box(&ev), &stamp, 4096).expect("encodes");
            black_box(out.len())
        })
    });
    let mut prev = [0u8; 32];
    c.bench_function("audit/encode statement.executed, hash chain", |b| {
        b.iter(|| {
            out.clear();
            seq += 1;
            let stamp = Stamp {
                ts: SystemTime::now(),
                seq,
                prev: Some(&prev),
            };
            encode_event(&mut out, black_box(&ev), &stamp, 4096).expect("encodes");
            prev = line_hash(&out);
            black_box(out.len())
        })
    });
    out.clear();
    encode_event(
        &mut out,
        &ev,
        &Stamp {
            ts: SystemTime::now(),
            seq: 1,
            prev: Some(&prev),
        },
        4096,
    )
    .expect("encodes");
    println!(
        "one chained statement.executed line ({} bytes): {}",
        out.len(),
        String::from_utf8_lossy(&out)
    );

    // --- queueing, with the writer task on the other worker thread
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let written = Arc::new(AtomicU64::new(0));
    let auditor: Auditor = rt
        .block_on(pgward::audit::start_with_sink(
            settings(),
            Discard(Arc::clone(&written)),
        ))
        .expect("auditor");
    let mut emitted = 0u64;
    // Bursts well under the queue's capacity, each written before the next is timed: what a
    // session pays to emit while the writer keeps up. The waits make these slow to run.
    let mut g = c.benchmark_group("audit");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("emit (block mode, writer keeps up)", |b| {
        b.iter_custom(|iters| {
            let a = auditor.clone();
            let ev = ev.clone();
            let written = Arc::clone(&written);
            emitted += iters;
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut target = written.load(Ordering::Relaxed);
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(BURST);
                        let start = Instant::now();
                        for _ in 0..n {
                            a.emit(ev.clone()).await;
                        }
                        timed += start.elapsed();
                        left -= n;
                        target += n;
                        written_up_to(&written, target).await;
                    }
                    timed
                })
                .await
                .expect("task")
            })
        })
    });

    // --- all of it, as a session does per statement
    let mut next = 0;
    g.bench_function(
        "per statement: describe + pair + build + emit (pgbench -S)",
        |b| {
            b.iter_custom(|iters| {
                let a = auditor.clone();
                let identity = Arc::clone(&identity);
                let database = Arc::clone(&database);
                let queries = Arc::clone(&queries);
                let d = Arc::clone(&d);
                let written = Arc::clone(&written);
                let mut i = next;
                next = (next + iters as usize) % queries.len();
                emitted += iters;
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let mut x = Executions::default();
                        let mut target = written.load(Ordering::Relaxed);
                        let mut timed = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let n = left.min(BURST);
                            let start = Instant::now();
                            for _ in 0..n {
                                i = (i + 1) % queries.len();
                                x.sent(d.describe(queries[i].as_bytes()), Protocol::Simple, true);
                                x.on_server(b'C', b"SELECT 1\0");
                                if let Some(done) = x.on_server(b'Z', b"I") {
                                    let ev = Event::new(EventFields::StatementExecuted(done))
                                        .sid(4711)
                                        .identity(Arc::clone(&identity))
                                        .database(Arc::clone(&database));
                                    a.emit(ev).await;
                                }
                            }
                            timed += start.elapsed();
                            left -= n;
                            target += n;
                            written_up_to(&written, target).await;
                        }
                        timed
                    })
                    .await
                    .expect("task")
                })
            })
        },
    );

    // The writer's throughput: the queue is kept full, so each emit waits for the writer to
    // stamp, encode and hand over an event (the old reading of the emit benchmark).
    g.bench_function(
        "emit (block mode, queue kept full: writer throughput)",
        |b| {
            b.iter_custom(|iters| {
                let a = auditor.clone();
                let ev = ev.clone();
                emitted += iters;
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            a.emit(ev.clone()).await;
                        }
                        start.elapsed()
                    })
                    .await
                    .expect("task")
                })
            })
        },
    );
    g.finish();

    rt.block_on(auditor.shutdown(Duration::from_secs(10)))
        .expect("writer drains");
    assert_eq!(
        written.load(Ordering::Relaxed),
        emitted,
        "every event written"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
