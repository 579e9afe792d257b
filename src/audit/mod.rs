//! Audit: the records a SIEM gets of who connected, who authenticated, which sessions ran and
//! which statements were executed or denied. This module owns the event types, their JSON
//! encoding, the sinks (stdout, file, syslog), delivery (a bounded queue to one writer task,
//! with `block`/`drop` behaviour when full and fail-closed admission while the sink fails) and
//! tamper evidence (the hash chain and its verifier).
//!
//! - [`event`], [`codes`]: typed events; nothing free-form, so secrets and literals cannot
//!   get in;
//! - [`encode`]: one JSON line per event, fields in a fixed order, ASCII only;
//! - [`sink`], [`file`](mod@file), [`syslog`]: destinations; `writer`: the task that feeds
//!   them;
//! - [`chain`]: `prev` hashes and [`verify_file`];
//! - [`settings`]: the `[audit]` configuration.
//!
//! Sessions hold an [`Auditor`] (a cheap clone). The hot path asks
//! [`Auditor::wants_statement`] before building a statement event, and [`Auditor::emit`]
//! only queues: encoding, `ts`/`seq` stamping and I/O happen in the writer task.

pub mod chain;
pub mod codes;
pub mod encode;
pub mod event;
pub mod file;
pub mod settings;
pub mod sink;
pub mod syslog;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;

pub use chain::{Break, VerifyError, VerifyReport, verify_file};
pub use encode::{Stamp, encode_event};
pub use event::{
    AdminInterface, AuthFailure, AuthMethod, CommandTag, DenialReason, EndReason, Event,
    EventFields, EventKind, Identity, NormalizedSql, Protocol, ReadOnlyReason, RejectReason,
    SessionEnded, SessionStarted, SqlState, StatementDenied, StatementExecuted, StatementKind,
    TlsFailure,
};
pub use settings::{
    AuditSettings, FsyncPolicy, OnFull, RawAudit, SinkSettings, StatementFilter, SyslogProtocol,
    SyslogSettings,
};
pub use sink::{Batch, Line, Sink, SinkError, StdoutSink};

use file::FileSink;
use syslog::SyslogSink;
use writer::{FAIL_OPEN, Shared, Writer, WriterOptions};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// With `chain = true`, the last line of the existing file could not be read.
    #[error("cannot read the last line of the audit destination to continue its hash chain: {0}")]
    ChainStart(std::io::Error),
    #[error(
        "the audit writer did not finish within the shutdown timeout; {unwritten} events queued were not written"
    )]
    ShutdownTimeout { unwritten: usize },
    #[error("the audit writer task failed: {0}")]
    Writer(String),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// Events waiting for the writer.
    pub queue_depth: usize,
    /// Events delivered to the sink.
    pub written: u64,
    /// Events lost: queue full in `drop` mode, failed writes in `drop` mode, events emitted
    /// after shutdown, events too long for the sink.
    pub dropped: u64,
    /// The last write, fsync or open failed and has not succeeded since.
    pub sink_failing: bool,
}

/// The handle sessions use to emit events. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct Auditor {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    on_full: OnFull,
    fail_closed: bool,
    statements: StatementFilter,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("enabled", &self.enabled())
            .finish()
    }
}

/// Opens the configured sink and starts the writer task.
pub async fn start(settings: AuditSettings) -> Result<Auditor, AuditError> {
    match &settings.sink {
        SinkSettings::Stdout => start_with_sink(settings, StdoutSink::new()).await,
        SinkSettings::File { path, .. } => {
            let sink = FileSink::open(path)
                .await
                .map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
            start_with_sink(settings, sink).await
        }
        SinkSettings::Syslog(s) => {
            let sink = SyslogSink::new(s.clone());
            start_with_sink(settings, sink).await
        }
    }
}

/// Starts the writer task on `sink` (tests and embedders bring their own). `settings.sink`
/// is used only for the fsync policy.
pub async fn start_with_sink<S: Sink>(
    settings: AuditSettings,
    mut sink: S,
) -> Result<Auditor, AuditError> {
    let prev = if settings.chain {
        match sink.last_line().await.map_err(AuditError::ChainStart)? {
            Some(line) => chain::line_hash(&line),
            None => chain::genesis_hash(),
        }
    } else {
        chain::genesis_hash()
    };
    let shared = Arc::new(Shared::default());
    // A receiver that is down at startup is not fatal; it fails (closed, if configured) until
    // it comes back.
    if let Err(e) = sink.maintain().await {
        shared.failing.fetch_or(FAIL_OPEN, Ordering::Relaxed);
        tracing::error!(error = %e, "audit sink unavailable at startup");
    }
    let fsync = match &settings.sink {
        SinkSettings::File { fsync, .. } => *fsync,
        _ => FsyncPolicy::Never,
    };
    let opts = WriterOptions {
        on_full: settings.on_full,
        fsync,
        chain: settings.chain,
        max_text_bytes: settings.max_text_bytes,
    };
    let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
    let writer = Writer::new(sink, Arc::clone(&shared), opts, prev);
    let task = tokio::spawn(writer.run(rx));
    Ok(Auditor {
        inner: Some(Arc::new(Inner {
            tx,
            shared,
            on_full: settings.on_full,
            fail_closed: settings.fail_closed,
            statements: settings.statements,
            task: Mutex::new(Some(task)),
        })),
    })
}

