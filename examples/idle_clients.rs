//! Opens many idle, authenticated PostgreSQL client connections and holds them: the client
//! side of `benches/idle_rss.sh`, which measures a pooler's memory per idle client.
//!
//! ```text
//! cargo run --release --example idle_clients -- "host=127.0.0.1 port=6432 user=bench password=… dbname=bench" 10000
//! ```
//!
//! Arguments: a libpq-style connection string (plaintext: tokio-postgres is built without TLS
//! here), the number of connections, and optionally how many logins run at once (default 64).
//! Each connection completes startup and authentication (SCRAM-SHA-256 when the server asks
//! for it) and then sends nothing. Once every connection is up the program prints one line,
//! `ready <opened> <failed>`, and keeps them open until its standard input closes (or it is
//! killed); it then closes them and prints `closed`. Raise `ulimit -n` above the count first.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls};

const DEFAULT_CONCURRENCY: usize = 64;

fn usage() -> ExitCode {
    eprintln!("usage: idle_clients CONNSTRING COUNT [CONCURRENCY]");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(conn_str), Some(count)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let Ok(count) = count.parse::<usize>() else {
        return usage();
    };
    let concurrency = match args.get(2).map(|c| c.parse::<usize>()) {
        None => DEFAULT_CONCURRENCY,
        Some(Ok(c)) if c > 0 => c,
        Some(_) => return usage(),
    };
    let config: tokio_postgres::Config = match conn_str.parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("idle_clients: bad connection string: {e}");
            return ExitCode::from(2);
        }
    };

    let started = Instant::now();
    let clients = open_all(Arc::new(config), count, concurrency).await;
    let opened = clients.iter().filter(|c| c.is_ok()).count();
    let failed = count - opened;
    if let Some(Err(first)) = clients.iter().find(|c| c.is_err()) {
        eprintln!("idle_clients: {failed} connection(s) failed; the first: {first}");
    }
    eprintln!(
        "idle_clients: {opened} connection(s) open in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("ready {opened} {failed}");

    // Hold the connections until stdin reaches EOF (the script closes its end of the pipe).
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    drop(clients);
    println!("closed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Opens `count` connections, at most `concurrency` logins at a time. Each connection's I/O
/// task is spawned and lives as long as its `Client`.
async fn open_all(
    config: Arc<tokio_postgres::Config>,
    count: usize,
    concurrency: usize,
) -> Vec<Result<Client, String>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let config = Arc::clone(&config);
        let permits = Arc::clone(&permits);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("idle_clients: a connection ended: {e}");
                }
            });
            Ok(client)
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        clients.push(task.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    clients
}
