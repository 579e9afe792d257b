//! Process signals: SIGTERM and SIGINT start a graceful shutdown; SIGHUP reloads (the config
//! file, certificates, the audit file: see `App::reload`).

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Calls `on_hup` on every SIGHUP (reload the configuration, reopen the audit file after
/// logrotate, re-read certificates) until the process ends.
pub async fn on_hangup(on_hup: impl Fn()) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading");
        on_hup();
    }
}