impl Auditor {
    /// A handle that records nothing (no `[audit]` section).
    pub fn disabled() -> Auditor {
        Auditor { inner: None }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether a `statement.executed` event is wanted for a statement; ask before building
    /// one. Denials and learned statements are always recorded.
    pub fn wants_statement(&self, is_write: bool) -> bool {
        match &self.inner {
            None => false,
            Some(i) => match i.statements {
                StatementFilter::All => true,
                StatementFilter::Writes => is_write,
                StatementFilter::None => false,
            },
        }
    }

    /// Queues `event`. With `on_full = "block"` this waits while the queue is full (nothing
    /// is lost); with `"drop"` it never waits, and a full queue drops the event (counted).
    ///
    /// The event is queued before the returned future is first polled when there is room (the
    /// usual case); only a full queue in `block` mode leaves a (boxed) wait. So the future is
    /// two words, not an `Event` plus a channel send: every session's task reserves room for
    /// the futures it may await, and idle sessions should stay small.
    pub fn emit(&self, event: Event) -> impl std::future::Future<Output = ()> + Send + '_ {
        let wait = self
            .inner
            .as_ref()
            .and_then(|inner| match inner.tx.try_send(event) {
                Ok(()) => None,
                Err(TrySendError::Full(event)) => {
                    // The writer may be lingering for a fuller batch: it has one.
                    inner.shared.full.notify_one();
                    if inner.on_full == OnFull::Block {
                        Some(Box::pin(async move {
                            if inner.tx.send(event).await.is_err() {
                                inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }))
                    } else {
                        inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    None
                }
            });
        async move {
            if let Some(wait) = wait {
                wait.await;
            }
        }
    }

    /// Queues `event` without waiting, whatever `on_full` says: for code that cannot await
    /// (a `Drop` impl). A full queue drops the event (counted), even in `block` mode.
    pub fn emit_now(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Err(e) = inner.tx.try_send(event) {
            if matches!(e, TrySendError::Full(_)) {
                inner.shared.full.notify_one();
            }
            inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// False while `fail_closed` is set and the sink is failing: new sessions should be
    /// refused (`connection.rejected`, reason `audit_unavailable`).
    pub fn accepting_sessions(&self) -> bool {
        match &self.inner {
            None => true,
            Some(i) => !(i.fail_closed && i.shared.failing.load(Ordering::Relaxed) != 0),
        }
    }

    /// Asks the writer to reopen its destination (SIGHUP after log rotation). Returns at once.
    pub fn reopen(&self) {
        if let Some(i) = &self.inner {
            i.shared.reopen.store(true, Ordering::Relaxed);
            i.shared.wake.notify_one();
        }
    }

    pub fn stats(&self) -> AuditStats {
        match &self.inner {
            None => AuditStats {
                queue_depth: 0,
                written: 0,
                dropped: 0,
                sink_failing: false,
            },
            Some(i) => AuditStats {
                queue_depth: i.tx.max_capacity() - i.tx.capacity(),
                written: i.shared.written.load(Ordering::Relaxed),
                dropped: i.shared.dropped.load(Ordering::Relaxed),
                sink_failing: i.shared.failing.load(Ordering::Relaxed) != 0,
            },
        }
    }

    /// Closes the queue (later events are dropped and counted), waits up to `timeout` for
    /// the writer to deliver what was queued and fsync, then stops it. Calling it again, or on
    /// another clone, returns at once.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        inner.shared.stop.cancel();
        let task = inner
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(mut task) = task else {
            return Ok(());
        };
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Writer(e.to_string())),
            Err(_) => {
                task.abort();
                let unwritten = inner.tx.max_capacity() - inner.tx.capacity();
                Err(AuditError::ShutdownTimeout { unwritten })
            }
        }
    }
}

#[cfg(test)]
mod tests;
