//! Authentication on both legs: clients proving who they are to pgward ([`client`]), pgward
//! proving who it is to PostgreSQL (SCRAM client and md5 in [`scram`], used by
//! `pool::connection`), and the [`secret::Secret`] type that keeps credentials out of logs.

pub mod client;
pub mod scram;
pub mod secret;
