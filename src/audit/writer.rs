//! The writer task: the one consumer of the audit queue. It stamps events (`ts`, `seq`,
//! `prev`), encodes them into batches, hands batches to the [`Sink`], retries failures with
//! backoff, fsyncs on schedule, follows rotation and reports drops.
//!
//! Stamping happens here, at write time, so file order is `seq` order and the hash chain is
//! computed over exactly the bytes written. A batch that has to be re-sent after a rotation
//! is re-encoded with the new file's chain start (keeping its `seq` and `ts`), so every file
//! verifies on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::chain::{genesis_hash, line_hash};
use super::encode::{Stamp, encode_event};
use super::event::Event;
use super::settings::{FsyncPolicy, OnFull};
use super::sink::{Batch, BatchBuilder, Sink};

/// Events taken off the queue per batch.
const MAX_BATCH: usize = 256;
/// How long the writer waits for a batch to fill once it has an event.
const LINGER: Duration = Duration::from_millis(5);
/// How often the writer wakes up with nothing to write (fsync schedule, drop reports).
const TICK: Duration = Duration::from_millis(200);
/// How often the sink is asked to check its destination (rotation, reconnects).
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// Warnings about drops and sink errors: at most one per this.
const REPORT_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Bits of [`Shared::failing`]: each kind of failure is cleared by its own next success.
pub(super) const FAIL_WRITE: u8 = 1;
pub(super) const FAIL_SYNC: u8 = 2;
pub(super) const FAIL_OPEN: u8 = 4;

/// State the handle and the writer share; counters for [`super::AuditStats`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failing: AtomicU8,
    /// Set by [`super::Auditor::reopen`]; the writer reopens before its next write.
    pub reopen: AtomicBool,
    pub wake: Notify,
    /// A sender found the queue full: ends the writer's linger (only that, so a failing
    /// sink's backoff is not cut short by a full queue).
    pub full: Notify,
    /// Cancelled by shutdown: the writer closes the queue, drains it and ends.
    pub stop: CancellationToken,
}

