//! pgward: a security-enforcing PostgreSQL connection pooler.
//!
//! # Architecture
//!
//! ```text
//! accept ─► admission ─► startup ─► authenticate ─► route ─► relay loop ─► close
//! (server)   (app)       (session)  (auth::client)  (app)    (session::relay)
//! ```
//!
//! - [`server`] accepts connections and counts them against the client limit;
//! - [`session`] negotiates the startup packet, authenticates (SCRAM-SHA-256 with mock
//!   exchanges for unknown users), routes (user, database) to a [`pool::Pool`], and relays;
//! - [`pool`] keeps server connections per (database, backend role), logged in with credentials
//!   the client never sees (read from a file or environment variable at every connect);
//! - [`protocol`] frames and decodes only what decisions need; [`error`] decides what a client is
//!   told.
//!
//! # Lifecycle of a transaction-mode session
//!
//! The client authenticates to pgward. A server connection is checked out at login to learn the
//! server's parameters and validate the client's, then returned. Each transaction checks one out,
//! re-applies the client's own session state if the server carries someone else's, and returns
//! it at ReadyForQuery 'I'. A client that vanishes mid-query gets its query cancelled and its
//! transaction rolled back before the connection is reused.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_http;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod session;
pub mod signal;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use app::App;
pub use config::Config;

/// Runs pgward with `config` on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), app::StartError> {
    let app = App::start(config).await?;
    server::serve(app, listener, admin, shutdown).await;
    Ok(())
}

/// Like [`run`], with an `App` the caller keeps (tests use it to look at pools).
pub async fn run_app(
    app: Arc<App>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(app, listener, admin, shutdown).await;
}
