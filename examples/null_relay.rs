//! A relay that does nothing but copy bytes: each client connection gets its own upstream
//! connection (no pooling, no parsing, no authentication of its own; the client logs in to the
//! upstream through it). It is the floor for any tokio-based pooler on a given machine: the
//! performance comparison runs pgbench through it next to pgward and PgBouncer, to tell the
//! cost of relaying bytes through a user-space process apart from the cost of pgward's work.
//!
//! `cargo run --release --example null_relay -- 127.0.0.1:6497 127.0.0.1:5432`

#![forbid(unsafe_code)]

use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: null_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
