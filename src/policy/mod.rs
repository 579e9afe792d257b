//! Statement policy: what a client may run. Normalization and fingerprints, read-only
//! classification, allowlists, learned statements and the cached per-statement decision.
//! Pure and fail-closed: any error while deciding is a deny.

pub mod allowlist;
pub mod normalize;
pub mod readonly;
