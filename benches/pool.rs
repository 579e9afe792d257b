//! Pool benchmarks: checkout + release of an idle server connection.
//!
//! In transaction mode every transaction checks a server connection out of its pool and releases
//! it at ReadyForQuery 'I', so this pair sits on the per-transaction hot path, and under load many
//! sessions do it at once against the same pool's mutex. The cases:
//!
//! - `uncontended`: one task loops checkout → release on a pool of one idle connection;
//! - `contended_2threads/size2`: two OS threads loop checkout → release on one pool of two
//!   connections: both usually find an idle connection, so this measures sharing the pool lock;
//! - `contended_2threads/size1`: the same with one connection, so a checkout usually finds it taken
//!   and queues, and the release hands the connection straight to that waiter (oneshot, timer,
//!   cross-thread wake-up): the cost of the FIFO handoff when a pool is exhausted.
//!
//! Throughput is in checkout/release cycles (all threads together). The idle connections are real
//! loopback `TcpStream`s, so the pool's `is_broken` probe runs as in production. They are opened
//! through the pool's public path (`checkout` opens a connection when the pool has room) against a
//! stub server on 127.0.0.1 that accepts any startup packet with AuthenticationOk, one
//! ParameterStatus, BackendKeyData and ReadyForQuery 'I', then stays silent and keeps the socket
//! open for the rest of the run.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgward::config::{BackendLogin, Database, PasswordSource, PoolMode, PoolSettings, Target};
use pgward::pool::{Pool, PoolKey, PoolStats};
use pgward::protocol::messages::{self as msg, TxStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Threads looping checkout → release in the contended cases.
const THREADS: usize = 2;

/// Accepts connections and logs each one in (no password asked), then holds it open.
async fn stub_server(listener: TcpListener) {
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(async move {
            // An error just ends this connection; the benchmark's checks would notice.
            let _ = login_and_hold(sock).await;
        });
    }
}

async fn login_and_hold(mut sock: TcpStream) -> std::io::Result<()> {
    // Startup packet: length (counting itself), then protocol version and parameters.
    let len = usize::try_from(sock.read_i32().await?).unwrap_or(0);
    let mut startup = vec![0; len.saturating_sub(4)];
    sock.read_exact(&mut startup).await?;

    let mut out = BytesMut::new();
    msg::put_auth_ok(&mut out);
    msg::put_parameter_status(&mut out, "server_version", "17.0");
    msg::put_backend_key(&mut out, 4242, 0x5eed);
    msg::put_ready(&mut out, TxStatus::Idle);
    sock.write_all(&out).await?;

    // Idle from here on: pgward sends nothing to an idle connection. Returns when it closes.
    let mut sink = [0u8; 64];
    while sock.read(&mut sink).await? > 0 {}
    Ok(())
}

/// A transaction-mode pool of `size` idle, logged-in connections to a fresh stub server.
/// Nothing expires: no lifetime, no idle timeout, hour-long timeouts.
async fn idle_pool(size: usize) -> Arc<Pool> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(stub_server(listener));

    let login = BackendLogin {
        user: "bench".into(),
        password: PasswordSource::None,
        read_only: false,
    };
    let database = Arc::new(Database {
        name: "bench".into(),
        target: Target {
            host: "127.0.0.1".into(),
            port,
            dbname: "bench".into(),
        },
        backend: login.clone(),
        allow_cleartext_password: false,
        tls: pgward::config::BackendTlsSettings::disabled(),
        reset_on_handover: true,
        max_prepared_statements: 200,
        max_client_statement_bytes: 16 * 1024 * 1024,
        pool: PoolSettings {
            mode: PoolMode::Transaction,
            size,
            min_idle: 0,
            connect_timeout: Duration::from_secs(3600),
            checkout_timeout: Duration::from_secs(3600),
            server_idle_timeout: None,
            server_lifetime: None,
        },
    });
    let key = PoolKey {
        database: "bench".into(),
        backend_user: "bench".into(),
        read_only: false,
    };
    let metrics = pgward::metrics::Metrics::new();
    let pool = Pool::new(key, database, login, None, metrics.pool("bench/bench"));

    // Each checkout finds the pool with room and opens a connection; releasing them all (buffers
    // empty after login) leaves them idle.
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        held.push(pool.checkout().await.expect("open a stub connection"));
    }
    held.into_iter().for_each(|g| g.release());
    assert_idle(&pool, size);
    pool
}

fn assert_idle(pool: &Pool, size: usize) {
    assert_eq!(
        pool.stats(),
        PoolStats {
            idle: size,
            total: size,
            waiting: 0,
        },
        "every connection back in the pool, none discarded"
    );
}

async fn cycle(pool: &Arc<Pool>) {
    pool.checkout().await.expect("checkout").release();
}

fn bench_uncontended(c: &mut Criterion, rt: &Runtime) {
    let pool = rt.block_on(idle_pool(1));
    let mut g = c.benchmark_group("pool_checkout_release");
    g.throughput(Throughput::Elements(1));
    g.bench_function("uncontended", |b| b.to_async(rt).iter(|| cycle(&pool)));
    g.finish();
    assert_idle(&pool, 1);
    pool.close();
}

/// `THREADS` OS threads, each driving its loop with `Handle::block_on` so they are guaranteed to
/// run in parallel. One criterion iteration is one cycle on every thread; the time reported is
/// the slowest thread's.
fn bench_contended(c: &mut Criterion, rt: &Runtime, size: usize) {
    let pool = rt.block_on(idle_pool(size));
    let mut g = c.benchmark_group("pool_checkout_release/contended_2threads");
    g.throughput(Throughput::Elements(THREADS as u64));
    g.bench_function(format!("size{size}"), |b| {
        b.iter_custom(|iters| {
            let start_line = Barrier::new(THREADS);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            start_line.wait();
                            let start = Instant::now();
                            rt.handle().block_on(async {
                                for _ in 0..iters {
                                    cycle(&pool).await;
                                }
                            });
                            start.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker thread"))
                    .max()
                    .unwrap_or_default()
            })
        })
    });
    g.finish();
    assert_idle(&pool, size);
    pool.close();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    bench_uncontended(c, &rt);
    bench_contended(c, &rt, 2);
    bench_contended(c, &rt, 1);
}

criterion_group!(pool_benches, benches);
criterion_main!(pool_benches);
