//! The accept loop: admission against the client limit, one task per client, pool housekeeping,
//! and a graceful drain on shutdown. The listener and the shutdown signal are arguments, so tests
//! bind port 0 and run the whole server in process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// Serves clients from `listener` until `shutdown` completes, then drains: new connections are
/// refused, sessions end at their next idle point, and after `shutdown_timeout` the rest are cut.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let tasks = TaskTracker::new();
    for pool in app.pools() {
        let pool = Arc::clone(pool);
        let token = app.shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = pool.maintain(Duration::from_secs(1)) => {}
                _ = token.cancelled() => {}
            }
        });
    }
    if let Some(t) = &app.client_tls {
        let every = t.settings().reload_interval;
        let app = Arc::clone(&app);
        let token = app.shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => app.reload_tls(),
                    _ = token.cancelled() => break,
                }
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let permit = app.admit();
                if permit.is_none() {
                    tracing::warn!(%peer, "client connection limit reached");
                }
                let app = Arc::clone(&app);
                tasks.spawn(crate::session::serve(app, stream, peer, permit));
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: draining sessions");
    drop(listener);
    app.shutdown.cancel();
    tasks.close();
    let grace = app.config.server.shutdown_timeout;
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "sessions still open after the shutdown timeout"
        );
    }
    for pool in app.pools() {
        pool.close();
    }
}
