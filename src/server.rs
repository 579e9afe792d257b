//! The accept loop: admission against the client limit, one task per client, pool housekeeping,
//! the admin HTTP endpoint (metrics, health), and a graceful drain on shutdown. The listeners and
//! the shutdown signal are arguments, so tests bind port 0 and run the whole server in process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// Serves clients from `listener` until `shutdown` completes, then drains: new connections are
/// refused, sessions end at their next idle point, and after `shutdown_timeout` the rest are cut.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let tasks = TaskTracker::new();
    {
        let audit = app.audit.clone();
        app.metrics.set_audit_source(move || {
            let st = audit.stats();
            crate::metrics::AuditStats {
                queue_depth: st.queue_depth as u64,
                written: st.written,
                dropped: st.dropped,
            }
        });
    }
    if let Some(admin) = admin {
        let registry = app.metrics.registry().clone();
        let readiness: Arc<dyn crate::admin_http::Readiness> = Arc::new(Ready(Arc::clone(&app)));
        // The admin endpoint outlives the drain's start a little: /readyz says "draining".
        let stop = app.shutdown.clone();
        tasks.spawn(async move {
            crate::admin_http::serve(admin, registry, readiness, async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
            .await;
        });
    }
    {
        let app = Arc::clone(&app);
        let token = app.shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = probe_backends(&app) => {}
                _ = token.cancelled() => {}
            }
        });
    }
    {
        let app = Arc::clone(&app);
        let token = app.shutdown.clone();
        tasks.spawn(async move {
            let hup = crate::signal::on_hangup(|| {
                // Failures are logged, counted and audited by `reload`; the old config stays.
                let _ = app.reload();
            });
            tokio::select! {
                _ = hup => {}
                _ = token.cancelled() => {}
            }
        });
    }
    for pool in app.pools() {
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
    let grace = app.config().server.shutdown_timeout;
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "sessions still open after the shutdown timeout"
        );
    }
    for pool in app.pools() {
        pool.close();
    }
    // Whatever sessions queued is written before the process goes.
    if let Err(e) = app.audit.shutdown(Duration::from_secs(5)).await {
        tracing::error!(error = %e, "audit events were not all written at shutdown");
    }
}

/// /readyz: accepting (not draining) and at least one backend answered the last probe.
struct Ready(Arc<App>);

impl crate::admin_http::Readiness for Ready {
    fn ready(&self) -> Result<(), String> {
        if self.0.shutdown.is_cancelled() {
            return Err("draining".into());
        }
        if !self
            .0
            .backend_reachable
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err("no backend reachable".into());
        }
        if !self.0.audit.accepting_sessions() {
            return Err("audit sink failing (fail_closed)".into());
        }
        Ok(())
    }
}

/// Every few seconds, opens a TCP connection to each backend (no login): readiness means at
/// least one answers, or a pool holds live connections.
async fn probe_backends(app: &App) {
    loop {
        // Read each round: a reload may add or remove databases.
        let mut targets: Vec<(String, u16)> = app
            .config()
            .databases
            .values()
            .map(|d| (d.target.host.clone(), d.target.port))
            .collect();
        targets.sort();
        targets.dedup();
        let mut reachable = app.pools().iter().any(|p| p.stats().total > p.stats().idle);
        for (host, port) in &targets {
            if reachable {
                break;
            }
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            reachable = matches!(
                tokio::time::timeout(Duration::from_secs(2), connect).await,
                Ok(Ok(_))
            );
        }
        app.backend_reachable
            .store(reachable, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
