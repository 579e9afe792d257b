//! Shared support code for the integration tests in `tests/*.rs`.
//!
//! Use it from a test file with:
//!
//! ```ignore
//! mod support;
//! use support::pg::PgServer;
//! ```
//!
//! Cargo compiles this module into every test binary separately, and each
//! binary uses a different subset of it, so unused-item warnings are
//! expected here and silenced (they would otherwise fail `clippy -D warnings`).
#![allow(dead_code)]

pub mod logs;
pub mod pg;
pub mod pgward;
pub mod pki;
pub mod wire;