impl Shared {
    fn set_failing(&self, bit: u8, failing: bool) {
        if failing {
            self.failing.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.failing.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct WriterOptions {
    pub on_full: OnFull,
    pub fsync: FsyncPolicy,
    pub chain: bool,
    pub max_text_bytes: usize,
}

pub(super) struct Writer<S: Sink> {
    sink: S,
    shared: Arc<Shared>,
    opts: WriterOptions,
    /// The last `seq` given out.
    seq: u64,
    /// The hash the next line's `prev` carries.
    prev: [u8; 32],
    /// `prev` before the batch being written.
    chain_start: [u8; 32],
    scratch: Vec<u8>,
    builder: BatchBuilder,
    /// Per event of the batch being written: its `seq` and `ts`; per line, its hash (chain).
    stamps: Vec<(u64, SystemTime)>,
    hashes: Vec<[u8; 32]>,
    unsynced_since: Option<Instant>,
    /// Wait before the next attempt after a failure.
    backoff: Duration,
    last_maintain: Instant,
    reported_drops: u64,
    last_drop_report: Option<Instant>,
    errors_unreported: u64,
    last_error_report: Option<Instant>,
}

impl<S: Sink> Writer<S> {
    /// `prev` is where the chain starts: the hash of the sink's last line, or genesis.
    pub(super) fn new(sink: S, shared: Arc<Shared>, opts: WriterOptions, prev: [u8; 32]) -> Self {
        Writer {
            sink,
            shared,
            opts,
            seq: 0,
            prev,
            chain_start: prev,
            scratch: Vec::with_capacity(1024),
            builder: BatchBuilder::default(),
            stamps: Vec::with_capacity(MAX_BATCH),
            hashes: Vec::with_capacity(MAX_BATCH),
            unsynced_since: None,
            backoff: BACKOFF_MIN,
            last_maintain: Instant::now(),
            reported_drops: 0,
            last_drop_report: None,
            errors_unreported: 0,
            last_error_report: None,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut events = Vec::with_capacity(MAX_BATCH);
        let tick_every = match self.opts.fsync {
            FsyncPolicy::Interval(d) => d.clamp(Duration::from_millis(10), TICK),
            _ => TICK,
        };
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                biased;
                () = self.shared.stop.cancelled(), if !closing => {
                    // Senders now get an error; what is queued is still delivered.
                    closing = true;
                    rx.close();
                }
                n = rx.recv_many(&mut events, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    // Linger briefly for more: one write (and one blocking-pool hop) per
                    // batch instead of per event, which under load is most of the cost. The
                    // writer sleeps through the linger rather than waiting on the queue, so
                    // senders do not wake it event by event, and takes what came meanwhile
                    // after; a sender that finds the queue full cuts the sleep short (see
                    // `Auditor::emit`). No linger when the batch is full: more is queued.
                    if !closing && events.len() < MAX_BATCH {
                        tokio::select! {
                            () = tokio::time::sleep(LINGER) => {}
                            () = self.shared.full.notified() => {}
                        }
                        while events.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(event) => events.push(event),
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = self.shared.wake.notified() => {}
                _ = tick.tick() => {}
            }
            self.housekeeping().await;
            if !events.is_empty() {
                self.write_events(&mut events).await;
                events.clear();
            }
        }
        if self.opts.fsync != FsyncPolicy::Never && self.unsynced_since.is_some() {
            self.sync().await;
        }
        self.report_drops(true);
    }

    /// Reopen requests, rotation checks, the fsync schedule and drop reports.
    async fn housekeeping(&mut self) {
        self.follow_destination().await;
        // Also the retry of a failed fsync, and the fsync of lines a failed batch delivered.
        let due = match (self.opts.fsync, self.unsynced_since) {
            (FsyncPolicy::Always, Some(_)) => true,
            (FsyncPolicy::Interval(every), Some(since)) => since.elapsed() >= every,
            _ => false,
        };
        if due {
            self.sync().await;
        }
        self.report_drops(false);
    }

    /// Handles a reopen request, or asks the sink to check its destination about once a
    /// second. Returns whether the destination changed (the chain then restarted).
    async fn follow_destination(&mut self) -> bool {
        let result = if self.shared.reopen.swap(false, Ordering::Relaxed) {
            if self.opts.fsync != FsyncPolicy::Never && self.unsynced_since.is_some() {
                // What went to the old file is made durable before it is let go.
                self.sync().await;
            }
            self.sink.reopen().await
        } else if self.last_maintain.elapsed() >= MAINTAIN_EVERY {
            self.sink.maintain().await
        } else {
            return false;
        };
        self.last_maintain = Instant::now();
        match result {
            Ok(changed) => {
                self.shared.set_failing(FAIL_OPEN, false);
                if changed {
                    self.restart_chain().await;
                }
                changed
            }
            Err(e) => {
                self.shared.set_failing(FAIL_OPEN, true);
                self.report_error("cannot open the audit destination", &e);
                false
            }
        }
    }

    /// The next line chains from the destination's last line, or from genesis.
    async fn restart_chain(&mut self) {
        if !self.opts.chain {
            return;
        }
        self.prev = match self.sink.last_line().await {
            Ok(Some(line)) => line_hash(&line),
            Ok(None) => genesis_hash(),
            Err(e) => {
                // The file will not verify from here; say so rather than stop writing.
                tracing::error!(error = %e, "cannot read the last audit line; the hash chain restarts from genesis");
                genesis_hash()
            }
        };
    }

    async fn sync(&mut self) {
        match self.sink.sync().await {
            Ok(()) => {
                self.unsynced_since = None;
                self.shared.set_failing(FAIL_SYNC, false);
            }
            Err(e) => {
                self.shared.set_failing(FAIL_SYNC, true);
                self.report_error("cannot fsync the audit file", &e);
            }
        }
    }

    /// Stamps, encodes and delivers `events`, retrying until delivered (`block`) or dropping
    /// what failed (`drop`).
    async fn write_events(&mut self, events: &mut Vec<Event>) {
        self.stamps.clear();
        for _ in events.iter() {
            self.seq += 1;
            self.stamps.push((self.seq, SystemTime::now()));
        }
        let mut batch = self.encode(events);
        let mut first = 0; // events before this one are delivered
        while !batch.is_empty() {
            let e = match self.sink.write(&batch).await {
                Ok(()) => {
                    self.delivered(batch.len());
                    self.backoff = BACKOFF_MIN;
                    break;
                }
                Err(e) => e,
            };
            let delivered = e.delivered.min(batch.len());
            self.delivered(delivered);
            first += delivered;
            self.shared.set_failing(FAIL_WRITE, true);
            self.report_error("cannot write audit events", &e.error);
            if self.opts.on_full == OnFull::Drop {
                let lost = (batch.len() - delivered) as u64;
                self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
                if self.opts.chain {
                    // The next line follows the last one actually written.
                    self.prev = match first {
                        0 => self.chain_start,
                        n => self.hashes[n - 1],
                    };
                }
                self.pause().await;
                return;
            }
            self.pause().await;
            if self.follow_destination().await && self.opts.chain {
                // A new file, whose chain starts afresh: re-encode what is left for it.
                events.drain(..first);
                self.stamps.drain(..first);
                first = 0;
                batch = self.encode(events);
            } else {
                batch = batch.tail(delivered);
            }
        }
        if self.opts.fsync == FsyncPolicy::Always {
            self.sync().await;
        }
    }

    /// Encodes `events` with their `self.stamps`, chaining from `self.prev` (afterwards the
    /// hash of the last line). An event too long for the sink is removed and counted as
    /// dropped: retrying it could never succeed.
    fn encode(&mut self, events: &mut Vec<Event>) -> Batch {
        self.hashes.clear();
        self.chain_start = self.prev;
        let max_line = self.sink.max_line();
        let mut dropped = 0u64;
        let mut i = 0;
        while i < events.len() {
            let (seq, ts) = self.stamps[i];
            self.scratch.clear();
            let stamp = Stamp {
                ts,
                seq,
                prev: self.opts.chain.then_some(&self.prev),
            };
            let fits = encode_event(
                &mut self.scratch,
                &events[i],
                &stamp,
                self.opts.max_text_bytes,
            )
            .is_ok()
                && max_line.is_none_or(|max| self.scratch.len() <= max);
            if !fits {
                events.remove(i);
                self.stamps.remove(i);
                dropped += 1;
                continue;
            }
            if self.opts.chain {
                self.prev = line_hash(&self.scratch);
                self.hashes.push(self.prev);
            }
            self.builder.push(&self.scratch, events[i].kind(), ts, seq);
            i += 1;
        }
        if dropped > 0 {
            self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(
                dropped,
                "audit events too long for the audit sink were dropped"
            );
        }
        self.builder.take()
    }

    fn delivered(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.shared.written.fetch_add(n as u64, Ordering::Relaxed);
        self.shared.set_failing(FAIL_WRITE, false);
        self.unsynced_since.get_or_insert_with(Instant::now);
    }

    /// Waits before the next attempt after a failure, longer each time until a write
    /// succeeds; a reopen request cuts the wait short.
    async fn pause(&mut self) {
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        // The shared state, not `&self`, is held across the wait: a sink need not be `Sync`.
        let shared = Arc::clone(&self.shared);
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = shared.wake.notified() => {}
        }
    }

    fn report_error(&mut self, what: &str, e: &std::io::Error) {
        self.errors_unreported += 1;
        let due = self
            .last_error_report
            .is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due {
            tracing::error!(error = %e, failures = self.errors_unreported, "{what}");
            self.errors_unreported = 0;
            self.last_error_report = Some(Instant::now());
        }
    }

    fn report_drops(&mut self, last: bool) {
        let total = self.shared.dropped.load(Ordering::Relaxed);
        let new = total - self.reported_drops;
        if new == 0 {
            return;
        }
        let due = last
            || self
                .last_drop_report
                .is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due {
            tracing::warn!(
                dropped = new,
                dropped_total = total,
                "audit events dropped: the audit sink cannot keep up or is failing"
            );
            self.reported_drops = total;
            self.last_drop_report = Some(Instant::now());
        }
    }
}
