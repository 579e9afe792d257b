//! Audit: the records a SIEM gets of who connected, who authenticated, which sessions ran and
//! which statements were executed or denied. This module owns the event types, their JSON
//! encoding, the sinks (stdout, file, syslog), delivery (a bounded queue to one writer task,
//! with `block`/`drop` behaviour when full and fail-closed admission while the sink fails) and
//! tamper evidence (the hash chain and its verifier).
//!
//! - [`event`]: typed events; nothing free-form, so secrets and literals cannot get in;
//! - [`encode`]: one JSON line per event, fields in a fixed order, ASCII only;
//! - [`sink`], [`file`], [`syslog`]: destinations; [`writer`]: the task that feeds them;
//! - [`chain`]: `prev` hashes and [`verify_file`];
//! - [`settings`]: the `[audit]` configuration.
//!
//! Sessions hold an [`Auditor`] (a cheap clone). The hot path asks
//! [`Auditor::wants_statement`] before building a statement event, and [`Auditor::emit`]
//! only queues: encoding, `ts`/`seq` stamping and I/O happen in the writer task.

pub mod chain;
pub mod encode;
pub mod event;
pub mod file;
pub mod settings;
pub mod sink;
pub mod syslog;

pub use chain::{Break, VerifyError, VerifyReport, verify_file};
